"""sfe.enumerate(): the exact expectation and gradient that the discrete estimators are tested against."""

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sfe_jax as sfe
from sfe_jax._src.discrete import views as discrete
from tests.helpers import bernoulli_support, categorical_support, enumerate_expectation, flat1

KEY = jax.random.key(0)


def _exact(f, build, params, **kw):
  return sfe.value_and_grad(sfe.enumerate(**kw), f, build, params, KEY)


def _exact_jit(f, build, params, **kw):
  """``_exact``, compiled: run eagerly, each of its operations would be compiled on its own."""
  return jax.jit(lambda p: _exact(f, build, p, **kw))(params)


@pytest.mark.parametrize("p0, phi", [(0.49, -2.0), (0.45, 0.0), (0.499, 1.3)])
def test_bernoulli_toy_closed_form(p0, phi):
  # E[(b - p0)^2] = p(1 - 2 p0) + p0^2, with gradient (1 - 2 p0) p (1 - p) in the logit.
  value, grads, _ = _exact_jit(lambda b: (b - p0) ** 2, lambda t: distrax.Bernoulli(logits=t), jnp.float32(phi))
  p = 1 / (1 + np.exp(-phi))
  np.testing.assert_allclose(value, p * (1 - 2 * p0) + p0**2, rtol=1e-6)
  np.testing.assert_allclose(grads, (1 - 2 * p0) * p * (1 - p), rtol=1e-5)


def test_kool_three_bit_toy():
  p0 = jnp.array([0.6, 0.51, 0.48])
  _, grads, _ = _exact_jit(
    lambda b: jnp.sum((b - p0) ** 2), lambda t: distrax.Bernoulli(logits=jnp.full(3, t)), jnp.float32(0.0)
  )
  np.testing.assert_allclose(grads, -0.0450, atol=5e-7)


@pytest.mark.parametrize("kind", ["bernoulli", "independent", "categorical", "one-hot"])
def test_matches_an_independent_enumeration(kind):
  rng = np.random.default_rng(0)
  if kind in ("bernoulli", "independent"):
    params = {"logits": jnp.asarray(rng.normal(size=(2, 2)), jnp.float32)}
    build = lambda p: distrax.Bernoulli(logits=p["logits"])
    if kind == "independent":
      build = lambda p: distrax.Independent(distrax.Bernoulli(logits=p["logits"]), 2)
    points = bernoulli_support((2, 2))
    f = lambda x: jnp.sin(jnp.sum(jnp.array([[1.0, 2.0], [3.0, -1.5]]) * x)) + x[0, 1] * x[1, 0]
  else:
    params = {"logits": jnp.asarray(rng.normal(size=(2, 3)), jnp.float32)}
    table = jnp.asarray(rng.normal(size=(3, 3)), jnp.float32)
    if kind == "categorical":
      build = lambda p: distrax.Categorical(logits=p["logits"])
      points = categorical_support((2,), 3)
      f = lambda c: table[c[0], c[1]]
    else:
      build = lambda p: distrax.OneHotCategorical(logits=p["logits"])
      points = np.asarray(jax.nn.one_hot(categorical_support((2,), 3), 3, dtype=jnp.int32))
      f = lambda x: jnp.einsum("i,ij,j->", x[0].astype(jnp.float32), table, x[1].astype(jnp.float32))

  @jax.jit
  def run(params):
    reference = jax.value_and_grad(lambda p: enumerate_expectation(f, build, p, points))(params)
    return _exact(f, build, params), reference

  (value, grads, state), (exact_value, exact_grads) = run(params)
  np.testing.assert_allclose(value, exact_value, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(flat1(grads), flat1(exact_grads), rtol=1e-4, atol=1e-6)
  assert state == sfe.EmptyState()


def test_exact_for_what_f_closes_over_and_higher_derivatives():
  build = lambda t: distrax.Bernoulli(logits=t)
  # E[w * b] = w * sigmoid(t): d/dw = sigmoid(t); d2/dt2 = w * s (1 - s)(1 - 2 s).
  surrogate = lambda t, w: sfe.expectation(sfe.enumerate(), lambda b: w * b, build, t, KEY)[0]
  t, w = jnp.float32(0.7), jnp.float32(2.0)
  s = 1 / (1 + np.exp(-0.7))
  d_dw, d2_dt2 = jax.jit(lambda t, w: (jax.grad(surrogate, argnums=1)(t, w), jax.grad(jax.grad(surrogate))(t, w)))(t, w)
  np.testing.assert_allclose(d_dw, s, rtol=1e-6)
  np.testing.assert_allclose(d2_dt2, 2.0 * s * (1 - s) * (1 - 2 * s), rtol=1e-5)


def test_support_enumerates_every_value_once():
  view = discrete.DiscreteView(discrete.CATEGORICAL, jnp.zeros((2, 3)), False, jnp.int32)
  points = np.asarray(discrete.support(view))
  assert points.shape == (9, 2)
  assert len({tuple(p) for p in points}) == 9


def test_extreme_logits_are_finite():
  build = lambda t: distrax.Bernoulli(logits=t)
  value, grads, _ = _exact_jit(lambda b: jnp.sum(b * jnp.arange(3.0)), build, jnp.array([50.0, -50.0, 0.0]))
  assert np.all(np.isfinite(value)) and np.all(np.isfinite(grads))


def test_errors():
  bits = lambda t: distrax.Bernoulli(logits=t)
  f = lambda b: jnp.sum(b)
  with pytest.raises(ValueError, match=r"2\^20 = 1048576 values.*max_support=65536"):
    _exact(f, bits, jnp.zeros(20))
  with pytest.raises(ValueError, match=r"max_support=4"):
    _exact(f, bits, jnp.zeros(3), max_support=4)
  with pytest.raises(TypeError, match=r"sfe.enumerate\(\) needs Bernoulli.*got distrax\.Normal.*not discrete"):
    _exact(f, lambda t: distrax.Normal(t, 1.0), jnp.zeros(3))
  with pytest.raises(ValueError, match="`max_support` must be at least 1"):
    sfe.enumerate(max_support=0)
