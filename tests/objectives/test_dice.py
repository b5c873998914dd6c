"""DiCE: first and second derivatives against exact gradients and Hessians, on Gaussian costs and the IPD.

Exact values: the Gaussian cost functions of reference/closed_forms.md (Section 1, Hessians at mu = sigma = 1,
k = 0.7, order (mu, sigma)), and the iterated prisoner's dilemma with memory-one policies (Foerster et al.
2018), whose discounted value is the solution of a linear system over its Markov chain (differentiable, so its
exact gradient and Hessian come from jax). Tolerances are standard errors (helpers.assert_mean).
"""

import functools

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sfe_jax as sfe
from tests.helpers import assert_mean, assert_variance

KEY = jax.random.key(0)
MU, SIGMA, K = 1.0, 1.0, 0.7
THETA = jnp.array([MU, SIGMA])

# ----------------------------------------------------------------------------------------------------------
# Gaussian costs: x ~ N(mu, sigma^2), one stochastic node, one cost.
# ----------------------------------------------------------------------------------------------------------

COSTS = {
  "square": lambda x: (x - K) ** 2,
  "cos": lambda x: jnp.cos(K * x),
  "exp": lambda x: jnp.exp(-K * x**2),
}


def _closed_form_value(name, theta):
  mu, sigma = theta[0], theta[1]
  if name == "square":
    return (mu - K) ** 2 + sigma**2
  if name == "cos":
    return jnp.cos(K * mu) * jnp.exp(-(K**2) * sigma**2 / 2)
  r = 1 + 2 * K * sigma**2
  return r**-0.5 * jnp.exp(-K * mu**2 / r)


# The Hessians printed in closed_forms.md (exp: F_sigmasigma is not printed; it comes from the closed form).
TABLE_HESSIANS = {
  "square": np.array([[2.0, 0.0], [0.0, 2.0]]),
  "cos": np.array([[-0.29333627, 0.17295161], [0.17295161, -0.14960150]]),
  "exp": np.array([[-0.11720084, 0.39652949], [0.39652949, np.nan]]),
}


@functools.cache
def _exact(name):
  """Exact (F, gradient, Hessian) at THETA, by differentiating the closed form (compiled once per cost)."""
  f = lambda t: _closed_form_value(name, t)
  return jax.jit(lambda t: (f(t), jax.grad(f)(t), jax.hessian(f)(t)))(THETA)


@pytest.mark.parametrize("name", sorted(COSTS))
def test_closed_form_hessians_match_reference_table(name):
  _, _, hess = _exact(name)
  table = TABLE_HESSIANS[name]
  known = ~np.isnan(table)
  np.testing.assert_allclose(np.asarray(hess)[known], table[known], rtol=1e-5, atol=1e-6)


def _single_sample_surrogate(f, theta, eps, baseline=None):
  """DiCE surrogate for one sample x = mu + sigma eps, entered as a constant (no pathwise gradient)."""
  dist = distrax.Normal(theta[0], theta[1])
  x = jax.lax.stop_gradient(theta[0] + theta[1] * eps)
  log_probs = dist.log_prob(x)[None]
  baselines = None if baseline is None else jnp.full((1,), baseline)
  return sfe.objectives.dice(f(x)[None], log_probs, baselines=baselines)


def _per_sample_derivatives(name, num_samples, baseline=None):
  f = COSTS[name]
  eps = jax.random.normal(KEY, (num_samples,))
  s = lambda t, e: _single_sample_surrogate(f, t, e, baseline)
  run = jax.jit(jax.vmap(lambda e: (s(THETA, e), jax.grad(s)(THETA, e), jax.hessian(s)(THETA, e))))
  return run(eps)


N_GAUSS = 400_000


@pytest.mark.parametrize("name", sorted(COSTS))
def test_gaussian_first_and_second_derivatives_are_unbiased(name):
  value, grad, hess = _exact(name)
  vals, grads, hessians = _per_sample_derivatives(name, N_GAUSS)
  assert_mean(vals, value, what=f"value on {name}")
  assert_mean(grads, grad, what=f"DiCE gradient on {name}")
  assert_mean(np.asarray(hessians).reshape(N_GAUSS, 4), np.asarray(hess).reshape(4), what=f"DiCE Hessian on {name}")


@pytest.mark.parametrize("name", sorted(COSTS))
def test_gaussian_baseline_keeps_the_mean(name):
  value, grad, hess = _exact(name)
  vals, g1, h1 = _per_sample_derivatives(name, N_GAUSS, baseline=value)  # b = E[f], a constant
  x = THETA[0] + THETA[1] * jax.random.normal(KEY, (N_GAUSS,))
  np.testing.assert_allclose(vals, jax.vmap(COSTS[name])(x), rtol=1e-6, atol=1e-6)  # the term is 0 in value
  assert_mean(g1, grad, what=f"gradient with baseline on {name}")
  assert_mean(np.asarray(h1).reshape(N_GAUSS, 4), np.asarray(hess).reshape(4), what=f"Hessian with baseline on {name}")


def test_gaussian_baseline_variance_is_exact_and_lower_on_the_square():
  # f = (x - k)^2, b = F = a^2 + sigma^2: Var[(f - b) s] = Var_SF - 2 b E[f s^2] + b^2 E[s^2] per parameter
  # (closed_forms.md Section 1). b = E[f] is not always a good baseline (on cos and exp at k = 0.7 it raises
  # some variances); on the square it lowers every first- and second-derivative variance.
  a = MU - K
  b = a**2 + SIGMA**2
  var_sf = np.array([a**4 + 14 * a**2 + 15, 2 * a**4 + 60 * a**2 + 74])
  var_b = var_sf - 2 * b * np.array([a**2 + 3, 2 * a**2 + 10]) + b**2 * np.array([1.0, 2.0])
  _, g0, h0 = _per_sample_derivatives("square", N_GAUSS)
  _, g1, h1 = _per_sample_derivatives("square", N_GAUSS, baseline=b)
  assert_variance(g0, var_sf, what="DiCE gradient variance without baseline")
  assert_variance(g1, var_b, what="DiCE gradient variance with baseline")
  h0, h1 = np.asarray(h0).reshape(N_GAUSS, 4), np.asarray(h1).reshape(N_GAUSS, 4)
  for before, after, what in ((g0, g1, "gradient"), (h0, h1, "Hessian")):
    _assert_variance_lower(before, after, what)


def _assert_variance_lower(before, after, what):
  """Var(after) < Var(before), paired (same samples): the mean squared-deviation difference is > 5 SE."""
  before, after = np.asarray(before, np.float64), np.asarray(after, np.float64)
  diff = (before - before.mean(0)) ** 2 - (after - after.mean(0)) ** 2
  mean, se = diff.mean(0), diff.std(0, ddof=1) / np.sqrt(diff.shape[0])
  assert np.all(mean > 5 * se), f"{what}: variance {after.var(0)} not below {before.var(0)} (SE {se})"


# ----------------------------------------------------------------------------------------------------------
# Iterated prisoner's dilemma with memory-one policies (Foerster et al. 2018, Sections 5 and 6).
# States, from agent 1's view: 0 = start, then 1 + 2 a1 + a2 for the previous joint action (C = 0, D = 1):
# CC, CD, DC, DD. Agent 2 sees CD and DC swapped. theta_i[s] is agent i's logit of cooperating in state s.
# ----------------------------------------------------------------------------------------------------------

GAMMA, HORIZON = 0.96, 150
REWARD_1 = jnp.array([-1.0, -3.0, 0.0, -2.0])  # CC, CD, DC, DD for agent 1
SWAP = jnp.array([0, 1, 3, 2, 4])  # agent 2's view of each state


def _joint_action_probs(theta1, theta2):
  """(5, 4): probability of each joint action (CC, CD, DC, DD) in each state."""
  p1 = jax.nn.sigmoid(theta1)
  p2 = jax.nn.sigmoid(theta2)[SWAP]
  return jnp.stack([p1 * p2, p1 * (1 - p2), (1 - p1) * p2, (1 - p1) * (1 - p2)], axis=1)


def ipd_exact_value(theta, horizon=None):
  """Agent 1's discounted value sum_t gamma^t E[r_t], exactly: p0 (I - gamma M)^-1 (I - (gamma M)^H) r."""
  probs = _joint_action_probs(theta[:5], theta[5:])
  p0, m = probs[0], probs[1:]
  resolvent = jnp.linalg.solve(jnp.eye(4) - GAMMA * m, REWARD_1)
  if horizon is None:
    return p0 @ resolvent
  tail = jnp.linalg.matrix_power(GAMMA * m, horizon) @ resolvent
  return p0 @ (resolvent - tail)


def ipd_state_values(theta):
  """v[s] = E[sum_{k >= 0} gamma^k r_{t+k} | state s at time t] (infinite horizon), shape (5,)."""
  probs = _joint_action_probs(theta[:5], theta[5:])
  m = probs[1:]
  v_next = jnp.linalg.solve(jnp.eye(4) - GAMMA * m, m @ REWARD_1)  # for states 1..4
  return probs @ (REWARD_1 + GAMMA * v_next)


def ipd_sample(theta, key, batch):
  """Trajectories (states, a1, a2), each (batch, HORIZON), sampled under theta (actions 0 = C, 1 = D)."""

  def step(state, k):
    k1, k2 = jax.random.split(k)
    a1 = (jax.random.uniform(k1, (batch,)) >= jax.nn.sigmoid(theta[:5])[state]).astype(jnp.int32)
    a2 = (jax.random.uniform(k2, (batch,)) >= jax.nn.sigmoid(theta[5:])[SWAP[state]]).astype(jnp.int32)
    return 1 + 2 * a1 + a2, (state, a1, a2)

  _, (states, a1, a2) = jax.lax.scan(step, jnp.zeros(batch, jnp.int32), jax.random.split(key, HORIZON))
  return states.T, a1.T, a2.T


def ipd_surrogate(theta, states, a1, a2, baselines=None):
  """One trajectory's DiCE surrogate of agent 1's discounted return; states, a1, a2 of shape (HORIZON,)."""
  logit1, logit2 = theta[:5][states], theta[5:][SWAP[states]]
  log_probs = jnp.where(a1 == 0, jax.nn.log_sigmoid(logit1), jax.nn.log_sigmoid(-logit1)) + jnp.where(
    a2 == 0, jax.nn.log_sigmoid(logit2), jax.nn.log_sigmoid(-logit2)
  )
  costs = GAMMA ** jnp.arange(HORIZON) * REWARD_1[2 * a1 + a2]
  return sfe.objectives.dice(costs, log_probs, baselines=baselines)


def ipd_estimates(theta, key, batch, use_baseline, order):
  """Per-trajectory DiCE estimates of the value, the gradient and (order 2) the cross Hessian block
  d^2 / d theta1 d theta2, shape (5, 5)."""
  states, a1, a2 = ipd_sample(theta, key, batch)

  def one(s, x1, x2):
    b = None
    if use_baseline:  # gamma^t v(s_t): depends only on nodes before t
      b = jax.lax.stop_gradient(GAMMA ** jnp.arange(HORIZON) * ipd_state_values(theta)[s])
    fn = lambda t: ipd_surrogate(t, s, x1, x2, b)
    out = (fn(theta), jax.grad(fn)(theta))
    if order == 1:
      return out
    grad1 = lambda t2: jax.grad(lambda t1: fn(jnp.concatenate([t1, t2])))(theta[:5])
    return out + (jax.jacfwd(grad1)(theta[5:]),)

  return jax.jit(jax.vmap(one))(states, a1, a2)


@jax.jit
def ipd_exact(theta):
  """Compiled: ((value, gradient) truncated at HORIZON, (value, gradient) of the infinite horizon)."""
  return jax.value_and_grad(ipd_exact_value)(theta, HORIZON), jax.value_and_grad(ipd_exact_value)(theta)


def test_ipd_exact_value_at_zero():
  (truncated, _), (infinite, _) = ipd_exact(jnp.zeros(10))
  np.testing.assert_allclose((1 - GAMMA) * infinite, -1.5, rtol=1e-5)
  # Truncation at the horizon changes the value by gamma^150 ~ 0.002 of it.
  np.testing.assert_allclose(truncated, -1.5 / (1 - GAMMA) * (1 - GAMMA**HORIZON), rtol=1e-5)


def test_ipd_state_values_satisfy_bellman():
  theta = jax.random.normal(jax.random.key(1), (10,))
  v, value = jax.jit(lambda t: (ipd_state_values(t), ipd_exact_value(t)))(theta)
  np.testing.assert_allclose(v[0], value, rtol=1e-5)


IPD_BATCH = 100_000


@pytest.mark.parametrize("theta_name", ["zero", pytest.param("random", marks=pytest.mark.slow)])
def test_ipd_dice_gradient_matches_exact(theta_name):
  theta = jnp.zeros(10) if theta_name == "zero" else 0.5 * jax.random.normal(jax.random.key(1), (10,))
  batch = IPD_BATCH // 4 if theta_name == "zero" else IPD_BATCH
  values, grads = ipd_estimates(theta, KEY, batch, use_baseline=False, order=1)
  # The truncated objective is what the trajectories estimate, exactly; the infinite-horizon gradient differs
  # from it by O(gamma^HORIZON), which the second check bounds.
  (exact_value, exact_grad), (_, infinite) = ipd_exact(theta)
  assert_mean(values, exact_value, what="IPD value")
  assert_mean(grads, exact_grad, what=f"IPD DiCE gradient at theta={theta_name}")
  assert np.max(np.abs(infinite - exact_grad)) < 0.05 * np.max(np.abs(infinite))


def test_ipd_baseline_keeps_the_mean_and_lowers_the_variance():
  theta = 0.5 * jax.random.normal(jax.random.key(1), (10,))
  (_, exact_grad), _ = ipd_exact(theta)
  _, g0 = ipd_estimates(theta, KEY, IPD_BATCH // 4, use_baseline=False, order=1)
  _, g1 = ipd_estimates(theta, KEY, IPD_BATCH // 4, use_baseline=True, order=1)
  assert_mean(g1, exact_grad, what="IPD DiCE gradient with baseline")
  _assert_variance_lower(g0, g1, "IPD gradient with baseline")


@pytest.mark.slow  # second-order DiCE is checked in the default suite on closed forms and a two-node graph
def test_ipd_second_order_dice_matches_exact_hessian():
  # The cross block d^2 V1 / d theta1 d theta2 of agent 1's value Hessian, the term LOLA differentiates
  # through (Foerster et al. 2018, Figure 4); with the any-order baseline the mean is unchanged and the
  # variance lower.
  theta = 0.5 * jax.random.normal(jax.random.key(1), (10,))
  exact = np.asarray(jax.jit(jax.hessian(lambda t: ipd_exact_value(t, HORIZON)))(theta))[:5, 5:].reshape(25)
  batch = IPD_BATCH // 10
  _, _, h0 = ipd_estimates(theta, KEY, batch, use_baseline=False, order=2)
  _, _, h1 = ipd_estimates(theta, KEY, batch, use_baseline=True, order=2)
  h0, h1 = np.asarray(h0).reshape(batch, 25), np.asarray(h1).reshape(batch, 25)
  assert_mean(h0, exact, what="IPD DiCE cross Hessian")
  assert_mean(h1, exact, what="IPD DiCE cross Hessian with baseline")
  _assert_variance_lower(h0, h1, "IPD cross Hessian with baseline")


def test_sequence_equals_explicit_lower_triangular_dependencies():
  log_probs = jax.random.normal(jax.random.key(2), (3, 4))
  costs = jax.random.normal(jax.random.key(3), (3, 4))
  seq = lambda lp: sfe.objectives.dice(costs, lp)
  gen = lambda lp: sfe.objectives.dice(costs, lp, dependencies=np.tril(np.ones((4, 4), bool)))
  # One compilation: eager, each operation (and each of the Hessians') would be compiled on its own.
  out = jax.jit(
    lambda lp: {
      "seq": seq(lp),
      "gen": gen(lp),
      "seq_hessian": jax.hessian(seq)(lp),
      "gen_hessian": jax.hessian(gen)(lp),
      "seq_grad": jax.grad(seq)(lp),
    }
  )(log_probs)
  np.testing.assert_allclose(out["seq"], costs.sum(-1).mean(), rtol=1e-6)
  np.testing.assert_allclose(out["gen"], out["seq"], rtol=1e-6)
  np.testing.assert_allclose(out["gen_hessian"], out["seq_hessian"], rtol=1e-5, atol=1e-6)
  # d L / d log p_w = batch mean of the cost-to-go sum_{t >= w} c_t.
  np.testing.assert_allclose(out["seq_grad"], jnp.cumsum(costs[:, ::-1], -1)[:, ::-1] / 3, rtol=1e-5, atol=1e-6)


def test_general_graph_two_independent_nodes():
  # Two independent Bernoulli nodes; cost 0 depends on node 0 only and cost 1 on both. The exact expectation
  # is enumerated, and the per-sample DiCE Hessian averages to its Hessian.
  dep = np.array([[True, False], [True, True]])
  f0 = lambda x0: (x0 - 0.3) ** 2
  f1 = lambda x0, x1: x0 * x1 + 2.0 * x1

  def exact(phi):
    p = jax.nn.sigmoid(phi)
    total = 0.0
    for x0 in (0.0, 1.0):
      for x1 in (0.0, 1.0):
        prob = (p[0] if x0 else 1 - p[0]) * (p[1] if x1 else 1 - p[1])
        total = total + prob * (f0(x0) + f1(x0, x1))
    return total

  phi = jnp.array([0.4, -0.8])
  n = 200_000

  def one(phi, x):
    log_probs = jnp.where(x == 1, jax.nn.log_sigmoid(phi), jax.nn.log_sigmoid(-phi))
    return sfe.objectives.dice(jnp.stack([f0(x[0]), f1(x[0], x[1])]), log_probs, dependencies=dep)

  @jax.jit
  def run(phi):
    xs = (jax.random.uniform(KEY, (n, 2)) < jax.nn.sigmoid(phi)).astype(jnp.float32)
    grads = jax.vmap(jax.grad(one), (None, 0))(phi, xs)
    hessians = jax.vmap(jax.hessian(one), (None, 0))(phi, xs)
    return grads, hessians, jax.grad(exact)(phi), jax.hessian(exact)(phi)

  grads, hessians, exact_grad, exact_hessian = run(phi)
  assert_mean(grads, exact_grad, what="general-graph gradient")
  assert_mean(np.asarray(hessians).reshape(n, 4), np.asarray(exact_hessian).reshape(4), what="general-graph Hessian")


def test_magic_box():
  x = jnp.array(0.7)
  value, grad, second = jax.jit(
    lambda x: (
      sfe.objectives.magic_box(x),
      jax.grad(lambda t: sfe.objectives.magic_box(3 * t))(x),
      jax.grad(jax.grad(lambda t: sfe.objectives.magic_box(t**2)))(x),
    )
  )(x)
  assert value == 1.0
  np.testing.assert_allclose(grad, 3.0)
  np.testing.assert_allclose(second, 2 + 4 * 0.7**2, rtol=1e-6)


def test_jit_matches_eager():
  log_probs = jax.random.normal(jax.random.key(4), (5, 6))
  costs = jax.random.normal(jax.random.key(5), (5, 6))
  baselines = jax.random.normal(jax.random.key(6), (5, 6))
  fn = lambda lp: sfe.objectives.dice(costs, lp, baselines=baselines)
  np.testing.assert_allclose(jax.jit(fn)(log_probs), fn(log_probs), rtol=1e-6)
  np.testing.assert_allclose(jax.jit(jax.grad(fn))(log_probs), jax.grad(fn)(log_probs), rtol=1e-6)
  # The baseline term is 0 in value and subtracts b_w from each node's cost-to-go in the first derivative.
  np.testing.assert_allclose(fn(log_probs), costs.sum(-1).mean(), rtol=1e-6)
  expected = (jnp.cumsum(costs[:, ::-1], -1)[:, ::-1] - baselines) / 5
  np.testing.assert_allclose(jax.grad(fn)(log_probs), expected, rtol=1e-5, atol=1e-6)


def test_errors():
  c, lp = jnp.zeros((2, 3)), jnp.zeros((2, 3))
  with pytest.raises(ValueError, match="same leading"):
    sfe.objectives.dice(c, jnp.zeros((3, 3)))
  with pytest.raises(ValueError, match="same last axis"):
    sfe.objectives.dice(c, jnp.zeros((2, 4)))
  with pytest.raises(ValueError, match=r"shape \(num_costs, num_nodes\)"):
    sfe.objectives.dice(c, jnp.zeros((2, 4)), dependencies=np.ones((4, 3), bool))
  with pytest.raises(ValueError, match="sequence structure"):
    sfe.objectives.dice(c, lp, dependencies=np.ones((3, 3), bool), baselines=lp)
  with pytest.raises(ValueError, match="shape of `log_probs`"):
    sfe.objectives.dice(c, lp, baselines=jnp.zeros(3))
  with pytest.raises(TypeError, match="floating-point"):
    sfe.objectives.dice(jnp.zeros((2, 3), jnp.int32), lp)
  with pytest.raises(ValueError, match="at least 1 dimension"):
    sfe.objectives.dice(jnp.zeros(()), jnp.zeros(()))
  with pytest.raises(TypeError, match="concrete"):
    jax.jit(lambda d: sfe.objectives.dice(c, lp, dependencies=d))(jnp.ones((3, 3)))
