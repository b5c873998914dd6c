r"""Exact expectations and gradients by enumerating a small discrete support."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from sfe_jax._src.core import checks, sampling, types
from sfe_jax._src.discrete import views


def enumerate(max_support: int = views.DEFAULT_MAX_SUPPORT) -> types.Estimator:  # pylint: disable=redefined-builtin
  r"""The exact expectation and gradient, by summing over every value of a small discrete distribution.

  .. math::
     F(\theta) = \sum_{x} p_\theta(x)\, f(x), \qquad \nabla_\theta F(\theta) = \sum_x \nabla_\theta
     p_\theta(x)\, f(x) + p_\theta(x)\, \nabla f(x)

  The surrogate *is* :math:`F(\theta)`, so its value and its gradient (with respect to ``params`` and to
  anything ``f`` closes over) are exact, and so are its higher derivatives. It is the ground truth that the
  tests and benchmarks compare the Monte Carlo estimators with.

  * Distributions: Bernoulli (any shape: ``2 ** size`` joint values), Categorical and OneHotCategorical
    (``K ** num_variables`` joint values), of distrax, TFP's JAX substrate or numpyro, optionally wrapped in
    ``Independent``. ``f`` receives samples in the distribution's own encoding.
  * Bias and variance: none; the key is not used.
  * Cost: one evaluation of ``f`` per point of the support. ``num_samples`` counts evaluations of ``f``, as for
    every estimator: pass ``num_samples=None`` (or leave it out), or exactly the support size; anything else
    is refused.
  * Derivative order: every order, exactly (the surrogate is the expectation itself).

  Args:
    max_support: the largest support to enumerate; a larger one is refused at trace time with an error that
      gives its size, so a test never silently runs out of memory.

  Returns:
    An :class:`sfe_jax.Estimator`.

  Examples:
    >>> import jax, jax.numpy as jnp, distrax, sfe_jax as sfe
    >>> dist_builder = lambda phi: distrax.Bernoulli(logits=jnp.full(3, phi))   # 3 bits, one shared logit
    >>> f = lambda b: jnp.sum((b - jnp.array([0.6, 0.51, 0.48])) ** 2)
    >>> _, grad, _ = sfe.value_and_grad(sfe.enumerate(), f, dist_builder, jnp.float32(0.0), jax.random.key(0))
    >>> round(float(grad), 4)
    -0.045
  """
  max_support = checks.check_static_int(max_support, "max_support", 1)
  name = "sfe.enumerate()"

  def sample_count(dist):
    view = views.discrete_view(dist, who=name)
    size = views.check_support_size(view, max_support, name, "Use a Monte Carlo estimator")
    return types.SampleCount(
      minimum=size,
      maximum=size,
      default=size,
      reason=(f" (it evaluates f once on each of the {size} points of the support)"),
    )

  def surrogate(f, dist_builder, params, key, num_samples, state):
    del key, num_samples
    view = views.discrete_view(checks.build_distribution(dist_builder, params), who=name)
    points = views.support(view)
    log_p = jax.vmap(lambda x: views.log_prob(view, x))(points)
    values = sampling.evaluate(f, views.to_sample(view, points))
    return jnp.sum(jnp.exp(log_p) * values), state

  return types.Estimator(types.empty_init, surrogate, name=name, sample_count=sample_count, max_order=None)
