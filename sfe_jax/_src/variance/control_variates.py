r"""Control variates: subtract a function with a known expectation, add its expectation back.

For any function :math:`h` whose expectation :math:`E_{p_\theta}[h]` is known in closed form,

.. math::
   E_{p_\theta}[f] = E_{p_\theta}[f - c\, h] + c\, E_{p_\theta}[h]

for every constant :math:`c`, and so are the gradients. Estimating the first term by Monte Carlo (with any
estimator) and differentiating the second exactly gives an unbiased estimator whose variance is lower the
more :math:`h` is correlated with :math:`f`.

A :class:`ControlVariate` describes :math:`h` and its exact expectation; :func:`with_control_variate` turns
any :class:`sfe_jax.Estimator` (score function, pathwise, measure-valued) into one that uses it, with the
coefficient :math:`c` fixed or estimated from independent samples.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from sfe_jax._src.core import checks, differentiation, distributions, sampling, types

Array = jax.Array

# Added to the denominator of the estimated coefficient: keeps it finite (0) when the control does not vary.
_COEFFICIENT_EPS = 1e-3


class ControlVariate(NamedTuple):
  r"""A control variate: a function ``h`` of one sample with a closed-form expectation.

  Attributes:
    name: a short human-readable name, used in estimator names and error messages.
    make: ``make(f, dist) -> (h, expected_h)``. ``dist`` is the distribution built from the (differentiable)
      params; ``h`` maps ONE sample (the shape of ``f``'s input) to a scalar, and ``expected_h`` is the scalar
      :math:`E_{x \sim dist}[h(x)]`, exact and differentiable in the distribution's parameters. Whatever
      coefficients ``h`` has (computed from ``f`` or ``dist``) must be ``stop_gradient``-ed, so that ``h``
      depends on the parameters only through its argument ``x`` and the parameters' gradient of
      ``expected_h`` is the exact gradient of :math:`E_{p_\theta}[h]` for that fixed ``h``.
  """

  name: str
  make: Callable[[Callable[[Array], Array], Any], tuple[Callable[[Array], Array], Array]]


def delta_method() -> ControlVariate:
  r"""The delta-method control variate: the second-order Taylor expansion of ``f`` about the mean.

  With :math:`m = \bot(\mu)` (``⊥`` = stop_gradient) the mean of the distribution, :math:`x` the flattened
  sample, and :math:`f_m, g, H` the value, gradient and Hessian of ``f`` at :math:`m` (all stop_gradient-ed),

  .. math::
     h(x) = f_m + g^\top (x - m) + \tfrac12 (x - m)^\top H (x - m), \qquad
     E_{N(\mu, \Sigma)}[h] = f_m + g^\top (\mu - m) + \tfrac12\big[(\mu - m)^\top H (\mu - m)
     + \mathrm{tr}(H \Sigma)\big],

  with :math:`\mathrm{tr}(H\Sigma) = \sum_d H_{dd} \sigma_d^2` for a diagonal Gaussian. In value
  :math:`E[h] = f(\mu) + \frac12 \mathrm{tr}(H \Sigma)`; its gradient is :math:`g` in :math:`\mu` and
  :math:`\frac12 H` in :math:`\Sigma`. For a quadratic ``f``, :math:`h = f` and the variance of the
  controlled estimator vanishes (up to the estimated coefficient's error).

  * Needs of the distribution: a Gaussian: with independent coordinates (``Normal`` and
    ``MultivariateNormalDiag`` of distrax and TFP, numpyro's ``Normal``, ``Independent`` wrappers of these), or a
    single correlated one (distrax ``MultivariateNormalTri`` / ``FullCovariance`` / ``DiagPlusLowRank`` /
    ``FromBijector``, TFP ``MultivariateNormalTriL`` / ``FullCovariance``, numpyro ``MultivariateNormal``);
    any other distribution raises a ``TypeError`` naming it at trace time. ``f`` must be twice differentiable
    at the mean.
  * Cost: one Hessian of ``f`` at the mean per call (``D`` forward-over-reverse passes for a sample of ``D``
    coordinates) and ``O(D^2)`` memory for it; evaluating ``h`` costs ``O(D^2)`` per sample.

  Returns:
    A :class:`ControlVariate` for :func:`sfe_jax.with_control_variate`.

  Examples:
    >>> import jax, jax.numpy as jnp, distrax, sfe_jax as sfe
    >>> params = {"loc": jnp.zeros(2), "scale": jnp.ones(2)}
    >>> dist_builder = lambda p: distrax.Normal(p["loc"], p["scale"])
    >>> f = lambda x: jnp.sum(jnp.cos(x))
    >>> est = sfe.with_control_variate(sfe.score_function(), sfe.control_variates.delta_method())
    >>> estimate = jax.jit(lambda p, k: sfe.value_and_grad(est, f, dist_builder, p, k, num_samples=10))
    >>> value, grads, _ = estimate(params, jax.random.key(0))
    >>> grads["loc"].shape
    (2,)

  References:
    Paisley, Blei and Jordan, Variational Bayesian inference with stochastic search, ICML 2012.
    Mohamed, Rosca, Figurnov and Mnih, Monte Carlo gradient estimation in machine learning, JMLR 2020,
    Section 7.
  """
  name = "sfe.control_variates.delta_method()"

  def make(f, dist):
    try:
      mean, cov, diagonal = distributions.gaussian_mean_and_covariance(dist, who=name)
    except TypeError as e:
      raise TypeError(
        f"{e} The delta method needs the exact mean and covariance of the distribution to integrate the "
        "Taylor expansion of f; for other distributions use the estimator without a control variate, or "
        "a ControlVariate of your own."
      ) from None
    shape = distributions.sample_shape(dist)
    m = jax.lax.stop_gradient(mean)

    def f_flat(z):
      return f(jnp.reshape(z, shape))

    try:
      f_m = jax.lax.stop_gradient(f_flat(m))
      g = jax.lax.stop_gradient(jax.grad(f_flat)(m))
      hess = jax.lax.stop_gradient(jax.hessian(f_flat)(m))
    except differentiation.HigherOrderError:
      raise
    except Exception as e:  # The user's function failed at the mean: say so, keep the cause.
      raise sampling.call_error(
        e, f"`f` (differentiated twice at the mean by {name})", jax.ShapeDtypeStruct(shape, m.dtype)
      ) from e

    def h(x):
      d = jnp.reshape(x, (-1,)).astype(m.dtype) - m
      return f_m + jnp.dot(g, d) + 0.5 * jnp.dot(d, hess @ d)

    d_mu = mean - m  # zero in value, carries the gradient in mu
    trace = jnp.sum(jnp.diagonal(hess) * cov) if diagonal else jnp.sum(hess * cov)
    expected_h = f_m + jnp.dot(g, d_mu) + 0.5 * (jnp.dot(d_mu, hess @ d_mu) + trace)
    return h, expected_h

  return ControlVariate(name=name, make=make)


def _flatten(tree: Any, leading: int) -> Array:
  """Concatenates the leaves of ``tree`` (each with ``leading`` batch axes) into shape ``batch + (P,)``."""
  leaves = jax.tree.leaves(tree)
  return jnp.concatenate([jnp.reshape(l, l.shape[:leading] + (-1,)) for l in leaves], axis=-1)


def estimate_coefficient(grads_f: Array, grads_h: Array, eps: float = _COEFFICIENT_EPS) -> Array:
  r"""``c = sum_k Cov(g_k, c_k) / (sum_k Var(c_k) + eps)`` from paired estimates of shape ``(K, P)``.

  ``grads_f[i]`` and ``grads_h[i]`` are gradient estimates of ``f`` and of ``h`` from the same random numbers;
  covariances and variances are over the ``K`` repeats (unbiased, ``K - 1`` in the denominator) and summed
  over the ``P`` parameter coordinates. The result minimises the summed variance of ``g - c (c_hat - E c_hat)``
  over scalar ``c`` (up to ``eps``, which keeps it finite when ``h``'s estimates do not vary).
  """
  centred_f = grads_f - jnp.mean(grads_f, axis=0, keepdims=True)
  centred_h = grads_h - jnp.mean(grads_h, axis=0, keepdims=True)
  denom = grads_f.shape[0] - 1
  cov = jnp.sum(centred_f * centred_h) / denom
  var = jnp.sum(centred_h * centred_h) / denom
  return cov / (var + eps)


def with_control_variate(
  estimator: types.Estimator,
  control_variate: ControlVariate,
  *,
  num_coefficient_samples: int = 10,
  coefficient: float | Array | None = None,
) -> types.Estimator:
  r"""Adds a control variate to any estimator: estimate :math:`E[f - c h]`, add :math:`c\,E[h]` exactly.

  .. math::
     \nabla_\theta E_{p_\theta}[f] = \nabla_\theta E_{p_\theta}[f - c\,h] + c\,\nabla_\theta E_{p_\theta}[h],

  where the first term is ``estimator``'s estimate for the cost function :math:`\tilde f = f - c\,h` and the
  second is exact (``control_variate`` supplies :math:`E[h]` in closed form). The surrogate is
  ``estimator``'s surrogate for :math:`\tilde f` plus :math:`\bot(c)\,E[h](\theta)`, so its value
  :math:`\frac1N \sum_i (f(x_i) - c\,h(x_i)) + c\,E[h]` is still an unbiased estimate of :math:`E[f]`, its
  gradient in ``params`` is the controlled gradient estimate, and its gradient in anything ``f`` closes over
  is that of the Monte Carlo average of ``f`` (``h``'s coefficients are stop_gradient-ed).

  The coefficient :math:`c` is one scalar. With ``coefficient=None`` (the default) it is estimated, in the
  manner of Paisley et al. (2012) and Mohamed et al. (2020, Section 8), from ``num_coefficient_samples``
  pairs of small gradient estimates :math:`(\hat g^{(i)}, \hat c^{(i)})` of :math:`f` and of :math:`h`, each
  pair sharing its random numbers, all drawn with a key independent of the main estimate:

  .. math::
     c = \frac{\sum_k \mathrm{Cov}(\hat g_k, \hat c_k)}{\sum_k \mathrm{Var}(\hat c_k) + 10^{-3}},

  with :math:`k` running over all parameter coordinates (the pytree flattened); :math:`c` is
  stop_gradient-ed. Each small estimate uses the smallest ``num_samples`` ``estimator`` accepts (one sample,
  one antithetic pair, one measure-valued base sample...).

  * Needs: what ``estimator`` needs of the distribution and of ``f`` (and of :math:`h`, which is smooth), plus
    what ``control_variate`` needs (the delta method: a Gaussian). Works with :func:`sfe_jax.score_function`
    (any baseline), :func:`sfe_jax.pathwise` and :func:`sfe_jax.measure_valued`.
  * Bias: none. :math:`E[h]` is exact, and :math:`c` is either fixed or computed from samples independent of
    those of the main estimate, so :math:`E[\hat g_{\tilde f}] = \nabla E[f] - E[c]\,\nabla E[h]` exactly
    cancels against :math:`E[c]\,\nabla E[h]`.
  * Variance: the summed variance of the estimate is minimised near the estimated :math:`c`; the reduction is
    large when :math:`h` approximates ``f`` well over the distribution's mass (exact for a quadratic ``f``
    with the delta method) and can be negative when the coefficient estimate is poor (few
    ``num_coefficient_samples``) and :math:`h` is a bad approximation.
  * Derivative order: that of ``estimator``. :math:`E[h](\theta)` is exact at every order (``h``'s coefficients
    are fixed), so with the score function or pathwise estimators every derivative of the surrogate is an
    unbiased estimate; with a first-order estimator a second derivative raises
    :class:`sfe_jax.HigherOrderError`.
  * Cost: the main estimate evaluates :math:`\tilde f` (one ``f`` and one ``h`` per evaluation), plus building
    :math:`h` (the delta method: one Hessian of ``f``). Estimating :math:`c` costs ``num_coefficient_samples``
    extra small gradient estimates of ``estimator`` on ``f`` and as many on ``h``; a fixed ``coefficient``
    costs nothing extra.

  Base-estimator state (e.g. a moving-average baseline) is threaded through the main estimate only: the
  coefficient estimates use the incoming state and discard theirs.

  Args:
    estimator: the :class:`sfe_jax.Estimator` to control, e.g. ``sfe.score_function()``.
    control_variate: a :class:`sfe_jax.control_variates.ControlVariate`, e.g.
      ``sfe.control_variates.delta_method()``.
    num_coefficient_samples: the number (at least 2) of independent pairs of small estimates used to
      estimate the coefficient; ignored when ``coefficient`` is given.
    coefficient: a fixed scalar coefficient :math:`c`, or ``None`` to estimate it.

  Returns:
    An :class:`sfe_jax.Estimator` with the state, the sample count and the derivative order of ``estimator``;
    its name is ``estimator``'s followed by ``control_variate``'s.

  Examples:
    >>> import jax, jax.numpy as jnp, distrax, sfe_jax as sfe
    >>> params = {"loc": jnp.ones(3), "scale": jnp.ones(3)}
    >>> dist_builder = lambda p: distrax.Normal(p["loc"], p["scale"])
    >>> f = lambda x: jnp.sum(jnp.cos(x)) + jnp.sum(x) ** 2 / 10
    >>> est = sfe.with_control_variate(sfe.pathwise(), sfe.control_variates.delta_method())
    >>> estimate = jax.jit(lambda p, k: sfe.value_and_grad(est, f, dist_builder, p, k, num_samples=100))
    >>> value, grads, state = estimate(params, jax.random.key(0))
    >>> jax.tree.map(jnp.shape, grads)
    {'loc': (3,), 'scale': (3,)}

  References:
    Paisley, Blei and Jordan, Variational Bayesian inference with stochastic search, ICML 2012.
    Mohamed, Rosca, Figurnov and Mnih, Monte Carlo gradient estimation in machine learning, JMLR 2020,
    Sections 7 and 8.
  """
  checks.check_estimator(estimator)
  if not isinstance(control_variate, ControlVariate):
    raise TypeError(
      "`control_variate` must be an sfe_jax.control_variates.ControlVariate (e.g. "
      f"sfe.control_variates.delta_method()); got {type(control_variate).__name__}."
    )
  num_coefficient_samples = checks.check_static_int(
    num_coefficient_samples,
    "num_coefficient_samples",
    2,
    " (the coefficient is a ratio of a covariance and a variance over these samples)",
  )
  if coefficient is not None:
    if isinstance(coefficient, bool):
      raise TypeError("`coefficient` must be a real scalar or None; got a bool.")
    try:
      coefficient = jnp.asarray(coefficient)
    except TypeError:
      raise TypeError(f"`coefficient` must be a real scalar or None; got {type(coefficient).__name__}.") from None
    if coefficient.shape != () or not (
      jnp.issubdtype(coefficient.dtype, jnp.floating) or jnp.issubdtype(coefficient.dtype, jnp.integer)
    ):
      raise ValueError(
        f"`coefficient` must be a real scalar or None; got an array of dtype {coefficient.dtype} and "
        f"shape {coefficient.shape}."
      )

  def estimated_coefficient(f, h, dist, dist_builder, params, key, state):
    small = estimator.sample_count(dist).smallest
    params = differentiation.stop_gradient(params)
    split, diff = differentiation.split_params(params)

    def one_gradient(fn, k):
      grads = jax.grad(lambda d: estimator.surrogate(fn, dist_builder, split.merge(d), k, small, state)[0])(diff)
      return _flatten(grads, 0)

    def pair(k):  # The same key for f and h: the two estimates are correlated, as the formula needs.
      return one_gradient(f, k), one_gradient(h, k)

    grads_f, grads_h = jax.vmap(pair)(jax.random.split(key, num_coefficient_samples))
    return jax.lax.stop_gradient(estimate_coefficient(grads_f, grads_h))

  def surrogate(f, dist_builder, params, key, num_samples, state):
    key_main, key_coefficient = jax.random.split(key)
    dist = checks.build_distribution(dist_builder, params)
    h, expected_h = control_variate.make(f, dist)
    if coefficient is None:
      c = estimated_coefficient(f, h, dist, dist_builder, params, key_coefficient, state)
    else:
      c = coefficient
    c = jax.lax.stop_gradient(jnp.asarray(c, dtype=jnp.result_type(expected_h)))

    def f_tilde(x):
      return f(x) - c * h(x)

    value, new_state = estimator.surrogate(f_tilde, dist_builder, params, key_main, num_samples, state)
    return value + c * expected_h, new_state

  name = f"sfe.with_control_variate({estimator.name}, {control_variate.name})"
  # An estimated coefficient comes from each chunk's own pilot samples: per chunk.
  chunking = estimator.chunking if estimator.chunking == "none" or coefficient is not None else "per_chunk"
  return types.Estimator(
    estimator.init,
    surrogate,
    name=name,
    sample_count=estimator.sample_count,
    max_order=estimator.max_order,
    chunking=chunking,
  )
