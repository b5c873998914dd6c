"""The scale suite's cells: each runs one (estimator, N, chunk size) in a fresh Python process
(``python -m benchmarks.scale '<json>'``, which calls :func:`measure_in_process`), since peak resident memory is
a per-process high-water mark."""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

from benchmarks import suite
from benchmarks.scale.problems import SUITE, ScaleConfig, unchunked_fits
from benchmarks.timing import count_compilations

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # `benchmarks` is importable
WORKER = "benchmarks.scale"  # `python -m benchmarks.scale '<json>'` (its __main__) measures one cell


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


def measure_in_process(
  estimator: str, dim: int, num_samples: int, chunk_size: int | None, repeats: int, seed: int
) -> dict[str, Any]:
  """One cell, in this process (``python -m benchmarks.scale '<json>'`` runs it in a fresh one).

  The gradient is compiled ahead of time (``compile_seconds``, apart), run once untimed, then timed ``repeats``
  times (``seconds``: the median) under :func:`count_compilations` (``compilations_while_timed``: 0), each
  run's key made before its clock starts.

  Returns:
    The cell's figures: timings, memory (peak and baseline RSS, XLA temp bytes, the device's peak) and the
    estimate (value, mean gradients), as a JSON-ready dict.
  """
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
  keys = jax.block_until_ready([jax.random.fold_in(key, i + 1) for i in range(repeats)])
  jax.block_until_ready(compiled(params, key))
  times = []
  with count_compilations() as events:
    for k in keys:
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
    "compilations_while_timed": len(events),
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


def measure_cell(config: ScaleConfig, estimator: str, n: int, chunk_size: int | None) -> list[dict[str, Any]]:
  """Runs one cell in a fresh process; a failure or a timeout is recorded (``status``), not raised."""
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
      [sys.executable, "-m", WORKER, json.dumps(args)],
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


def cells(config: ScaleConfig) -> list[suite.Cell]:
  """One cell per (estimator, N, chunk size), less the unchunked cells that do not fit and chunks of N or more."""
  out = []
  for estimator in config.estimators:
    for n in config.sample_sizes:
      for c in config.chunk_sizes:
        if (c is None and not unchunked_fits(config, n)) or (c is not None and c >= n):
          continue
        cell = f"{SUITE}/{estimator}/D={config.dim}/N={n}/chunk={c}/repeats={config.repeats}/seed={config.seed}"
        out.append((cell, lambda e=estimator, n=n, c=c: measure_cell(config, e, n, c)))
  return out
