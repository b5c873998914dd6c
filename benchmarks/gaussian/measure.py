"""The estimators of the variance suite, how one cell is measured and timed, and the cells.

A cell is one estimator on one problem: ``R`` independent estimates by :func:`sfe_jax.diagnostics.gradient_moments`
inside one ``jax.jit``-compiled function of ``(params, key)``, compiled ahead of time (``compile_seconds``), then
timed (``seconds``: the median of at least 3 calls, each ended by ``jax.block_until_ready``), so that no timed
figure holds a compilation; JAX's compilation events during the timed calls are counted
(``compilations_while_timed``, 0). Its records have ``kind="single"``.

A cell of the sampler study (``kind="sampler"``, :func:`measure_samplers`) is one estimator on one problem at one
size ``N``, for every sampler of the configuration: per sampler, ``R`` independent ``N``-sample estimates in one
compiled function (a ``jax.vmap`` over keys, in batches of ``chunk_samples // N`` repeats), the functions of the
samplers compiled ahead of time and timed interleaved (:func:`benchmarks.timing.time_interleaved`), so that the
ratio of a sampler's seconds to i.i.d.'s is the median of per-round ratios of back-to-back calls.
"""

from __future__ import annotations

import functools
import hashlib
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
from benchmarks import suite
from benchmarks import timing as timing_lib
from benchmarks.gaussian.problems import (
  ESTIMATORS,
  LEAVES,
  PARAMS,
  SUITE,
  WITH_EXACT_VARIANCE,
  Problem,
  VarianceConfig,
  antithetic_ratio,
  cost,
  exact,
  optimal_baseline_excess,
)
from benchmarks.timing import count_compilations

TIMED_MIN_CALLS = 3
"""A cell is timed over at least this many calls (the median drops the first run's one-time costs) ..."""
TIMED_MIN_SECONDS = 0.2
"""... and more for a fast cell, until the calls add up to this ..."""
TIMED_MAX_CALLS = 10
"""... or until there are this many."""

SAMPLER_TIMED_ROUNDS = 3
"""The sampler study times its samplers interleaved over at least this many rounds ..."""
SAMPLER_TIMED_MAX_ROUNDS = 50
"""... more for fast cells, until the slowest sampler's calls add up to ``TIMED_MIN_SECONDS``, at most this many."""
ROUNDING_ULPS = 16
"""The mean check of the sampler study allows a float32 rounding error of this many ulps of ``|dF| + sd`` (sd: the
standard deviation of one i.i.d. sample's term): an estimate is a float32 average, and the quantile transform
rounds, so that, e.g., the pairs ``(u, 1 - u)`` are reflections only up to rounding. Without it, an estimate whose
sampling variance is at the rounding level (antithetic pathwise on ``(x-k)^2``, exact up to rounding) would be
flagged for a bias of one part in 10^8."""


def build_estimator(label: str) -> sfe.Estimator:
  """The estimator named ``label`` (one of ``ESTIMATORS``; the package docstring says what each is)."""
  if label == "SF":
    return sfe.score_function()
  if label == "SF*":
    return sfe.score_function(sfe.baselines.optimal())
  if label == "PW":
    return sfe.pathwise()
  if label == "MVD":
    return sfe.measure_valued(coupling=True)
  if label == "SF+DM":
    return sfe.with_control_variate(sfe.score_function(), sfe.control_variates.delta_method())
  raise ValueError(f"unknown estimator {label!r}; expected one of {ESTIMATORS}.")


def dist_builder(params):
  return distrax.Normal(params["loc"], params["scale"])


def timed_moments(
  estimator: sfe.Estimator,
  f: Callable,
  params: Any,
  key: jax.Array,
  *,
  num_samples: int,
  num_repeats: int,
  batch_size: int | None,
) -> tuple[sfe.diagnostics.GradientMoments, dict[str, Any]]:
  """:func:`sfe_jax.diagnostics.gradient_moments`, compiled first, then timed in its steady state.

  Returns:
    ``(moments, timing)``; ``timing`` has ``compile_seconds`` (tracing, lowering and XLA compilation, ahead of
    time), ``seconds`` (the median of the timed calls of the compiled function, each all ``num_repeats``
    estimates and their moments), ``timed_calls`` and ``compilations_while_timed`` (JAX compilation events
    during the timed calls).
  """

  def moments_of(p, k):
    return sfe.diagnostics.gradient_moments(
      estimator, f, dist_builder, p, k, num_samples=num_samples, num_repeats=num_repeats, batch_size=batch_size
    )

  start = time.perf_counter()
  compiled = jax.jit(moments_of).lower(params, key).compile()
  compile_seconds = time.perf_counter() - start
  times: list[float] = []
  with count_compilations() as events:
    while len(times) < TIMED_MIN_CALLS or (sum(times) < TIMED_MIN_SECONDS and len(times) < TIMED_MAX_CALLS):
      start = time.perf_counter()
      moments = jax.block_until_ready(compiled(params, key))  # the same key: every call computes the same numbers
      times.append(time.perf_counter() - start)
  timing = {
    "compile_seconds": compile_seconds,
    # The median, not the fastest: a long call averages over the load of the machine, and so does the median of
    # short ones (their minimum would favour fast cells on a loaded machine).
    "seconds": statistics.median(times),
    "timed_calls": len(times),
    "compilations_while_timed": len(events),
  }
  return moments, timing


def measure(problem: Problem, label: str, config: VarianceConfig, key: jax.Array) -> list[dict[str, Any]]:
  """Measures one estimator on one problem: one record per parameter (mu, sigma)."""
  ref = exact(problem, config.mu, config.sigma)
  estimator = build_estimator(label)
  if label == "SF*":
    n, repeats = config.optimal_baseline_samples, config.optimal_baseline_repeats
    excess = optimal_baseline_excess(problem, n, config.mu, config.sigma)
  else:
    # One sample per estimate; one base sample for MVD, whose num_samples counts its 4 evaluations of f.
    n, repeats, excess = (4 if label == "MVD" else 1), config.num_repeats, (0.0, 0.0)
  batch_size = None if config.chunk_samples is None else max(1, config.chunk_samples // n)
  params = {"loc": jnp.asarray(config.mu, jnp.float32), "scale": jnp.asarray(config.sigma, jnp.float32)}
  moments, timing = timed_moments(
    estimator, cost(problem), params, key, num_samples=n, num_repeats=repeats, batch_size=batch_size
  )
  gradient_bias = sfe.diagnostics.bias(moments, {"loc": ref.grad[0], "scale": ref.grad[1]})
  seconds = timing["seconds"]
  records = []
  for i, param in enumerate(PARAMS):
    leaf = LEAVES[param]
    mean, mean_se = float(moments.mean[leaf]), float(moments.std_error[leaf])
    # Single-sample equivalents: an N-sample average has 1/N of the single-sample variance (MVD: N base samples
    # of 4 evaluations each).
    samples = n // 4 if label == "MVD" else n
    variance = samples * float(moments.variance[leaf])
    variance_se = samples * float(moments.variance_std_error[leaf])
    exact_grad = ref.grad[i]
    mean_ok = abs(mean - exact_grad) <= config.num_se * mean_se
    if label in ref.variance:
      exact_var = ref.variance[label][i]
      # What N * Var should be at this N (exact_var itself except for SF*), and the model error allowed for.
      expected_var = exact_var + excess[i]
      allowance = 2 * excess[i] ** 2 / abs(exact_var) if excess[i] else 0.0
      tolerance = config.num_se * variance_se + allowance
      variance_ok = abs(variance - expected_var) <= tolerance
      variance_z = (variance - expected_var) / variance_se if variance_se > 0 else 0.0
    else:  # No exact value to compare with.
      exact_var = expected_var = tolerance = variance_z = None
      allowance, variance_ok = 0.0, True
    records.append(
      {
        "kind": "single",
        "f": problem.family,
        "k": problem.k,
        "estimator": label,
        "param": param,
        "num_samples": n,
        "num_repeats": repeats,
        "exact_grad": exact_grad,
        "mean": mean,
        "mean_se": mean_se,
        "mean_z": float(gradient_bias.z_score[leaf]),
        "exact_variance": exact_var,
        "expected_variance": expected_var,
        "variance": variance,
        "variance_se": variance_se,
        "variance_z": variance_z,
        "variance_tolerance": tolerance,
        "model_allowance": allowance,
        "mean_ok": bool(mean_ok),
        "variance_ok": bool(variance_ok),
        # Steady-state seconds of the compiled batch of repeats; the compilation is timed apart.
        **timing,
        "seconds_per_estimate": seconds / repeats,
        # Variance per unit of compute: what an estimator costs to reach a given precision.
        "work_normalised_variance": float(moments.variance[leaf]) * seconds / repeats,
      }
    )
  return records


def sampler_estimates_fn(
  estimator: sfe.Estimator, f: Callable, sampler: str, *, num_samples: int, num_repeats: int, batch_size: int | None
) -> Callable[[Any, jax.Array], jax.Array]:
  """``fn(params, key)``: ``num_repeats`` independent ``num_samples``-sample estimates, shape ``(repeats, 2)``.

  Each estimate is :func:`sfe_jax.value_and_grad` with ``sampler`` and its own key (``jax.random.split(key,
  num_repeats)``); column ``i`` is the gradient with respect to ``PARAMS[i]``. The repeats are vmapped, in
  batches of ``batch_size`` (``jax.lax.map``) when that is fewer than all of them.
  """

  def one(params, key):
    grads = sfe.value_and_grad(estimator, f, dist_builder, params, key, num_samples=num_samples, sampler=sampler)[1]
    return jnp.stack([grads[LEAVES[p]] for p in PARAMS])

  def estimates(params, key):
    keys = jax.random.split(key, num_repeats)
    if batch_size is None or batch_size >= num_repeats:
      return jax.vmap(functools.partial(one, params))(keys)
    return jax.lax.map(functools.partial(one, params), keys, batch_size=batch_size)

  return estimates


def measure_samplers(
  problem: Problem, label: str, num_samples: int, config: VarianceConfig, key: jax.Array
) -> list[dict[str, Any]]:
  """One cell of the sampler study: every sampler at one size; one record per (sampler, parameter)."""
  ref = exact(problem, config.mu, config.sigma)
  estimator = build_estimator(label)
  f = cost(problem)
  n, repeats = num_samples, config.sampler_repeats
  batch_size = None if config.chunk_samples is None else max(1, config.chunk_samples // n)
  params = {"loc": jnp.asarray(config.mu, jnp.float32), "scale": jnp.asarray(config.sigma, jnp.float32)}
  functions = {
    s: sampler_estimates_fn(estimator, f, s, num_samples=n, num_repeats=repeats, batch_size=batch_size)
    for s in config.samplers
  }
  timed = timing_lib.time_interleaved(
    functions,
    params,
    jax.random.fold_in(key, 0),
    repeats=SAMPLER_TIMED_ROUNDS,
    warmup=1,
    min_seconds=TIMED_MIN_SECONDS,
    max_repeats=SAMPLER_TIMED_MAX_ROUNDS,
  )
  # Evaluations per estimate in the estimator's own unit: base samples (MVD: 4 evaluations each).
  per_estimate = n // 4 if label == "MVD" else n
  single = ref.variance.get(label) if label in WITH_EXACT_VARIANCE else None
  anti = antithetic_ratio(problem, label, config.mu, config.sigma)
  records = []
  for s in config.samplers:
    result = timed[s]
    estimates = np.asarray(result["compiled"](params, _stable_fold(key, s)), np.float64)
    variance, variance_se = sfe.diagnostics.variance_and_std_error(estimates, axis=0)
    mean = estimates.mean(axis=0)
    seconds_per_estimate = result["median_seconds"] / repeats
    seconds_ratio = timing_lib.paired_ratio(result["times"], timed["iid"]["times"])
    for i, param in enumerate(PARAMS):
      exact_grad = ref.grad[i]
      var, var_se = float(variance[i]), float(variance_se[i])
      mean_se = math.sqrt(var / repeats)
      sd = math.sqrt(single[i] if single is not None else per_estimate * var)  # of one sample's term
      rounding = ROUNDING_ULPS * float(np.finfo(np.float32).eps) * (abs(exact_grad) + sd)
      mean_tolerance = config.num_se * mean_se + rounding
      mean_ok = abs(float(mean[i]) - exact_grad) <= mean_tolerance
      # Only i.i.d. sampling has an exact variance here: the single-sample variance over N.
      exact_var = single[i] / per_estimate if (single is not None and s == "iid") else None
      variance_ok = exact_var is None or abs(var - exact_var) <= config.num_se * var_se
      records.append(
        {
          "kind": "sampler",
          "f": problem.family,
          "k": problem.k,
          "estimator": label,
          "sampler": s,
          "param": param,
          "num_samples": n,
          "num_repeats": repeats,
          "exact_grad": exact_grad,
          "mean": float(mean[i]),
          "mean_se": mean_se,
          "mean_z": (float(mean[i]) - exact_grad) / mean_se if mean_se > 0 else 0.0,
          "rounding_allowance": rounding,
          "mean_ok": bool(mean_ok),
          # The variance of one N-sample estimate, its standard error (fourth central moment) and N x it.
          "variance": var,
          "variance_se": var_se,
          "n_times_variance": n * var,
          "exact_variance": exact_var,
          "variance_ok": bool(variance_ok),
          # Antithetic only: its exact variance ratio to iid at the same N (problems.antithetic_ratio).
          "exact_antithetic_ratio": anti[i] if (anti is not None and s == "antithetic") else None,
          "compile_seconds": result["compile_seconds"],
          "seconds": result["median_seconds"],
          "timed_calls": len(result["times"]),
          "compilations_while_timed": result["compilations_while_timed"],
          "seconds_per_estimate": seconds_per_estimate,
          # The median over rounds of this sampler's seconds over i.i.d.'s, the calls of a round back to back.
          "seconds_ratio_to_iid": seconds_ratio,
          "work_normalised_variance": var * seconds_per_estimate,
        }
      )
  return records


def sampler_cell_id(problem: Problem, label: str, num_samples: int, config: VarianceConfig) -> str:
  return (
    f"{SUITE}/sampler/{problem.family}/k={problem.k:g}/{label}/N={num_samples}/repeats={config.sampler_repeats}"
    f"/samplers={'+'.join(config.samplers)}"
  )


def sampler_key(config: VarianceConfig, problem: Problem, label: str, num_samples: int) -> jax.Array:
  """The key of a sampler cell (each sampler folds in its name): the same numbers in any selection."""
  return _stable_fold(problem_key(config, problem, label), f"sampler/N={num_samples}")


def cell_id(problem: Problem, label: str, config: VarianceConfig) -> str:
  return (
    f"{SUITE}/{problem.family}/k={problem.k:g}/{label}/repeats={config.num_repeats}"
    f"/sf*={config.optimal_baseline_repeats}x{config.optimal_baseline_samples}"
  )


def problem_key(config: VarianceConfig, problem: Problem, label: str) -> jax.Array:
  """The key of a cell, from the problem and the estimator alone: the same numbers in any selection and size."""
  key = jax.random.fold_in(jax.random.key(config.seed), _stable_int(problem.name))
  return jax.random.fold_in(key, _stable_int(label))


def cells(config: VarianceConfig) -> list[suite.Cell]:
  """One cell per (problem, estimator): its id and the function that measures it (two records, mu and sigma);
  then, for the sampler study, one per (problem, estimator, size): a record per (sampler, parameter)."""
  single = [
    (
      cell_id(problem, label, config),
      functools.partial(measure, problem, label, config, problem_key(config, problem, label)),
    )
    for problem in config.problems
    for label in config.estimators
  ]
  if not config.runs_sampler_study:
    return single
  return single + [
    (
      sampler_cell_id(problem, label, n, config),
      functools.partial(measure_samplers, problem, label, n, config, sampler_key(config, problem, label, n)),
    )
    for problem in config.sampler_problems
    for label in config.sampler_estimators
    for n in config.sampler_sizes
  ]


def _stable_fold(key: jax.Array, text: str) -> jax.Array:
  return jax.random.fold_in(key, _stable_int(text))


def _stable_int(text: str) -> int:
  """A hash of ``text`` that is the same in every process (Python's ``hash`` of a str is salted)."""
  return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")
