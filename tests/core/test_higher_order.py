"""Derivatives of every order: unbiased Hessians where an estimator allows them, a clear error where it does not.

* Estimators exact at every order (the score function in DiCE form with any baseline, pathwise, enumeration,
  control variates on these, the IWAE objective): the Monte Carlo mean of ``jax.hessian`` of the surrogate
  matches the exact Hessian (closed forms of ``closed_forms.md`` Section 1, differentiated twice; enumeration
  for Bernoulli and categorical problems; quadrature for the K-sample bound) within 5 standard errors.
* First-order estimators: ``jax.hessian``, ``jax.grad`` of ``jax.grad`` and ``jax.jacfwd`` of ``jax.grad`` raise
  ``sfe.HigherOrderError`` at trace time, naming the estimator; mixed derivatives (once in the parameters, once
  in what ``f`` closes over) stay available and unbiased.
"""

import functools
import re

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sfe_jax as sfe
from tests.helpers import assert_mean, smallest_num_samples

KEY = jax.random.key(0)


# ----------------------------------------------------------------------------------------------------------
# Exact values: F(mu, sigma) of closed_forms.md Section 1, differentiated twice by autodiff (float64).
# ----------------------------------------------------------------------------------------------------------


def closed_form(family, k):
  """``F(theta)`` with ``theta = (mu, sigma)`` for x ~ N(mu, sigma^2) and the cost function ``family``."""

  def square(t):
    return (t[0] - k) ** 2 + t[1] ** 2

  def gauss(t):
    r = 1 + 2 * k * t[1] ** 2
    return r**-0.5 * jnp.exp(-k * t[0] ** 2 / r)

  def cos(t):
    return jnp.cos(k * t[0]) * jnp.exp(-(k**2) * t[1] ** 2 / 2)

  return {"square": square, "gauss": gauss, "cos": cos}[family]


def cost(family, k):
  return {"square": lambda x: (x - k) ** 2, "gauss": lambda x: jnp.exp(-k * x**2), "cos": lambda x: jnp.cos(k * x)}[
    family
  ]


def exact_hessian(family, k, theta):
  with jax.enable_x64(True):
    return np.asarray(jax.jit(jax.hessian(closed_form(family, k)))(jnp.asarray(theta, jnp.float64)))


def test_closed_form_hessians_match_the_reference_table():
  # closed_forms.md Section 1, "Hessians", at mu = sigma = 1, k = 0.7, order (mu, sigma).
  np.testing.assert_allclose(exact_hessian("square", 0.7, [1.0, 1.0]), [[2, 0], [0, 2]], atol=1e-12)
  np.testing.assert_allclose(
    exact_hessian("cos", 0.7, [1.0, 1.0]), [[-0.29333627, 0.17295161], [0.17295161, -0.14960150]], atol=1e-8
  )
  gauss = exact_hessian("gauss", 0.7, [1.0, 1.0])
  np.testing.assert_allclose(gauss[0], [-0.11720084, 0.39652949], atol=1e-8)
  np.testing.assert_allclose(gauss[1, 0], 0.39652949, atol=1e-8)


def normal(theta):
  return distrax.Normal(theta[0], theta[1])


DELTA = sfe.control_variates.delta_method()
ANY_ORDER = {
  "sf": sfe.score_function(),
  "sf-constant": sfe.score_function(sfe.baselines.constant(0.8)),
  "sf-moving-average": sfe.score_function(sfe.baselines.moving_average()),
  "sf-loo": sfe.score_function(sfe.baselines.leave_one_out()),
  "sf-optimal": sfe.score_function(sfe.baselines.optimal()),
  "pathwise": sfe.pathwise(),
  "sf+delta": sfe.with_control_variate(sfe.score_function(sfe.baselines.leave_one_out()), DELTA),
  "pathwise+delta": sfe.with_control_variate(sfe.pathwise(), DELTA),
}


@functools.cache
def _hessian_estimates(name, family, k, theta, num_samples, num_repeats, seed):
  est = ANY_ORDER[name]
  f = cost(family, k)
  state = est.init(jnp.zeros(2))
  if name == "sf-moving-average":  # a warm baseline, near E[f]
    state = state._replace(average=jnp.float32(0.6), count=jnp.int32(20))

  def one(key):
    surrogate = lambda t: sfe.expectation(est, f, normal, t, key, num_samples=num_samples, state=state)[0]
    return jax.hessian(surrogate)(jnp.asarray(theta, jnp.float32))

  keys = jax.random.split(jax.random.key(seed), num_repeats)
  return np.asarray(jax.jit(jax.vmap(one))(keys)).reshape(num_repeats, 4)


POINTS = [(1.0, 1.0), (-0.4, 0.6)]
# The default suite checks every any-order estimator on two problems at one point; `make test-full` on all
# three problems at both points.
HESSIAN_CASES = [
  pytest.param(
    name,
    family,
    k,
    point,
    id=f"{name}-{family}-k={k}-{point}",
    marks=() if (family, point) in {("square", POINTS[0]), ("cos", POINTS[1])} else pytest.mark.slow,
  )
  for name in ANY_ORDER
  for family, k in [("square", 0.7), ("cos", 0.7), ("gauss", 0.7)]
  for point in POINTS
]


@pytest.mark.parametrize("name, family, k, theta", HESSIAN_CASES)
def test_hessian_unbiased_on_gaussian_costs(name, family, k, theta):
  estimates = _hessian_estimates(name, family, k, theta, 64, 2000, 1)
  assert_mean(estimates, exact_hessian(family, k, theta).reshape(-1), what=f"{name} Hessian of E[{family}] at {theta}")


def test_pathwise_hessian_of_a_quadratic_is_exact_per_sample():
  # x = mu + sigma eps, f = (x - k)^2: per sample the Hessian is [[2, 2 eps], [2 eps, 2 eps^2]].
  estimates = _hessian_estimates("pathwise", "square", 0.7, (1.0, 1.0), 1, 16, 2)
  np.testing.assert_allclose(estimates[:, 0], 2.0, rtol=1e-6)
  np.testing.assert_allclose(estimates[:, 1], estimates[:, 2], rtol=1e-6)
  np.testing.assert_allclose(estimates[:, 3], estimates[:, 1] ** 2 / 2, rtol=1e-5, atol=1e-6)


def test_third_derivative_of_the_score_function():
  # E[x^3] under N(mu, 1) = mu^3 + 3 mu: the third derivative in mu is 6, at every mu.
  est = sfe.score_function(sfe.baselines.leave_one_out())
  build = lambda m: distrax.Normal(m, 1.0)

  def one(key):
    surrogate = lambda m: sfe.expectation(est, lambda x: x**3, build, m, key, num_samples=256)[0]
    return jax.grad(jax.grad(jax.grad(surrogate)))(jnp.float32(0.3))

  estimates = jax.jit(jax.vmap(one))(jax.random.split(KEY, 2000))
  assert_mean(np.asarray(estimates), 6.0, what="third derivative of E[x^3]")


# ----------------------------------------------------------------------------------------------------------
# Discrete: the exact Hessian from sfe.enumerate(), itself checked against an independent enumeration.
# ----------------------------------------------------------------------------------------------------------

TABLE_B = jax.random.normal(jax.random.key(3), (8,))
TABLE_C = jax.random.normal(jax.random.key(4), (3, 3))
DISCRETE = {
  "bernoulli": (
    lambda t: distrax.Bernoulli(logits=t),
    lambda b: TABLE_B[b[0] * 4 + b[1] * 2 + b[2]],
    [jnp.array([0.5, -1.0, 2.0]), jnp.array([-0.3, 0.2, 0.0])],
  ),
  "categorical": (
    lambda t: distrax.Categorical(logits=t),
    lambda c: TABLE_C[c[0], c[1]],
    [jnp.array([[0.5, -1.0, 0.2], [0.0, 1.0, -0.3]]), jnp.array([[1.5, 0.0, -0.7], [0.3, 0.3, 0.3]])],
  ),
}


def _enumerated_hessian(problem, theta):
  build, f, _ = DISCRETE[problem]
  surrogate = lambda t: sfe.expectation(sfe.enumerate(), f, build, t, KEY)[0]
  return np.asarray(jax.jit(jax.hessian(surrogate))(theta)).reshape(theta.size, theta.size)


@pytest.mark.parametrize("problem", sorted(DISCRETE))
def test_enumerate_hessian_matches_an_independent_enumeration(problem):
  build, f, points = DISCRETE[problem]
  theta = points[0]
  kind = "bernoulli" if problem == "bernoulli" else "categorical"
  support = (
    np.array([[(i >> 2) & 1, (i >> 1) & 1, i & 1] for i in range(8)])
    if kind == "bernoulli"
    else np.array([[i // 3, i % 3] for i in range(9)])
  )

  def exact(t):
    log_p = jax.vmap(lambda x: jnp.sum(build(t).log_prob(x)))(jnp.asarray(support))
    return jnp.sum(jnp.exp(log_p) * jax.vmap(f)(jnp.asarray(support)))

  independent = np.asarray(jax.jit(jax.hessian(exact))(theta)).reshape(theta.size, theta.size)
  np.testing.assert_allclose(_enumerated_hessian(problem, theta), independent, rtol=1e-5, atol=1e-6)


DISCRETE_ESTIMATORS = ("sf", "sf-loo", "sf-optimal")


@pytest.mark.parametrize("name", DISCRETE_ESTIMATORS)
@pytest.mark.parametrize("problem", sorted(DISCRETE))
@pytest.mark.parametrize("point", [0, pytest.param(1, marks=pytest.mark.slow)])
def test_score_function_hessian_unbiased_against_enumeration(name, problem, point):
  build, f, points = DISCRETE[problem]
  theta = points[point]
  est = ANY_ORDER[name]

  def one(key):
    surrogate = lambda t: sfe.expectation(est, f, build, t, key, num_samples=64)[0]
    return jax.hessian(surrogate)(theta).reshape(-1)

  estimates = np.asarray(jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(point), 3000)))
  assert_mean(
    estimates, _enumerated_hessian(problem, theta).reshape(-1), what=f"{name} Hessian on {problem} at point {point}"
  )


# ----------------------------------------------------------------------------------------------------------
# The K-sample bound: IWAE's surrogate is differentiable at every order.
# ----------------------------------------------------------------------------------------------------------


def test_iwae_hessian_unbiased_against_quadrature():
  # x | z ~ N(z, 1), z ~ N(0, 1), x = 1.3; q = N(mu, exp(log_sigma)^2); L_2 by tensor Gauss-Hermite.
  x_obs = 1.3
  log_joint = lambda z: -0.5 * z**2 - 0.5 * (x_obs - z) ** 2 - jnp.log(2 * jnp.pi)
  build = lambda t: distrax.Normal(t[0], jnp.exp(t[1]))
  theta = jnp.array([0.2, -0.1])

  def bound(t):
    nodes, weights = np.polynomial.hermite.hermgauss(80)
    eps, w = jnp.asarray(np.sqrt(2.0) * nodes), jnp.asarray(weights / np.sqrt(np.pi))
    z = t[0] + jnp.exp(t[1]) * eps
    log_w = log_joint(z) - (-0.5 * eps**2 - t[1] - 0.5 * jnp.log(2 * jnp.pi))
    lse = jnp.logaddexp(log_w[:, None], log_w[None, :]) - jnp.log(2.0)
    return jnp.sum(w[:, None] * w[None, :] * lse)

  with jax.enable_x64(True):
    exact = np.asarray(jax.jit(jax.hessian(bound))(jnp.asarray(theta, jnp.float64))).reshape(-1)

  def one(key):
    surrogate = lambda t: sfe.objectives.surrogate(sfe.objectives.iwae(), log_joint, build, t, key, num_samples=2)[0]
    return jax.hessian(surrogate)(theta).reshape(-1)

  estimates = np.asarray(jax.jit(jax.vmap(one))(jax.random.split(KEY, 20_000)))
  assert_mean(estimates, exact, what="IWAE Hessian of L_2")


# ----------------------------------------------------------------------------------------------------------
# First-order estimators refuse a second derivative, in every mode, and keep mixed derivatives.
# ----------------------------------------------------------------------------------------------------------


def _control(cp, z):
  return cp["a"] * jnp.sum(jnp.tanh(z))


FLOAT_BITS = lambda t: distrax.Bernoulli(logits=t, dtype=jnp.float32)  # noqa: E731
FIRST_ORDER = {
  "measure_valued": (sfe.measure_valued(), normal, "sfe.measure_valued()"),
  "measure_valued+delta": (
    sfe.with_control_variate(sfe.measure_valued(), DELTA),
    normal,
    "sfe.with_control_variate(sfe.measure_valued(), ",
  ),
  "arm": (sfe.arm(), FLOAT_BITS, "sfe.arm()"),
  "disarm": (sfe.disarm(), FLOAT_BITS, "sfe.disarm()"),
  "gumbel_softmax": (sfe.gumbel_softmax(0.5), FLOAT_BITS, "sfe.gumbel_softmax(temperature=0.5)"),
  "st_gumbel_softmax": (
    sfe.gumbel_softmax(0.5, straight_through=True),
    FLOAT_BITS,
    "sfe.gumbel_softmax(temperature=0.5, straight_through=True)",
  ),
  "straight_through": (sfe.straight_through(), FLOAT_BITS, "sfe.straight_through()"),
  "rebar": (sfe.rebar(), FLOAT_BITS, "sfe.rebar()"),
  "relax": (sfe.relax(_control, {"a": jnp.float32(0.3)}), FLOAT_BITS, "sfe.relax()"),
  "unordered_set": (sfe.unordered_set(), FLOAT_BITS, "sfe.unordered_set()"),
}


@pytest.mark.parametrize("name", sorted(FIRST_ORDER))
@pytest.mark.parametrize("mode", ["hessian", "grad_of_grad", "jacfwd_of_grad"])
def test_first_order_estimators_refuse_a_second_derivative(name, mode):
  est, build, shown = FIRST_ORDER[name]
  theta = jnp.array([0.3, 0.8])
  f = lambda x: jnp.sum(jnp.sin(x) + x**2)
  n = smallest_num_samples(est, build, theta, at_least=2)
  surrogate = lambda t: sfe.expectation(est, f, build, t, KEY, num_samples=n)[0]
  if mode == "hessian":
    second = jax.hessian(surrogate)
  elif mode == "grad_of_grad":
    second = jax.grad(lambda t: jnp.sum(jax.grad(surrogate)(t)))
  else:
    second = jax.jacfwd(jax.grad(surrogate))
  with pytest.raises(
    sfe.HigherOrderError, match=rf"{re.escape(shown)}.*first-order gradients only.*sfe\.score_function"
  ):
    jax.eval_shape(second, theta)
  if mode == "hessian":  # The first derivative is fine, in both modes.
    assert np.all(np.isfinite(np.asarray(jax.jit(jax.grad(surrogate))(theta))))
    assert np.all(np.isfinite(np.asarray(jax.jit(jax.jacfwd(surrogate))(theta))))


@pytest.mark.parametrize("name", ["dreg", "vimco"])
def test_first_order_objectives_refuse_a_second_derivative(name):
  objective = {"dreg": sfe.objectives.dreg, "vimco": sfe.objectives.vimco}[name]()
  log_joint = lambda z: -0.5 * jnp.sum(z**2)
  surrogate = lambda t: sfe.objectives.surrogate(objective, log_joint, normal, t, KEY, num_samples=4)[0]
  with pytest.raises(sfe.HigherOrderError, match=rf"sfe\.objectives\.{name}\(\).*first-order"):
    jax.jit(jax.hessian(surrogate))(jnp.array([0.3, 0.8]))  # raised while tracing


# Mixed derivatives: f(x; w) with E = F(theta, w); d/dw of the theta-gradient estimate, in both orders.
MIXED = {
  "sf": sfe.score_function(),
  "measure_valued": sfe.measure_valued(),
  "disarm": sfe.disarm(),
  "relax": sfe.relax(_control, {"a": jnp.float32(0.3)}),
  "unordered_set": sfe.unordered_set(),
}


MIXED_CASES = [
  pytest.param(
    name,
    order,
    id=f"{name}-{order}",
    marks=() if order == "theta_then_w" or name in ("sf", "disarm") else pytest.mark.slow,
  )
  for name in sorted(MIXED)
  for order in ["theta_then_w", "w_then_theta"]
]


@pytest.mark.parametrize("name, order", MIXED_CASES)
def test_mixed_derivatives_are_unbiased(name, order):
  est = MIXED[name]
  if name in ("sf", "measure_valued"):  # x ~ N(mu, sigma^2), f = (x - w)^2: d2F / dw dmu = -2, d/dsigma = 0.
    build, theta = normal, jnp.array([0.3, 0.8])
    f = lambda x, w: (x - w) ** 2
    exact = np.array([-2.0, 0.0])
  else:  # Three bits, f = sum((b - w c)^2): d2F / dw dlogit_i = -2 c_i p_i (1 - p_i).
    build, theta = FLOAT_BITS, jnp.array([0.5, -1.0, 0.2])
    c = jnp.array([0.6, 0.51, 0.48])
    f = lambda b, w: jnp.sum((b - w * c) ** 2)
    p = jax.nn.sigmoid(theta)
    exact = np.asarray(-2 * c * p * (1 - p))
  n = smallest_num_samples(est, build, theta, at_least=4)
  w0 = jnp.float32(0.7)

  def one(key):
    surrogate = lambda t, w: sfe.expectation(est, lambda x: f(x, w), build, t, key, num_samples=n)[0]
    if order == "theta_then_w":
      return jax.jacfwd(jax.grad(surrogate, argnums=0), argnums=1)(theta, w0)
    return jax.grad(jax.grad(surrogate, argnums=1), argnums=0)(theta, w0)

  estimates = np.asarray(jax.jit(jax.vmap(one))(jax.random.split(KEY, 4000)))
  assert_mean(estimates, exact, what=f"{name} mixed derivative ({order})")
