"""The peers suite's report: one table per ``(D, N)`` and estimator, and seconds by peer (``peers.png``)."""

from __future__ import annotations

from typing import Any

from benchmarks import report, suite
from benchmarks.peers.problems import DESCRIPTION, ESTIMATORS, NOISE_Z, PEERS, SHORT, SUITE, PeersConfig

COLUMNS = [
  "peer",
  "seconds",
  "/ hand",
  "/ hand (paired)",
  "fastest run (s)",
  "compile (s)",
  "runs",
  "XLA temp MiB",
  "rel. error",
  "expected rel. error",
  "max z-score",
]


def _mib(value: Any) -> float | None:
  return None if value is None else float(value) / 2**20


def _sizes(records: list[dict[str, Any]]) -> list[tuple[int, int]]:
  return sorted({(int(r["dim"]), int(r["num_samples"])) for r in records})


def _row(r: dict[str, Any]) -> list[Any]:
  z = report.number(r["max_abs_z"])
  flag = "" if z is not None and z <= NOISE_Z else " **wrong?**"
  return [
    r["peer"],
    r["seconds"],
    round(float(r["over_hand"]), 3),
    round(float(r["over_hand_paired"]), 3),
    r["min_seconds"],
    r["compile_seconds"],
    r["repeats"],
    _mib(r.get("temp_bytes")),
    r["relative_error"],
    r["rms_relative_error"],
    f"{report.format_number(z)}{flag}",
  ]


def to_markdown(records: list[dict[str, Any]], config: PeersConfig, env: dict[str, Any]) -> str:
  """Tables of seconds per gradient, ratio to the floor, XLA temp memory and error against the exact gradient."""
  timings = suite.index(
    records, SUITE, key=lambda r: (r["dim"], r["num_samples"], r["estimator"], r["peer"]), kind="timing"
  )
  skipped = suite.index(records, SUITE, key=lambda r: r["peer"], kind="skipped")
  parts = [
    "# Peers benchmark: sfe_jax against the JAX libraries a user would pick instead",
    "The gradient of E[f(x)], x ~ N(mu, diag sigma^2) in D dimensions, f(x) = sum((x - 0.5)^2), wrt mu and sigma "
    "(mu evenly spaced in [-0.5, 1.5], sigma in [0.5, 1.5]) from N samples, by the score function (SF) and the "
    "pathwise estimator (PW), through each peer, jitted. Seconds: the median of at least "
    f"{config.repeats} timed runs per function (more for fast calls, about {config.min_seconds:g} s of runs each, "
    f"at most {config.max_repeats}) after {config.warmup} warm-up runs, `block_until_ready`, the runs of all "
    "peers of one table interleaved in a random order; compile time apart. / hand: the ratio to the hand-written "
    "floor of the same run (paired: the median over rounds of the ratio of back-to-back runs). XLA temp MiB: the "
    "temporary buffers of the compiled function (`compiled.memory_analysis()`). rel. error: |g - exact| / |exact| "
    "over the 2D coordinates, exact = (2 (mu - 0.5), 2 sigma); expected: its root-mean-square value "
    "sqrt(sum Var / N) / |exact| from the closed-form single-sample variances; max z-score: the largest coordinate "
    f"error in standard errors (over {NOISE_Z:g}: **wrong?**, a peer that does not compute this estimator). hand, "
    "sfe_jax and tfp draw the same samples from the same key (`loc + scale * normal(key, (N, D))`), so their errors "
    "agree to rounding; numpyro draws its own (a key per particle).",
    report.environment_markdown(env),
  ]
  for dim, n in _sizes(list(timings.values())):
    for estimator in ESTIMATORS:
      rows = [timings[(dim, n, estimator, p)] for p in PEERS if (dim, n, estimator, p) in timings]
      if rows:
        parts.append(f"## D = {dim}, N = {n:,}: {estimator} ({SHORT[estimator]})")
        parts.append(report.markdown_table(COLUMNS, [_row(r) for r in rows]))
  peers = "\n".join(f"* {peer}: {DESCRIPTION[peer]}" for peer in PEERS)
  parts.append("## The peers\n\n" + peers)
  if skipped:
    parts.append("## Skipped\n\n" + "\n".join(f"* {r['note']}" for r in skipped.values()))
  return "\n\n".join(parts)


def plot(records: list[dict[str, Any]], config: PeersConfig, out_dir: str) -> list[str]:
  """``peers.png``: median seconds per gradient by peer (bars, log scale), grouped by ``(D, N)``, per estimator.

  Each bar is labelled with its ratio to the hand-written floor of the same run.
  """
  del config
  plt = report.pyplot(out_dir)
  timings = suite.index(
    records, SUITE, key=lambda r: (r["dim"], r["num_samples"], r["estimator"], r["peer"]), kind="timing"
  )
  estimators = [e for e in ESTIMATORS if any(key[2] == e for key in timings)]
  sizes = _sizes(list(timings.values()))
  peers = [p for p in PEERS if any(key[3] == p for key in timings)]
  width = 0.8 / max(len(peers), 1)
  fig, axes = plt.subplots(
    1,
    max(len(estimators), 1),
    figsize=(max(4.5, 1.6 * len(sizes) * max(len(peers), 1) / 2) * max(len(estimators), 1), 4),
    squeeze=False,
  )
  for ax, estimator in zip(axes[0], estimators):
    for i, peer in enumerate(peers):
      xs, seconds, ratios = [], [], []
      for j, (dim, n) in enumerate(sizes):
        r = timings.get((dim, n, estimator, peer))
        if r is not None:
          xs.append(j + (i - (len(peers) - 1) / 2) * width)
          seconds.append(float(r["seconds"]))
          ratios.append(float(r["over_hand"]))
      bars = ax.bar(xs, seconds, width, color=f"C{i}", label=peer)
      ax.bar_label(bars, labels=[f"{q:.2f}" for q in ratios], fontsize=6, rotation=90, padding=2)
    ax.set_yscale("log")
    ax.set_xticks(range(len(sizes)), [f"D={d}\nN={n:.0e}" for d, n in sizes])
    ax.set_ylabel("median seconds per gradient")
    devices = sorted({str(r.get("device", "")) for k, r in timings.items() if k[2] == estimator})
    ax.set_title(f"{estimator} ({', '.join(devices)}); labels: / hand", fontsize=9)
    ax.legend(fontsize=7)
  fig.tight_layout()
  return report.save_figure(fig, out_dir, "peers.png", dpi=110)
