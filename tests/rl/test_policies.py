"""sfe_jax.rl policy helpers: TanhNormal, per-step log-probabilities and entropies, score-function and
pathwise sampling; REINFORCE with continuous policies against exact gradients from Gauss-Hermite quadrature."""

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sfe_jax as sfe
import sfe_jax.rl as rl
from tests.helpers import assert_mean

NODES, WEIGHTS = np.polynomial.hermite_e.hermegauss(80)  # E_{e ~ N(0,1)}[g(e)] = sum w g(x) / sqrt(2 pi)
WEIGHTS = WEIGHTS / np.sqrt(2 * np.pi)
TARGET = jnp.array([0.3, -0.6])
LOC, LOG_SCALE = jnp.array([0.2, -0.1]), jnp.array([-0.5, 0.3])


def reward(actions):
  """Reward of a 2-D action in (-1, 1)^2, per step: -|a - target|^2."""
  return -jnp.sum((actions - TARGET) ** 2, axis=-1)


def exact_objective(params):
  """E[reward(tanh(u))], u ~ N(loc, scale^2), by Gauss-Hermite quadrature per coordinate (separable)."""
  u = params["loc"][:, None] + jnp.exp(params["log_scale"])[:, None] * NODES[None, :]
  return -jnp.sum(jnp.sum(WEIGHTS * (jnp.tanh(u) - TARGET[:, None]) ** 2, axis=1))


def policy(params, batch, steps):
  shape = (batch, steps, 2)
  return rl.TanhNormal(jnp.broadcast_to(params["loc"], shape), jnp.broadcast_to(jnp.exp(params["log_scale"]), shape))


PARAMS = {"loc": LOC, "log_scale": LOG_SCALE}


def test_tanh_normal_log_prob_matches_distrax_inside_and_is_finite_at_the_bounds():
  loc, scale = jnp.array([0.3, -1.0, 2.0]), jnp.array([0.5, 1.0, 2.0])
  ours = rl.TanhNormal(loc, scale)
  a = jnp.array([0.1, -0.9, 0.999])

  @jax.jit
  def log_probs(loc, scale, a):
    ours, theirs = rl.TanhNormal(loc, scale), distrax.Transformed(distrax.Normal(loc, scale), distrax.Tanh())
    bounds = jnp.array([1.0, -1.0, 1.0])
    grad = jax.grad(lambda l: jnp.sum(rl.TanhNormal(l, scale).log_prob(jnp.ones(3))))(loc)
    return ours.log_prob(a), theirs.log_prob(a), ours.log_prob(bounds), theirs.log_prob(bounds), grad

  ours_lp, theirs_lp, edges, theirs_edges, edge_grad = log_probs(loc, scale, a)
  np.testing.assert_allclose(ours_lp, theirs_lp, rtol=1e-5)
  # Change of variables by hand: log N(atanh a) - log(1 - a^2).
  u = np.arctanh(np.asarray(a, np.float64))
  by_hand = (
    -0.5 * ((u - np.asarray(loc)) / np.asarray(scale)) ** 2
    - np.log(np.asarray(scale))
    - 0.5 * np.log(2 * np.pi)
    - np.log1p(-(np.asarray(a, np.float64) ** 2))
  )
  np.testing.assert_allclose(ours_lp, by_hand, rtol=1e-4)
  assert np.all(np.isfinite(edges)) and not np.all(np.isfinite(theirs_edges))
  assert np.all(np.isfinite(edge_grad))
  np.testing.assert_allclose(ours.loc, loc) and np.testing.assert_allclose(ours.scale, scale)


def test_tanh_normal_is_reparameterizable_jittable_and_bounded():
  import sfe_jax as sfe  # noqa: PLC0415

  assert sfe.is_reparameterizable(rl.TanhNormal(0.0, 1.0))
  draw = jax.jit(lambda loc: rl.TanhNormal(loc, 3.0).sample(seed=jax.random.key(1), sample_shape=1000))
  a = draw(jnp.zeros(2))
  assert a.shape == (1000, 2) and np.all(np.abs(a) <= 1.0)
  with pytest.raises(NotImplementedError):
    rl.TanhNormal(0.0, 1.0).entropy()


def test_score_function_sampling_of_saturated_tanh_actions_is_exact():
  # loc = 50: every tanh(u) rounds to 1.0 in float32 (with any of XLA's tanh implementations; near u = 10 the
  # unoptimised one is still an ulp below 1); log_prob(action) would be the density at the clipped action, but
  # sample_actions computes it from the pre-squash u, which is exact.
  @jax.jit
  def compute(loc, key):
    policy_ = rl.TanhNormal(loc, 1.0)
    actions, log_probs = rl.sample_actions(policy_, key, 1)
    u = policy_.distribution.sample(seed=key)
    log_det = 2 * (np.log(2) - u - jax.nn.softplus(-2 * u))
    by_hand = jnp.sum(policy_.distribution.log_prob(u) - log_det, axis=-1)
    # The score at a fixed action: d/dloc log N(u; loc, 1) = u - loc.
    grad = jax.grad(lambda l: jnp.sum(rl.sample_actions(rl.TanhNormal(l, 1.0), key, 1)[1]))(loc)
    return actions, log_probs, by_hand, u, grad

  actions, log_probs, by_hand, u, grad = compute(jnp.full((1, 3), 50.0), jax.random.key(3))
  np.testing.assert_allclose(log_probs, by_hand, rtol=1e-6)
  assert np.all(actions == 1.0) and np.all(np.isfinite(log_probs))
  np.testing.assert_allclose(grad, u - 50.0, rtol=1e-5, atol=1e-5)


def test_action_log_probs_and_entropies_sum_the_action_axes():
  @jax.jit
  def compute():
    normal = distrax.Normal(jnp.zeros((2, 3, 4)), jnp.full((2, 3, 4), 2.0))
    actions = jax.random.normal(jax.random.key(0), (2, 3, 4))
    categorical = distrax.Categorical(logits=jnp.zeros((2, 3, 5)))
    a, lp = rl.sample_actions(normal, jax.random.key(1))
    return {
      "log_probs": (rl.action_log_probs(normal, actions), normal.log_prob(actions).sum(-1)),
      "normal_entropies": rl.action_entropies(normal),
      "categorical_log_probs": rl.action_log_probs(categorical, jnp.zeros((2, 3), jnp.int32)),
      "categorical_entropies": rl.action_entropies(categorical),
      "sampled": (a, lp, rl.action_log_probs(normal, a)),
    }

  out = compute()
  np.testing.assert_allclose(*out["log_probs"], rtol=1e-6)
  np.testing.assert_allclose(
    out["normal_entropies"], np.full((2, 3), 4 * (0.5 * np.log(2 * np.pi * np.e * 4))), rtol=1e-6
  )
  assert out["categorical_log_probs"].shape == (2, 3)
  np.testing.assert_allclose(out["categorical_entropies"], np.full((2, 3), np.log(5)), rtol=1e-6)
  a, lp, lp_again = out["sampled"]
  assert a.shape == (2, 3, 4) and lp.shape == (2, 3)
  np.testing.assert_allclose(lp, lp_again, rtol=1e-6)


def test_sample_actions_score_function_form_stops_the_action_gradient():
  key = jax.random.key(2)

  def actions_sum(loc, reparameterize):
    return jnp.sum(rl.sample_actions(distrax.Normal(loc, 1.0), key, 1, reparameterize=reparameterize)[0])

  @jax.jit
  def compute(loc):
    a, _ = rl.sample_actions(distrax.Normal(loc, 1.0), key, 1)
    score = jax.grad(lambda l: jnp.sum(rl.sample_actions(distrax.Normal(l, 1.0), key, 1)[1]))(loc)
    return jax.grad(actions_sum)(loc, False), jax.grad(actions_sum)(loc, True), a - loc, score

  score_form, pathwise_form, a_minus_loc, score = compute(jnp.zeros((1, 3)))
  np.testing.assert_allclose(score_form, 0.0)
  np.testing.assert_allclose(pathwise_form, 1.0)
  # Score of a Normal at a fixed action: (a - loc) / scale^2.
  np.testing.assert_allclose(score, a_minus_loc, rtol=1e-6)


def test_bad_policies_and_arguments_are_refused():
  with pytest.raises(ValueError, match=r"batch_ndims=2.*batch_shape=\(3,\)"):
    rl.action_log_probs(distrax.Categorical(logits=jnp.zeros((3, 4))), jnp.zeros(3, jnp.int32))
  with pytest.raises(TypeError, match="no closed-form entropy.*action_log_probs"):
    rl.action_entropies(rl.TanhNormal(jnp.zeros((2, 3)), 1.0))
  with pytest.raises(TypeError, match="reparameterizable.*Categorical"):
    rl.sample_actions(distrax.Categorical(logits=jnp.zeros((2, 3, 4))), jax.random.key(0), reparameterize=True)
  with pytest.raises(TypeError, match="batch_ndims"):
    rl.action_log_probs(distrax.Normal(jnp.zeros((2, 3)), 1.0), jnp.zeros((2, 3)), batch_ndims=2.0)
  with pytest.raises(ValueError, match="batch_ndims.*at least 0"):
    rl.action_entropies(distrax.Normal(jnp.zeros((2, 3)), 1.0), batch_ndims=-1)
  with pytest.raises(TypeError, match="PRNG key"):
    rl.sample_actions(distrax.Normal(jnp.zeros((2, 3)), 1.0), 0)


@pytest.mark.parametrize("reward_to_go", [True, False])
def test_reinforce_with_a_tanh_normal_policy_is_unbiased(reward_to_go):
  """B = 4 trajectories of T = 3 independent bandit steps: J = 3 E[reward], so grad J = 3 grad E[reward]."""
  batch, steps, repeats = 4, 3, 20_000
  exact = jax.jit(jax.grad(lambda p: steps * exact_objective(p)))(PARAMS)

  def estimate(key):
    actions, _ = rl.sample_actions(policy(PARAMS, batch, steps), key)
    rewards = reward(actions)

    def loss(p):
      log_probs = rl.action_log_probs(policy(p, batch, steps), actions)
      return rl.reinforce_loss(
        log_probs,
        rewards,
        jnp.ones((batch, steps)),
        1.0,
        baseline=sfe.baselines.leave_one_out(),
        reward_to_go=reward_to_go,
      )

    return jax.tree.map(jnp.negative, jax.grad(loss)(PARAMS))

  grads = jax.jit(jax.vmap(estimate))(jax.random.split(jax.random.key(7), repeats))
  for name in PARAMS:
    assert_mean(grads[name], exact[name], what=f"REINFORCE grad {name}")


def test_pathwise_tanh_normal_sampling_is_unbiased_and_lower_variance_than_reinforce():
  repeats, batch = 20_000, 4
  exact = jax.jit(jax.grad(exact_objective))(PARAMS)

  def pathwise(key):
    return jax.grad(lambda p: jnp.mean(reward(rl.sample_actions(policy(p, batch, 1), key, reparameterize=True)[0])))(
      PARAMS
    )

  def score(key):
    actions, _ = rl.sample_actions(policy(PARAMS, batch, 1), key)
    return jax.grad(
      lambda p: (
        -rl.reinforce_loss(
          rl.action_log_probs(policy(p, batch, 1), actions), reward(actions), jnp.ones((batch, 1)), 1.0
        )
      )
    )(PARAMS)

  keys = jax.random.split(jax.random.key(8), repeats)
  pw, sf = jax.jit(jax.vmap(pathwise))(keys), jax.jit(jax.vmap(score))(keys)
  for name in PARAMS:
    assert_mean(pw[name], exact[name], what=f"pathwise grad {name}")
    assert_mean(sf[name], exact[name], what=f"score-function grad {name}")
    assert np.all(np.var(pw[name], axis=0) < np.var(sf[name], axis=0))
