"""The functions the throughput suite times (sfe_jax, hand-written JAX, the forward estimate), the timing
itself, and the cells: one per (D, N), every variant of that size timed together, interleaved."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import sfe_jax as sfe
from benchmarks import suite
from benchmarks.throughput.problems import (
  EVALUATIONS_PER_SAMPLE,
  FAMILY,
  GUMBEL_TEMPERATURE,
  HAND_WRITTEN,
  MODE_ESTIMATORS,
  SAMPLE_AXIS,
  SUITE,
  ThroughputConfig,
  bernoulli_builder,
  build_estimator,
  dist_builder,
  elements,
  evaluations_per_sample,
  f,
  f_bits,
  initial_params,
)
from benchmarks.timing import paired_ratio, time_interleaved

sg = jax.lax.stop_gradient

# ----------------------------------------------------------------------------------------------------------
# The functions that are timed.
# ----------------------------------------------------------------------------------------------------------


def sfe_function(
  name: str,
  num_samples: int,
  dim: int,
  chunk_size: int | None = None,
  sample_sharding: NamedSharding | None = None,
) -> Callable:
  """``(params, key) -> (value, grads)`` through sfe_jax, with ``num_samples`` samples of dimension ``dim``.

  Args:
    name: an estimator of ``ESTIMATORS``.
    num_samples: samples per estimate (times ``evaluations_per_sample`` evaluations of f).
    dim: the dimension ``D``.
    chunk_size: passed on to ``sfe.value_and_grad`` (``None``: the unchunked call).
    sample_sharding: passed on to ``sfe.value_and_grad`` (``None``: one device).
  """
  estimator = build_estimator(name)
  cost, builder = (f, dist_builder) if FAMILY[name] == "normal" else (f_bits, bernoulli_builder)
  evaluations = num_samples * evaluations_per_sample(name, dim)
  entry = sfe.objectives.value_and_grad if name in ("iwae", "dreg", "vimco") else sfe.value_and_grad
  modes = {}
  if chunk_size is not None:
    modes["chunk_size"] = chunk_size
  if sample_sharding is not None:
    modes["sample_sharding"] = sample_sharding

  def run(params, key):
    value, grads, _ = entry(estimator, cost, builder, params, key, num_samples=evaluations, **modes)
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


def sharding_devices() -> list[jax.Device]:
  """Every device of the default device's platform (``--device`` sets it): the mesh of the sharded rows."""
  default = jax.config.jax_default_device
  if default is None:
    return jax.devices()
  return jax.devices(default if isinstance(default, str) else default.platform)


def sample_sharding() -> NamedSharding:
  """``NamedSharding(Mesh(devices, ("samples",)), P("samples"))`` over :func:`sharding_devices`."""
  return NamedSharding(Mesh(np.array(sharding_devices()), (SAMPLE_AXIS,)), PartitionSpec(SAMPLE_AXIS))


# ----------------------------------------------------------------------------------------------------------
# Timing.
# ----------------------------------------------------------------------------------------------------------
# ----------------------------------------------------------------------------------------------------------
# The cells.
# ----------------------------------------------------------------------------------------------------------


def chunked(config: ThroughputConfig, n: int) -> bool:
  """Whether the chunked rows run at ``num_samples = n``: a chunk size below N (a chunk of N is unchunked)."""
  return config.chunk_size is not None and config.chunk_size < n


def sharded_devices(config: ThroughputConfig, n: int) -> int | None:
  """The number of devices of the sharded rows at ``num_samples = n``; ``None`` where they do not run."""
  if not config.sharded:
    return None
  devices = len(sharding_devices())
  return devices if n % devices == 0 else None


def measure_size(config: ThroughputConfig, dim: int, n: int) -> list[dict[str, Any]]:
  """Times every variant at ``D = dim``, ``num_samples = n``; one record per estimator and mode.

  The estimators of one family (Gaussian or Bernoulli) are timed together, interleaved with their family's
  forward estimate and hand-written versions; the chunked and sharded calls of ``MODE_ESTIMATORS`` follow the
  plain call's record.
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
  chunk = config.chunk_size if chunked(config, n) else None
  devices = sharded_devices(config, n)
  sharding = sample_sharding() if devices is not None else None
  functions = {"forward": forward_function(n, family)}
  for name in names:
    functions[f"{name}/sfe"] = sfe_function(name, n, dim)
    if name in HAND_WRITTEN:
      functions[f"{name}/hand"] = hand_function(name, n)
      functions[f"{name}/hand-copy"] = hand_function(name, n)
    if name in MODE_ESTIMATORS and chunk is not None:
      functions[f"{name}/sfe-chunked"] = sfe_function(name, n, dim, chunk_size=chunk)
    if name in MODE_ESTIMATORS and sharding is not None:
      functions[f"{name}/sfe-sharded"] = sfe_function(name, n, dim, sample_sharding=sharding)
  timings = time_interleaved(
    functions,
    params,
    jax.random.fold_in(key, n),
    repeats=config.repeats,
    warmup=config.warmup,
    min_seconds=config.min_seconds,
    max_repeats=config.max_repeats,
  )
  records = []
  for name in names:
    unchunked = timings[f"{name}/sfe"]
    modes: list[tuple[str, str, dict[str, Any]]] = [("unchunked", f"{name}/sfe", {})]
    if f"{name}/sfe-chunked" in timings:
      modes.append(("chunked", f"{name}/sfe-chunked", {"chunk_size": chunk}))
    if f"{name}/sfe-sharded" in timings:
      platform = sharding_devices()[0].platform
      modes.append(("sharded", f"{name}/sfe-sharded", {"sharding_devices": devices, "sharding_platform": platform}))
    for mode, label, fields in modes:
      ours = timings[label]
      record = {
        "estimator": name,
        "family": family,
        "num_samples": n,
        "dim": dim,
        "mode": mode,
        "chunk_size": None,
        "sharding_devices": None,
        "sharding_platform": None,
        **fields,
        **_timing_fields(name, n, ours, timings["forward"]),
      }
      # The library's own unchunked call in the same run: what chunking or sharding costs or saves.
      record["sfe_over_unchunked"] = (
        None if mode == "unchunked" else ours["median_seconds"] / unchunked["median_seconds"]
      )
      record["sfe_over_unchunked_paired"] = (
        None if mode == "unchunked" else paired_ratio(ours["times"], unchunked["times"])
      )
      # Chunks draw from their own keys (other numbers); sharded draws are those of one device (same numbers).
      record.update(_hand_fields(name, timings, ours, params, key, compare=mode != "chunked"))
      records.append(record)
  return records


def _timing_fields(name: str, n: int, ours: dict[str, Any], fwd: dict[str, Any]) -> dict[str, Any]:
  """The timings of one sfe_jax function (``ours``), against the forward estimate of the same run."""
  return {
    "sfe_seconds": ours["median_seconds"],
    "forward_seconds": fwd["median_seconds"],
    "sfe_over_forward": ours["median_seconds"] / fwd["median_seconds"],
    # Medians of the per-round ratios (the runs of one round are back to back) and ratios of the fastest
    # runs: both less sensitive than the ratio of medians to other processes competing for the machine.
    "sfe_over_forward_paired": paired_ratio(ours["times"], fwd["times"]),
    "sfe_over_forward_min": ours["min_seconds"] / fwd["min_seconds"],
    "sfe_min_seconds": ours["min_seconds"],
    "forward_min_seconds": fwd["min_seconds"],
    # Compilation is timed apart and excluded from every timed figure (see time_interleaved).
    "sfe_compile_seconds": ours["compile_seconds"],
    "forward_compile_seconds": fwd["compile_seconds"],
    "compilations_while_timed": ours["compilations_while_timed"],
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


def _hand_fields(
  name: str, timings: dict[str, Any], ours: dict[str, Any], params: Any, key: jax.Array, compare: bool = True
) -> dict[str, Any]:
  """The comparison with the (unchunked) hand-written version; ``None`` fields for estimators that have none.

  ``compare=False`` leaves out the check that both compute the same numbers (the chunked calls draw others).
  """
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
  max_diff = relative = None
  if compare:
    v_sfe, g_sfe = ours["compiled"](params, key)
    v_hand, g_hand = hand["compiled"](params, key)
    max_diff = max(
      float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves((v_sfe, g_sfe)), jax.tree.leaves((v_hand, g_hand)))
    )
    scale = max(float(jnp.max(jnp.abs(a))) for a in jax.tree.leaves((v_hand, g_hand)))
    relative = max_diff / max(scale, 1e-30)
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
    "relative_diff_sfe_hand": relative,
  }


def cells(config: ThroughputConfig) -> list[suite.Cell]:
  """One cell per (D, N): all variants of one size are timed together (interleaved).

  The id names the chunk size and the number of devices of the sharded rows (``sharded=none`` without them):
  a run with other modes, or on another number of devices, does not reuse the cell.
  """
  sharded = len(sharding_devices()) if config.sharded else "none"
  return [
    (
      f"{SUITE}/D={d}/N={n}/{'+'.join(config.estimators)}/repeats={config.repeats}"
      f"/chunk={config.chunk_size}/sharded={sharded}",
      functools.partial(measure_size, config, d, n),
    )
    for d in config.dims
    for n in config.sample_sizes
    if d * n <= config.max_elements
  ]
