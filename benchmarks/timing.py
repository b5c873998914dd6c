"""Timing compiled functions honestly: compilation apart, warm-up first, the timed calls under a watch.

Every timed figure of every suite comes from here. The rules:

* compile ahead of time (``jax.jit(fn).lower(*args).compile()``) and report the compile seconds apart;
* run once (or ``warmup`` times) untimed, so that the first call's one-off costs are not timed;
* time to completion (``jax.block_until_ready``), and run the timed calls under :func:`count_compilations`,
  whose count each record carries (0 unless something recompiled while being timed);
* when two functions are compared, interleave them round by round in a fresh random order
  (:func:`time_interleaved`) and report the median of the per-round ratios (:func:`paired_ratio`).
"""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np

COMPILE_EVENTS = "/jax/core/compile/"  # JAX's monitoring events of tracing, lowering and XLA compilation


@contextlib.contextmanager
def count_compilations() -> Iterator[list[str]]:
  """Collects the names of JAX's compilation events (tracing, lowering, XLA compilation) inside the block.

  The timed loops run under it: a timed figure that included a compilation shows up here, whatever the timing
  noise.
  """
  events: list[str] = []

  def listener(event: str, duration: float, **kwargs: Any) -> None:
    del duration, kwargs
    if event.startswith(COMPILE_EVENTS):
      events.append(event)

  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    yield events
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)


def compile_and_warm(fn: Callable, *args: Any) -> tuple[Any, float]:
  """``(executable, seconds)``: ``fn`` traced, lowered and compiled for ``args``, then run once untimed.

  ``seconds`` is the compilation alone; the warm-up run (its result discarded) absorbs the first call's
  one-off costs, so that a later timed call measures the steady state.
  """
  start = time.perf_counter()
  compiled = jax.jit(fn).lower(*args).compile()
  seconds = time.perf_counter() - start
  jax.block_until_ready(compiled(*args))
  return compiled, seconds


def timed(fn: Callable, *args: Any) -> tuple[Any, float]:
  """``(fn(*args), seconds)``: the wall time of one call, waiting for its result."""
  start = time.perf_counter()
  out = jax.block_until_ready(fn(*args))
  return out, time.perf_counter() - start


def cost_analysis(compiled: Any) -> dict[str, Any]:
  """XLA's flops and bytes accessed, the number of instructions of the optimized HLO and its temporary bytes.

  Each is ``None`` where the backend does not report it. XLA counts a loop body once: for a ``lax.scan`` over
  chunks, flops and bytes are those of one chunk.
  """
  try:
    instructions = sum(" = " in line for line in compiled.as_text().splitlines())
  except Exception:  # noqa: BLE001 (not every backend prints its HLO)
    instructions = None
  try:
    analysis = compiled.cost_analysis()
  except Exception:  # noqa: BLE001 (not every backend has one)
    analysis = {}
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else {}
  analysis = analysis or {}
  try:
    memory = compiled.memory_analysis()
    temp_bytes = int(memory.temp_size_in_bytes) if memory is not None else None
  except Exception:  # noqa: BLE001 (not every backend has one)
    temp_bytes = None
  return {
    "flops": analysis.get("flops"),
    "bytes_accessed": analysis.get("bytes accessed"),
    "hlo_instructions": instructions,
    "temp_bytes": temp_bytes,
  }


def time_interleaved(
  functions: dict[str, Callable],
  params: Any,
  key: jax.Array,
  *,
  repeats: int,
  warmup: int,
  min_seconds: float = 0.0,
  max_repeats: int = 1_000,
) -> dict[str, dict[str, Any]]:
  """Compiles each ``fn(params, key)`` (timed apart), runs each ``warmup`` times, then times them round-robin.

  Each round runs every function once with that round's key, in a fresh random order: a function's time
  depends on what ran just before it (allocator and cache state), and a fixed order would always give each
  function the same predecessor. Fast functions get more rounds: about ``min_seconds`` over the slowest
  warm-up run's time, at most ``max_repeats``.

  Returns:
    For each function: ``median_seconds``, ``min_seconds``, ``times`` (one per round), ``compile_seconds``,
    the :func:`cost_analysis` fields, the ``compiled`` function and ``compilations_while_timed`` (of the
    whole interleaved run).
  """
  results: dict[str, dict[str, Any]] = {}
  compiled = {}
  for name, fn in functions.items():
    start = time.perf_counter()
    compiled[name] = jax.jit(fn).lower(params, key).compile()
    results[name] = {
      "compile_seconds": time.perf_counter() - start,
      "times": [],
      "compiled": compiled[name],
      **cost_analysis(compiled[name]),
    }
  names = list(compiled)
  warmup_keys = jax.block_until_ready(list(jax.random.split(jax.random.fold_in(key, 1), max(warmup, 1))))
  slowest = 0.0
  for k in warmup_keys:
    for name in names:
      start = time.perf_counter()
      jax.block_until_ready(compiled[name](params, k))
      slowest = max(slowest, time.perf_counter() - start)
  if min_seconds > 0:
    repeats = max(repeats, min(max_repeats, math.ceil(min_seconds / max(slowest, 1e-9))))
  keys = jax.block_until_ready(list(jax.random.split(key, repeats)))
  rng = np.random.default_rng(0)
  with count_compilations() as events:
    for k in keys:
      for index in rng.permutation(len(names)):
        name = names[index]
        start = time.perf_counter()
        jax.block_until_ready(compiled[name](params, k))
        results[name]["times"].append(time.perf_counter() - start)
  for r in results.values():
    r["median_seconds"] = statistics.median(r["times"])
    r["min_seconds"] = min(r["times"])
    r["compilations_while_timed"] = len(events)
  return results


def paired_ratio(numerator: list[float], denominator: list[float]) -> float:
  """The median over rounds of ``numerator / denominator`` (the two runs of one round are back to back)."""
  return float(statistics.median(a / b for a, b in zip(numerator, denominator, strict=True)))
