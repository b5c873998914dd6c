"""Conformance of the discrete estimators: one contract, checked against sfe.enumerate() on every problem.

For each unbiased estimator and each discrete problem it supports: the mean of the value and of the gradient
(with respect to params and to what f closes over) agrees with the exact expectation and gradient from
enumeration within standard errors. For every discrete estimator, biased ones included: jit, eager,
``expectation`` and vmap agree; logits of +-50 give finite values and gradients; a continuous distribution is
refused with an error that names the estimator.
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
from tests.helpers import assert_mean, flat, flat1, smallest_num_samples

KEY = jax.random.key(0)
R = 4000

_RNG = np.random.default_rng(1)
_A = jnp.asarray(_RNG.normal(size=(4,)), jnp.float32)
_T = jnp.asarray(_RNG.normal(size=(2, 4)), jnp.float32)
_S = jnp.asarray(_RNG.normal(size=(5,)), jnp.float32)


def _smooth_bits(b):
  b = jnp.reshape(b.astype(jnp.float32), (-1,))
  return jnp.sin(jnp.sum(_A[: b.size] * b) + 0.3) + 0.5 * jnp.sum(b * b[::-1]) - b[0]


def _smooth_one_hot(x):
  x = x.astype(jnp.float32)
  return jnp.sum(_T * x) + 0.7 * jnp.sum(_T[0] * x[0]) * jnp.sum(_T[1] * x[1])


class Problem(NamedTuple):
  name: str
  build: Callable
  params: dict
  f: Callable  # f(x): accepts the distribution's samples and, where `relaxable`, floats of the same encoding
  relaxable: bool  # float bits or one-hot samples, and f accepts relaxed ones (relaxations need both)


PROBLEMS = [
  Problem(
    "bernoulli-3",
    lambda p: distrax.Bernoulli(logits=p["logits"], dtype=jnp.float32),
    {"logits": jnp.array([0.5, -1.0, 2.0])},
    _smooth_bits,
    True,
  ),
  Problem(
    "independent-bernoulli-2x2",
    lambda p: distrax.Independent(distrax.Bernoulli(logits=p["logits"], dtype=jnp.float32), 2),
    {"logits": jnp.array([[0.3, -0.2], [1.1, -1.4]])},
    _smooth_bits,
    True,
  ),
  Problem(
    "one-hot-2x4",
    lambda p: distrax.OneHotCategorical(logits=p["logits"], dtype=jnp.float32),
    {"logits": jnp.array([[0.5, -1.0, 0.2, 0.0], [0.0, 1.0, -0.3, 0.4]])},
    _smooth_one_hot,
    True,
  ),
  Problem(
    "categorical-5",
    lambda p: distrax.Categorical(logits=p["logits"]),
    {"logits": jnp.array([0.5, -1.0, 0.2, 0.0, 1.5])},
    lambda c: _S[c] ** 2 + _S[c],
    False,
  ),
]


def _control(cp, z):
  return cp["a"] * jnp.sum(jnp.tanh(cp["w"] * z + cp["b"]))


_CONTROL_PARAMS = {"a": jnp.float32(0.7), "w": jnp.float32(0.5), "b": jnp.float32(-0.2)}

# name -> (constructor, unbiased, needs a relaxable f)
ESTIMATORS = {
  "sf": (lambda: sfe.score_function(), True, False),
  "sf-loo": (lambda: sfe.score_function(sfe.baselines.leave_one_out()), True, False),
  "arm": (lambda: sfe.arm(), True, False),
  "disarm": (lambda: sfe.disarm(), True, False),
  "rebar": (lambda: sfe.rebar(), True, True),
  "relax": (lambda: sfe.relax(_control, _CONTROL_PARAMS), True, False),
  "unordered-set": (lambda: sfe.unordered_set(), True, False),
  "enumerate": (lambda: sfe.enumerate(), True, False),
  "gumbel-softmax": (lambda: sfe.gumbel_softmax(0.5), False, True),
  "st-gumbel-softmax": (lambda: sfe.gumbel_softmax(0.5, straight_through=True), False, True),
  "straight-through": (lambda: sfe.straight_through(), False, True),
}
DISCRETE_ONLY = [n for n in ESTIMATORS if not n.startswith("sf")]


def _supports(name, problem):
  return problem.relaxable or not ESTIMATORS[name][2]


CASES = [(n, p) for n in ESTIMATORS for p in PROBLEMS if ESTIMATORS[n][1] and _supports(n, p)]
ALL_CASES = [(n, p) for n in ESTIMATORS for p in PROBLEMS if _supports(n, p)]


def _num_samples(est, problem):
  return smallest_num_samples(est, problem.build, problem.params, at_least=2)


def _value_and_grads(est, problem, num_samples):
  """(value, d/dparams, d/dw) of the surrogate of ``E[w f(x)]`` at w = 1, for one key."""

  def one(key):
    surrogate = lambda p, w: sfe.expectation(
      est, lambda x: w * problem.f(x), problem.build, p, key, num_samples=num_samples
    )[0]
    return jax.value_and_grad(surrogate, argnums=(0, 1))(problem.params, jnp.float32(1.0))

  return one


@functools.cache
def _exact(problem_name):
  """(value, (d/dparams, d/dw)) from enumeration, compiled once per problem of PROBLEMS and reused by every test."""
  problem = next(p for p in PROBLEMS if p.name == problem_name)
  return jax.jit(_value_and_grads(sfe.enumerate(), problem, None))(KEY)


def _default_problems(name):
  """The problems the default suite runs for ``name``: bits, and its categorical encoding."""
  return ("bernoulli-3", "one-hot-2x4" if ESTIMATORS[name][2] else "categorical-5")


# Unbiasedness by default on bits and one categorical encoding per estimator, `make test-full` on all four.
UNBIASED_CASES = [
  pytest.param(n, p, id=f"{n}-{p.name}", marks=() if p.name in _default_problems(n) else pytest.mark.slow)
  for n, p in CASES
]


@pytest.mark.parametrize("name, problem", UNBIASED_CASES)
def test_unbiased_against_enumeration(name, problem):
  est = ESTIMATORS[name][0]()
  exact_value, (exact_grads, exact_dw) = _exact(problem.name)
  one = _value_and_grads(est, problem, _num_samples(est, problem))
  values, (grads, dws) = jax.jit(jax.vmap(one))(jax.random.split(KEY, R))
  assert jax.tree.structure(grads) == jax.tree.structure(problem.params)
  for g, p in zip(jax.tree.leaves(grads), jax.tree.leaves(problem.params)):
    assert g.shape == (R,) + p.shape and g.dtype == p.dtype
  what = f"{name} on {problem.name}"
  assert_mean(flat(grads), flat1(exact_grads), what=f"{what}: gradient")
  assert_mean(np.asarray(values), exact_value, what=f"{what}: value")
  assert_mean(np.asarray(dws), exact_dw, what=f"{what}: gradient of what f closes over")


# jit/eager/expectation/vmap agreement does not depend on the problem: by default one problem per estimator (the
# index-valued categorical, or for the relaxations the one-hot one), `make test-full` all of them.
TRANSFORM_CASES = [
  pytest.param(
    n,
    p,
    id=f"{n}-{p.name}",
    marks=() if p.name == ("one-hot-2x4" if ESTIMATORS[n][2] else "categorical-5") else pytest.mark.slow,
  )
  for n, p in ALL_CASES
]


@pytest.mark.parametrize("name, problem", TRANSFORM_CASES)
def test_transformations_agree(name, problem):
  est = ESTIMATORS[name][0]()
  n = _num_samples(est, problem)
  vg = lambda p, k: sfe.value_and_grad(est, problem.f, problem.build, p, k, num_samples=n)[:2]
  value, grads = jax.jit(vg)(problem.params, KEY)
  surrogate = lambda p: sfe.expectation(est, problem.f, problem.build, p, KEY, num_samples=n)[0]
  svalue, sgrads = jax.jit(jax.value_and_grad(surrogate))(problem.params)
  np.testing.assert_allclose(svalue, value, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(flat1(sgrads), flat1(grads), rtol=1e-5, atol=1e-6)
  keys = jax.random.split(KEY, 2)
  vvalues, vgrads = jax.jit(jax.vmap(vg, in_axes=(None, 0)))(problem.params, keys)
  for i in range(2):
    value_i, grads_i = jax.jit(vg)(problem.params, keys[i])
    np.testing.assert_allclose(vvalues[i], value_i, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(flat1(jax.tree.map(lambda x: x[i], vgrads)), flat1(grads_i), rtol=1e-4, atol=1e-5)


# Eager execution compiles every operation on its own, which makes it the slowest check: by default it runs for
# the antithetic estimator (the discrete view and the shared entry point), all in `make test-full`; the score
# function's eager path is checked in tests/estimators/test_conformance.py.
_EAGER_DEFAULT = ("disarm",)
EAGER_CASES = [
  pytest.param(*c.values, id=c.id, marks=() if c.values[0] in _EAGER_DEFAULT and not c.marks else pytest.mark.slow)
  for c in TRANSFORM_CASES
]


@pytest.mark.parametrize("name, problem", EAGER_CASES)
def test_eager_equals_jit(name, problem):
  est = ESTIMATORS[name][0]()
  n = _num_samples(est, problem)
  vg = lambda p, k: sfe.value_and_grad(est, problem.f, problem.build, p, k, num_samples=n)[:2]
  value, grads = jax.jit(vg)(problem.params, KEY)
  evalue, egrads = vg(problem.params, KEY)
  np.testing.assert_allclose(evalue, value, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(flat1(egrads), flat1(grads), rtol=1e-4, atol=1e-5)


_EXTREME = [
  PROBLEMS[0]._replace(name="bernoulli-extreme", params={"logits": jnp.array([50.0, -50.0, 0.0])}),
  PROBLEMS[2]._replace(
    name="one-hot-extreme", params={"logits": jnp.array([[50.0, -50.0, 0.0, 1.0], [-50.0, -50.0, 50.0, 0.0]])}
  ),
  PROBLEMS[3]._replace(name="categorical-extreme", params={"logits": jnp.array([50.0, -50.0, 0.0, 1.0, -3.0])}),
]
# By default the index-valued categorical; bits and one-hot, whose +-inf logits (test_infinite_logits_...) become
# the even larger finite +-C, run in `make test-full`.
EXTREME_CASES = [
  pytest.param(n, p, id=f"{n}-{p.name}", marks=() if p.name == "categorical-extreme" else pytest.mark.slow)
  for n in ESTIMATORS
  for p in _EXTREME
  if _supports(n, p)
]


@pytest.mark.parametrize("name, problem", EXTREME_CASES)
def test_extreme_logits_give_finite_values_and_gradients(name, problem):
  est = ESTIMATORS[name][0]()
  one = _value_and_grads(est, problem, _num_samples(est, problem))
  values, (grads, dws) = jax.jit(jax.vmap(one))(jax.random.split(KEY, 64))
  for leaf in [values, dws] + jax.tree.leaves(grads):
    assert np.all(np.isfinite(np.asarray(leaf))), f"{name} on {problem.name}: non-finite output"


@pytest.mark.parametrize("name", DISCRETE_ONLY)
def test_continuous_distribution_is_refused(name):
  est = ESTIMATORS[name][0]()
  with pytest.raises(TypeError, match=r"(?s)needs.*Bernoulli.*got distrax\.Normal"):
    sfe.value_and_grad(est, jnp.sum, lambda p: distrax.Normal(p, 1.0), jnp.zeros(3), KEY, num_samples=6)


# Infinite logits: masked categories (-inf) and deterministic bits (+-inf), as in RL action masking. Every
# estimator must give finite values, gradients and state, a zero gradient for every infinite logit, and (the
# unbiased ones) the exact mean from enumeration. The index-valued categorical encoding runs in `make test-full`.
_MASKED = {
  "bernoulli-3": {"logits": jnp.array([jnp.inf, -jnp.inf, 0.5])},
  "one-hot-2x4": {"logits": jnp.array([[0.5, -jnp.inf, 0.2, 0.0], [-jnp.inf, 1.0, -jnp.inf, 0.4]])},
  "categorical-5": {"logits": jnp.array([0.5, -jnp.inf, 0.2, 0.0, 1.5])},
}
_MASKED_ESTIMATORS = dict(
  ESTIMATORS, **{"sf-optimal": (lambda: sfe.score_function(sfe.baselines.optimal()), True, False)}
)


@functools.cache
def _masked_exact(problem_name):
  """(value, gradients, state) from enumeration with the infinite logits of _MASKED, compiled once per problem."""
  problem = next(p for p in PROBLEMS if p.name == problem_name)
  return jax.jit(lambda p: sfe.value_and_grad(sfe.enumerate(), problem.f, problem.build, p, KEY))(_MASKED[problem_name])


MASKED_CASES = [
  pytest.param(
    n,
    p._replace(params=_MASKED[p.name]),
    id=f"{n}-{p.name}",
    marks=pytest.mark.slow if p.name == "categorical-5" else (),
  )
  for n in _MASKED_ESTIMATORS
  for p in PROBLEMS
  if p.name in _MASKED and (p.relaxable or not _MASKED_ESTIMATORS[n][2])
]


@pytest.mark.parametrize("name, problem", MASKED_CASES)
def test_infinite_logits_give_the_exact_value_and_gradient(name, problem):
  ctor, unbiased, _ = _MASKED_ESTIMATORS[name]
  est = ctor()
  logits = problem.params["logits"]
  exact_value, exact_grads, _ = _masked_exact(problem.name)
  n = None if name == "enumerate" else _num_samples(est, problem._replace(params={"logits": jnp.zeros_like(logits)}))
  run = jax.jit(jax.vmap(lambda k: sfe.value_and_grad(est, problem.f, problem.build, problem.params, k, num_samples=n)))
  values, grads, states = run(jax.random.split(KEY, 2000))
  floats = [leaf for leaf in jax.tree.leaves(states) if jnp.issubdtype(leaf.dtype, jnp.floating)]
  for leaf in [values, grads["logits"], *floats]:
    assert np.all(np.isfinite(np.asarray(leaf))), f"{name} on {problem.name}: non-finite output or state"
  assert np.all(np.asarray(grads["logits"])[:, ~np.isfinite(np.asarray(logits))] == 0.0)
  if unbiased:
    assert_mean(np.asarray(values), exact_value, what=f"{name} value with infinite logits")
    assert_mean(flat(grads), flat1(exact_grads), what=f"{name} gradient with infinite logits")
