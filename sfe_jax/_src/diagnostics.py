r"""Diagnostics: measure what you need to choose a gradient estimator.

For an estimator, a cost ``f`` and a distribution, these functions draw ``num_repeats`` independent gradient
estimates (``jax.vmap`` of :func:`sfe_jax.value_and_grad` over independent keys) and summarise them:

* :func:`gradient_moments`: the mean, the per-coordinate variance, the signal-to-noise ratio and standard errors;
* :func:`bias`: the bias against a known gradient, in units of its standard error (a z-score);
* :func:`time_per_estimate`: the wall-clock time of one jitted gradient estimate;
* :func:`evaluate`: all of the above, plus the variance per unit of compute time.

Everything returned has the structure of ``params`` (one number per parameter coordinate), except the scalars.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from sfe_jax._src import base

Array = jax.Array
Params = Any


class GradientMoments(NamedTuple):
  r"""Moments of a gradient estimator over independent repeats; array fields have the structure of params.

  Attributes:
    mean: the average :math:`\bar g = \frac1R \sum_r g_r` of the ``R = num_repeats`` gradient estimates.
    variance: the unbiased sample variance of one estimate, per coordinate,
      :math:`\frac{1}{R-1} \sum_r (g_r - \bar g)^2` (the variance of an estimate made with ``num_samples``
      samples, not of the mean over repeats).
    snr: the signal-to-noise ratio :math:`|\bar g| / \sqrt{\mathrm{variance}}` per coordinate; ``0`` where both
      are zero, ``inf`` where only the variance is zero. Never NaN.
    std_error: the standard error of ``mean``, :math:`\sqrt{\mathrm{variance} / R}`.
    variance_std_error: the standard error of ``variance``, from the fourth central moment :math:`m_4`,
      :math:`\mathrm{variance} \sqrt{(\kappa - 1)/R + 2/(R(R-1))}` with the kurtosis
      :math:`\kappa = m_4 / m_2^2` (the same quantity as :math:`\sqrt{(m_4 - \mathrm{variance}^2 (R-3)/(R-1)) / R}`,
      written so that it does not cancel for two-point estimates). Unlike the chi-square formula it stays
      valid for the heavy-tailed distributions that gradient estimates usually have.
    value_mean: the average of the ``R`` values (a scalar): Monte Carlo estimates of ``E[f]`` for an
      estimator, estimates of the bound ``L_K`` for an objective (:class:`Report` names it).
    num_repeats: ``R``.
    num_samples: the ``num_samples`` of each estimate.
  """

  mean: Params
  variance: Params
  snr: Params
  std_error: Params
  variance_std_error: Params
  value_mean: Array
  num_repeats: int
  num_samples: int


class GradientBias(NamedTuple):
  r"""The bias of a gradient estimator against a known gradient.

  Attributes:
    bias: ``moments.mean - exact_grad``, with the structure of params.
    z_score: ``bias / moments.std_error``, with the structure of params; an unbiased estimator gives values
      that are approximately standard normal, so ``|z| > 5`` is strong evidence of bias. ``0`` where the bias and
      the standard error are both zero, ``±inf`` where only the standard error is.
    max_abs_z: the largest ``|z_score|`` over all coordinates (a scalar). With many coordinates, expect the
      maximum of that many standard normals (about 3.7 for 10,000 coordinates).
  """

  bias: Params
  z_score: Params
  max_abs_z: Array


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
# Checks.
# ----------------------------------------------------------------------------------------------------------


def _check_computation(estimator: Any) -> None:
  """Accepts an estimator of ``E[f]`` or an objective (whose gradient moments mean the same thing)."""
  if not isinstance(estimator, base.Objective):
    base.check_estimator(estimator)


def _value_name(estimator: base.Estimator | base.Objective) -> str:
  return estimator.value_name if isinstance(estimator, base.Objective) else "E[f]"


def _check_moments(moments: Any) -> None:
  if not isinstance(moments, GradientMoments):
    raise TypeError(
        "`moments` must be the GradientMoments returned by sfe.diagnostics.gradient_moments; "
        f"got {type(moments).__name__}.")


def _safe_ratio(numerator: Array, denominator: Array) -> Array:
  """``numerator / denominator``, with ``0 / 0 = 0`` and ``x / 0 = ±inf``: never NaN for finite input."""
  zero = denominator == 0
  ratio = numerator / jnp.where(zero, 1.0, denominator)
  return jnp.where(zero, jnp.where(numerator == 0, 0.0, jnp.sign(numerator) * jnp.inf), ratio)


# ----------------------------------------------------------------------------------------------------------
# Moments.
# ----------------------------------------------------------------------------------------------------------


def repeated_estimates(
    estimator: base.Estimator,
    f: base.CostFn,
    dist_builder: base.DistBuilder,
    params: Params,
    key: base.PRNGKey,
    *,
    num_samples: int,
    num_repeats: int,
    state: Any = None,
    batch_size: int | None = None,
) -> tuple[Array, Params]:
  """``num_repeats`` independent estimates: values of shape ``(R,)`` and grads with a leading ``R`` axis.

  ``estimator`` is an :class:`sfe_jax.Estimator` or an :class:`sfe_jax.objectives.Objective` (then ``f`` is
  its log-joint and the values are estimates of its bound). Every repeat starts from the same ``state`` (the
  states the repeats return are discarded).
  """
  _check_computation(estimator)
  num_repeats = base.check_static_int(num_repeats, "num_repeats", 1)
  keys = jax.random.split(key, num_repeats)

  def one(k):
    value, grads, _ = base.value_and_grad_of(estimator, f, dist_builder, params, k, num_samples, state)
    return value, grads

  if batch_size is None or batch_size >= num_repeats:
    return jax.vmap(one)(keys)
  return jax.lax.map(one, keys, batch_size=batch_size)


def moments_from_estimates(values: Array, grads: Params, *, num_samples: int) -> GradientMoments:
  """:class:`GradientMoments` of given estimates (``values`` (R,), ``grads`` with a leading ``R`` axis)."""
  num_repeats = int(values.shape[0])
  if num_repeats < 2:
    raise ValueError(f"`num_repeats` must be at least 2 to estimate a variance; got {num_repeats}.")
  r = num_repeats

  def leaf_moments(g):
    mean = jnp.mean(g, axis=0)
    centred = g - mean
    variance = jnp.sum(jnp.square(centred), axis=0) / (r - 1)
    # Var(s^2) = sigma^4 ((kurtosis - 1) / R + 2 / (R (R - 1))), the kurtosis taken as the ratio m4 / m2^2:
    # the equivalent difference m4 - s^4 (R - 3) / (R - 1) cancels for two-point estimates (kurtosis ~ 1).
    m2 = jnp.mean(jnp.square(centred), axis=0)
    m4 = jnp.mean(jnp.square(jnp.square(centred)), axis=0)
    kurtosis = m4 / jnp.where(m2 > 0, jnp.square(m2), 1.0)
    variance_se = variance * jnp.sqrt(jnp.maximum(kurtosis - 1, 0.0) / r + 2 / (r * (r - 1)))
    snr = _safe_ratio(jnp.abs(mean), jnp.sqrt(variance))
    return mean, variance, snr, jnp.sqrt(variance / r), variance_se

  per_leaf = jax.tree.map(leaf_moments, grads)
  outer = jax.tree.structure(grads)
  inner = jax.tree.structure((0,) * 5)
  mean, variance, snr, std_error, variance_se = jax.tree.transpose(outer, inner, per_leaf)
  return GradientMoments(mean=mean, variance=variance, snr=snr, std_error=std_error,
                         variance_std_error=variance_se, value_mean=jnp.mean(values), num_repeats=num_repeats,
                         num_samples=int(num_samples))


def gradient_moments(
    estimator: base.Estimator,
    f: base.CostFn,
    dist_builder: base.DistBuilder,
    params: Params,
    key: base.PRNGKey,
    *,
    num_samples: int,
    num_repeats: int,
    state: Any = None,
    batch_size: int | None = None,
) -> GradientMoments:
  r"""Mean, variance and signal-to-noise ratio of a gradient estimator over independent repeats.

  Draws ``R = num_repeats`` independent estimates :math:`g_1, \dots, g_R` of
  :math:`\nabla_\theta E_{x \sim p_\theta}[f(x)]`, each by :func:`sfe_jax.value_and_grad` with
  ``num_samples`` samples and its own key (``jax.random.split(key, R)``, vmapped), and returns per coordinate

  .. math::
     \bar g = \frac1R \sum_r g_r, \qquad
     s^2 = \frac{1}{R-1} \sum_r (g_r - \bar g)^2, \qquad
     \mathrm{SNR} = \frac{|\bar g|}{s}, \qquad \mathrm{se}(\bar g) = \frac{s}{\sqrt R}.

  ``variance`` is the variance of ONE estimate with ``num_samples`` samples; for estimators that average
  independent samples it is ``num_samples`` times smaller than the single-sample variance. Jittable, with
  ``num_samples``, ``num_repeats`` and ``batch_size`` static.

  Args:
    estimator: an :class:`sfe_jax.Estimator`, or an :class:`sfe_jax.objectives.Objective` (then ``f`` is its
      log-joint, the gradient is that of the bound, and ``value_mean`` estimates the bound).
    f: a function of one sample returning a real scalar.
    dist_builder: maps ``params`` to a distribution.
    params: a pytree of floating-point arrays.
    key: a JAX PRNG key.
    num_samples: samples per estimate, a static Python int.
    num_repeats: independent estimates, a static Python int, at least 2.
    state: the estimator's state, the same for every repeat; ``None`` means ``estimator.init(params)``.
    batch_size: if given, evaluate the repeats ``batch_size`` at a time (``jax.lax.map``) to bound memory;
      ``None`` vmaps all repeats at once.

  Returns:
    A :class:`GradientMoments` whose array fields have the structure of ``params``.

  Examples:
    >>> import jax, jax.numpy as jnp, distrax, sfe_jax as sfe
    >>> params = {"loc": jnp.asarray(1.0), "scale": jnp.asarray(1.0)}
    >>> dist_builder = lambda p: distrax.Normal(p["loc"], p["scale"])
    >>> f = lambda x: x ** 2
    >>> m = sfe.diagnostics.gradient_moments(sfe.pathwise(), f, dist_builder, params, jax.random.key(0),
    ...                                      num_samples=1, num_repeats=10_000)
    >>> # Exact: d/dmu E[x^2] = 2 mu = 2, and one pathwise estimate 2x has variance 4 sigma^2 = 4.
    >>> print(f"{m.mean['loc']:.2f} +- {m.std_error['loc']:.2f}, {m.variance['loc']:.1f}")
    2.01 +- 0.02, 4.0
    >>> m.snr["loc"].shape
    ()
  """
  _check_computation(estimator)
  base.check_key(key)
  num_repeats = base.check_static_int(num_repeats, "num_repeats", 2, " to estimate a variance")
  if batch_size is not None:
    batch_size = base.check_static_int(batch_size, "batch_size", 1)

  # One compiled computation for all repeats (params, state and key are arguments, not baked-in constants);
  # under an outer jit this inner jit is inlined.
  split, diff = base.check_params(params)  # Leaves that are not arrays (equinox) stay out of jit's arguments.

  @jax.jit
  def run(d, s, k):
    values, grads = repeated_estimates(estimator, f, dist_builder, split.merge(d), k, num_samples=num_samples,
                                       num_repeats=num_repeats, state=s, batch_size=batch_size)
    moments = moments_from_estimates(values, grads, num_samples=num_samples)
    return moments._replace(num_repeats=0, num_samples=0)

  moments = run(diff, state, key)
  return moments._replace(num_repeats=num_repeats, num_samples=int(num_samples))


def bias(moments: GradientMoments, exact_grad: Params) -> GradientBias:
  r"""The bias of an estimator's mean against the exact gradient, in standard errors.

  .. math::
     \mathrm{bias} = \bar g - \nabla_\theta F, \qquad z = \mathrm{bias} / \mathrm{se}(\bar g).

  Args:
    moments: from :func:`gradient_moments`.
    exact_grad: the exact gradient, a pytree with the structure of ``params`` (leaves may be Python floats or
      arrays broadcastable to the parameter's shape).

  Returns:
    A :class:`GradientBias`.

  Examples:
    >>> import jax, jax.numpy as jnp, distrax, sfe_jax as sfe
    >>> params = {"loc": jnp.asarray(1.0), "scale": jnp.asarray(1.0)}
    >>> dist_builder = lambda p: distrax.Normal(p["loc"], p["scale"])
    >>> m = sfe.diagnostics.gradient_moments(sfe.score_function(), lambda x: x ** 2, dist_builder, params,
    ...                                      jax.random.key(0), num_samples=1, num_repeats=10_000)
    >>> b = sfe.diagnostics.bias(m, {"loc": 2.0, "scale": 2.0})  # d/dmu E[x^2] = 2 mu, d/dsigma = 2 sigma
    >>> bool(b.max_abs_z < 5)
    True
  """
  _check_moments(moments)
  expected = jax.tree.structure(moments.mean)
  try:
    got = jax.tree.structure(exact_grad)
  except Exception:  # pragma: no cover - tree_structure accepts any object
    got = None
  if got != expected:
    raise ValueError(
        f"`exact_grad` must have the structure of params ({expected}); got {got}.")
  paths_and_means = jax.tree_util.tree_leaves_with_path(moments.mean)
  exact_leaves = jax.tree.leaves(exact_grad)
  for (path, mean), exact in zip(paths_and_means, exact_leaves):
    shape = jnp.shape(exact)
    try:
      broadcast = jnp.broadcast_shapes(shape, mean.shape)
    except ValueError:
      broadcast = None
    if broadcast != mean.shape:
      raise ValueError(
          f"`exact_grad`{jax.tree_util.keystr(path)} must have the shape of the parameter, {mean.shape} (or "
          f"broadcast to it); got shape {shape}.")
  bias_tree = jax.tree.map(lambda m, e: m - jnp.asarray(e, m.dtype), moments.mean, exact_grad)
  z = jax.tree.map(_safe_ratio, bias_tree, moments.std_error)
  max_abs_z = jnp.max(jnp.stack([jnp.max(jnp.abs(leaf)) for leaf in jax.tree.leaves(z)]))
  return GradientBias(bias=bias_tree, z_score=z, max_abs_z=max_abs_z)


# ----------------------------------------------------------------------------------------------------------
# Time.
# ----------------------------------------------------------------------------------------------------------


def _time_compiled(compiled, args_per_run, *, repeats: int, warmup: int) -> list[float]:
  for args in args_per_run[:warmup]:
    jax.block_until_ready(compiled(*args))
  seconds = []
  for args in args_per_run[warmup:warmup + repeats]:
    start = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    seconds.append(time.perf_counter() - start)
  return seconds


def time_per_estimate(
    estimator: base.Estimator,
    f: base.CostFn,
    dist_builder: base.DistBuilder,
    params: Params,
    key: base.PRNGKey,
    *,
    num_samples: int,
    repeats: int = 20,
    warmup: int = 2,
    state: Any = None,
) -> Timing:
  """Wall-clock seconds of one jitted :func:`sfe_jax.value_and_grad` call.

  The call is ``jax.jit``-compiled first (timed on its own as ``compile_seconds``), run ``warmup`` times
  untimed, then ``repeats`` times, each with a fresh key (keys are made before timing) and waited for with
  ``jax.block_until_ready``. The median is robust to the occasional slow run; report it, not the mean.
  The time is that of the device ``params`` live on (``jax.devices()[0]`` by default).

  Args:
    estimator, f, dist_builder, params, key, num_samples, state: as for :func:`sfe_jax.value_and_grad`.
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
  _check_computation(estimator)
  repeats = base.check_static_int(repeats, "repeats", 1)
  warmup = base.check_static_int(warmup, "warmup", 0)
  # Checked here as well as in value_and_grad, so that bad input fails before anything is compiled.
  prepared = base.prepare(estimator, f, dist_builder, params, key, num_samples, state)
  num_samples, state = prepared.num_samples, prepared.state

  split, diff = prepared.split, prepared.diff

  def run(d, s, k):
    value, grads, _ = base.value_and_grad_of(estimator, f, dist_builder, split.merge(d), k, num_samples, s)
    return value, grads

  start = time.perf_counter()
  compiled = jax.jit(run).lower(diff, state, key).compile()
  compile_seconds = time.perf_counter() - start
  keys = jax.block_until_ready(list(jax.random.split(key, warmup + repeats)))
  seconds = _time_compiled(compiled, [(diff, state, k) for k in keys], repeats=repeats, warmup=warmup)
  return Timing(median_seconds=float(statistics.median(seconds)), min_seconds=float(min(seconds)),
                compile_seconds=float(compile_seconds))


# ----------------------------------------------------------------------------------------------------------
# Everything at once.
# ----------------------------------------------------------------------------------------------------------


def evaluate(
    estimator: base.Estimator,
    f: base.CostFn,
    dist_builder: base.DistBuilder,
    params: Params,
    key: base.PRNGKey,
    *,
    num_samples: int,
    num_repeats: int,
    exact_grad: Params | None = None,
    state: Any = None,
    batch_size: int | None = None,
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
    estimator, f, dist_builder, params, key, num_samples, num_repeats, state, batch_size: as for
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
  _check_computation(estimator)
  num_repeats = base.check_static_int(num_repeats, "num_repeats", 2, " to estimate a variance")
  moments_key, timing_key = jax.random.split(key)
  moments = gradient_moments(estimator, f, dist_builder, params, moments_key, num_samples=num_samples,
                             num_repeats=num_repeats, state=state, batch_size=batch_size)
  gradient_bias = None if exact_grad is None else bias(moments, exact_grad)
  timing = time_per_estimate(estimator, f, dist_builder, params, timing_key, num_samples=num_samples,
                             repeats=timing_repeats, warmup=warmup, state=state)
  work = jax.tree.map(lambda v: v * timing.median_seconds, moments.variance)
  return Report(moments=moments, bias=gradient_bias, timing=timing, work_normalized_variance=work,
                estimator_name=estimator.name, value_name=_value_name(estimator))
