"""Model-based policy gradients through a real JAX environment: gymnax's Pendulum-v1 transitions.

gymnax 1.0.1 can keep the gradients of Pendulum's step (``env.with_transition_gradients()``), so its
``step_env`` is a known differentiable model. A tanh-squashed Normal policy (``sfe.rl.TanhNormal``, scaled to
the torque limit) drives it for a few steps from a fixed state; the pathwise (BPTT) and the score-function
(leave-one-out) gradients of the same discounted return must agree within their standard errors, and the
detached environment (the gymnax default) must leave only the direct reward-on-action path to the pathwise
gradient, which then differs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sfe_jax as sfe
import sfe_jax.rl as rl
from tests.helpers import mean_and_se

gymnax = pytest.importorskip("gymnax")

HORIZON = 6
GAMMA = 0.95
PARAMS = {"w": jnp.array([0.4, -0.8, -0.3]), "b": jnp.array(0.1), "log_scale": jnp.array(-0.5)}


def make_model(differentiable=True):
  env, env_params = gymnax.make("Pendulum-v1")
  if differentiable:
    env = env.with_transition_gradients()
  torque = env_params.max_torque
  key = jax.random.key(0)  # Pendulum's step is deterministic: the key is unused.

  def policy_fn(params, state):
    obs = env.get_obs(state)
    return rl.TanhNormal(obs @ params["w"] + params["b"], jnp.exp(params["log_scale"]))

  def dynamics(state, action):
    return env.step_env(key, state, torque * action, env_params)[1]

  def reward(state, action):
    return env.step_env(key, state, torque * action, env_params)[2]

  _, init_state = env.reset_env(jax.random.key(7), env_params)
  return policy_fn, dynamics, reward, init_state


def gradients(estimator, differentiable=True, repeats=4000, seed=0):
  policy_fn, dynamics, reward, init_state = make_model(differentiable)
  kwargs = {"num_trajectories": 4, "baseline": sfe.baselines.leave_one_out()} if estimator == "score_function" else {}

  def one(key):
    return jax.grad(
      lambda p: rl.model_based_objective(
        policy_fn, dynamics, reward, p, init_state, key, HORIZON, GAMMA, estimator=estimator, **kwargs
      )
    )(PARAMS)

  return jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(seed), repeats))


def test_the_environment_state_is_a_valid_model_state():
  policy_fn, dynamics, reward, init_state = make_model()
  out = rl.model_rollout(policy_fn, dynamics, reward, PARAMS, init_state, jax.random.key(1), HORIZON)
  assert out.actions.shape == (HORIZON,) and np.all(np.abs(out.actions) <= 1)
  assert np.all(np.asarray(out.rewards) <= 0) and out.states.theta.shape == (HORIZON,)
  np.testing.assert_array_equal(out.states.time, np.arange(HORIZON))


def test_pathwise_through_gymnax_matches_the_score_function():
  pathwise = gradients("pathwise", seed=1)
  score = gradients("score_function", seed=2)
  for name in PARAMS:
    (m1, se1), (m2, se2) = mean_and_se(pathwise[name]), mean_and_se(score[name])
    assert np.all(np.abs(m1 - m2) <= 5 * np.hypot(se1, se2)), (name, m1, m2, se1, se2)
    # The gradient is resolved (not zero within noise), and the pathwise estimate is the sharper one.
    assert np.all(np.abs(m1) > 5 * se1), (name, m1, se1)
    assert np.all(se1 < se2)


def test_detached_transitions_lose_the_model_gradient():
  # gymnax's default stops the gradient at every transition: the pathwise estimate then misses every effect of
  # an action on later states, a different (wrong) answer; the score function does not need the gradient.
  attached = gradients("pathwise", seed=3)
  detached = gradients("pathwise", differentiable=False, seed=3)
  score = gradients("score_function", differentiable=False, seed=4)
  (m1, se1), (m2, se2) = mean_and_se(attached["w"]), mean_and_se(detached["w"])
  assert np.any(np.abs(m1 - m2) > 10 * np.hypot(se1, se2))
  (m3, se3) = mean_and_se(score["w"])
  assert np.all(np.abs(m1 - m3) <= 5 * np.hypot(se1, se3))
