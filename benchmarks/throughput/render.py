"""The throughput suite's report (Markdown) and plot, built from its records alone."""

from __future__ import annotations

from typing import Any

from benchmarks import report
from benchmarks.throughput.problems import (
  ESTIMATORS,
  GRADIENT_TARGET,
  GUMBEL_TEMPERATURE,
  MODE_ESTIMATORS,
  OVERHEAD_TARGET,
  ThroughputConfig,
)


def mode(record: dict[str, Any]) -> str:
  """``"unchunked"``, ``"chunked"`` or ``"sharded"`` (records written before the modes were measured: unchunked)."""
  return record.get("mode") or "unchunked"


def row_label(record: dict[str, Any]) -> str:
  """The estimator, with the mode of a chunked or sharded row: ``score_function [chunk 10000]``."""
  name = record["estimator"]
  if mode(record) == "chunked":
    return f"{name} [chunk {int(record['chunk_size'])}]"
  if mode(record) == "sharded":
    return f"{name} [sharded over {int(record['sharding_devices'])} {record['sharding_platform']} device(s)]"
  return name


def verdict(value: float | None, target: float) -> str:
  """``ok`` when ``value`` is at most ``target``, ``**over**`` above it, ``—`` without a value."""
  if value is None:
    return "—"
  return "ok" if value <= target else "**over**"


def _mib_pair(a: Any, b: Any) -> str:
  """``"a / b"`` in MiB (1 decimal); ``—`` for a missing figure (records written before it was measured)."""
  return " / ".join("—" if v is None else f"{float(v) / 2**20:.1f}" for v in (a, b))


def _round(value: float | None, digits: int) -> float | None:
  return None if value is None else round(value, digits)


def _ratio(a, b):
  return None if a is None or b in (None, 0) else a / b


def _modes_text(records: list[dict[str, Any]], config: ThroughputConfig) -> str:
  """The sentence on the chunked and sharded rows: which chunk size, over how many devices."""
  sharded = sorted({(int(r["sharding_devices"]), str(r["sharding_platform"])) for r in records if mode(r) == "sharded"})
  chunk = (
    f"`chunk_size={config.chunk_size}` at every N above it"
    if config.chunk_size is not None
    else "no chunked rows (chunk_size None)"
  )
  if sharded:
    devices = ", ".join(f"{n} {platform} device(s)" for n, platform in sharded)
    shards = (
      f"`sample_sharding=NamedSharding(Mesh(devices, ('samples',)), P('samples'))` over {devices} (at every N "
      "the device count divides)"
    )
  else:
    shards = "no sharded rows" + ("" if config.sharded else " (sharded False)")
  return (
    f"Rows `[chunk c]` and `[sharded over k device(s)]` time {', '.join(MODE_ESTIMATORS)} with {chunk}, and "
    f"with {shards}, in the same interleaved run as the plain call: their sfe / hand is against the "
    "unchunked hand-written function, and sfe / unchunked against the library's own unchunked call. A chunked "
    "call draws each chunk from its own key (other numbers: no difference column); a sharded call computes the "
    "one-device numbers. XLA temp bytes of a sharded call are per device. XLA's cost analysis counts a loop's "
    "body once, so the flops, bytes and HLO instructions of a chunked row are those of one chunk (the scan), "
    "not of the whole call."
  )


def to_markdown(records: list[dict[str, Any]], config: ThroughputConfig, env: dict[str, Any]) -> str:
  """The report: the method, the environment and one table row per estimator, size and mode."""
  columns = [
    "estimator",
    "D",
    "N",
    "runs",
    "sfe (ms)",
    "hand-written (ms)",
    "forward (ms)",
    "sfe / hand",
    "",
    "sfe / forward",
    "",
    "hand / forward",
    "sfe / hand (paired)",
    "A/A: hand copy / hand (paired)",
    "sfe / forward (paired)",
    "sfe / unchunked (paired)",
    "flops sfe / hand",
    "bytes sfe / hand",
    "HLO instr. sfe / hand",
    "XLA temp MiB sfe / forward",
    "sfe compile (s)",
    "max rel. diff sfe vs hand",
  ]
  rows = [
    [
      row_label(r),
      r["dim"],
      r["num_samples"],
      r["repeats"],
      r["sfe_seconds"] * 1e3,
      report.milliseconds(r.get("hand_seconds")),
      r["forward_seconds"] * 1e3,
      _round(r["sfe_over_hand"], 3),
      verdict(r["sfe_over_hand"], OVERHEAD_TARGET),
      _round(r["sfe_over_forward"], 2),
      verdict(r["sfe_over_forward"], GRADIENT_TARGET),
      _round(r["hand_over_forward"], 2),
      _round(r["sfe_over_hand_paired"], 3),
      _round(r["hand_copy_over_hand_paired"], 3),
      _round(r["sfe_over_forward_paired"], 2),
      _round(r.get("sfe_over_unchunked_paired"), 3),
      _ratio(r["sfe_flops"], r["hand_flops"]),
      _ratio(r["sfe_bytes"], r["hand_bytes"]),
      f"{r['sfe_hlo_instructions']} / {r['hand_hlo_instructions'] or '—'}",
      _mib_pair(r.get("sfe_temp_bytes"), r.get("forward_temp_bytes")),
      _round(r.get("sfe_compile_seconds"), 3),
      r["relative_diff_sfe_hand"],
    ]
    for r in records
  ]
  return "\n\n".join(
    [
      "# Throughput benchmark: sfe_jax against hand-written JAX and the forward pass",
      "`sfe.value_and_grad` on `distrax.Normal(loc, scale)` with D variables and f(x) = sum((x - 0.5)^2) "
      "(score_function, score_function_loo with the leave-one-out baseline, pathwise, measure_valued; iwae, dreg "
      "and vimco take the same f as their log-joint, with K = N), and on D independent `distrax.Bernoulli` bits "
      "with f(b) = sum((b - 0.3)^2) "
      f"(arm, disarm, gumbel_softmax at temperature {GUMBEL_TEMPERATURE:g}, straight_through, rebar, relax with a "
      "one-unit tanh control); measure_valued costs 4D evaluations of f per sample and rebar 3, so their "
      f"sfe / forward ratios include that cost; D in {list(config.dims)}, N in "
      f"{list(config.sample_sizes)} (an estimator is skipped where it would materialise more than "
      f"{config.max_elements:.0e} elements: N x D, x 4D for measure-valued). Every function is compiled ahead of "
      "time and its compile time reported apart (sfe compile column; the CSV/JSON also have hand_ and "
      "forward_compile_seconds), never inside a timed figure: the timed runs follow the warm-up, and JAX's "
      "compilation events during them are counted (compilations_while_timed, 0). Median of at least "
      f"{config.repeats} runs (more for fast calls, about {config.min_seconds:g} s of runs per function, at most "
      f"{config.max_repeats}) after {config.warmup} warm-up runs, all jitted, `block_until_ready`, runs of one N "
      "interleaved in a random order. Targets: sfe / hand within "
      f"{OVERHEAD_TARGET:.2f} (library overhead), sfe / forward under {GRADIENT_TARGET:g} (cost of the gradient "
      "over the Monte Carlo estimate itself). Flops and bytes are XLA's cost analysis of the compiled functions.",
      _modes_text(records, config),
      report.environment_markdown(env),
      report.markdown_table(columns, rows),
      "hand-written: `jax.random`, the log-density formula or the estimator's formula, a stop-gradient surrogate "
      "and `jax.value_and_grad`, no sfe_jax and no distrax. forward: jitted `mean(f(x))` with x drawn by hand, "
      "N evaluations of f. ARM/DisARM draw their uniforms on a symmetric bit grid in sfe_jax, so their numbers "
      "differ from the hand-written ones (same distribution, different draws); the other estimators compute the "
      "same numbers from the same key. measure_valued, rebar and relax have no hand-written version here (—): "
      "they are compared with the forward pass only. "
      "(paired) columns: the median over rounds of the ratio of back-to-back runs, less sensitive than the ratio "
      "of medians to other processes competing for the machine (see the load average above; the CSV and JSON "
      "also have ratios of the fastest runs). A/A: a second compiled copy of the hand-written function against "
      "the first; its distance from 1 is the measurement noise of this machine at the time of the run. Flops, "
      "bytes and HLO instructions describe the optimized XLA "
      "programs: equal values mean XLA compiled the same computation. The last column checks that sfe and the "
      "hand-written version compute the same numbers from the same key.",
    ]
  )


def plot(records: list[dict[str, Any]], config: ThroughputConfig, out_dir: str) -> list[str]:
  """``throughput.png``: median seconds per call against num_samples: sfe (plain, chunked, sharded), hand-written
  and forward."""
  plt = report.pyplot(out_dir)
  names = [e for e in ESTIMATORS if any(r["estimator"] == e for r in records)]
  fig, axes = plt.subplots(1, max(len(names), 1), figsize=(5 * max(len(names), 1), 4), squeeze=False)
  styles = ("-", "--", ":", "-.")
  for ax, name in zip(axes[0], names):
    dims = sorted({int(r["dim"]) for r in records if r["estimator"] == name})
    for i, dim in enumerate(dims):
      of_dim = sorted(
        (r for r in records if r["estimator"] == name and int(r["dim"]) == dim), key=lambda r: r["num_samples"]
      )
      rows = [r for r in of_dim if mode(r) == "unchunked"]
      ns = [r["num_samples"] for r in rows]
      for j, (field, label) in enumerate(
        (("sfe_seconds", "sfe_jax"), ("hand_seconds", "hand-written JAX"), ("forward_seconds", "forward estimate only"))
      ):
        if all(r.get(field) is not None for r in rows):
          ax.plot(
            ns, [float(r[field]) for r in rows], "o" + styles[i % len(styles)], color=f"C{j}", label=f"{label}, D={dim}"
          )
      for j, (kind, label) in enumerate((("chunked", "sfe_jax chunked"), ("sharded", "sfe_jax sharded")), start=3):
        extra = [r for r in of_dim if mode(r) == kind]
        if extra:
          ax.plot(
            [r["num_samples"] for r in extra],
            [float(r["sfe_seconds"]) for r in extra],
            "s" + styles[i % len(styles)],
            color=f"C{j}",
            label=f"{label}, D={dim}",
          )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("num_samples")
    ax.set_ylabel("median seconds per call")
    devices = sorted({str(r.get("device", "")) for r in records if r["estimator"] == name})
    ax.set_title(f"{name} ({', '.join(devices)})")
    ax.legend(fontsize=8)
  fig.tight_layout()
  return report.save_figure(fig, out_dir, "throughput.png", dpi=110)
