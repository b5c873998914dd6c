r"""Scale benchmark: peak memory and time per gradient against ``num_samples``, chunked and unchunked.

Problem: ``params = {"loc": zeros(D), "scale": ones(D)}``, ``distrax.Normal(loc, scale)`` with ``D = 100`` and
``f(x) = sum((x - 0.5)^2)``; ``sfe.value_and_grad`` of the score function and the pathwise estimator, jitted,
at ``num_samples`` N from 1e5 to 1e8, unchunked (where its working set fits the machine) and with
``chunk_size`` in 1e4, 1e5, 1e6.

Each cell runs in a fresh Python process (peak resident memory is a per-process high-water mark): it imports
JAX, compiles the gradient (compile seconds reported apart), runs it once untimed and ``repeats`` times timed
(the median is reported), and reports

* ``peak_rss_bytes``: the process's peak resident memory (``VmHWM`` on Linux), and ``baseline_rss_bytes``, the
  resident memory after JAX is imported and before anything is compiled, so that the difference is the
  estimate's own;
* ``xla_temp_bytes``: XLA's temporary buffers of the compiled gradient (``memory_analysis()``), the figure
  that does not depend on the allocator;
* ``device_peak_bytes`` on an accelerator (its allocator's ``peak_bytes_in_use``);
* seconds per call and nanoseconds per sample.

The report gives, per (estimator, N), every chunk size side by side and the fastest one, and skips an
unchunked cell whose working set (8 x the samples, the library's own estimate) exceeds ``max_unchunked_bytes``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from benchmarks import report, store

SUITE = "scale"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository: `benchmarks` is importable
ESTIMATORS = ("score_function", "pathwise")
WORKING_SET_FACTOR = 8  # sfe_jax's own estimate of an unchunked call's working set, in bytes per sample byte


@dataclasses.dataclass(frozen=True)
class ScaleConfig:
  """What the scale benchmark measures.

  Attributes:
    dim: ``D``, the number of Gaussian variables.
    sample_sizes: the values of ``num_samples``.
    chunk_sizes: the values of ``chunk_size``; ``None`` is the unchunked call. A chunk size at or above N is
      skipped (it is the unchunked call).
    max_unchunked_bytes: an unchunked cell is skipped when ``8 N D 4`` bytes exceed this.
    repeats: timed calls per cell (the median is reported).
    estimators: a subset of ``ESTIMATORS``.
    timeout: seconds a cell's process may run before it is recorded as timed out.
    seed: the PRNG seed.
  """

  dim: int = 100
  sample_sizes: tuple[int, ...] = (100_000, 1_000_000)
  chunk_sizes: tuple[int | None, ...] = (None, 10_000, 100_000)
  max_unchunked_bytes: int = 8 * 2**30
  repeats: int = 3
  estimators: tuple[str, ...] = ESTIMATORS
  timeout: float = 1800.0
  seed: int = 0


PRESETS = {
  "quick": ScaleConfig(),
  "full": ScaleConfig(
    sample_sizes=(100_000, 1_000_000, 10_000_000, 100_000_000),
    chunk_sizes=(None, 10_000, 100_000, 1_000_000),
    repeats=3,
  ),
}


def _rss_bytes() -> int:
  """The peak resident memory of this process so far.

  Linux: ``VmHWM`` of ``/proc/self/status``, which starts afresh at ``exec``; ``ru_maxrss`` does not (it keeps
  the high-water mark of the parent at ``fork``, so a cell spawned by a large process would report the
  parent's size). Elsewhere ``ru_maxrss`` (KiB on Linux, bytes on macOS).
  """
  try:
    with open("/proc/self/status") as fh:
      for line in fh:
        if line.startswith("VmHWM:"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def measure_in_process(estimator: str, dim: int, num_samples: int, chunk_size: int | None, repeats: int, seed: int):
  """One cell, in this process (``python -m benchmarks.scale '<json>'`` runs it in a fresh one)."""
  import jax  # noqa: PLC0415  (imported here so that the baseline memory is measured after it)

  baseline = _rss_bytes()
  import distrax  # noqa: PLC0415
  import jax.numpy as jnp  # noqa: PLC0415

  import sfe_jax as sfe  # noqa: PLC0415

  est = {"score_function": sfe.score_function(), "pathwise": sfe.pathwise()}[estimator]
  params = {"loc": jnp.zeros(dim), "scale": jnp.ones(dim)}
  build = lambda p: distrax.Normal(p["loc"], p["scale"])  # noqa: E731
  f = lambda x: jnp.sum((x - 0.5) ** 2)  # noqa: E731

  def gradient(p, k):
    value, grads, _ = sfe.value_and_grad(
      est, f, build, p, k, num_samples=num_samples, chunk_size=chunk_size, max_memory=2**62
    )
    return value, grads

  key = jax.random.key(seed)
  start = time.perf_counter()
  compiled = jax.jit(gradient).lower(params, key).compile()
  compile_seconds = time.perf_counter() - start
  analysis = compiled.memory_analysis()
  jax.block_until_ready(compiled(params, key))
  times = []
  for i in range(repeats):
    k = jax.random.fold_in(key, i + 1)
    start = time.perf_counter()
    value, grads = jax.block_until_ready(compiled(params, k))
    times.append(time.perf_counter() - start)
  stats = jax.local_devices()[0].memory_stats() or {}
  seconds = statistics.median(times)
  return {
    "platform": jax.default_backend(),
    "compile_seconds": compile_seconds,
    "seconds": seconds,
    "ns_per_sample": 1e9 * seconds / num_samples,
    "peak_rss_bytes": _rss_bytes(),
    "baseline_rss_bytes": baseline,
    "xla_temp_bytes": int(getattr(analysis, "temp_size_in_bytes", 0)) if analysis is not None else None,
    "device_peak_bytes": stats.get("peak_bytes_in_use"),
    "value": float(value),
    "grad_loc_mean": float(jnp.mean(grads["loc"])),
    "grad_scale_mean": float(jnp.mean(grads["scale"])),
  }


def _platform() -> str:
  """The platform of this process's default device (``--device`` sets it), for the cells' processes."""
  import jax  # noqa: PLC0415

  device = jax.config.jax_default_device
  return device.platform if device is not None and not isinstance(device, str) else jax.default_backend()


def unchunked_fits(config: ScaleConfig, n: int) -> bool:
  return WORKING_SET_FACTOR * n * config.dim * 4 <= config.max_unchunked_bytes


def measure_cell(config: ScaleConfig, estimator: str, n: int, chunk_size: int | None) -> list[dict[str, Any]]:
  args = {
    "estimator": estimator,
    "dim": config.dim,
    "num_samples": n,
    "chunk_size": chunk_size,
    "repeats": config.repeats,
    "seed": config.seed,
  }
  record = {"suite": SUITE, "estimator": estimator, "dim": config.dim, "num_samples": n, "chunk_size": chunk_size}
  start = time.perf_counter()
  try:
    done = subprocess.run(
      [sys.executable, "-m", "benchmarks.scale", json.dumps(args)],
      capture_output=True,
      text=True,
      timeout=config.timeout,
      check=False,
      cwd=ROOT,
      env={**os.environ, "JAX_PLATFORMS": _platform()},  # the device --device chose in this process
    )
  except subprocess.TimeoutExpired:
    return [{**record, "status": f"timed out after {config.timeout:.0f} s"}]
  wall = time.perf_counter() - start
  if done.returncode != 0:
    tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
    return [{**record, "status": f"failed: {tail[0][:300]}", "wall_seconds": wall}]
  result = json.loads(done.stdout.strip().splitlines()[-1])
  return [{**record, **result, "status": "ok", "wall_seconds": wall}]


def cells(config: ScaleConfig) -> list[tuple[str, Callable[[], list[dict[str, Any]]]]]:
  report.check_subset(config.estimators, ESTIMATORS, "estimators")
  out = []
  for estimator in config.estimators:
    for n in config.sample_sizes:
      for c in config.chunk_sizes:
        if (c is None and not unchunked_fits(config, n)) or (c is not None and c >= n):
          continue
        cell = f"{SUITE}/{estimator}/D={config.dim}/N={n}/chunk={c}/repeats={config.repeats}/seed={config.seed}"
        out.append((cell, lambda e=estimator, n=n, c=c: measure_cell(config, e, n, c)))
  return out


def _gib(value: Any) -> str:
  return "" if value is None else f"{float(value) / 2**30:.2f}"


def best_chunk_sizes(records: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
  """The fastest measured cell per (estimator, N)."""
  best: dict[tuple[str, int], dict[str, Any]] = {}
  for r in records:
    if r.get("status") != "ok":
      continue
    k = (r["estimator"], int(r["num_samples"]))
    if k not in best or float(r["seconds"]) < float(best[k]["seconds"]):
      best[k] = r
  return best


def to_markdown(records: list[dict[str, Any]], config: ScaleConfig, env: dict[str, Any]) -> str:
  lines = [
    "# Scale: memory and time per gradient against num_samples",
    "",
    f"`sfe.value_and_grad`, jitted, on a diagonal Gaussian with D = {config.dim}, `f(x) = sum((x - 0.5)^2)`. "
    "Each cell is a fresh process; peak RSS includes the Python process and JAX (the baseline column, measured "
    "after importing JAX). XLA temp is the compiled gradient's temporary buffers. An unchunked cell is skipped "
    f"where 8 x the samples exceed {config.max_unchunked_bytes / 2**30:.0f} GiB.",
    "",
    report.environment_markdown(env),
    "",
  ]
  rows = []
  order = sorted(
    records, key=lambda r: (r["estimator"], int(r["num_samples"]), -1 if r["chunk_size"] is None else r["chunk_size"])
  )
  for r in order:
    chunk = "unchunked" if r["chunk_size"] is None else f"{int(r['chunk_size']):,}"
    if r.get("status") != "ok":
      rows.append([r["estimator"], f"{int(r['num_samples']):.0e}", chunk, r.get("status"), "", "", "", "", ""])
      continue
    rows.append(
      [
        r["estimator"],
        f"{int(r['num_samples']):.0e}",
        chunk,
        report.format_number(r["seconds"]),
        report.format_number(r["ns_per_sample"]),
        _gib(r["peak_rss_bytes"]),
        _gib(r["baseline_rss_bytes"]),
        _gib(r["xla_temp_bytes"]),
        report.format_number(r["compile_seconds"]),
      ]
    )
  lines.append(
    report.markdown_table(
      [
        "estimator",
        "N",
        "chunk_size",
        "seconds per gradient",
        "ns per sample",
        "peak RSS (GiB)",
        "baseline RSS (GiB)",
        "XLA temp (GiB)",
        "compile s",
      ],
      rows,
    )
  )
  lines += ["", "## Fastest chunk size per (estimator, N)", ""]
  best = best_chunk_sizes(records)
  lines.append(
    report.markdown_table(
      ["estimator", "N", "fastest", "seconds", "peak RSS (GiB)"],
      [
        [
          e,
          f"{n:.0e}",
          "unchunked" if r["chunk_size"] is None else f"{int(r['chunk_size']):,}",
          report.format_number(r["seconds"]),
          _gib(r["peak_rss_bytes"]),
        ]
        for (e, n), r in sorted(best.items())
      ],
    )
  )
  return "\n".join(lines) + "\n"


def plot(records: list[dict[str, Any]], config: ScaleConfig, out_dir: str) -> list[str]:
  """``scale.png``: seconds per gradient and peak RSS against N, one line per chunk size."""
  plt = report.pyplot(out_dir)
  ok = [r for r in records if r.get("status") == "ok"]
  names = [e for e in ESTIMATORS if any(r["estimator"] == e for r in ok)]
  fig, axes = plt.subplots(2, max(len(names), 1), figsize=(5 * max(len(names), 1), 7), squeeze=False)
  for j, name in enumerate(names):
    chunks = sorted({r["chunk_size"] for r in ok if r["estimator"] == name}, key=lambda c: -1 if c is None else c)
    for i, c in enumerate(chunks):
      rows = sorted((r for r in ok if r["estimator"] == name and r["chunk_size"] == c), key=lambda r: r["num_samples"])
      label = "unchunked" if c is None else f"chunk {c:,}"
      ns = [r["num_samples"] for r in rows]
      axes[0][j].plot(ns, [r["seconds"] for r in rows], "o-", color=f"C{i}", label=label)
      axes[1][j].plot(ns, [r["peak_rss_bytes"] / 2**30 for r in rows], "o-", color=f"C{i}", label=label)
    for ax, ylabel in zip((axes[0][j], axes[1][j]), ("seconds per gradient", "peak RSS (GiB)")):
      ax.set_xscale("log")
      ax.set_yscale("log")
      ax.set_xlabel("num_samples")
      ax.set_ylabel(ylabel)
      ax.set_title(f"{name}, D={config.dim}")
      ax.legend(fontsize=8)
  fig.tight_layout()
  return report.save_figure(fig, out_dir, "scale.png", dpi=110)


def run(config: ScaleConfig, out_dir: str | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
  """Runs (or resumes, from ``out_dir/scale.jsonl``) the scale benchmark and writes its reports."""
  return store.run_suite(SUITE, config, cells(config), to_markdown, plot, out_dir, log)


if __name__ == "__main__":
  print(json.dumps(measure_in_process(**json.loads(sys.argv[1]))))
