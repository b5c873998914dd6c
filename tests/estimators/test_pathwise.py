"""Pathwise estimator against exact values (reference Section 1) and its refusal of discrete distributions."""

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.special import digamma

import sfe_jax as sfe
from tests.gaussian_reference import IDS, PARAMS, ROWS, dist_builder, loc_scale_columns
from tests.helpers import assert_mean, assert_variance, repeated_estimates

KEY = jax.random.key(0)
R = 40_000


@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_mean_and_variance(row):
  _, grads = repeated_estimates(sfe.pathwise(), row.f, dist_builder, PARAMS, KEY, num_samples=1, num_repeats=R)
  g = loc_scale_columns(grads)
  assert_mean(g, row.grad, what=f"pathwise mean on {row.name}")
  assert_variance(g, row.var_pw, what=f"pathwise variance on {row.name}")


def test_pathwise_is_not_always_better():
  # Reference: exp(-k x^2) with k = 10 has higher pathwise than score-function variance (both parameters).
  row = ROWS[5]
  assert row.k == 10.0
  assert all(pw > sf for pw, sf in zip(row.var_pw, row.var_sf))


@pytest.mark.parametrize(
  "name, build, params, exact",
  [
    # E[x] = alpha / beta: d/dalpha = 1 / beta, d/dbeta = -alpha / beta^2.
    (
      "gamma",
      lambda p: distrax.Gamma(p["a"], p["b"]),
      {"a": jnp.asarray(2.5), "b": jnp.asarray(1.5)},
      {"a": 1 / 1.5, "b": -2.5 / 1.5**2},
    ),
    # E[x] = a / (a + b).
    (
      "beta",
      lambda p: distrax.Beta(p["a"], p["b"]),
      {"a": jnp.asarray(2.0), "b": jnp.asarray(3.0)},
      {"a": 3.0 / 25.0, "b": -2.0 / 25.0},
    ),
  ],
)
def test_implicit_reparameterization_unbiased(name, build, params, exact):
  f = lambda x: x
  _, grads = repeated_estimates(sfe.pathwise(), f, build, params, KEY, num_samples=1, num_repeats=R)
  for leaf in params:
    assert_mean(np.asarray(grads[leaf]), exact[leaf], what=f"{name} d/d{leaf}")


def test_dirichlet_log_expectation():
  # E[log x_0] = digamma(c_0) - digamma(sum c): a nonlinear f with an exact gradient through autodiff.
  conc = jnp.array([1.5, 2.0, 3.0])
  exact = jax.grad(lambda c: digamma(c[0]) - digamma(jnp.sum(c)))(conc)
  f = lambda x: jnp.log(x[0])
  _, grads = repeated_estimates(
    sfe.pathwise(), f, lambda p: distrax.Dirichlet(p["c"]), {"c": conc}, KEY, num_samples=1, num_repeats=R
  )
  assert_mean(np.asarray(grads["c"]), np.asarray(exact), what="Dirichlet E[log x0]")


def test_multivariate_normal_tri_quadratic():
  # E[x^T A x] = mu^T A mu + tr(A L L^T); gradient in (mu, L) by autodiff of the closed form.
  a = jnp.array([[2.0, 0.3], [0.3, 1.0]])
  params = {"loc": jnp.array([0.5, -1.0]), "tril": jnp.array([[1.0, 0.0], [0.4, 0.7]])}
  closed = lambda p: p["loc"] @ a @ p["loc"] + jnp.trace(a @ p["tril"] @ p["tril"].T)
  exact = jax.jit(jax.grad(closed))(params)
  build = lambda p: distrax.MultivariateNormalTri(p["loc"], p["tril"])
  _, grads = repeated_estimates(sfe.pathwise(), lambda x: x @ a @ x, build, params, KEY, num_samples=1, num_repeats=R)
  assert_mean(np.asarray(grads["loc"]), np.asarray(exact["loc"]), what="MVN-Tri loc")
  # Only the lower triangle is a parameter; the upper one must get no gradient.
  assert_mean(
    np.asarray(grads["tril"])[:, [0, 1, 1], [0, 0, 1]],
    np.asarray(exact["tril"])[[0, 1, 1], [0, 0, 1]],
    what="MVN-Tri tril",
  )
  np.testing.assert_array_equal(np.asarray(grads["tril"])[:, 0, 1], 0.0)


def test_transformed_distribution_is_reparameterizable():
  build = lambda p: distrax.Transformed(distrax.Normal(p["loc"], 1.0), distrax.Block(distrax.Tanh(), 0))
  value, grads, _ = jax.jit(lambda p: sfe.value_and_grad(sfe.pathwise(), jnp.sum, build, p, KEY, num_samples=16))(
    {"loc": jnp.zeros(2)}
  )
  assert grads["loc"].shape == (2,) and np.all(np.isfinite(grads["loc"]))


@pytest.mark.parametrize(
  "build, params",
  [
    (lambda p: distrax.Bernoulli(logits=p["l"]), {"l": jnp.zeros(3)}),
    (lambda p: distrax.Categorical(logits=p["l"]), {"l": jnp.zeros(4)}),
    (lambda p: distrax.OneHotCategorical(logits=p["l"]), {"l": jnp.zeros(4)}),
  ],
  ids=["bernoulli", "categorical", "onehot"],
)
def test_refuses_discrete_distributions(build, params):
  dist_name = type(build(params)).__name__
  with pytest.raises(TypeError, match=rf"{dist_name}.*not differentiable.*score_function"):
    sfe.value_and_grad(sfe.pathwise(), lambda x: jnp.sum(x * 1.0), build, params, KEY, num_samples=4)


def test_unknown_distribution_needs_registration():
  class Shifted:
    """A duck-typed distribution sfe_jax has never heard of."""

    def __init__(self, loc):
      self.loc = loc

    def sample(self, seed, sample_shape=()):
      return self.loc + jax.random.normal(seed, tuple(sample_shape) + jnp.shape(self.loc))

    def log_prob(self, x):
      return -0.5 * (x - self.loc) ** 2

  build = lambda p: Shifted(p["loc"])
  params = {"loc": jnp.zeros(2)}
  with pytest.raises(TypeError, match="register_reparameterizable"):
    sfe.value_and_grad(sfe.pathwise(), jnp.sum, build, params, KEY, num_samples=4)
  sfe.register_reparameterizable(Shifted)
  run = jax.jit(lambda est, p: sfe.value_and_grad(est, jnp.sum, build, p, KEY, num_samples=4), static_argnums=0)
  _, grads, _ = run(sfe.pathwise(), params)
  np.testing.assert_allclose(grads["loc"], np.ones(2))
  # The score function needs nothing but sample and log_prob.
  _, grads, _ = run(sfe.score_function(), params)
  assert grads["loc"].shape == (2,)
