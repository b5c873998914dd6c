# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Policy gradients: REINFORCE, baselines, actor-critic and PPO on CartPole
#
# A stochastic policy $\pi_\theta(a \mid s)$ acting in an environment induces a distribution over trajectories
# $\tau = (s_0, a_0, r_0, s_1, \dots)$, and reinforcement learning maximises the expected return
# $J(\theta) = E_{\tau \sim \pi_\theta}[\sum_t \gamma^t r_t]$. The environment's dynamics are unknown (or not
# differentiable), so the only way to the gradient is the score function: the dynamics do not depend on
# $\theta$ and drop out of $\nabla_\theta \log p_\theta(\tau) = \sum_t \nabla_\theta \log \pi_\theta(a_t \mid
# s_t)$, which gives the policy-gradient theorem (Williams 1992; Sutton et al. 2000)
#
# $$\nabla_\theta J = E\Big[\sum_t \nabla_\theta \log \pi_\theta(a_t \mid s_t)\, \Psi_t\Big], \qquad
# \Psi_t = G_t - b(s_t), \quad G_t = \sum_{k \ge t} \gamma^{k - t} r_k .$$
#
# Every policy-gradient method is a choice of $\Psi_t$, the weight of each step's score:
#
# | method | $\Psi_t$ | `sfe.rl` |
# | --- | --- | --- |
# | REINFORCE | $G_t$, the reward-to-go | `reinforce_loss(..., baseline=None)` |
# | REINFORCE + leave-one-out | $G_t$ minus the mean $G_t$ of the other episodes | `baseline=leave_one_out()` |
# | REINFORCE + value | $G_t - V(s_t)$ with a learned critic $V$ | `baseline=values`, a `[B, T]` array |
# | actor-critic (GAE) | $\hat A_t = \sum_k (\gamma\lambda)^k \delta_{t+k}$ | `actor_critic_loss`, `gae` |
# | PPO | GAE advantages in a clipped ratio objective | `ppo_loss`, `ppo_value_loss` |
#
# with the temporal differences $\delta_t = r_t + \gamma V(s_{t+1}) - V(s_t)$ of the critic (Schulman et al.
# 2016); `leave_one_out()` is `sfe.baselines.leave_one_out()`, the baseline of `sfe.score_function`.
#
# A baseline that does not depend on the action $a_t$ leaves the expectation unchanged and only changes the
# variance; GAE's $\lambda < 1$ trades a bias (unless the critic is exact) for a further variance reduction.
# This notebook trains REINFORCE without and with a baseline, an actor-critic with GAE and PPO on gymnax's
# CartPole-v1, plots their learning curves, and measures the variance of each gradient estimator at checkpoints
# along training, with standard errors.
#
# The environment, the networks, the rollouts and the hyperparameters are those of the benchmarks' RL suite
# (`benchmarks.rl`, imported here), and so is PPO's update (`measure.make_learn`). The policy-gradient losses
# are written out below, one line of `sfe.rl` each, as you would write them in your own training loop.

# %%
import os

QUICK = os.environ.get("SFE_JAX_NOTEBOOK_QUICK", "0") == "1"  # the test suite runs the quick settings

# %%
import time

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

import sfe_jax as sfe
import sfe_jax.rl as rl
from benchmarks.rl import measure, problems

HORIZON = 100 if QUICK else 500  # steps per episode (CartPole-v1 truncates at 500: the best return)
UPDATES = 20 if QUICK else 150  # policy updates per method, each on a batch of 16 fresh episodes
NUM_REPEATS = 64 if QUICK else 128  # independent batches per variance measurement
Z = 3.0  # "lower" means lower by more than Z (paired) standard errors

config = problems.RLConfig(horizon=HORIZON, num_repeats=NUM_REPEATS)
env, env_params = problems.make_env()
BATCH = config.reinforce_batch  # episodes per update (16), the same for every method
GAMMA, LAM = config.gamma, config.lam  # 0.99, 0.95
print(f"{env.name}: {env.num_actions} actions; {BATCH} episodes of at most {HORIZON} steps per update")

# %% [markdown]
# ## The problem: CartPole, a policy network and batched rollouts
#
# CartPole gives a reward of 1 per step until the pole falls or the cart leaves the track, so the return of an
# episode is its length (at most the horizon, 500 in CartPole-v1). The policy is a `distrax.Categorical` over
# the two pushes, with logits from a small MLP (`problems.policy`); the critic is a second MLP
# (`problems.value`). `problems.rollout` runs a batch of episodes in parallel (`vmap` over the episodes,
# `lax.scan` over time) and returns the `[B, T]` arrays every `sfe.rl` loss takes: the observations, actions,
# rewards and a `mask` that is 1 up to and including the step where each episode ends. Let us look at one batch
# of the initial, nearly uniform policy.

# %%
collect = jax.jit(lambda policy_params, key: problems.rollout(env, env_params, policy_params, key, BATCH, HORIZON))

params0 = jax.jit(problems.init_params, static_argnums=1)(
  jax.random.key(0), config.hidden
)  # {"policy": MLP, "critic": MLP}
batch = collect(params0["policy"], jax.random.key(1))
print("rewards", batch.rewards.shape, "mask", batch.mask.shape)
print("episode returns of the initial policy:", problems.episode_returns(batch).astype(int))
random_return = float(jnp.mean(problems.episode_returns(batch)))

# %% [markdown]
# The initial policy pushes left or right with probability close to $1/2$ and keeps the pole up for about 20
# steps. From such a batch, each estimator is one line of `sfe.rl`. The losses are *surrogates*: their value is
# not the return, but `-jax.grad(loss)` with respect to the policy parameters is the gradient estimate
# (the weights $\Psi_t$ are wrapped in `stop_gradient`). We use the common `time_discount=False` form, which drops
# the $\gamma^t$ in front of each term (with it, the late steps of a 500-step episode would barely count).

# %%
ESTIMATORS = problems.ESTIMATORS  # ("REINFORCE", "REINFORCE + leave-one-out", "REINFORCE + value", ...)


def policy_loss(estimator, policy_params, critic_params, batch):
  """The surrogate loss of one estimator on a batch; -grad of it (in policy_params) is the gradient estimate."""
  log_probs = problems.log_probs(policy_params, batch)  # [B, T], differentiable in policy_params
  values = problems.value(critic_params, batch.obs)  # [B, T], the critic's V(s_t)
  bootstrap = problems.bootstrap_value(critic_params, batch)  # V after the last step of truncated episodes
  r, m = batch.rewards, batch.mask
  if estimator == "REINFORCE":
    return rl.reinforce_loss(log_probs, r, m, GAMMA, baseline=None, time_discount=False)
  if estimator == "REINFORCE + leave-one-out":
    return rl.reinforce_loss(log_probs, r, m, GAMMA, baseline=sfe.baselines.leave_one_out(), time_discount=False)
  if estimator == "REINFORCE + value":
    return rl.reinforce_loss(log_probs, r, m, GAMMA, baseline=values, time_discount=False)
  _, terms = rl.actor_critic_loss(log_probs, values, r, m, GAMMA, LAM, bootstrap_value=bootstrap, time_discount=False)
  if estimator == "actor-critic (GAE)":
    return terms.policy_loss
  # PPO's clipped objective at the data's own policy (ratio 1), before any update, on the same GAE advantages
  return rl.ppo_loss(log_probs, jax.lax.stop_gradient(log_probs), terms.advantages, m, config.clip_eps)


@jax.jit
def policy_gradients(params, batch):
  """``[len(ESTIMATORS), P]``: every estimator's gradient estimate on one batch, flattened."""
  grads = []
  for estimator in ESTIMATORS:
    g = jax.grad(lambda pp, e=estimator: -policy_loss(e, pp, params["critic"], batch))(params["policy"])
    grads.append(jnp.concatenate([x.ravel() for x in jax.tree.leaves(g)]))
  return jnp.stack(grads)


grads = policy_gradients(params0, batch)
# The same estimates as the benchmarks' RL suite computes (`benchmarks.rl.measure.batch_gradient_estimates`).
np.testing.assert_allclose(grads, measure.batch_gradient_estimates(config, params0, batch), rtol=1e-4, atol=1e-6)
print("parameters:", grads.shape[1])
assert grads.shape[1] == 4 * 64 + 64 + 64 * 64 + 64 + 64 * 2 + 2 == 4610  # the policy MLP 4 -> 64 -> 64 -> 2
for name, g in zip(ESTIMATORS, grads):
  print(f"  {name:26s} gradient norm {np.linalg.norm(g):.3g}")


# %% [markdown]
# ## Training
#
# Each update collects a fresh batch of 16 episodes with the current policy (`collect`) and takes one optimizer
# step on it:
#
# - **REINFORCE**, without a baseline and with the leave-one-out one: one Adam step on `policy_loss` above.
# - **Actor-critic (GAE)**: one Adam step on the whole `actor_critic_loss`, policy and critic together (Mnih et
#   al. 2016): the policy loss plus `value_coef = 0.5` times the critic's loss, half its squared error against
#   the $\lambda$-returns $\hat A_t + V(s_t)$ summed over steps and averaged over episodes.
# - **PPO** (Schulman et al. 2017), as in the benchmarks: 4 epochs over 4 minibatches of 4 episodes, each step on
#   `rl.ppo_loss` (ratios clipped at $1 \pm 0.2$) with the GAE advantages normalised over the minibatch, plus
#   half the critic's `rl.ppo_value_loss`, gradients clipped to norm 0.5. PPO reuses each batch for 16 Adam
#   steps, which the clipping keeps safe, where the others take one.
#
# The learning curve is the mean return of the training episodes (samples of the current stochastic policy)
# against the number of environment steps collected so far: the budget that matters when the environment is the
# expensive part.

# %%
METHODS = ("REINFORCE", "REINFORCE + leave-one-out", "actor-critic (GAE)", "PPO")


def make_learn(method):
  """``learn(params, opt_state, batch, key) -> (params, opt_state)``: one update on a collected batch (jitted)."""
  if method == "PPO":  # the benchmarks' PPO update on a collected batch (`benchmarks.rl.measure.make_learn`)
    ppo_learn, init = measure.make_learn(config, "PPO")
    return jax.jit(lambda params, opt_state, batch, key: ppo_learn((params, opt_state), batch, key)), init

  optimizer = optax.adam(config.reinforce_lr)  # REINFORCE and actor-critic: Adam(3e-3) on all the parameters

  def loss(params, batch):
    if method == "actor-critic (GAE)":  # the policy loss plus 0.5 x the critic's loss on the lambda-returns
      log_probs = problems.log_probs(params["policy"], batch)
      values = problems.value(params["critic"], batch.obs)
      bootstrap = problems.bootstrap_value(params["critic"], batch)
      total, _ = rl.actor_critic_loss(
        log_probs, values, batch.rewards, batch.mask, GAMMA, LAM, bootstrap_value=bootstrap, time_discount=False
      )
      return total
    return policy_loss(method, params["policy"], params["critic"], batch)  # REINFORCE: the critic is unused

  @jax.jit
  def learn(params, opt_state, batch, key):
    del key
    updates, opt_state = optimizer.update(jax.grad(loss)(params, batch), opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  return learn, optimizer.init


def train(method, key):
  """Trains from ``params0``; returns the curve (env steps, mean return) and the parameters before each update."""
  learn, init = make_learn(method)
  params, opt_state = params0, init(params0)
  steps, returns, snapshots = [], [], [params0]
  for k in jax.random.split(key, UPDATES):
    k_collect, k_learn = jax.random.split(k)
    batch = collect(params["policy"], k_collect)
    params, opt_state = learn(params, opt_state, batch, k_learn)
    steps.append(int(jnp.sum(batch.mask)))
    returns.append(float(jnp.mean(problems.episode_returns(batch))))
    snapshots.append(params)
  return np.cumsum(steps), np.array(returns), snapshots


results = {}
for i, method in enumerate(METHODS):
  start = time.perf_counter()
  results[method] = train(method, jax.random.key(10 + i))
  steps, returns, _ = results[method]
  print(
    f"{method:26s} {steps[-1]:8d} env steps, final return {returns[-5:].mean():6.1f} "
    f"({time.perf_counter() - start:.1f} s)"
  )

# %%
fig, ax = plt.subplots(figsize=(6.5, 3.8))
for method in METHODS:
  steps, returns, _ = results[method]
  smooth = np.convolve(returns, np.ones(5) / 5, mode="valid")  # running mean over 5 updates (80 episodes)
  ax.plot(steps[4:], smooth, label=method, lw=1.5)
ax.axhline(random_return, color="gray", ls=":", lw=1, label="initial policy")
ax.set_xlabel("environment steps")
ax.set_ylabel("mean episode return")
ax.set_title(f"CartPole-v1, {BATCH} episodes per update (running mean of 5 updates)")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# Every method learns from the initial policy's 20-odd steps, and the best one ends far above it. In this run
# PPO made the most of its samples: reusing every batch for 16 clipped steps, it reached half the horizon in
# fewer environment steps than REINFORCE without a baseline. The curves are not monotone: a step along a noisy
# gradient can make the policy worse, and the actor-critic, whose critic gets a single Adam step per batch
# here, can lose ground while its critic catches up. Single runs of policy-gradient methods are noisy, so one
# curve per method shows typical behaviour, not a ranking.

# %%
final = {m: results[m][1][-5:].mean() for m in METHODS}  # the mean return of the last 5 batches (80 episodes)
best = max(final, key=final.get)
to_half = {}  # environment steps until the running mean of 5 batches first reaches half the horizon
for m in METHODS:
  steps, returns, _ = results[m]
  smooth = np.convolve(returns, np.ones(5) / 5, mode="valid")
  to_half[m] = steps[4:][np.argmax(smooth >= HORIZON / 2)] if np.any(smooth >= HORIZON / 2) else np.inf
print(f"initial policy {random_return:.1f}; best method {best}: {final[best]:.1f}")
print("environment steps to half the horizon:", ", ".join(f"{m} {to_half[m]:.3g}" for m in METHODS))
assert random_return < 40
assert final[best] > 3 * random_return
assert QUICK or to_half["PPO"] < to_half["REINFORCE"]  # this run's outcome (the quick runs are too short to rank)

# %% [markdown]
# ## The variance of the gradient estimators along training
#
# At fixed parameters (PPO's policy and critic at a few checkpoints of its run: the initial policy, the first
# updates whose episodes last a quarter and three quarters of the horizon on average, and the end of training)
# we draw `NUM_REPEATS` independent batches of 16 episodes and compute every estimator's gradient on each
# (`policy_gradients` above). Their spread is the estimator's variance; we summarise it by the total variance
# $\operatorname{tr} \operatorname{Cov}(\hat g) = E \lVert \hat g - E \hat g \rVert^2$ over the policy's 4610
# parameters. With $R$ repeats, $d_r = \frac{R}{R-1} \lVert \hat g_r - \bar g \rVert^2$ has mean exactly
# $\operatorname{tr} \operatorname{Cov}$, so the mean of the $d_r$ is the estimate and their standard deviation
# over $\sqrt R$ its standard error. Two estimators measured on the same batches are compared by the paired
# differences of their $d_r$, whose standard error is usually smaller than that of either.
#
# The three REINFORCE variants estimate the same gradient, so their variances compare directly; the
# actor-critic's GAE advantages are biased unless the critic is exact. PPO's first step (the ratio is 1 before
# any update) is the actor-critic's gradient rescaled by $B / \sum m$, the episodes over the valid steps,
# because `ppo_loss` averages over steps where `actor_critic_loss` averages over episodes: we check that
# identity batch by batch, and leave PPO's row out of the comparison (its scale is not the others').


# %%
def variance_terms(grads):
  """``d_r`` of every estimator from ``[R, E, P]`` gradient estimates: ``[R, E]``, with mean ``tr Cov``."""
  r = grads.shape[0]
  return r / (r - 1) * np.sum((grads - grads.mean(axis=0)) ** 2, axis=-1)


def mean_and_se(x):
  return x.mean(axis=0), x.std(axis=0, ddof=1) / np.sqrt(x.shape[0])


_, ppo_returns, snapshots = results["PPO"]
first_above = lambda level: int(np.argmax(ppo_returns >= level))  # noqa: E731 (the first update at that level)
checkpoints = sorted({0, first_above(0.25 * HORIZON), first_above(0.75 * HORIZON), UPDATES})

variance = {}  # checkpoint -> (mean return, all episodes at the cap, d [R, E])
for c in checkpoints:
  params = snapshots[c]
  grads, steps, returns = [], [], []
  for k in jax.random.split(jax.random.fold_in(jax.random.key(100), c), NUM_REPEATS):
    b = collect(params["policy"], k)
    grads.append(np.asarray(policy_gradients(params, b)))
    steps.append(float(jnp.sum(b.mask)))
    returns.append(np.asarray(problems.episode_returns(b)))
  grads = np.stack(grads)  # [R, E, P]
  # PPO's first step is the actor-critic's gradient times B / (valid steps), on every batch
  a2c, ppo = grads[:, ESTIMATORS.index("actor-critic (GAE)")], grads[:, ESTIMATORS.index("PPO (first step)")]
  scale = (BATCH / np.array(steps))[:, None]
  assert np.all(np.abs(ppo - scale * a2c) <= 1e-4 * np.abs(scale * a2c).max(axis=1, keepdims=True))
  returns = np.concatenate(returns)
  variance[c] = (returns.mean(), bool(np.all(returns == HORIZON)), variance_terms(grads))
  tv, se = mean_and_se(variance[c][2])
  print(
    f"PPO update {c:3d}, mean return {returns.mean():5.1f}:  "
    + ",  ".join(f"{name} {v:.3g} +- {e:.2g}" for name, v, e in zip(ESTIMATORS[:4], tv, se))
  )

# %%
fig, ax = plt.subplots(figsize=(6.5, 3.8))
x = np.arange(len(checkpoints))
for e, name in enumerate(ESTIMATORS[:4]):
  tv, se = (
    np.array([mean_and_se(variance[c][2])[0][e] for c in checkpoints]),
    np.array([mean_and_se(variance[c][2])[1][e] for c in checkpoints]),
  )
  ax.errorbar(x + 0.06 * (e - 1.5), tv, yerr=se, marker="o", ms=4, capsize=3, label=name)
ax.set_yscale("log")
ax.set_xticks(x, [f"update {c}\nreturn {variance[c][0]:.0f}" for c in checkpoints], fontsize=8)
ax.set_xlabel("PPO checkpoint")
ax.set_ylabel(r"total variance tr Cov($\hat g$)")
ax.set_title(f"Policy-gradient variance, batches of {BATCH} episodes ({NUM_REPEATS} repeats)")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# What the measurements show (asserted below; "lower" means lower by more than 3 paired standard errors):
#
# - **Baselines reduce the variance.** While the policy learns (the checkpoints between the first and the
#   last), the leave-one-out baseline and the learned value baseline both lower the variance of REINFORCE,
#   without bias; the leave-one-out one needs no critic. At the initial policy the episodes are short and alike,
#   the gain of the leave-one-out baseline is small and noisy, and the value baseline of the untrained critic
#   changes the variance by less than a factor of 2.
# - **The actor-critic's GAE advantages have the lowest variance**, lower than REINFORCE's at every checkpoint and at
#   least 5 times lower while the policy learns: $\lambda < 1$ replaces most of the sampled future rewards by the
#   critic's estimate of them (at the price of a bias while the critic is wrong).
# - **REINFORCE's variance grows as the policy improves**, more than tenfold between the first checkpoint and the
#   last one before the cap: longer episodes mean larger returns and more terms in the sum, so without a
#   baseline the noise grows with the signal.
# - **At the cap the leave-one-out gradient vanishes.** Once every episode lasts the full horizon, every
#   reward-to-go $G_t$ is the same in all episodes and the leave-one-out advantage is exactly zero (the variance
#   drops more than a million-fold, to float rounding): nothing in the batch says how to do better, which is
#   right, since the return cannot exceed the cap. The value baseline does not achieve this: the critic learned
#   bootstrapped values of the untruncated task, not CartPole's truncated reward-to-go.

# %%
stats = {
  c: (variance[c][2].mean(axis=0), mean_and_se(variance[c][2][:, :, None] - variance[c][2][:, None, :]))
  for c in checkpoints
}
NONE, LOO, VALUE, A2C = range(4)


def significantly_lower(c, a, b):
  """Estimator ``a`` has a lower total variance than ``b`` at checkpoint ``c``, by more than Z paired SEs."""
  diff, se = stats[c][1]
  return diff[a, b] < -Z * se[a, b]


for c in checkpoints:
  tv = stats[c][0]
  ratios = ", ".join(f"{ESTIMATORS[e]} {tv[NONE] / tv[e]:.3g}" for e in (LOO, VALUE, A2C))
  print(f"update {c:3d}: REINFORCE's variance over  {ratios}")
  assert significantly_lower(c, A2C, NONE)
  if 0 < c < UPDATES:  # while learning: every baseline helps, the GAE advantages most
    assert significantly_lower(c, LOO, NONE) and significantly_lower(c, VALUE, NONE)
    assert tv[A2C] < tv[NONE] / 5
assert 0.5 < stats[0][0][NONE] / stats[0][0][VALUE] < 2  # an untrained critic: no help, no harm
assert stats[checkpoints[-2]][0][NONE] > 10 * stats[0][0][NONE]  # REINFORCE's variance grows with the returns
at_cap = variance[UPDATES][1]  # every episode of the last checkpoint's batches lasts the full horizon
print("PPO at the cap in every episode at the end:", at_cap)
assert not variance[0][1] and (at_cap or QUICK)  # the full run reaches the cap (the quick one may stop short)
if at_cap:
  assert stats[UPDATES][0][LOO] < 1e-6 * stats[UPDATES][0][NONE]  # and the leave-one-out gradient vanishes

# %% [markdown]
# ## Takeaways
#
# - Every policy-gradient method here is the score function with a different weight $\Psi_t$ on each step's
#   score, and each is one call in `sfe.rl` on the `[B, T]` arrays of a batch of episodes.
# - Subtract a baseline: `sfe.baselines.leave_one_out()` costs nothing (no critic, no bias) and cuts the
#   variance as soon as the episodes differ; a learned critic does the same once it has learned.
# - GAE advantages from a critic give the lowest variance, at the price of a bias while the critic is wrong;
#   PPO adds the reuse of every batch for several clipped steps, which makes it far more sample-efficient than
#   plain REINFORCE.
# - Measure: `policy_gradients` plus independent batches at fixed parameters is all it takes to see how noisy an
#   estimator is at any point of training.
#
# ## References
#
# - Mnih et al., "Asynchronous methods for deep reinforcement learning", 2016.
# - Schulman, Moritz, Levine, Jordan and Abbeel, "High-dimensional continuous control using generalized advantage
#   estimation", 2016.
# - Schulman, Wolski, Dhariwal, Radford and Klimov, "Proximal policy optimization algorithms", 2017.
# - Sutton, McAllester, Singh and Mansour, "Policy gradient methods for reinforcement learning with function
#   approximation", 2000.
# - Williams, "Simple statistical gradient-following algorithms for connectionist reinforcement learning", 1992.
