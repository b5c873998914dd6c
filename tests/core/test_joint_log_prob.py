"""The joint log-density of the samples: the diagonal-Gaussian fast path equals the libraries' own log_prob."""

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as nd
import pytest
from tensorflow_probability.substrates import jax as tfp

from sfe_jax._src.core import sampling

tfd = tfp.distributions
LOC = jnp.array([[0.3, -1.0, 2.0], [0.0, 0.5, -0.2]])
SCALE = jnp.array([[1.0, 0.5, 2.0], [0.3, 1.5, 0.8]])
BUILDERS = {
  "distrax.Normal": lambda loc, scale: distrax.Normal(loc, scale),
  "distrax.MultivariateNormalDiag": lambda loc, scale: distrax.MultivariateNormalDiag(loc, scale),
  "distrax.Independent": lambda loc, scale: distrax.Independent(distrax.Normal(loc, scale), 2),
  "tfp.Normal": lambda loc, scale: tfd.Normal(loc, scale),
  "tfp.MultivariateNormalDiag": lambda loc, scale: tfd.MultivariateNormalDiag(loc, scale),
  "numpyro.Normal": lambda loc, scale: nd.Normal(loc, scale),
}


@pytest.mark.parametrize("name", BUILDERS)
def test_gaussian_fast_path_equals_the_library_log_prob(name):
  build = BUILDERS[name]
  points = jax.random.normal(jax.random.key(0), (7, 2, 3)) * 2.0

  def ours(loc, scale):
    return sampling.joint_log_prob(build(loc, scale), points)

  def theirs(loc, scale):
    lp = build(loc, scale).log_prob(points)
    return jnp.reshape(lp, (7, -1)).sum(axis=1)

  # Compiled: eager calls would compile each of the libraries' many operations on its own (the suite's cost).
  np.testing.assert_allclose(jax.jit(ours)(LOC, SCALE), jax.jit(theirs)(LOC, SCALE), rtol=1e-5, atol=1e-5)
  weights = jnp.linspace(-1.0, 2.0, 7)
  second_order = name in ("distrax.Normal", "tfp.MultivariateNormalDiag")
  for derivative in (jax.grad, jax.hessian) if second_order else (jax.grad,):
    a = jax.jit(derivative(lambda lo, sc: weights @ ours(lo, sc), argnums=(0, 1)))(LOC, SCALE)
    b = jax.jit(derivative(lambda lo, sc: weights @ theirs(lo, sc), argnums=(0, 1)))(LOC, SCALE)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
      np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-4)


def test_out_of_domain_scale_is_nan_as_in_the_library():
  lp = sampling.joint_log_prob(distrax.Normal(LOC, -SCALE), jnp.zeros((2, 2, 3)))
  assert bool(jnp.all(jnp.isnan(lp)))
