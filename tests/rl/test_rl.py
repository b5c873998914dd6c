"""sfe_jax.rl on a small MDP whose exact value and policy gradient come from dynamic programming.

The MDP: states 0 and 1, an absorbing terminal state 2 (zero reward, masked), 2 actions, horizon T = 4, a
tabular softmax policy. J(theta) = sum_s rho0(s) V_0(s) with the finite-horizon recursion
V_t(s) = sum_a w(a|s) [r(s, a) + gamma sum_s' P(s'|s, a) V_{t+1}(s')]; with w = pi_theta it is the exact
expected discounted return, and jax.grad of it the exact policy gradient. The same recursion with an
unnormalised w = min(rho_bar mu, pi) is the exact mean of the truncated importance-sampling estimator.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sfe_jax as sfe
import sfe_jax.rl as rl
from tests.helpers import assert_mean, mean_and_se

T = 4
GAMMA = 0.9
RHO0 = jnp.array([0.6, 0.4, 0.0])
REWARD = jnp.array([[1.0, -0.5], [0.2, 2.0], [0.0, 0.0]])
P_TERM = jnp.array(
  [[[0.7, 0.2, 0.1], [0.1, 0.6, 0.3]], [[0.5, 0.3, 0.2], [0.2, 0.5, 0.3]], [[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]]]
)
THETA = jnp.array([[0.3, -0.4], [-0.2, 0.5], [0.0, 0.0]])
THETA_MU = jnp.array([[-0.3, 0.2], [0.4, -0.1], [0.0, 0.0]])
NUM_REPEATS = 400


def dp_values(w, transitions=P_TERM, gamma=GAMMA):
  """[T, S] values V_t(s) of the (possibly unnormalised) action weights w [S, A]; differentiable in w."""
  values = [jnp.zeros(3)]
  for _ in range(T):
    q = REWARD + gamma * transitions @ values[0]
    values.insert(0, jnp.sum(w * q, axis=1))
  return jnp.stack(values[:T])


def exact_value(theta, transitions=P_TERM):
  return RHO0 @ dp_values(jax.nn.softmax(theta), transitions)[0]


# Compiled once for the module: run eagerly, the recursion would compile each of its operations on its own.
exact_value_and_grad = jax.jit(jax.value_and_grad(exact_value))


def sample(key, theta, batch, transitions=P_TERM):
  """B trajectories under softmax(theta): states, actions, rewards, mask, each [B, T]."""

  def one(k):
    k0, k = jax.random.split(k)
    s0 = jax.random.categorical(k0, jnp.log(RHO0))

    def step(s, kt):
      ka, ks = jax.random.split(kt)
      a = jax.random.categorical(ka, theta[s])
      s_next = jax.random.categorical(ks, jnp.log(transitions[s, a]))
      return s_next, (s, a, REWARD[s, a], (s != 2).astype(jnp.float32))

    _, out = jax.lax.scan(step, s0, jax.random.split(k, T))
    return out

  return jax.vmap(one)(jax.random.split(key, batch))


def log_probs(theta, states, actions):
  return jax.nn.log_softmax(theta)[states, actions]


@functools.cache
def _batches(seed, batch, theta_name, num_repeats):
  theta = {"pi": THETA, "mu": THETA_MU}[theta_name]
  keys = jax.random.split(jax.random.key(seed), num_repeats)
  return jax.jit(jax.vmap(lambda k: sample(k, theta, batch)))(keys)


def repeated(fn, seed, batch, theta_sample="pi", num_repeats=NUM_REPEATS):
  """fn(batch tuple) -> pytree over independent batches (sampled once per configuration), jitted and vmapped."""
  return jax.jit(jax.vmap(fn))(_batches(seed, batch, theta_sample, num_repeats))


def flat_var(grads):
  return float(np.var(np.asarray(grads).reshape(grads.shape[0], -1), axis=0, ddof=1).sum())


# ----------------------------------------------------------------------------------------------------------
# Deterministic formulas.
# ----------------------------------------------------------------------------------------------------------


def random_batch(seed, b=5, t=6):
  rng = np.random.default_rng(seed)
  rewards = rng.normal(size=(b, t)).astype(np.float32)
  values = rng.normal(size=(b, t)).astype(np.float32)
  lengths = rng.integers(1, t + 1, size=b)
  lengths[0] = t
  mask = (np.arange(t)[None] < lengths[:, None]).astype(np.float32)
  return rewards, values, mask, lengths


def test_discounted_returns_direct_formula():
  rewards, _, mask, lengths = random_batch(0)
  rewards_padded = np.where(mask > 0, rewards, 99.0)  # Padding must be ignored.
  got = np.asarray(jax.jit(rl.discounted_returns)(rewards_padded, mask, 0.8))
  want = np.zeros_like(rewards)
  for b, length in enumerate(lengths):
    for t in range(length):
      want[b, t] = sum(0.8 ** (k - t) * rewards[b, k] for k in range(t, length))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("lam", [0.0, 0.7, 1.0])
def test_gae_direct_formula(lam):
  rewards, values, mask, lengths = random_batch(1)
  bootstrap = np.array([0.5, 1.0, -1.0, 2.0, 0.3], np.float32)
  gamma = 0.9
  got = np.asarray(jax.jit(rl.gae)(rewards, values, mask, gamma, lam, bootstrap))
  want = np.zeros_like(rewards)
  t_max = rewards.shape[1]
  for b, length in enumerate(lengths):
    next_values = [
      values[b, t + 1] if t + 1 < length else (bootstrap[b] if length == t_max else 0.0) for t in range(length)
    ]
    deltas = [rewards[b, t] + gamma * next_values[t] - values[b, t] for t in range(length)]
    for t in range(length):
      want[b, t] = sum((gamma * lam) ** (l - t) * deltas[l] for l in range(t, length))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  if lam == 1.0:  # GAE(1) with a terminal end is the return minus the baseline.
    got0, want0 = jax.jit(
      lambda: (rl.gae(rewards, values, mask, gamma, 1.0), (rl.discounted_returns(rewards, mask, gamma) - values) * mask)
    )()
    np.testing.assert_allclose(got0, want0, atol=1e-5)


def test_ppo_loss_hand_values():
  ratios = np.array([[1.5, 0.5, 1.1, 3.0]], np.float32)
  adv = np.array([[1.0, -1.0, 2.0, -5.0]], np.float32)
  mask = np.array([[1.0, 1.0, 1.0, 0.0]], np.float32)  # The last step is padding.

  @jax.jit
  def compute(ratios):
    lp = jnp.log(ratios)
    loss = rl.ppo_loss(lp, jnp.zeros_like(lp), adv, mask, 0.2)
    g = jax.grad(lambda l: rl.ppo_loss(l, jnp.zeros_like(lp), adv, mask, 0.2))(lp)
    g0 = jax.grad(lambda l: rl.ppo_loss(l, jax.lax.stop_gradient(l), adv, mask, 0.2))(lp)
    return loss, g, g0

  loss, g, g0 = compute(ratios)
  # min(1.5, 1.2) = 1.2; min(-0.5, -0.8) = -0.8; min(2.2, 2.2) = 2.2; mean over 3 valid steps = 2.6 / 3.
  np.testing.assert_allclose(loss, -2.6 / 3, rtol=1e-6)
  # Gradient: only unclipped terms pass one: d/dlp of ratio * A = ratio * A -> step 3 only: -2.2 / 3.
  np.testing.assert_allclose(g, [[0.0, 0.0, -2.2 / 3, 0.0]], rtol=1e-6, atol=1e-7)
  # At the data's policy the gradient is the (undiscounted) policy gradient -mean(A grad log pi).
  np.testing.assert_allclose(g0, -adv * mask / 3, rtol=1e-6)


def test_ppo_value_loss_hand_values():
  v, old, ret = jnp.array([[1.0, 0.1]]), jnp.array([[0.0, 0.0]]), jnp.array([[2.0, -1.0]])
  mask = jnp.ones((1, 2))

  @jax.jit
  def compute(v):
    clipped, unclipped = rl.ppo_value_loss(v, old, ret, mask, 0.5), rl.ppo_value_loss(v, old, ret, mask, None)
    return clipped, unclipped, jax.grad(lambda x: rl.ppo_value_loss(x, old, ret, mask, 0.5))(v)

  clipped, unclipped, g = compute(v)
  # step 1: max((1-2)^2, (0.5-2)^2) = 2.25; step 2: max(1.1^2, 1.1^2) = 1.21; 0.5 * mean = 0.865.
  np.testing.assert_allclose(clipped, 0.865, rtol=1e-6)
  np.testing.assert_allclose(unclipped, 0.5 * (1.0 + 1.21) / 2, rtol=1e-6)
  np.testing.assert_allclose(g, [[0.0, 0.5 * 2 * 1.1 / 2]], rtol=1e-6)  # The clipped step passes none.


def test_importance_weights_and_small_estimators():
  lp_pi = jnp.log(jnp.array([[0.5, 0.4, 0.9]]))
  lp_mu = jnp.log(jnp.array([[0.25, 0.8, 0.3]]))
  mask = jnp.array([[1.0, 1.0, 0.0]])
  r = jnp.array([[1.0, 2.0, 7.0]])

  @jax.jit
  def compute(lp_pi, lp_mu):
    value = lambda est, **kw: rl.off_policy_value(lp_pi, lp_mu, r, mask, 0.5, est, **kw)
    weights = rl.importance_weights(lp_pi, lp_mu, mask)
    return weights, value("ordinary"), value("per_decision"), value("truncated", clip_rho=1.0), value("weighted")

  weights, ordinary, per_decision, truncated, weighted = compute(lp_pi, lp_mu)
  np.testing.assert_allclose(weights, [[2.0, 0.5, 1.0]], rtol=1e-6)
  np.testing.assert_allclose(float(ordinary), 1.0 * (1.0 + 0.5 * 2.0), rtol=1e-6)
  np.testing.assert_allclose(float(per_decision), 2.0 * 1.0 + 0.5 * 1.0 * 2.0, rtol=1e-6)
  np.testing.assert_allclose(float(truncated), 1.0 + 0.5 * 0.5 * 2.0, rtol=1e-6)
  np.testing.assert_allclose(float(weighted), 2.0, rtol=1e-6)  # One trajectory: its own return.


def test_errors():
  x = jnp.zeros((2, 3))
  with pytest.raises(ValueError, match="`rewards` of reinforce_loss must have the shape"):
    rl.reinforce_loss(x, jnp.zeros((2, 4)), x, 0.9)
  with pytest.raises(ValueError, match=r"\[B, T\]"):
    rl.discounted_returns(jnp.zeros(3), jnp.ones(3), 0.9)
  with pytest.raises(TypeError, match="`baseline` of reinforce_loss takes the baselines of sfe.baselines"):
    rl.reinforce_loss(x, x, x, 0.9, baseline="leave_one_out")
  with pytest.raises(TypeError, match=r"sfe\.baselines\.moving_average\(\) cannot be computed per step"):
    rl.reinforce_loss(x, x, x, 0.9, baseline=sfe.baselines.moving_average())
  with pytest.raises(TypeError, match=r"sfe\.baselines\.optimal\(\) cannot be computed per step"):
    rl.reinforce_loss(x, x, x, 0.9, baseline=sfe.baselines.optimal())
  with pytest.raises(ValueError, match="`gamma` of gae must lie in"):
    rl.gae(x, x, x, 1.5, 0.9)
  with pytest.raises(ValueError, match="`estimator`"):
    rl.off_policy_value(x, x, x, x, 0.9, "doubly_robust")


# ----------------------------------------------------------------------------------------------------------
# Unbiasedness on the MDP.
# ----------------------------------------------------------------------------------------------------------


def true_values(states):
  return dp_values(jax.nn.softmax(THETA))[jnp.arange(T)[None, :], states]


def reinforce_grad(baseline, reward_to_go):
  def fn(batch):
    states, actions, rewards, mask = batch
    b = true_values(states) if isinstance(baseline, str) else baseline
    loss = lambda th: rl.reinforce_loss(log_probs(th, states, actions), rewards, mask, GAMMA, b, reward_to_go)
    return -jax.grad(loss)(THETA)

  return fn


def test_exact_gradient_sanity():
  # The DP value matches a plain Monte Carlo average of returns (the sampler and the recursion agree).
  @jax.jit
  def compute(key):
    _, _, rewards, mask = sample(key, THETA, 20000)
    return rl.discounted_returns(rewards, mask, GAMMA)[:, 0], mask, exact_value(THETA)

  returns, mask, exact = compute(jax.random.key(1))
  assert_mean(returns, exact, what="J")
  assert float(np.mean(mask[:, -1])) < 0.8  # Trajectories really have variable lengths.


@pytest.mark.parametrize("reward_to_go", [True, False])
@pytest.mark.parametrize(
  "baseline",
  [None, sfe.baselines.leave_one_out(), sfe.baselines.constant(1.5), "true_value"],
  ids=["none", "leave_one_out", "constant", "true_value"],
)
def test_reinforce_unbiased(baseline, reward_to_go):
  exact = exact_value_and_grad(THETA)[1]
  grads = repeated(reinforce_grad(baseline, reward_to_go), 0, 32)
  assert_mean(grads.reshape(NUM_REPEATS, -1), exact.reshape(-1), what=f"grad {baseline} rtg={reward_to_go}")


def test_reward_to_go_and_baselines_reduce_variance():
  # The batches of test_reinforce_unbiased (seed 0), so the comparison is on common samples.
  var = {
    name: flat_var(repeated(reinforce_grad(b, rtg), 0, 32))
    for name, b, rtg in [
      ("full", None, False),
      ("rtg", None, True),
      ("loo", sfe.baselines.leave_one_out(), True),
      ("value", "true_value", True),
    ]
  }
  assert var["rtg"] < var["full"] and var["loo"] < var["rtg"] and var["value"] < var["rtg"], var


@pytest.mark.parametrize("lam", [0.0, 0.5, 1.0])
def test_actor_critic_with_true_values_unbiased(lam):
  exact = exact_value_and_grad(THETA)[1]

  def fn(batch):
    states, actions, rewards, mask = batch
    values = true_values(states)
    loss = lambda th: rl.actor_critic_loss(
      log_probs(th, states, actions), values, rewards, mask, GAMMA, lam, value_coef=0.5
    )[0]
    return -jax.grad(loss)(THETA)

  grads = repeated(fn, 4, 32)
  assert_mean(grads.reshape(NUM_REPEATS, -1), exact.reshape(-1), what=f"actor-critic lam={lam}")


def test_actor_critic_terms_and_critic_gradient():
  @jax.jit
  def compute(key):
    states, actions, rewards, mask = sample(key, THETA, 8)
    values = jnp.full(rewards.shape, 0.3)
    ent = jnp.ones_like(rewards)
    loss, terms = rl.actor_critic_loss(
      log_probs(THETA, states, actions), values, rewards, mask, GAMMA, 0.9, ent, value_coef=0.5, entropy_coef=0.01
    )
    g = jax.grad(lambda v: rl.actor_critic_loss(jnp.zeros_like(v), v, rewards, mask, GAMMA, 0.9)[0])(values)
    return mask, loss, terms, g

  mask, loss, terms, g = compute(jax.random.key(5))
  np.testing.assert_allclose(loss, terms.policy_loss + 0.5 * terms.value_loss - 0.01 * terms.entropy, rtol=1e-6)
  np.testing.assert_allclose(terms.entropy, np.sum(mask) / 8, rtol=1e-6)
  # The critic's gradient is -value_coef A_t m / B: regression towards the lambda-return A + V.
  np.testing.assert_allclose(g, -0.5 * terms.advantages * mask / 8, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------------------
# Off-policy estimators: data from mu = softmax(THETA_MU), target pi = softmax(THETA).
# ----------------------------------------------------------------------------------------------------------


def off_policy_fn(estimator, clip_rho=1.0):
  def fn(batch):
    states, actions, rewards, mask = batch
    lp_mu = log_probs(THETA_MU, states, actions)
    value = lambda th: rl.off_policy_value(
      log_probs(th, states, actions), lp_mu, rewards, mask, GAMMA, estimator, clip_rho
    )
    return jax.value_and_grad(value)(THETA)

  return fn


@pytest.mark.parametrize("estimator", ["ordinary", "per_decision"])
def test_off_policy_unbiased(estimator):
  values, grads = repeated(off_policy_fn(estimator), 6, 64, theta_sample="mu")
  exact, exact_grad = exact_value_and_grad(THETA)
  assert_mean(values, exact, what=f"{estimator} value")
  assert_mean(grads.reshape(NUM_REPEATS, -1), exact_grad.reshape(-1), what=f"{estimator} grad")


def test_truncated_mean_is_value_of_min_rho_bar_mu_pi():
  rho_bar = 1.0
  truncated = lambda th: RHO0 @ dp_values(jnp.minimum(rho_bar * jax.nn.softmax(THETA_MU), jax.nn.softmax(th)))[0]
  values, grads = repeated(off_policy_fn("truncated", rho_bar), 7, 64, theta_sample="mu")
  exact, exact_grad, exact_pi = jax.jit(lambda th: (*jax.value_and_grad(truncated)(th), exact_value(th)))(THETA)
  assert_mean(values, exact, what="truncated value")
  assert_mean(grads.reshape(NUM_REPEATS, -1), exact_grad.reshape(-1), what="truncated grad")
  assert abs(float(exact) - float(exact_pi)) > 10 * float(mean_and_se(values)[1])  # Biased.

  # A truncation level above every ratio changes nothing.
  @jax.jit
  def both(key):
    batch = sample(key, THETA_MU, 64)
    return off_policy_fn("truncated", 1e6)(batch)[1], off_policy_fn("per_decision")(batch)[1]

  np.testing.assert_allclose(*both(jax.random.key(8)), rtol=1e-6)


def test_weighted_is_biased_but_consistent():
  exact_pi, exact_mu = float(exact_value_and_grad(THETA)[0]), float(exact_value_and_grad(THETA_MU)[0])
  # B = 1: the weights cancel and the estimate is the logged return, whose mean is mu's value.
  small = repeated(off_policy_fn("weighted"), 9, 1, theta_sample="mu", num_repeats=20000)[0]
  assert_mean(small, exact_mu, what="weighted IS, B=1")
  # Large B: the O(1/B) bias is gone to within the standard error and a 5% of the B=1 bias.
  large = repeated(off_policy_fn("weighted"), 10, 1024, theta_sample="mu", num_repeats=200)[0]
  mean, se = mean_and_se(large)
  assert abs(mean - exact_pi) < 5 * se + 0.05 * abs(exact_mu - exact_pi), (mean, se, exact_pi, exact_mu)


# ----------------------------------------------------------------------------------------------------------
# V-trace.
# ----------------------------------------------------------------------------------------------------------


def random_log_probs(seed, shape):
  rng = np.random.default_rng(seed)
  return (
    np.log(rng.uniform(0.05, 1.0, size=shape)).astype(np.float32),
    np.log(rng.uniform(0.05, 1.0, size=shape)).astype(np.float32),
  )


@pytest.mark.parametrize(
  "clip_rho,clip_c,clip_pg_rho,lam", [(None, None, None, 1.0), (1.0, 1.0, 1.0, 1.0), (2.0, 0.5, 1.5, 0.8)]
)
def test_vtrace_direct_formula(clip_rho, clip_c, clip_pg_rho, lam):
  rewards, values, mask, lengths = random_batch(2)
  lp_pi, lp_mu = random_log_probs(3, rewards.shape)
  bootstrap = np.array([0.5, 1.0, -1.0, 2.0, 0.3], np.float32)
  gamma, t_max = 0.9, rewards.shape[1]
  fn = jax.jit(
    functools.partial(
      rl.vtrace,
      gamma=gamma,
      bootstrap_value=bootstrap,
      clip_rho=clip_rho,
      clip_c=clip_c,
      clip_pg_rho=clip_pg_rho,
      lam=lam,
    )
  )
  out = fn(lp_pi, lp_mu, np.where(mask > 0, rewards, 99.0), np.where(mask > 0, values, -7.0), mask)
  rho = np.exp(lp_pi.astype(np.float64) - lp_mu)
  clip = lambda x, c: x if c is None else np.minimum(x, c)  # noqa: E731
  want_vs, want_pg = np.zeros_like(rewards), np.zeros_like(rewards)
  for b, length in enumerate(lengths):
    after = bootstrap[b] if length == t_max else 0.0  # the value after the last valid step
    next_v = [values[b, t + 1] if t + 1 < length else after for t in range(length)]
    for s in range(length):
      total, trace = values[b, s], 1.0
      for t in range(s, length):
        total += (
          gamma ** (t - s) * trace * clip(rho[b, t], clip_rho) * (rewards[b, t] + gamma * next_v[t] - values[b, t])
        )
        trace *= lam * clip(rho[b, t], clip_c)
      want_vs[b, s] = total
    for s in range(length):
      next_vs = want_vs[b, s + 1] if s + 1 < length else after
      want_pg[b, s] = clip(rho[b, s], clip_pg_rho) * (rewards[b, s] + gamma * next_vs - values[b, s])
  np.testing.assert_allclose(out.vs, want_vs, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(out.pg_advantages, want_pg, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("lam", [0.0, 0.7, 1.0])
def test_vtrace_on_policy_is_gae(lam):
  rewards, values, mask, _ = random_batch(4)
  lp, _ = random_log_probs(5, rewards.shape)
  bootstrap = np.array([0.5, 1.0, -1.0, 2.0, 0.3], np.float32)
  out, adv = jax.jit(
    lambda: (
      rl.vtrace(lp, lp, rewards, values, mask, 0.9, bootstrap_value=bootstrap, lam=lam),
      rl.gae(rewards, values, mask, 0.9, lam, bootstrap),
    )
  )()
  np.testing.assert_allclose(out.vs, (adv + values) * mask, rtol=1e-5, atol=1e-5)
  if lam == 1.0:  # then r_s + gamma v_{s+1} - V_s is the GAE(1) advantage too
    np.testing.assert_allclose(out.pg_advantages, adv, rtol=1e-5, atol=1e-5)


def test_vtrace_without_values_is_the_importance_sampling_estimate():
  # With V = 0, vs[:, 0] telescopes to the per-decision IS return (no clipping), and with clip_c = clip_rho to
  # the truncated one: the same numbers as off_policy_value, trajectory by trajectory.
  rewards, _, mask, _ = random_batch(6)
  lp_pi, lp_mu = random_log_probs(7, rewards.shape)
  zeros = np.zeros_like(rewards)

  @functools.partial(jax.jit, static_argnums=(0, 1))
  def compute(clip, estimator):
    vs0 = rl.vtrace(lp_pi, lp_mu, rewards, zeros, mask, 0.8, clip_rho=clip, clip_c=clip).vs[:, 0]
    each = [
      rl.off_policy_value(
        lp_pi[b : b + 1], lp_mu[b : b + 1], rewards[b : b + 1], mask[b : b + 1], 0.8, estimator, clip_rho=clip
      )
      for b in range(rewards.shape[0])
    ]
    return vs0, jnp.stack(each)

  for clip, estimator in ((None, "per_decision"), (1.2, "truncated")):
    vs0, each = compute(clip, estimator)
    np.testing.assert_allclose(vs0, each, rtol=1e-5, atol=1e-5)


def vtrace_fn(value_table, **clips):
  def fn(batch):
    states, actions, rewards, mask = batch
    values = value_table[jnp.arange(T)[None, :], states]
    out = rl.vtrace(
      log_probs(THETA, states, actions), log_probs(THETA_MU, states, actions), rewards, values, mask, GAMMA, **clips
    )
    return out.vs[:, 0], values[:, 0]

  return fn


def test_vtrace_unclipped_is_unbiased_for_any_values():
  arbitrary = jnp.asarray(np.random.default_rng(8).normal(size=(T, 3)), jnp.float32).at[:, 2].set(0.0)
  vs0, _ = repeated(vtrace_fn(arbitrary, clip_rho=None, clip_c=None), 11, 64, theta_sample="mu")
  assert_mean(vs0.reshape(-1), exact_value_and_grad(THETA)[0], what="unclipped V-trace target at t = 0")


def test_vtrace_clipped_fixed_point_is_the_value_of_the_truncated_policy():
  @jax.jit
  def exact():
    pi, mu = jax.nn.softmax(THETA), jax.nn.softmax(THETA_MU)
    w = jnp.minimum(mu, pi)  # rho_bar = 1
    return dp_values(w / w.sum(axis=1, keepdims=True)), dp_values(pi)

  v_truncated, v_pi = exact()
  # At V = V^{pi_rho_bar} the V-trace correction vs - V has mean zero (whatever clip_c <= 1 does to the traces)...
  for clip_c in (1.0, 0.5):
    vs0, v0 = repeated(vtrace_fn(v_truncated, clip_rho=1.0, clip_c=clip_c), 12, 64, theta_sample="mu")
    assert_mean((vs0 - v0).reshape(-1), 0.0, what=f"V-trace correction at its fixed point, clip_c={clip_c}")
  # ...while at V = V^pi it does not: clipped V-trace is biased towards the behaviour policy.
  vs0, v0 = repeated(vtrace_fn(v_pi, clip_rho=1.0, clip_c=1.0), 13, 64, theta_sample="mu")
  mean, se = mean_and_se((vs0 - v0).reshape(-1))
  assert abs(mean) > 10 * se, (mean, se)
  assert float(np.asarray(RHO0) @ v_truncated[0]) != pytest.approx(float(np.asarray(RHO0) @ v_pi[0]), abs=0.05)


def test_vtrace_errors():
  x = jnp.zeros((2, 3))
  with pytest.raises(ValueError, match="`clip_c` of vtrace must be positive or None"):
    rl.vtrace(x, x, x, x, x, 0.9, clip_c=0.0)
  with pytest.raises(ValueError, match="`values` of vtrace must have the shape"):
    rl.vtrace(x, x, x, jnp.zeros((2, 4)), x, 0.9)
  with pytest.raises(ValueError, match=r"`bootstrap_value` of vtrace must have shape \[B\]"):
    rl.vtrace(x, x, x, x, x, 0.9, bootstrap_value=jnp.zeros(3))
  with pytest.raises(ValueError, match="`lam` of vtrace must lie in"):
    rl.vtrace(x, x, x, x, x, 0.9, lam=2.0)


@pytest.mark.parametrize("mode", ["rank", "dtype"])
def test_no_implicit_promotion(mode):
  # Users may run with jax_numpy_rank_promotion="raise" or jax_numpy_dtype_promotion="strict": the array
  # functions must broadcast and cast explicitly. Promotion errors are raised while tracing, so eval_shape
  # checks every function, its gradient and every option without compiling.
  rewards, values, mask, _ = random_batch(9)
  lp_pi, lp_mu = random_log_probs(10, rewards.shape)
  boot = np.ones(rewards.shape[0], np.float32)

  def everything():
    out = [rl.discounted_returns(rewards, mask, 0.9), rl.gae(rewards, values, mask, 0.9, 0.8, boot)]
    for baseline in (None, sfe.baselines.leave_one_out(), sfe.baselines.constant(0.5), values):
      for reward_to_go in (True, False):
        out.append(jax.grad(rl.reinforce_loss)(lp_pi, rewards, mask, 0.9, baseline, reward_to_go))
    out.append(
      jax.grad(
        lambda lp, v: rl.actor_critic_loss(lp, v, rewards, mask, 0.9, 0.8, lp, entropy_coef=0.1, bootstrap_value=boot)[
          0
        ],
        argnums=(0, 1),
      )(lp_pi, values)
    )
    out.append(jax.grad(rl.ppo_loss)(lp_pi, lp_mu, values, mask))
    out.append(jax.grad(rl.ppo_value_loss)(values, values + 0.1, rewards, mask))
    for estimator in ("ordinary", "weighted", "per_decision", "truncated"):
      out.append(jax.grad(rl.off_policy_value)(lp_pi, lp_mu, rewards, mask, 0.9, estimator))
    out.append(rl.vtrace(lp_pi, lp_mu, rewards, values, mask, 0.9, bootstrap_value=boot, lam=0.9))
    return out

  strict = jax.numpy_rank_promotion("raise") if mode == "rank" else jax.numpy_dtype_promotion("strict")
  with strict:
    jax.eval_shape(everything)
