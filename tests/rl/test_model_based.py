"""Model-based policy gradients on a linear-quadratic problem with a closed-form objective and gradient.

Dynamics s' = A s + B a (2-D state, 1-D action), reward -(s'Qs + R a^2), start s_0, linear Gaussian policy
a = -K s + sigma eps. The state stays Gaussian: mean mu_{t+1} = M mu_t and covariance
Sigma_{t+1} = M Sigma_t M' + sigma^2 B B' with M = A - B K, so with S_t = Sigma_t + mu_t mu_t',

    J(K, sigma) = -sum_t gamma^t [tr(Q S_t) + R (K S_t K' + sigma^2)],

a closed form whose jax.grad is the exact policy gradient. The pathwise (BPTT) and score-function estimates
must both match it within standard errors; a discrete problem checks the score function with a Categorical
policy against enumeration.
"""

import functools
import itertools

import distrax
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

import sfe_jax as sfe
import sfe_jax.rl as rl
from tests.helpers import assert_mean, mean_and_se

A = jnp.array([[1.0, 0.2], [0.0, 1.0]])
B = jnp.array([[0.0], [0.2]])
Q, R = jnp.eye(2), 0.1
S0 = jnp.array([1.0, -0.5])
HORIZON, GAMMA = 8, 0.95
PARAMS = {"K": jnp.array([[0.5, 0.8]]), "log_sigma": jnp.array(-0.7)}


def policy_fn(params, s):
  return distrax.Normal(-(params["K"] @ s), jnp.exp(params["log_sigma"]) * jnp.ones(1))


def dynamics(s, a):
  return A @ s + B @ a


def reward(s, a):
  return -(s @ Q @ s + R * jnp.sum(a**2))


def exact_objective(params):
  k, var = params["K"], jnp.exp(2 * params["log_sigma"])
  m = A - B @ k
  mu, cov, total = S0, jnp.zeros((2, 2)), 0.0
  for t in range(HORIZON):
    second = cov + jnp.outer(mu, mu)
    total += GAMMA**t * -(jnp.trace(Q @ second) + R * (jnp.sum(k @ second @ k.T) + var))
    mu, cov = m @ mu, m @ cov @ m.T + var * B @ B.T
  return total


# Compiled once for the module: run eagerly, the recursion would compile each of its operations on its own.
exact_value_and_grad = jax.jit(jax.value_and_grad(exact_objective))


def estimates(estimator, num_trajectories, repeats, seed, baseline=None, policy=policy_fn, params=PARAMS):
  def one(key):
    return jax.value_and_grad(
      lambda p: rl.model_based_objective(
        policy,
        dynamics,
        reward,
        p,
        S0,
        key,
        HORIZON,
        GAMMA,
        estimator=estimator,
        num_trajectories=num_trajectories,
        baseline=baseline,
      )
    )(params)

  return jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(seed), repeats))


def test_exact_objective_matches_a_long_monte_carlo_rollout():
  values, _ = estimates("pathwise", 1, 20_000, 0)
  assert_mean(values, exact_value_and_grad(PARAMS)[0], what="value")


@pytest.mark.parametrize(
  "estimator,num_trajectories,baseline",
  [
    ("pathwise", 1, None),
    ("score_function", 1, None),
    ("score_function", 4, sfe.baselines.leave_one_out()),
  ],
  ids=["pathwise", "score_function", "score_function-loo"],
)
def test_gradients_match_the_closed_form(estimator, num_trajectories, baseline):
  exact_value, exact = exact_value_and_grad(PARAMS)
  values, grads = estimates(estimator, num_trajectories, 20_000, 1, baseline)
  assert_mean(values, exact_value, what=f"{estimator} value")
  for name in PARAMS:
    assert_mean(grads[name], exact[name], what=f"{estimator} grad {name}")


def test_pathwise_has_far_lower_variance_and_both_agree():
  _, pathwise = estimates("pathwise", 1, 20_000, 2)
  _, score = estimates("score_function", 1, 20_000, 3)
  for name in PARAMS:
    (m1, se1), (m2, se2) = mean_and_se(pathwise[name]), mean_and_se(score[name])
    assert np.all(np.abs(m1 - m2) <= 5 * np.hypot(se1, se2))
    assert np.all(np.var(pathwise[name], axis=0) * 10 < np.var(score[name], axis=0))


def test_constant_baseline_is_unbiased():
  exact = exact_value_and_grad(PARAMS)[1]
  _, grads = estimates("score_function", 4, 20_000, 4, sfe.baselines.constant(-3.0))
  for name in PARAMS:
    assert_mean(grads[name], np.asarray(exact[name]), what=f"constant-baseline grad {name}")


def test_pathwise_and_score_function_agree_with_a_tanh_normal_policy():
  def squashed(params, s):
    return rl.TanhNormal(-(params["K"] @ s), jnp.exp(params["log_sigma"]) * jnp.ones(1))

  _, pathwise = estimates("pathwise", 1, 20_000, 5, policy=squashed)
  _, score = estimates("score_function", 4, 20_000, 6, sfe.baselines.leave_one_out(), policy=squashed)
  for name in PARAMS:
    (m1, se1), (m2, se2) = mean_and_se(pathwise[name]), mean_and_se(score[name])
    assert np.all(np.abs(m1 - m2) <= 5 * np.hypot(se1, se2)), (name, m1, m2, se1, se2)


# A discrete model: position s in Z, action 0 (left) or 1 (right), reward -|s + move| - 0.1 [a == 1], policy
# logits table indexed by the clipped position. Exact J by enumerating the 2^3 action sequences.
DISCRETE_HORIZON = 3
LOGITS = jnp.array([[0.3, -0.2], [0.1, 0.4], [-0.5, 0.2]])


def discrete_policy(logits, s):
  return distrax.Categorical(logits=logits[jnp.clip(s + 1, 0, 2)])


def discrete_dynamics(s, a):
  return s + 2 * a - 1


def discrete_reward(s, a):
  return -jnp.abs(s + 2 * a - 1).astype(jnp.float32) - 0.1 * a


def discrete_exact(logits):
  total = 0.0
  for actions in itertools.product([0, 1], repeat=DISCRETE_HORIZON):
    s, log_p, ret = jnp.array(0), 0.0, 0.0
    for t, a in enumerate(actions):
      log_p += jax.nn.log_softmax(logits[jnp.clip(s + 1, 0, 2)])[a]
      ret += GAMMA**t * discrete_reward(s, a)
      s = discrete_dynamics(s, a)
    total += jnp.exp(log_p) * ret
  return total


def test_score_function_with_a_categorical_policy_through_a_discrete_model():
  exact_value, exact = jax.jit(jax.value_and_grad(discrete_exact))(LOGITS)

  def one(key):
    return jax.value_and_grad(
      lambda l: rl.model_based_objective(
        discrete_policy,
        discrete_dynamics,
        discrete_reward,
        l,
        jnp.array(0),
        key,
        DISCRETE_HORIZON,
        GAMMA,
        estimator="score_function",
        num_trajectories=2,
        baseline=sfe.baselines.leave_one_out(),
      )
    )(LOGITS)

  values, grads = jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(9), 20_000))
  assert_mean(values, exact_value, what="value")
  assert_mean(grads, exact, what="Categorical score-function grad")


def test_model_rollout_shapes_and_pytree_states():
  def pytree_dynamics(s, a):
    return {"x": s["x"] + a, "v": s["v"] * 0.9}

  out = rl.model_rollout(
    lambda p, s: distrax.Normal(p * s["x"], jnp.ones(3)),
    pytree_dynamics,
    lambda s, a: -jnp.sum(s["x"] ** 2),
    0.5,
    {"x": jnp.ones(3), "v": jnp.array(1.0)},
    jax.random.key(0),
    5,
  )
  assert out.states["x"].shape == (5, 3) and out.states["v"].shape == (5,)
  assert out.actions.shape == (5, 3) and out.rewards.shape == (5,) and out.log_probs.shape == (5,)
  np.testing.assert_allclose(out.states["v"], 0.9 ** np.arange(5), rtol=1e-6)
  np.testing.assert_allclose(out.states["x"][1:], out.states["x"][:-1] + out.actions[:-1], rtol=1e-6)


def test_bad_input_is_refused_at_trace_time():
  def objective(**kwargs):
    args = dict(
      policy_fn=policy_fn,
      dynamics=dynamics,
      reward=reward,
      params=PARAMS,
      init_state=S0,
      key=jax.random.key(0),
      horizon=3,
    )
    args.update(kwargs)
    return rl.model_based_objective(**args)

  with pytest.raises(TypeError, match="reparameterizable.*Categorical"):
    rl.model_based_objective(
      discrete_policy, discrete_dynamics, discrete_reward, LOGITS, jnp.array(0), jax.random.key(0), 3
    )
  with pytest.raises(ValueError, match="`estimator`.*'pathwise', 'score_function'"):
    objective(estimator="reparam")
  with pytest.raises(ValueError, match="`baseline`.*score_function.*only"):
    objective(baseline=sfe.baselines.leave_one_out())
  with pytest.raises(TypeError, match="`baseline` of model_based_objective takes the baselines of sfe.baselines"):
    objective(estimator="score_function", baseline="leave_one_out")
  with pytest.raises(TypeError, match="`baseline` of model_based_objective must be None or a baseline"):
    objective(estimator="score_function", baseline=jnp.zeros((1, 3)))
  with pytest.raises(ValueError, match="`reward`.*scalar.*\\(2,\\)"):
    objective(reward=lambda s, a: s)
  with pytest.raises(ValueError, match="`dynamics`.*structure, shapes and dtypes"):
    objective(dynamics=lambda s, a: jnp.concatenate([s, a]))
  with pytest.raises(ValueError, match="horizon.*at least 1"):
    objective(horizon=0)
  with pytest.raises(TypeError, match="num_trajectories"):
    objective(num_trajectories=2.5)
  with pytest.raises(ValueError, match="gamma.*\\[0, 1\\]"):
    objective(gamma=1.5)
  with pytest.raises(TypeError, match="`dynamics`.*callable"):
    objective(dynamics=None)


@functools.cache
def exact_hessian():
  """The exact Hessian of J in the flattened parameters, compiled once for both cases below."""
  flat_params, unravel = jax.flatten_util.ravel_pytree(PARAMS)
  return np.asarray(jax.jit(jax.hessian(lambda x: exact_objective(unravel(x))))(flat_params)).reshape(-1)


@pytest.mark.parametrize(
  "estimator,num_trajectories,baseline",
  [
    ("pathwise", 1, None),
    ("score_function", 4, sfe.baselines.leave_one_out()),
  ],
  ids=["pathwise", "score_function-loo"],
)
def test_hessians_match_the_closed_form(estimator, num_trajectories, baseline):
  # Both objectives are exact at second order: pathwise along the sampling path, the score function by DiCE.
  flat_params, unravel = jax.flatten_util.ravel_pytree(PARAMS)
  exact = exact_hessian()

  def one(key):
    objective = lambda x: rl.model_based_objective(
      policy_fn,
      dynamics,
      reward,
      unravel(x),
      S0,
      key,
      HORIZON,
      GAMMA,
      estimator=estimator,
      num_trajectories=num_trajectories,
      baseline=baseline,
    )
    return jax.hessian(objective)(flat_params).reshape(-1)

  # The pathwise Hessian has a far lower variance and a far higher cost per trajectory: fewer repeats.
  repeats = 4_000 if estimator == "pathwise" else 20_000
  hessians = jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(21), repeats))
  assert_mean(np.asarray(hessians), exact, what=f"{estimator} Hessian")
