r"""Time per estimate, and the report that puts moments, bias and time together.

* :func:`time_per_estimate`: the wall-clock time of one jitted gradient estimate;
* :func:`evaluate`: :func:`~sfe_jax.diagnostics.gradient_moments`, :func:`~sfe_jax.diagnostics.bias` and the
  time, plus the variance per unit of compute time.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, NamedTuple

import jax

from sfe_jax._src.core import api, checks, types
from sfe_jax._src.diagnostics.moments import (
  GradientBias,
  GradientMoments,
  bias,
  check_computation,
  gradient_moments,
  value_name,
)

Params = Any


class Timing(NamedTuple):
  """Wall-clock time of one jitted gradient estimate, in seconds.

  Attributes:
    median_seconds: the median over the timed runs (after warm-up).
    min_seconds: the fastest timed run.
    compile_seconds: tracing and compiling, measured separately (``jit(...).lower(...).compile()``).
  """

  median_seconds: float
  min_seconds: float
  compile_seconds: float


class Report(NamedTuple):
  r"""What :func:`evaluate` measured.

  Attributes:
    moments: a :class:`GradientMoments`.
    bias: a :class:`GradientBias`, or ``None`` when no exact gradient was given.
    timing: a :class:`Timing` of one estimate with ``num_samples`` samples.
    work_normalized_variance: ``moments.variance * timing.median_seconds`` per coordinate (the structure of
      params): the variance per unit of compute, in variance x seconds. The variance of an average of
      independent estimates computed in a fixed time budget ``T`` is ``work_normalized_variance / T``, so lower
      is better and estimators of different cost compare on equal terms (Glynn and Whitt 1992). For an unbiased
      estimator whose cost grows linearly with ``num_samples`` it does not depend on ``num_samples``, once
      ``num_samples`` is large enough for fixed per-call overheads not to matter.
    estimator_name: the estimator's (or objective's) ``name``.
    value_name: what ``moments.value_mean`` estimates: ``"E[f]"`` for an estimator, the bound for an
      objective.
  """

  moments: GradientMoments
  bias: GradientBias | None
  timing: Timing
  work_normalized_variance: Params
  estimator_name: str
  value_name: str = "E[f]"


# ----------------------------------------------------------------------------------------------------------
# Time.
# ----------------------------------------------------------------------------------------------------------


def _time_compiled(compiled, args_per_run, *, repeats: int, warmup: int) -> list[float]:
  for args in args_per_run[:warmup]:
    jax.block_until_ready(compiled(*args))
  seconds = []
  for args in args_per_run[warmup : warmup + repeats]:
    start = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    seconds.append(time.perf_counter() - start)
  return seconds


def time_per_estimate(
  estimator: types.Estimator,
  f: types.CostFn,
  dist_builder: types.DistBuilder,
  params: Params,
  key: types.PRNGKey,
  *,
  num_samples: int,
  repeats: int = 20,
  warmup: int = 2,
  state: Any = None,
  sampler: str = "iid",
  chunk_size: int | None = None,
) -> Timing:
  """Wall-clock seconds of one jitted :func:`sfe_jax.value_and_grad` call.

  The call is ``jax.jit``-compiled first (timed on its own as ``compile_seconds``), run ``warmup`` times
  untimed, then ``repeats`` times, each with a fresh key (keys are made before timing) and waited for with
  ``jax.block_until_ready``. The median is robust to the occasional slow run; report it, not the mean.
  The time is that of the device ``params`` live on (``jax.devices()[0]`` by default).

  Args:
    estimator, f, dist_builder, params, key, num_samples, state, sampler, chunk_size: as for
      :func:`sfe_jax.value_and_grad`.
    repeats: timed runs, at least 1.
    warmup: untimed runs before them, at least 0.

  Returns:
    A :class:`Timing` in seconds.

  Examples:
    >>> import jax, jax.numpy as jnp, distrax, sfe_jax as sfe
    >>> params = {"loc": jnp.zeros(3), "scale": jnp.ones(3)}
    >>> t = sfe.diagnostics.time_per_estimate(
    ...     sfe.pathwise(), lambda x: jnp.sum(x ** 2), lambda p: distrax.Normal(p["loc"], p["scale"]), params,
    ...     jax.random.key(0), num_samples=100, repeats=5)
    >>> t.median_seconds > 0
    True
  """
  check_computation(estimator)
  repeats = checks.check_static_int(repeats, "repeats", 1)
  warmup = checks.check_static_int(warmup, "warmup", 0)
  # Checked here as well as in value_and_grad, so that bad input fails before anything is compiled.
  prepared = api.prepare(estimator, f, dist_builder, params, key, num_samples, state)
  num_samples, state = prepared.num_samples, prepared.state

  split, diff = prepared.split, prepared.diff

  def run(d, s, k):
    value, grads, _ = api.value_and_grad_of(
      estimator, f, dist_builder, split.merge(d), k, num_samples, s, chunk_size=chunk_size, sampler=sampler
    )
    return value, grads

  start = time.perf_counter()
  compiled = jax.jit(run).lower(diff, state, key).compile()
  compile_seconds = time.perf_counter() - start
  keys = jax.block_until_ready(list(jax.random.split(key, warmup + repeats)))
  seconds = _time_compiled(compiled, [(diff, state, k) for k in keys], repeats=repeats, warmup=warmup)
  return Timing(
    median_seconds=float(statistics.median(seconds)),
    min_seconds=float(min(seconds)),
    compile_seconds=float(compile_seconds),
  )


# ----------------------------------------------------------------------------------------------------------
# Everything at once.
# ----------------------------------------------------------------------------------------------------------


def evaluate(
  estimator: types.Estimator,
  f: types.CostFn,
  dist_builder: types.DistBuilder,
  params: Params,
  key: types.PRNGKey,
  *,
  num_samples: int,
  num_repeats: int,
  exact_grad: Params | None = None,
  state: Any = None,
  batch_size: int | None = None,
  sampler: str = "iid",
  chunk_size: int | None = None,
  timing_repeats: int = 20,
  warmup: int = 2,
) -> Report:
  r"""Moments, bias, time and variance per unit of compute of one estimator on one problem.

  Combines :func:`gradient_moments`, :func:`bias` (when ``exact_grad`` is given) and
  :func:`time_per_estimate`, and adds the work-normalized variance

  .. math::
     \mathrm{variance} \times \mathrm{seconds\ per\ estimate},

  the variance you would get per second of compute (lower is better): an estimator twice as slow must have
  less than half the variance to be worth it. It is computed per coordinate, with the same ``num_samples``
  for the variance and the time.

  Args:
    estimator, f, dist_builder, params, key, num_samples, num_repeats, state, batch_size, sampler, chunk_size: as for
      :func:`gradient_moments`.
    exact_grad: the exact gradient (the structure of ``params``), or ``None`` to skip the bias.
    timing_repeats: timed runs for :func:`time_per_estimate` (its ``repeats``).
    warmup: untimed runs before them.

  Returns:
    A :class:`Report`.

  Examples:
    >>> import jax, jax.numpy as jnp, distrax, sfe_jax as sfe
    >>> params = {"loc": jnp.asarray(1.0), "scale": jnp.asarray(1.0)}
    >>> dist_builder = lambda p: distrax.Normal(p["loc"], p["scale"])
    >>> report = sfe.diagnostics.evaluate(sfe.pathwise(), lambda x: x ** 2, dist_builder, params,
    ...                                   jax.random.key(0), num_samples=10, num_repeats=1000,
    ...                                   exact_grad={"loc": 2.0, "scale": 2.0}, timing_repeats=5)
    >>> sorted(report.work_normalized_variance)
    ['loc', 'scale']
  """
  check_computation(estimator)
  num_repeats = checks.check_static_int(num_repeats, "num_repeats", 2, " to estimate a variance")
  moments_key, timing_key = jax.random.split(key)
  moments = gradient_moments(
    estimator,
    f,
    dist_builder,
    params,
    moments_key,
    num_samples=num_samples,
    num_repeats=num_repeats,
    state=state,
    batch_size=batch_size,
    sampler=sampler,
    chunk_size=chunk_size,
  )
  gradient_bias = None if exact_grad is None else bias(moments, exact_grad)
  timing = time_per_estimate(
    estimator,
    f,
    dist_builder,
    params,
    timing_key,
    num_samples=num_samples,
    repeats=timing_repeats,
    warmup=warmup,
    state=state,
    sampler=sampler,
    chunk_size=chunk_size,
  )
  work = jax.tree.map(lambda v: v * timing.median_seconds, moments.variance)
  return Report(
    moments=moments,
    bias=gradient_bias,
    timing=timing,
    work_normalized_variance=work,
    estimator_name=estimator.name,
    value_name=value_name(estimator),
  )
