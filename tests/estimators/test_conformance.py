"""Conformance: every estimator, on every problem it supports, keeps the same contract.

For each (estimator, problem): the gradient is unbiased against the exact gradient (closed form or
enumeration, differentiated by autodiff), shapes and structure follow params, jit / vmap over keys and over
params / grad of `expectation` agree with `value_and_grad`, and gradients with respect to what f closes over
are right.
"""

import functools
from collections.abc import Callable
from typing import NamedTuple

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sfe_jax as sfe
from tests.helpers import (
  assert_mean,
  bernoulli_support,
  categorical_support,
  enumerate_expectation,
  flat,
  flat1,
  repeated_estimates,
  smallest_num_samples,
)

KEY = jax.random.key(0)
R = 8000

K = jnp.array([0.3, -0.5, 1.0])
W = jnp.array([1.0, 2.0, 0.5])
TABLE_B = jax.random.normal(jax.random.key(7), (8,))
TABLE_C = jax.random.normal(jax.random.key(8), (3, 3))


class Problem(NamedTuple):
  name: str
  build: Callable
  params: dict
  f: Callable  # f(x, w): w is a scalar that f closes over in the tests
  exact: Callable  # exact(params, w) = E[f(x, w)], differentiable
  discrete: bool


def _gauss_exact(p, w):
  scale = jnp.exp(p["log_scale"])
  return w * jnp.sum(W * ((p["loc"] - K) ** 2 + scale**2))


def _bits_index(b):
  return jnp.sum(b.astype(jnp.int32) * jnp.array([4, 2, 1]))


PROBLEMS = [
  Problem(
    "normal-linear",
    lambda p: distrax.Normal(p["loc"], jnp.exp(p["log_scale"])),
    {"loc": jnp.array([0.2, -0.4, 1.0]), "log_scale": jnp.array([0.0, -0.5, 0.3])},
    lambda x, w: w * jnp.sum(W * x),
    lambda p, w: w * jnp.sum(W * p["loc"]),
    False,
  ),
  Problem(
    "normal-quadratic",
    lambda p: distrax.Normal(p["loc"], jnp.exp(p["log_scale"])),
    {"loc": jnp.array([0.2, -0.4, 1.0]), "log_scale": jnp.array([0.0, -0.5, 0.3])},
    lambda x, w: w * jnp.sum(W * (x - K) ** 2),
    _gauss_exact,
    False,
  ),
  Problem(
    "mvn-diag-quadratic",
    lambda p: distrax.MultivariateNormalDiag(p["loc"], jnp.exp(p["log_scale"])),
    {"loc": jnp.array([0.2, -0.4, 1.0]), "log_scale": jnp.array([0.0, -0.5, 0.3])},
    lambda x, w: w * jnp.sum(W * (x - K) ** 2),
    _gauss_exact,
    False,
  ),
  Problem(
    "bernoulli-table",
    lambda p: distrax.Bernoulli(logits=p["logits"]),
    {"logits": jnp.array([0.5, -1.0, 2.0])},
    lambda b, w: w * TABLE_B[_bits_index(b)],
    lambda p, w: enumerate_expectation(
      lambda b: w * TABLE_B[_bits_index(b)], lambda q: distrax.Bernoulli(logits=q["logits"]), p, bernoulli_support((3,))
    ),
    True,
  ),
  Problem(
    "categorical-table",
    lambda p: distrax.Categorical(logits=p["logits"]),
    {"logits": jnp.array([[0.5, -1.0, 0.2], [0.0, 1.0, -0.3]])},
    lambda c, w: w * TABLE_C[c[0], c[1]],
    lambda p, w: enumerate_expectation(
      lambda c: w * TABLE_C[c[0], c[1]],
      lambda q: distrax.Categorical(logits=q["logits"]),
      p,
      categorical_support((2,), 3),
    ),
    True,
  ),
]


def _estimators():
  ests = {
    "sf": (sfe.score_function(), "any"),
    "sf-constant": (sfe.score_function(sfe.baselines.constant(0.5)), "any"),
    "sf-moving-average": (sfe.score_function(sfe.baselines.moving_average()), "any"),
    "sf-loo": (sfe.score_function(sfe.baselines.leave_one_out()), "any"),
    "sf-optimal": (sfe.score_function(sfe.baselines.optimal()), "any"),
    "pathwise": (sfe.pathwise(), "continuous"),
    "mvd": (sfe.measure_valued(), "any"),
    "mvd-uncoupled": (sfe.measure_valued(coupling=False), "any"),
  }
  delta = sfe.control_variates.delta_method()
  ests["sf+delta"] = (sfe.with_control_variate(sfe.score_function(), delta), "continuous")
  ests["pathwise+delta"] = (sfe.with_control_variate(sfe.pathwise(), delta), "continuous")
  ests["mvd+delta"] = (sfe.with_control_variate(sfe.measure_valued(), delta), "continuous")
  return ests


ESTIMATORS = _estimators()
CASES = [(e, p) for e, (_, kind) in ESTIMATORS.items() for p in PROBLEMS if kind == "any" or not p.discrete]
# The default suite checks unbiasedness on one continuous and one discrete problem per estimator, and
# jit/vmap/grad agreement and the gradient of what f closes over (which do not depend on the problem's numbers)
# on the continuous one, plus the measure-valued estimators' own discrete path; `make test-full` runs them all.
_FAST_PROBLEMS = ("normal-quadratic", "categorical-table")
_FAST_TRANSFORMS = {("mvd", "categorical-table")}
UNBIASED_CASES = [
  pytest.param(e, p, id=f"{e}-{p.name}", marks=() if p.name in _FAST_PROBLEMS else pytest.mark.slow) for e, p in CASES
]
TRANSFORM_CASES = [
  pytest.param(
    e,
    p,
    id=f"{e}-{p.name}",
    marks=() if p.name == "normal-quadratic" or (e, p.name) in _FAST_TRANSFORMS else pytest.mark.slow,
  )
  for e, p in CASES
]


def _num_samples(est, problem):
  return smallest_num_samples(est, problem.build, problem.params, at_least=2)


@functools.cache
def _exact(problem_name):
  """(E[f], (its gradient with respect to params, to w)) at w = 1, compiled once per problem and reused."""
  problem = next(p for p in PROBLEMS if p.name == problem_name)
  return jax.jit(jax.value_and_grad(problem.exact, argnums=(0, 1)))(problem.params, 1.0)


@pytest.mark.parametrize("name, problem", UNBIASED_CASES)
def test_unbiased_with_right_structure(name, problem):
  est, _ = ESTIMATORS[name]
  f = lambda x: problem.f(x, 1.0)
  exact_value, (exact, _) = _exact(problem.name)
  values, grads = repeated_estimates(
    est, f, problem.build, problem.params, KEY, num_samples=_num_samples(est, problem), num_repeats=R
  )
  assert jax.tree.structure(grads) == jax.tree.structure(problem.params)
  for g, p in zip(jax.tree.leaves(grads), jax.tree.leaves(problem.params)):
    assert g.shape == (R,) + p.shape and g.dtype == p.dtype
  assert_mean(flat(grads), flat1(exact), what=f"{name} gradient on {problem.name}")
  assert_mean(np.asarray(values), exact_value, what=f"{name} value on {problem.name}")


@pytest.mark.parametrize("name, problem", TRANSFORM_CASES)
def test_transformations_agree(name, problem):
  est, _ = ESTIMATORS[name]
  n = _num_samples(est, problem)
  f = lambda x: problem.f(x, 1.0)
  vg = lambda p, k: sfe.value_and_grad(est, f, problem.build, p, k, num_samples=n)[:2]
  jvg = jax.jit(vg)
  value, grads = jvg(problem.params, KEY)

  # The surrogate of `expectation` has the value and, under jax.grad, the gradient of value_and_grad.
  surrogate = lambda p: sfe.expectation(est, f, problem.build, p, KEY, num_samples=n)[0]
  svalue, sgrads = jax.jit(jax.value_and_grad(surrogate))(problem.params)
  np.testing.assert_allclose(svalue, value, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(flat1(sgrads), flat1(grads), rtol=1e-5, atol=1e-6)

  # vmap over keys and over params equals one call per element.
  keys = jax.random.split(KEY, 2)
  batched = jax.tree.map(lambda x: jnp.stack([x, x + 0.1]), problem.params)
  vvalues, vgrads = jax.jit(jax.vmap(vg))(batched, keys)
  for i in range(2):
    value_i, grads_i = jvg(jax.tree.map(lambda x: x[i], batched), keys[i])
    np.testing.assert_allclose(vvalues[i], value_i, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(flat1(jax.tree.map(lambda x: x[i], vgrads)), flat1(grads_i), rtol=1e-4, atol=1e-5)


# Eager execution compiles every operation on its own, which makes it the slowest check: by default it runs for
# the score function (the shared entry-point path) and one control variate, all in `make test-full`.
_EAGER_DEFAULT = ("sf", "pathwise+delta")
EAGER_CASES = [
  pytest.param(*c.values, id=c.id, marks=() if c.values[0] in _EAGER_DEFAULT and not c.marks else pytest.mark.slow)
  for c in TRANSFORM_CASES
]


@pytest.mark.parametrize("name, problem", EAGER_CASES)
def test_eager_equals_jit(name, problem):
  est, _ = ESTIMATORS[name]
  n = _num_samples(est, problem)
  f = lambda x: problem.f(x, 1.0)
  vg = lambda p, k: sfe.value_and_grad(est, f, problem.build, p, k, num_samples=n)[:2]
  value, grads = jax.jit(vg)(problem.params, KEY)
  evalue, egrads = vg(problem.params, KEY)
  np.testing.assert_allclose(evalue, value, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(flat1(egrads), flat1(grads), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name, problem", TRANSFORM_CASES)
def test_gradient_of_what_f_closes_over(name, problem):
  est, _ = ESTIMATORS[name]
  n = _num_samples(est, problem)

  @jax.jit
  def grads_w(keys):
    def one(k):
      return jax.grad(
        lambda w: sfe.expectation(est, lambda x: problem.f(x, w), problem.build, problem.params, k, num_samples=n)[0]
      )(1.0)

    return jax.vmap(one)(keys)

  _, (_, exact) = _exact(problem.name)
  assert_mean(np.asarray(grads_w(jax.random.split(KEY, R))), exact, what=f"{name} d/dw on {problem.name}")
