r"""Throughput benchmark: the cost of sfe_jax's estimators against hand-written JAX and the forward pass.

Problem: ``params = {"loc": zeros(D), "scale": ones(D)}``, ``distrax.Normal(loc, scale)`` (a diagonal Gaussian
over ``D = 100`` variables) and ``f(x) = sum((x - 0.5)^2)``, at ``num_samples`` in 1e3, 1e4, 1e5.

Variants, all ``jax.jit``-compiled functions of ``(params, key)`` returning arrays:

* ``sfe``: ``sfe.value_and_grad(estimator, f, dist_builder, params, key, num_samples=N)`` for
  ``sfe.score_function()`` and ``sfe.pathwise()``;
* ``hand``: the same estimator written directly: ``jax.random.normal``, the Gaussian log-density formula, a
  stop-gradient surrogate and ``jax.value_and_grad`` (no sfe_jax, no distrax);
* ``forward``: the forward Monte Carlo estimate alone, ``mean(f(loc + scale * eps))`` (no gradient);
* ``hand (copy)``: a second, separately compiled copy of ``hand``, an A/A control: its ratio to ``hand`` is pure
  measurement noise, the yardstick for judging ``sfe / hand``.

Each function is compiled first, run ``warmup`` times, then timed at least ``repeats`` times (more for fast
calls: about ``min_seconds`` of runs each) with ``jax.block_until_ready``; the runs of all variants of one
``num_samples`` are interleaved (in a new random order each round) so that drifts of the machine affect them
alike and no function always runs after the same other one. The report gives
the median seconds, the ratio ``sfe / hand`` (overhead of the library; target: within 5%) and ``sfe / forward``
(cost of the gradient; target: under 2x), the same ratios paired by round, the XLA cost analysis (flops,
bytes accessed, number of HLO instructions) of each compiled function, and checks that ``sfe`` and ``hand``
compute the same numbers (distrax draws ``loc + scale * jax.random.normal(key, (N, D))``, as ``hand`` does).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import statistics
import time
from typing import Any, Callable

import distrax
import jax
import jax.numpy as jnp
import numpy as np

import sfe_jax as sfe
from benchmarks import report
from benchmarks import store

sg = jax.lax.stop_gradient
ESTIMATORS = ("score_function", "pathwise")
OVERHEAD_TARGET = 1.05
GRADIENT_TARGET = 2.0


@dataclasses.dataclass(frozen=True)
class ThroughputConfig:
  """What the throughput benchmark measures.

  Attributes:
    dim: ``D``, the number of Gaussian variables.
    sample_sizes: the ``num_samples`` values.
    repeats: timed runs of each function, at least (the median is reported).
    warmup: untimed runs after compilation.
    min_seconds: more timed runs for fast functions, so that each is timed for about this long in total
      (at most ``max_repeats`` runs): medians of sub-millisecond calls need many runs.
    max_repeats: the cap on timed runs.
    estimators: a subset of ``ESTIMATORS``.
    seed: the PRNG seed.
  """

  dim: int = 100
  sample_sizes: tuple[int, ...] = (1_000, 10_000, 100_000)
  repeats: int = 30
  warmup: int = 3
  min_seconds: float = 1.0
  max_repeats: int = 1_000
  estimators: tuple[str, ...] = ESTIMATORS
  seed: int = 0


PRESETS = {
    "quick": ThroughputConfig(repeats=30, warmup=3, min_seconds=1.0),
    "full": ThroughputConfig(repeats=200, warmup=10, min_seconds=5.0),
}


def f(x):
  return jnp.sum((x - 0.5) ** 2)


def dist_builder(params):
  return distrax.Normal(params["loc"], params["scale"])


def _build_estimator(name: str) -> sfe.Estimator:
  if name == "score_function":
    return sfe.score_function()
  if name == "pathwise":
    return sfe.pathwise()
  raise ValueError(f"unknown estimator {name!r}; expected one of {ESTIMATORS}.")


# ----------------------------------------------------------------------------------------------------------
# The functions that are timed.
# ----------------------------------------------------------------------------------------------------------


def sfe_function(name: str, num_samples: int) -> Callable:
  """``(params, key) -> (value, grads)`` through sfe_jax."""
  estimator = _build_estimator(name)

  def run(params, key):
    value, grads, _ = sfe.value_and_grad(estimator, f, dist_builder, params, key, num_samples=num_samples)
    return value, grads

  return run


def _gaussian_log_prob(x, loc, scale):
  return -0.5 * jnp.square((x - loc) / scale) - jnp.log(scale) - 0.5 * math.log(2 * math.pi)


def hand_function(name: str, num_samples: int) -> Callable:
  """``(params, key) -> (value, grads)`` written by hand: jax.random, the log-density formula, jax.grad."""

  def score_function_surrogate(params, key):
    loc, scale = params["loc"], params["scale"]
    eps = jax.random.normal(key, (num_samples,) + loc.shape, loc.dtype)
    x = sg(loc + scale * eps)
    fx = jnp.sum((x - 0.5) ** 2, axis=1)
    log_p = jnp.sum(_gaussian_log_prob(x, loc, scale), axis=1)
    return jnp.mean(fx) + jnp.mean(sg(fx) * (log_p - sg(log_p)))

  def pathwise_surrogate(params, key):
    loc, scale = params["loc"], params["scale"]
    eps = jax.random.normal(key, (num_samples,) + loc.shape, loc.dtype)
    x = loc + scale * eps
    return jnp.mean(jnp.sum((x - 0.5) ** 2, axis=1))

  surrogate = {"score_function": score_function_surrogate, "pathwise": pathwise_surrogate}[name]
  return jax.value_and_grad(surrogate)


def forward_function(num_samples: int) -> Callable:
  """``(params, key) -> value``: the Monte Carlo estimate of ``E[f]`` alone."""

  def run(params, key):
    loc, scale = params["loc"], params["scale"]
    eps = jax.random.normal(key, (num_samples,) + loc.shape, loc.dtype)
    return jnp.mean(jnp.sum((loc + scale * eps - 0.5) ** 2, axis=1))

  return run


# ----------------------------------------------------------------------------------------------------------
# Timing.
# ----------------------------------------------------------------------------------------------------------


def _cost_analysis(compiled) -> dict[str, Any]:
  """XLA's flops and bytes accessed, and the number of instructions of the optimized HLO."""
  try:
    instructions = sum(" = " in line for line in compiled.as_text().splitlines())
  except Exception:  # pragma: no cover
    instructions = None
  try:
    analysis = compiled.cost_analysis()
  except Exception:  # pragma: no cover - not every backend has one
    analysis = {}
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else {}
  analysis = analysis or {}
  return {"flops": analysis.get("flops"), "bytes_accessed": analysis.get("bytes accessed"),
          "hlo_instructions": instructions}


def time_interleaved(functions: dict[str, Callable], params: Any, key: jax.Array, *, repeats: int, warmup: int,
                     min_seconds: float = 0.0, max_repeats: int = 1_000) -> dict[str, dict[str, Any]]:
  """Compiles each function, then times them round-robin.

  Returns:
    For each function: ``median_seconds``, ``min_seconds``, ``times``, ``compile_seconds``, the cost analysis
    (``flops``, ``bytes_accessed``, ``hlo_instructions``) and the ``compiled`` function.
  """
  results: dict[str, dict[str, Any]] = {}
  compiled = {}
  for name, fn in functions.items():
    start = time.perf_counter()
    compiled[name] = jax.jit(fn).lower(params, key).compile()
    results[name] = {"compile_seconds": time.perf_counter() - start, "times": [], "compiled": compiled[name],
                     **_cost_analysis(compiled[name])}
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
  for k in keys:
    # A fresh random order each round: a function's time depends on what ran just before it (allocator and
    # cache state), and a fixed or rotated order would always give each function the same predecessor.
    for index in rng.permutation(len(names)):
      name = names[index]
      start = time.perf_counter()
      jax.block_until_ready(compiled[name](params, k))
      results[name]["times"].append(time.perf_counter() - start)
  for r in results.values():
    r["median_seconds"] = statistics.median(r["times"])
    r["min_seconds"] = min(r["times"])
  return results


def measure_size(config: ThroughputConfig, n: int) -> list[dict[str, Any]]:
  """Times every variant at ``num_samples = n`` (interleaved); one record per estimator."""
  params = {"loc": jnp.zeros(config.dim, jnp.float32), "scale": jnp.ones(config.dim, jnp.float32)}
  key = jax.random.key(config.seed)
  records = []
  functions = {"forward": forward_function(n)}
  for name in config.estimators:
    functions[f"{name}/sfe"] = sfe_function(name, n)
    functions[f"{name}/hand"] = hand_function(name, n)
    functions[f"{name}/hand-copy"] = hand_function(name, n)
  timings = time_interleaved(functions, params, jax.random.fold_in(key, n), repeats=config.repeats,
                             warmup=config.warmup, min_seconds=config.min_seconds,
                             max_repeats=config.max_repeats)
  forward = timings["forward"]["median_seconds"]
  for name in config.estimators:
    ours, hand = timings[f"{name}/sfe"], timings[f"{name}/hand"]
    v_sfe, g_sfe = ours["compiled"](params, key)
    v_hand, g_hand = hand["compiled"](params, key)
    max_diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in
                   zip(jax.tree.leaves((v_sfe, g_sfe)), jax.tree.leaves((v_hand, g_hand))))
    scale = max(float(jnp.max(jnp.abs(a))) for a in jax.tree.leaves((v_hand, g_hand)))
    record = {
        "estimator": name, "num_samples": n, "dim": config.dim,
        "sfe_seconds": ours["median_seconds"], "hand_seconds": hand["median_seconds"],
        "forward_seconds": forward,
        "sfe_over_hand": ours["median_seconds"] / hand["median_seconds"],
        "sfe_over_forward": ours["median_seconds"] / forward,
        "hand_over_forward": hand["median_seconds"] / forward,
        # Medians of the per-round ratios (the runs of one round are back to back) and ratios of the fastest
        # runs: both less sensitive than the ratio of medians to other processes competing for the machine.
        "sfe_over_hand_paired": _paired_ratio(ours["times"], hand["times"]),
        "sfe_over_forward_paired": _paired_ratio(ours["times"], timings["forward"]["times"]),
        "sfe_over_hand_min": ours["min_seconds"] / hand["min_seconds"],
        # The A/A control: two copies of the same program; how far this is from 1 is the measurement noise.
        "hand_copy_over_hand_paired": _paired_ratio(timings[f"{name}/hand-copy"]["times"], hand["times"]),
        "sfe_over_forward_min": ours["min_seconds"] / timings["forward"]["min_seconds"],
        "sfe_min_seconds": ours["min_seconds"], "hand_min_seconds": hand["min_seconds"],
        "forward_min_seconds": timings["forward"]["min_seconds"],
        "sfe_compile_seconds": ours["compile_seconds"], "hand_compile_seconds": hand["compile_seconds"],
        "sfe_flops": ours["flops"], "hand_flops": hand["flops"], "forward_flops": timings["forward"]["flops"],
        "sfe_bytes": ours["bytes_accessed"], "hand_bytes": hand["bytes_accessed"],
        "forward_bytes": timings["forward"]["bytes_accessed"],
        "sfe_hlo_instructions": ours["hlo_instructions"], "hand_hlo_instructions": hand["hlo_instructions"],
        "max_abs_diff_sfe_hand": max_diff, "relative_diff_sfe_hand": max_diff / max(scale, 1e-30),
        "repeats": len(ours["times"]),
        "estimates_per_second": 1.0 / ours["median_seconds"],
        "samples_per_second": n / ours["median_seconds"],
    }
    records.append(record)
  return records


def cells(config: ThroughputConfig) -> list[tuple[str, Callable[[], list[dict[str, Any]]]]]:
  """One cell per ``num_samples``: all variants of one size are timed together (interleaved)."""
  report.check_subset(config.estimators, ESTIMATORS, "estimators")
  return [(f"throughput/D={config.dim}/N={n}/{'+'.join(config.estimators)}/repeats={config.repeats}",
           functools.partial(measure_size, config, n)) for n in config.sample_sizes]


def plot(records: list[dict[str, Any]], config: ThroughputConfig, out_dir: str) -> list[str]:
  """``throughput.png``: median seconds per call against num_samples, sfe / hand-written / forward."""
  import matplotlib  # noqa: PLC0415 (optional dependency, in the bench extra)

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # noqa: PLC0415

  names = [e for e in ESTIMATORS if any(r["estimator"] == e for r in records)]
  fig, axes = plt.subplots(1, max(len(names), 1), figsize=(5 * max(len(names), 1), 4), squeeze=False)
  for ax, name in zip(axes[0], names):
    rows = sorted((r for r in records if r["estimator"] == name), key=lambda r: r["num_samples"])
    ns = [r["num_samples"] for r in rows]
    for field, label in (("sfe_seconds", "sfe_jax"), ("hand_seconds", "hand-written JAX"),
                         ("forward_seconds", "forward estimate only")):
      ax.plot(ns, [float(r[field]) for r in rows], "o-", label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("num_samples")
    ax.set_ylabel("median seconds per call")
    ax.set_title(f"{name}, D = {config.dim}, {rows[0]['device'] if rows and 'device' in rows[0] else ''}")
    ax.legend(fontsize=8)
  fig.tight_layout()
  path = os.path.join(out_dir, "throughput.png")
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return [path]


def run(config: ThroughputConfig, out_dir: str | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
  """Runs (or resumes, from ``out_dir/throughput.jsonl``) the throughput benchmark and writes its reports.

  Returns:
    ``{"records": [...], "markdown": str, "meta": {...}, "paths": {...}}``.
  """
  return store.run_suite(
      "throughput", cells(config), lambda records, env: to_markdown(records, config, env),
      lambda records, out: plot(records, config, out), out_dir, config.seed, log,
      meta={"config": dataclasses.asdict(config),
            "targets": {"sfe_over_hand": OVERHEAD_TARGET, "sfe_over_forward": GRADIENT_TARGET}})


def _paired_ratio(numerator: list[float], denominator: list[float]) -> float:
  return float(statistics.median(a / b for a, b in zip(numerator, denominator)))


def _verdict(value: float, target: float) -> str:
  return "ok" if value <= target else "**over**"


def to_markdown(records: list[dict[str, Any]], config: ThroughputConfig, env: dict[str, Any]) -> str:
  columns = ["estimator", "N", "runs", "sfe (ms)", "hand-written (ms)", "forward (ms)", "sfe / hand", "",
             "sfe / forward", "", "hand / forward", "sfe / hand (paired)", "A/A: hand copy / hand (paired)",
             "sfe / forward (paired)",
             "flops sfe / hand", "bytes sfe / hand", "HLO instr. sfe / hand", "max rel. diff sfe vs hand"]

  def ratio(a, b):
    return None if a is None or b in (None, 0) else a / b

  rows = [[r["estimator"], r["num_samples"], r["repeats"], r["sfe_seconds"] * 1e3, r["hand_seconds"] * 1e3,
           r["forward_seconds"] * 1e3, round(r["sfe_over_hand"], 3), _verdict(r["sfe_over_hand"], OVERHEAD_TARGET),
           round(r["sfe_over_forward"], 2), _verdict(r["sfe_over_forward"], GRADIENT_TARGET),
           round(r["hand_over_forward"], 2), round(r["sfe_over_hand_paired"], 3),
           round(r["hand_copy_over_hand_paired"], 3), round(r["sfe_over_forward_paired"], 2),
           ratio(r["sfe_flops"], r["hand_flops"]), ratio(r["sfe_bytes"], r["hand_bytes"]),
           f"{r['sfe_hlo_instructions']} / {r['hand_hlo_instructions']}", r["relative_diff_sfe_hand"]]
          for r in records]
  return "\n\n".join([
      "# Throughput benchmark: sfe_jax against hand-written JAX and the forward pass",
      f"`sfe.value_and_grad` on `distrax.Normal(loc, scale)` with D = {config.dim} variables and "
      "f(x) = sum((x - 0.5)^2). Median of at least "
      f"{config.repeats} runs (more for fast calls, about {config.min_seconds:g} s of runs per function, at most "
      f"{config.max_repeats}) after {config.warmup} warm-up runs, all jitted, `block_until_ready`, runs of one N "
      "interleaved in a random order. Targets: sfe / hand within "
      f"{OVERHEAD_TARGET:.2f} (library overhead), sfe / forward under {GRADIENT_TARGET:g} (cost of the gradient "
      "over the Monte Carlo estimate itself). Flops and bytes are XLA's cost analysis of the compiled functions.",
      report.environment_markdown(env),
      report.markdown_table(columns, rows),
      "hand-written: `jax.random.normal`, the Gaussian log-density formula, a stop-gradient surrogate and "
      "`jax.value_and_grad`, no sfe_jax and no distrax. forward: jitted `mean(f(loc + scale * eps))`. "
      "(paired) columns: the median over rounds of the ratio of back-to-back runs, less sensitive than the ratio "
      "of medians to other processes competing for the machine (see the load average above; the CSV and JSON "
      "also have ratios of the fastest runs). A/A: a second compiled copy of the hand-written function against "
      "the first; its distance from 1 is the measurement noise of this machine at the time of the run. Flops, bytes and HLO instructions describe the optimized XLA "
      "programs: equal values mean XLA compiled the same computation. The last column checks that sfe and the "
      "hand-written version compute the same numbers from the same key.",
  ])
