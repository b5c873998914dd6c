r"""Moments of a gradient estimator over independent repeats: mean, variance, SNR, standard errors and bias.

For an estimator, a cost ``f`` and a distribution, these functions draw ``num_repeats`` independent gradient
estimates (``jax.vmap`` of :func:`sfe_jax.value_and_grad` over independent keys) and summarise them:

* :func:`gradient_moments`: the mean, the per-coordinate variance, the signal-to-noise ratio and standard errors;
* :func:`bias`: the bias against a known gradient, in units of its standard error (a z-score);
* :func:`variance_and_std_error`: the unbiased variance of any sample and the standard error of that variance,
  from its fourth moment (the one implementation the tests and benchmarks use too).

Everything returned has the structure of ``params`` (one number per parameter coordinate), except the scalars.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sfe_jax._src.core import api, checks, types
from sfe_jax._src.core.differentiation import ParamsSplit
from sfe_jax._src.diagnostics import cache

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
      estimator, estimates of the bound ``L_K`` for an objective (:class:`sfe_jax.diagnostics.Report` names it).
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


# ----------------------------------------------------------------------------------------------------------
# Checks.
# ----------------------------------------------------------------------------------------------------------


def check_computation(estimator: Any) -> None:
  """Accepts an estimator of ``E[f]`` or an objective (whose gradient moments mean the same thing)."""
  if not isinstance(estimator, types.Objective):
    checks.check_estimator(estimator)


def value_name(estimator: types.Estimator | types.Objective) -> str:
  return estimator.value_name if isinstance(estimator, types.Objective) else "E[f]"


def _check_moments(moments: Any) -> None:
  if not isinstance(moments, GradientMoments):
    raise TypeError(
      "`moments` must be the GradientMoments returned by sfe.diagnostics.gradient_moments; "
      f"got {type(moments).__name__}."
    )


def _safe_ratio(numerator: Array, denominator: Array) -> Array:
  """``numerator / denominator``, with ``0 / 0 = 0`` and ``x / 0 = ±inf``: never NaN for finite input."""
  zero = denominator == 0
  ratio = numerator / jnp.where(zero, 1.0, denominator)
  return jnp.where(zero, jnp.where(numerator == 0, 0.0, jnp.sign(numerator) * jnp.inf), ratio)


# ----------------------------------------------------------------------------------------------------------
# Moments.
# ----------------------------------------------------------------------------------------------------------


def repeated_estimates(
  estimator: types.Estimator,
  f: types.CostFn,
  dist_builder: types.DistBuilder,
  params: Params,
  key: types.PRNGKey,
  *,
  num_samples: int,
  num_repeats: int,
  state: Any = None,
  batch_size: int | None = None,
  sampler: str = "iid",
  chunk_size: int | None = None,
) -> tuple[Array, Params]:
  """``num_repeats`` independent estimates: values of shape ``(R,)`` and grads with a leading ``R`` axis.

  ``estimator`` is an :class:`sfe_jax.Estimator` or an :class:`sfe_jax.objectives.Objective` (then ``f`` is
  its log-joint and the values are estimates of its bound). Every repeat starts from the same ``state`` (the
  states the repeats return are discarded).
  """
  check_computation(estimator)
  num_repeats = checks.check_static_int(num_repeats, "num_repeats", 1)
  keys = jax.random.split(key, num_repeats)

  def one(k):
    value, grads, _ = api.value_and_grad_of(
      estimator, f, dist_builder, params, k, num_samples, state, chunk_size=chunk_size, sampler=sampler
    )
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
    variance, variance_se = variance_and_std_error(g)
    snr = _safe_ratio(jnp.abs(mean), jnp.sqrt(variance))
    return mean, variance, snr, jnp.sqrt(variance / r), variance_se

  per_leaf = jax.tree.map(leaf_moments, grads)
  outer = jax.tree.structure(grads)
  inner = jax.tree.structure((0,) * 5)
  mean, variance, snr, std_error, variance_se = jax.tree.transpose(outer, inner, per_leaf)
  return GradientMoments(
    mean=mean,
    variance=variance,
    snr=snr,
    std_error=std_error,
    variance_std_error=variance_se,
    value_mean=jnp.mean(values),
    num_repeats=num_repeats,
    num_samples=int(num_samples),
  )


def gradient_moments(
  estimator: types.Estimator,
  f: types.CostFn,
  dist_builder: types.DistBuilder,
  params: Params,
  key: types.PRNGKey,
  *,
  num_samples: int,
  num_repeats: int,
  state: Any = None,
  batch_size: int | None = None,
  sampler: str = "iid",
  chunk_size: int | None = None,
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

  The computation is compiled once and cached: a later call with the same ``estimator``, ``f`` and
  ``dist_builder`` objects (functions are compared by identity: a new lambda compiles again), the same sizes,
  the same shapes and dtypes of the arrays and equal leaves of ``params`` that are not differentiated runs
  the compiled computation with its new parameter values, state and key. (Where one of these cannot be hashed,
  each call compiles its own.)

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
    sampler: how each estimate draws its base randomness (``"iid"``, ``"antithetic"``, ``"stratified"``,
      ``"rqmc"``; see :func:`sfe_jax.value_and_grad`): the repeats are independent randomizations, so
      ``variance`` is the variance of one estimate under that sampler.
    chunk_size: each estimate's samples are drawn and evaluated this many at a time (see
      :func:`sfe_jax.value_and_grad`): memory per estimate stays that of one chunk, for variance studies with
      many samples per estimate.

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
  check_computation(estimator)
  checks.check_key(key)
  num_repeats = checks.check_static_int(num_repeats, "num_repeats", 2, " to estimate a variance")
  if num_samples is None:  # the estimator's own count (sfe.enumerate(): the support), as the entry points take it
    num_samples = api.prepare(estimator, f, dist_builder, params, key, None, state, sampler=sampler).num_samples
  if batch_size is not None:
    batch_size = checks.check_static_int(batch_size, "batch_size", 1)

  # One compiled computation for all repeats: params' arrays, the state and the key are arguments, the rest
  # is static. It is cached (a second call with the same estimator, f, dist_builder, sizes and static leaves
  # does not compile again) and, under an outer jit, inlined.
  split, diff = checks.check_params(params)  # Leaves that are not arrays (equinox) stay out of jit's arguments.
  run = cache.cached_jit(
    _moments, estimator, f, dist_builder, split, num_samples, num_repeats, batch_size, sampler, chunk_size
  )
  moments = run(diff, state, key)
  return moments._replace(num_repeats=num_repeats, num_samples=int(num_samples))


def _moments(
  estimator: Any,
  f: types.CostFn,
  dist_builder: types.DistBuilder,
  split: ParamsSplit,
  num_samples: int,
  num_repeats: int,
  batch_size: int | None,
  sampler: str,
  chunk_size: int | None,
  diff: list[Any],
  state: Any,
  key: types.PRNGKey,
) -> GradientMoments:
  """The moments of ``num_repeats`` estimates at ``split.merge(diff)`` (the counts zeroed: they are static)."""
  values, grads = repeated_estimates(
    estimator,
    f,
    dist_builder,
    split.merge(diff),
    key,
    num_samples=num_samples,
    num_repeats=num_repeats,
    state=state,
    batch_size=batch_size,
    sampler=sampler,
    chunk_size=chunk_size,
  )
  moments = moments_from_estimates(values, grads, num_samples=num_samples)
  return moments._replace(num_repeats=0, num_samples=0)


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
  if got != expected:  # type: ignore[operator]
    raise ValueError(f"`exact_grad` must have the structure of params ({expected}); got {got}.")
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
        f"broadcast to it); got shape {shape}."
      )
  bias_tree = jax.tree.map(lambda m, e: m - jnp.asarray(e, m.dtype), moments.mean, exact_grad)
  z = jax.tree.map(_safe_ratio, bias_tree, moments.std_error)
  max_abs_z = jnp.max(jnp.stack([jnp.max(jnp.abs(leaf)) for leaf in jax.tree.leaves(z)]))
  return GradientBias(bias=bias_tree, z_score=z, max_abs_z=max_abs_z)


def variance_and_std_error(samples: Any, axis: int = 0) -> tuple[Any, Any]:
  r"""The unbiased sample variance along ``axis`` and the standard error of that variance.

  With ``R`` samples, central moments :math:`m_2, m_4` and the kurtosis :math:`\kappa = m_4 / m_2^2`,

  .. math:: s^2 = \frac{R}{R-1} m_2, \qquad
     \mathrm{se}(s^2) = s^2 \sqrt{\frac{\kappa - 1}{R} + \frac{2}{R(R-1)}},

  which is :math:`\sqrt{\mathrm{Var}(s^2)}` with the kurtosis estimated as a ratio. The equivalent difference
  form :math:`m_4 - s^4 (R-3)/(R-1)` cancels catastrophically for two-point estimates (:math:`\kappa \approx 1`);
  and unlike the chi-square formula, this one is valid for the heavy-tailed distributions gradient estimates
  usually have.

  NumPy input is computed in NumPy (keeping float64, as tests and benchmarks want); JAX input in ``jax.numpy``
  (so it works under jit).

  Args:
    samples: an array with at least 2 entries along ``axis``.
    axis: the axis of the samples.

  Returns:
    ``(variance, std_error)``, arrays of the shape of ``samples`` without ``axis``.

  Examples:
    >>> import numpy as np, sfe_jax as sfe
    >>> var, se = sfe.diagnostics.variance_and_std_error(np.array([0.0, 1.0, 0.0, 1.0]))
    >>> round(float(var), 4), round(float(se), 4)
    (0.3333, 0.1361)
  """
  xp = jnp if isinstance(samples, jax.Array) else np
  samples = xp.asarray(samples)
  r = samples.shape[axis]
  if r < 2:
    raise ValueError(f"`samples` must hold at least 2 values along axis {axis} to estimate a variance; got {r}.")
  centred = samples - xp.mean(samples, axis=axis, keepdims=True)
  m2 = xp.mean(centred**2, axis=axis)
  m4 = xp.mean(centred**4, axis=axis)
  variance = m2 * (r / (r - 1))
  kurtosis = m4 / xp.where(m2 > 0, m2**2, 1.0)
  std_error = variance * xp.sqrt(xp.maximum(kurtosis - 1, 0.0) / r + 2 / (r * (r - 1)))
  return variance, std_error
