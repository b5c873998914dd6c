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
import statistics
import time
from collections.abc import Callable
from typing import Any

import distrax
import jax
import jax.numpy as jnp
import numpy as np

import sfe_jax as sfe
from benchmarks import report, store

sg = jax.lax.stop_gradient
ESTIMATORS = (
  "score_function",
  "score_function_loo",
  "pathwise",
  "measure_valued",
  "iwae",
  "dreg",
  "vimco",
  "arm",
  "disarm",
  "gumbel_softmax",
  "straight_through",
  "rebar",
  "relax",
)
# Not timed: sfe.enumerate() is exact, not Monte Carlo (its cost is the support size), and sfe.unordered_set()
# draws at most 16 distinct values from a support of at most 2**16, outside this sweep's sizes.
# The problem each estimator is timed on: a diagonal Gaussian, or D independent Bernoulli bits.
FAMILY = {
  "score_function": "normal",
  "score_function_loo": "normal",
  "pathwise": "normal",
  "measure_valued": "normal",
  "iwae": "normal",
  "dreg": "normal",
  "vimco": "normal",
  "arm": "bernoulli",
  "disarm": "bernoulli",
  "gumbel_softmax": "bernoulli",
  "straight_through": "bernoulli",
  "rebar": "bernoulli",
  "relax": "bernoulli",
}
# Estimators with a hand-written JAX version in this file (the others are compared with the forward pass only).
HAND_WRITTEN = ("score_function", "pathwise", "arm", "disarm", "gumbel_softmax", "straight_through")
# Evaluations of f per sample (num_samples counts samples; measure-valued: 2 per parameter coordinate).
EVALUATIONS_PER_SAMPLE = {"rebar": 3, "measure_valued": "4D"}
GUMBEL_TEMPERATURE = 0.5
OVERHEAD_TARGET = 1.05
GRADIENT_TARGET = 2.0


@dataclasses.dataclass(frozen=True)
class ThroughputConfig:
  """What the throughput benchmark measures.

  Attributes:
    dims: the values of ``D``, the number of variables (Gaussian or Bernoulli).
    sample_sizes: the ``num_samples`` values.
    max_elements: an estimator is skipped at a (D, N) pair where it would materialise more array elements
      than this (``N * D``, times ``4 D`` for measure-valued; see :func:`elements`).
    repeats: timed runs of each function, at least (the median is reported).
    warmup: untimed runs after compilation.
    min_seconds: more timed runs for fast functions, so that each is timed for about this long in total
      (at most ``max_repeats`` runs): medians of sub-millisecond calls need many runs.
    max_repeats: the cap on timed runs.
    estimators: a subset of ``ESTIMATORS``.
    seed: the PRNG seed.
  """

  dims: tuple[int, ...] = (100,)
  sample_sizes: tuple[int, ...] = (1_000, 10_000, 100_000)
  max_elements: int = 20_000_000
  repeats: int = 30
  warmup: int = 3
  min_seconds: float = 1.0
  max_repeats: int = 1_000
  estimators: tuple[str, ...] = ESTIMATORS
  seed: int = 0


PRESETS = {
  "quick": ThroughputConfig(
    dims=(100,), sample_sizes=(1_000, 10_000, 100_000), repeats=20, warmup=3, min_seconds=0.5, max_elements=50_000_000
  ),
  "full": ThroughputConfig(
    dims=(1, 10, 100, 1_000, 10_000),
    sample_sizes=(100, 1_000, 10_000, 100_000, 1_000_000),
    repeats=200,
    warmup=10,
    min_seconds=5.0,
    max_elements=100_000_000,
  ),
}


def f(x):
  return jnp.sum((x - 0.5) ** 2)


def f_bits(b):
  return jnp.sum((b.astype(jnp.float32) - 0.3) ** 2)


def dist_builder(params):
  return distrax.Normal(params["loc"], params["scale"])


def bernoulli_builder(params):
  # Float bits: the relaxation-based estimators need the samples' own dtype to hold relaxed values.
  return distrax.Bernoulli(logits=params["logits"], dtype=jnp.float32)


def initial_params(family: str, dim: int) -> dict[str, jax.Array]:
  if family == "normal":
    return {"loc": jnp.zeros(dim, jnp.float32), "scale": jnp.ones(dim, jnp.float32)}
  return {"logits": jnp.linspace(-1.0, 1.0, dim, dtype=jnp.float32)}


def _relax_control(cp, z):
  return jnp.sum(jnp.tanh(cp["w"] * z + cp["b"]))


def _build_estimator(name: str) -> sfe.Estimator:
  builders = {
    "score_function": sfe.score_function,
    "score_function_loo": lambda: sfe.score_function(sfe.baselines.leave_one_out()),
    "pathwise": sfe.pathwise,
    "iwae": sfe.objectives.iwae,
    "dreg": sfe.objectives.dreg,
    "vimco": sfe.objectives.vimco,
    "measure_valued": sfe.measure_valued,
    "arm": sfe.arm,
    "disarm": sfe.disarm,
    "gumbel_softmax": lambda: sfe.gumbel_softmax(GUMBEL_TEMPERATURE),
    "straight_through": sfe.straight_through,
    "rebar": sfe.rebar,
    "relax": lambda: sfe.relax(_relax_control, {"w": jnp.float32(0.1), "b": jnp.float32(0.0)}),
  }
  if name not in builders:
    raise ValueError(f"unknown estimator {name!r}; expected one of {ESTIMATORS}.")
  return builders[name]()


# ----------------------------------------------------------------------------------------------------------
# The functions that are timed.
# ----------------------------------------------------------------------------------------------------------


def evaluations_per_sample(name: str, dim: int) -> int:
  """Evaluations of ``f`` per sample: sfe's ``num_samples`` counts evaluations, this suite counts samples."""
  per_sample = EVALUATIONS_PER_SAMPLE.get(name, 1)
  return 4 * dim if per_sample == "4D" else per_sample


def sfe_function(name: str, num_samples: int, dim: int) -> Callable:
  """``(params, key) -> (value, grads)`` through sfe_jax, with ``num_samples`` samples of dimension ``dim``."""
  estimator = _build_estimator(name)
  cost, builder = (f, dist_builder) if FAMILY[name] == "normal" else (f_bits, bernoulli_builder)
  evaluations = num_samples * evaluations_per_sample(name, dim)
  entry = sfe.objectives.value_and_grad if name in ("iwae", "dreg", "vimco") else sfe.value_and_grad

  def run(params, key):
    value, grads, _ = entry(estimator, cost, builder, params, key, num_samples=evaluations)
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

  def bits_cost(b):
    return jnp.sum((b - 0.3) ** 2, axis=-1)

  def antithetic_surrogate(params, key, disarm):
    logits = params["logits"]
    phi = sg(logits)
    u = jax.random.uniform(key, (num_samples // 2,) + phi.shape, phi.dtype)
    logit_u = jnp.log(u) - jnp.log1p(-u)
    b, b_tilde = (logit_u < phi).astype(phi.dtype), (-logit_u < phi).astype(phi.dtype)
    fb, fbt = bits_cost(b), bits_cost(b_tilde)
    if disarm:
      weights = 0.5 * (b_tilde - b) * jax.nn.sigmoid(jnp.abs(phi))
    else:
      weights = u - 0.5
    g = jnp.mean((fbt - fb)[:, None] * weights, axis=0)
    return 0.5 * jnp.mean(fb + fbt) + jnp.sum(sg(g) * (logits - phi))

  def gumbel_surrogate(params, key):
    logits = params["logits"]
    z = logits + jax.random.logistic(key, (num_samples,) + logits.shape, logits.dtype)
    return jnp.mean(bits_cost(jax.nn.sigmoid(z / GUMBEL_TEMPERATURE)))

  def straight_through_surrogate(params, key):
    logits = params["logits"]
    probs = jax.nn.sigmoid(logits)
    u = jax.random.uniform(key, (num_samples,) + logits.shape, logits.dtype)
    hard = (u < sg(probs)).astype(logits.dtype)
    return jnp.mean(bits_cost(hard + (probs - sg(probs))))

  surrogate = {
    "score_function": score_function_surrogate,
    "pathwise": pathwise_surrogate,
    "straight_through": straight_through_surrogate,
    "arm": functools.partial(antithetic_surrogate, disarm=False),
    "disarm": functools.partial(antithetic_surrogate, disarm=True),
    "gumbel_softmax": gumbel_surrogate,
  }[name]
  return jax.value_and_grad(surrogate)


def forward_function(num_samples: int, family: str = "normal") -> Callable:
  """``(params, key) -> value``: the Monte Carlo estimate of ``E[f]`` alone (no gradient)."""

  def run_bits(params, key):
    logits = params["logits"]
    u = jax.random.uniform(key, (num_samples,) + logits.shape, logits.dtype)
    b = (jnp.log(u) - jnp.log1p(-u) < logits).astype(logits.dtype)
    return jnp.mean(jnp.sum((b - 0.3) ** 2, axis=1))

  if family == "bernoulli":
    return run_bits

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
  try:
    memory = compiled.memory_analysis()
    temp_bytes = int(memory.temp_size_in_bytes) if memory is not None else None
  except Exception:  # pragma: no cover - not every backend has one
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
    results[name] = {
      "compile_seconds": time.perf_counter() - start,
      "times": [],
      "compiled": compiled[name],
      **_cost_analysis(compiled[name]),
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


def elements(name: str, dim: int, n: int) -> int:
  """Array elements one call materialises, roughly: ``N * D`` per evaluation of f per sample."""
  return n * dim * (4 * dim if name == "measure_valued" else 1)


def measure_size(config: ThroughputConfig, dim: int, n: int) -> list[dict[str, Any]]:
  """Times every variant at ``D = dim``, ``num_samples = n``; one record per estimator.

  The estimators of one family (Gaussian or Bernoulli) are timed together, interleaved with their family's
  forward estimate and hand-written versions.
  """
  records = []
  for family in ("normal", "bernoulli"):
    names = [e for e in config.estimators if FAMILY[e] == family and elements(e, dim, n) <= config.max_elements]
    if names:
      records.extend(_measure_family(config, family, names, dim, n))
  return records


def _measure_family(config: ThroughputConfig, family: str, names: list[str], dim: int, n: int) -> list[dict[str, Any]]:
  params = initial_params(family, dim)
  key = jax.random.key(config.seed)
  records = []
  functions = {"forward": forward_function(n, family)}
  for name in names:
    functions[f"{name}/sfe"] = sfe_function(name, n, dim)
    if name in HAND_WRITTEN:
      functions[f"{name}/hand"] = hand_function(name, n)
      functions[f"{name}/hand-copy"] = hand_function(name, n)
  timings = time_interleaved(
    functions,
    params,
    jax.random.fold_in(key, n),
    repeats=config.repeats,
    warmup=config.warmup,
    min_seconds=config.min_seconds,
    max_repeats=config.max_repeats,
  )
  fwd = timings["forward"]
  for name in names:
    ours = timings[f"{name}/sfe"]
    record = {
      "estimator": name,
      "family": family,
      "num_samples": n,
      "dim": dim,
      "sfe_seconds": ours["median_seconds"],
      "forward_seconds": fwd["median_seconds"],
      "sfe_over_forward": ours["median_seconds"] / fwd["median_seconds"],
      # Medians of the per-round ratios (the runs of one round are back to back) and ratios of the fastest
      # runs: both less sensitive than the ratio of medians to other processes competing for the machine.
      "sfe_over_forward_paired": paired_ratio(ours["times"], fwd["times"]),
      "sfe_over_forward_min": ours["min_seconds"] / fwd["min_seconds"],
      "sfe_min_seconds": ours["min_seconds"],
      "forward_min_seconds": fwd["min_seconds"],
      "sfe_compile_seconds": ours["compile_seconds"],
      "sfe_flops": ours["flops"],
      "forward_flops": fwd["flops"],
      "sfe_bytes": ours["bytes_accessed"],
      "forward_bytes": fwd["bytes_accessed"],
      "sfe_hlo_instructions": ours["hlo_instructions"],
      "sfe_temp_bytes": ours["temp_bytes"],  # XLA's temporary buffers of the compiled gradient (its memory)
      "forward_temp_bytes": fwd["temp_bytes"],
      "repeats": len(ours["times"]),
      "estimates_per_second": 1.0 / ours["median_seconds"],
      "samples_per_second": n / ours["median_seconds"],
      "evaluations_per_sample": EVALUATIONS_PER_SAMPLE.get(name, 1),
    }
    record.update(_hand_fields(name, timings, ours, params, key))
    records.append(record)
  return records


def _hand_fields(
  name: str, timings: dict[str, Any], ours: dict[str, Any], params: Any, key: jax.Array
) -> dict[str, Any]:
  """The comparison with the hand-written version; ``None`` fields for estimators that have none."""
  fields = (
    "hand_seconds",
    "sfe_over_hand",
    "hand_over_forward",
    "sfe_over_hand_paired",
    "sfe_over_hand_min",
    "hand_copy_over_hand_paired",
    "hand_min_seconds",
    "hand_compile_seconds",
    "hand_flops",
    "hand_bytes",
    "hand_hlo_instructions",
    "max_abs_diff_sfe_hand",
    "relative_diff_sfe_hand",
  )
  if name not in HAND_WRITTEN:
    return dict.fromkeys(fields)
  hand, fwd = timings[f"{name}/hand"], timings["forward"]
  v_sfe, g_sfe = ours["compiled"](params, key)
  v_hand, g_hand = hand["compiled"](params, key)
  max_diff = max(
    float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves((v_sfe, g_sfe)), jax.tree.leaves((v_hand, g_hand)))
  )
  scale = max(float(jnp.max(jnp.abs(a))) for a in jax.tree.leaves((v_hand, g_hand)))
  return {
    "hand_seconds": hand["median_seconds"],
    "sfe_over_hand": ours["median_seconds"] / hand["median_seconds"],
    "hand_over_forward": hand["median_seconds"] / fwd["median_seconds"],
    "sfe_over_hand_paired": paired_ratio(ours["times"], hand["times"]),
    "sfe_over_hand_min": ours["min_seconds"] / hand["min_seconds"],
    # The A/A control: two copies of the same program; how far this is from 1 is the measurement noise.
    "hand_copy_over_hand_paired": paired_ratio(timings[f"{name}/hand-copy"]["times"], hand["times"]),
    "hand_min_seconds": hand["min_seconds"],
    "hand_compile_seconds": hand["compile_seconds"],
    "hand_flops": hand["flops"],
    "hand_bytes": hand["bytes_accessed"],
    "hand_hlo_instructions": hand["hlo_instructions"],
    "max_abs_diff_sfe_hand": max_diff,
    "relative_diff_sfe_hand": max_diff / max(scale, 1e-30),
  }


def cells(config: ThroughputConfig) -> list[tuple[str, Callable[[], list[dict[str, Any]]]]]:
  """One cell per ``num_samples``: all variants of one size are timed together (interleaved)."""
  report.check_subset(config.estimators, ESTIMATORS, "estimators")
  return [
    (
      f"throughput/D={d}/N={n}/{'+'.join(config.estimators)}/repeats={config.repeats}",
      functools.partial(measure_size, config, d, n),
    )
    for d in config.dims
    for n in config.sample_sizes
    if d * n <= config.max_elements
  ]


def plot(records: list[dict[str, Any]], config: ThroughputConfig, out_dir: str) -> list[str]:
  """``throughput.png``: median seconds per call against num_samples, sfe / hand-written / forward."""
  plt = report.pyplot(out_dir)
  names = [e for e in ESTIMATORS if any(r["estimator"] == e for r in records)]
  fig, axes = plt.subplots(1, max(len(names), 1), figsize=(5 * max(len(names), 1), 4), squeeze=False)
  styles = ("-", "--", ":", "-.")
  for ax, name in zip(axes[0], names):
    dims = sorted({int(r["dim"]) for r in records if r["estimator"] == name})
    for i, dim in enumerate(dims):
      rows = sorted(
        (r for r in records if r["estimator"] == name and int(r["dim"]) == dim), key=lambda r: r["num_samples"]
      )
      ns = [r["num_samples"] for r in rows]
      for j, (field, label) in enumerate(
        (("sfe_seconds", "sfe_jax"), ("hand_seconds", "hand-written JAX"), ("forward_seconds", "forward estimate only"))
      ):
        if all(r.get(field) is not None for r in rows):
          ax.plot(
            ns, [float(r[field]) for r in rows], "o" + styles[i % len(styles)], color=f"C{j}", label=f"{label}, D={dim}"
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


def run(config: ThroughputConfig, out_dir: str | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
  """Runs (or resumes, from ``out_dir/throughput.jsonl``) the throughput benchmark and writes its reports.

  Returns:
    ``{"records": [...], "markdown": str, "meta": {...}, "paths": {...}}``.
  """
  return store.run_suite(
    "throughput",
    config,
    cells(config),
    to_markdown,
    plot,
    out_dir,
    log,
    meta={"targets": {"sfe_over_hand": OVERHEAD_TARGET, "sfe_over_forward": GRADIENT_TARGET}},
  )


def paired_ratio(numerator: list[float], denominator: list[float]) -> float:
  return float(statistics.median(a / b for a, b in zip(numerator, denominator)))


def verdict(value: float | None, target: float) -> str:
  if value is None:
    return "—"
  return "ok" if value <= target else "**over**"


def _mib_pair(a: Any, b: Any) -> str:
  """``"a / b"`` in MiB (1 decimal); ``—`` for a missing figure (records written before it was measured)."""
  return " / ".join("—" if v is None else f"{float(v) / 2**20:.1f}" for v in (a, b))


def _ms(seconds: float | None) -> float | None:
  return None if seconds is None else seconds * 1e3


def _round(value: float | None, digits: int) -> float | None:
  return None if value is None else round(value, digits)


def to_markdown(records: list[dict[str, Any]], config: ThroughputConfig, env: dict[str, Any]) -> str:
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
    "flops sfe / hand",
    "bytes sfe / hand",
    "HLO instr. sfe / hand",
    "XLA temp MiB sfe / forward",
    "max rel. diff sfe vs hand",
  ]

  def ratio(a, b):
    return None if a is None or b in (None, 0) else a / b

  rows = [
    [
      r["estimator"],
      r["dim"],
      r["num_samples"],
      r["repeats"],
      r["sfe_seconds"] * 1e3,
      _ms(r["hand_seconds"]),
      r["forward_seconds"] * 1e3,
      _round(r["sfe_over_hand"], 3),
      verdict(r["sfe_over_hand"], OVERHEAD_TARGET),
      _round(r["sfe_over_forward"], 2),
      verdict(r["sfe_over_forward"], GRADIENT_TARGET),
      _round(r["hand_over_forward"], 2),
      _round(r["sfe_over_hand_paired"], 3),
      _round(r["hand_copy_over_hand_paired"], 3),
      _round(r["sfe_over_forward_paired"], 2),
      ratio(r["sfe_flops"], r["hand_flops"]),
      ratio(r["sfe_bytes"], r["hand_bytes"]),
      f"{r['sfe_hlo_instructions']} / {r['hand_hlo_instructions'] or '—'}",
      _mib_pair(r.get("sfe_temp_bytes"), r.get("forward_temp_bytes")),
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
      "sfe / forward ratios include that cost; D in {list(config.dims)}, N in "
      f"{list(config.sample_sizes)} (an estimator is skipped where it would materialise more than "
      f"{config.max_elements:.0e} elements: N x D, x 4D for measure-valued). Compile time is "
      "in the CSV/JSON (sfe_compile_seconds), apart from the run times. Median of at least "
      f"{config.repeats} runs (more for fast calls, about {config.min_seconds:g} s of runs per function, at most "
      f"{config.max_repeats}) after {config.warmup} warm-up runs, all jitted, `block_until_ready`, runs of one N "
      "interleaved in a random order. Targets: sfe / hand within "
      f"{OVERHEAD_TARGET:.2f} (library overhead), sfe / forward under {GRADIENT_TARGET:g} (cost of the gradient "
      "over the Monte Carlo estimate itself). Flops and bytes are XLA's cost analysis of the compiled functions.",
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
