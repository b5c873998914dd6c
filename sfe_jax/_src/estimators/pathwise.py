r"""The pathwise (reparameterization) estimator."""

from __future__ import annotations

import jax.numpy as jnp

from sfe_jax._src.core import checks, distributions, sampling, types


def pathwise() -> types.Estimator:
  r"""The pathwise estimator (reparameterization trick).

  .. math::
     \nabla_\theta E_{p_\theta}[f(x)] = E_{\epsilon}[\nabla_x f(g_\theta(\epsilon))\,\nabla_\theta g_\theta(\epsilon)]
     \approx \frac1N \sum_{i=1}^N \nabla_\theta f(g_\theta(\epsilon_i)),

  with :math:`x = g_\theta(\epsilon)` the distribution's own differentiable sampler: location-scale
  transforms for normals, Laplace, logistic, Gumbel, uniform and their ``Transformed`` versions; implicit
  reparameterization (Figurnov et al. 2018, as implemented by ``jax.random``) for Gamma, Beta and Dirichlet.

  * Needs of the distribution: samples differentiable in the parameters (see
    :func:`sfe_jax.register_reparameterizable` for classes sfe_jax does not know), and ``f`` differentiable.
    Discrete distributions are refused with a ``TypeError`` at trace time.
  * Bias: none when ``f`` is differentiable almost everywhere and Lipschitz enough to swap gradient and
    expectation.
  * Variance: usually much lower than the score function, but not always: for ``f = exp(-k x^2)`` with large
    ``k`` it is higher (Mohamed et al. 2020, Figure 3).
  * Cost: one evaluation and one backward pass of ``f`` per sample.
  * Higher derivatives: the surrogate is the Monte Carlo average of ``f(g_theta(eps_i))``, so its ``n``-th
    derivative is the average of the ``n``-th derivatives along the sampling path, unbiased for
    :math:`\nabla^n E[f]` when ``f`` and the sampler are ``n`` times differentiable (location-scale
    families at every order; JAX's implicit gamma gradients are differentiable again).

  Returns:
    An :class:`sfe_jax.Estimator` (stateless).

  Examples:
    >>> import jax, jax.numpy as jnp, distrax, sfe_jax as sfe
    >>> params = {"loc": jnp.array([1.0]), "scale": jnp.array([1.0])}
    >>> dist_builder = lambda p: distrax.Normal(p["loc"], p["scale"])
    >>> f = lambda x: jnp.sum(x ** 2)          # E[f] = loc^2 + scale^2
    >>> _, grads, _ = sfe.value_and_grad(sfe.pathwise(), f, dist_builder, params, jax.random.key(0),
    ...                                  num_samples=100_000)
    >>> bool(jnp.allclose(grads["loc"], 2.0, atol=0.05)), bool(jnp.allclose(grads["scale"], 2.0, atol=0.05))
    (True, True)

  References:
    Kingma and Welling, Auto-encoding variational Bayes, 2014. Rezende, Mohamed and Wierstra, Stochastic
    backpropagation, 2014. Figurnov, Mohamed and Mnih, Implicit reparameterization gradients, 2018.
  """

  def surrogate(f, dist_builder, params, key, num_samples, state):
    dist = checks.build_distribution(dist_builder, params)
    distributions.check_reparameterizable(dist, "sfe.pathwise()")
    xs = sampling.sample(dist, key, num_samples)
    return jnp.mean(sampling.evaluate(f, xs)), state

  return types.Estimator(types.empty_init, surrogate, name="sfe.pathwise()", max_order=None, chunking="independent")
