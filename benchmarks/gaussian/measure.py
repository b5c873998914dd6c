"""The estimators of the variance suite, how one cell is measured and timed, and the cells.

A cell is one estimator on one problem: ``R`` independent estimates by :func:`sfe_jax.diagnostics.gradient_moments`
inside one ``jax.jit``-compiled function of ``(params, key)``, compiled ahead of time (``compile_seconds``), then
timed (``seconds``: the median of at least 3 calls, each ended by ``jax.block_until_ready``), so that no timed
figure holds a compilation; JAX's compilation events during the timed calls are counted
(``compilations_while_timed``, 0).
"""

from __future__ import annotations

import functools
import hashlib
import statistics
import time
from collections.abc import Callable
from typing import Any

import distrax
import jax
import jax.numpy as jnp

import sfe_jax as sfe
from benchmarks import suite
from benchmarks.gaussian.problems import (
  ESTIMATORS,
  LEAVES,
  PARAMS,
  SUITE,
  Problem,
  VarianceConfig,
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
  """One cell per (problem, estimator): its id and the function that measures it (two records, mu and sigma)."""
  return [
    (
      cell_id(problem, label, config),
      functools.partial(measure, problem, label, config, problem_key(config, problem, label)),
    )
    for problem in config.problems
    for label in config.estimators
  ]


def _stable_int(text: str) -> int:
  """A hash of ``text`` that is the same in every process (Python's ``hash`` of a str is salted)."""
  return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")
