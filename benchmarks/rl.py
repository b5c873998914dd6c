r"""Reinforcement-learning benchmark: policy gradients (``sfe_jax.rl``) on gymnax's CartPole-v1.

Problem: ``gymnax.make("CartPole-v1")``: 4 observations, 2 actions, reward 1 per step, an episode ends when the
pole falls or the cart leaves the track (*terminated*) or after ``max_steps_in_episode = 500`` steps
(*truncated*), so the return of an episode is its length, at most 500. Policy: ``distrax.Categorical`` with
logits from a plain-JAX MLP ``4 -> hidden -> hidden -> 2`` (tanh); critic: a separate MLP of the same size with
one output. Hidden layers start from ``N(0, 1/fan_in)`` weights, the policy's output layer from 0.01 times
that (a near-uniform initial policy). Adam (optax). Everything (rollouts, updates, evaluations) is jitted:
``vmap`` over environments, ``lax.scan`` over time steps and over the updates between two evaluations.

Rollouts (every method, training and measurements): ``B`` fresh episodes, reset with independent keys and run
for ``horizon`` steps (500: the environment's cap) with ``env.step_env`` (no auto-reset) inside
``lax.scan``; ``mask[b, t] = 1`` up to and including the step where episode ``b`` terminates, 0 after. The
arrays are ``[B, T]`` as ``sfe_jax.rl`` expects; an episode valid up to ``T - 1`` was truncated by the cap, and
the critic's value of the state after it is the ``bootstrap_value`` of ``rl.gae``. *Environment steps* are the
valid steps (the sum of the masks): the padding after an episode's end is computed (the scan always runs
``T`` steps) but not counted. Evaluation episodes are not counted either.

Methods (``METHODS``), each trained with the library's losses, ``gamma`` = 0.99:

* ``REINFORCE + leave-one-out``: ``rl.reinforce_loss(..., baseline=sfe.baselines.leave_one_out())``, reward-to-go,
  ``time_discount=False`` (the usual practice: with the ``gamma^t`` weight, 0.99^400 = 0.018, the late steps
  of a 500-step episode would barely count). One Adam step per batch of ``reinforce_batch`` episodes. A critic is
  regressed on the returns alongside (``rl.ppo_value_loss`` with ``clip_eps=None``) only so that the variance
  measurement has a learned baseline at this method's checkpoints; the policy does not use it.
* ``REINFORCE + value baseline``: the same with ``baseline=`` the critic's values (computed before the
  critic's own update on the batch, so the baseline does not depend on the batch's actions).
* ``PPO``: episodic PPO on the same rollouts (``ppo_batch`` episodes per rollout): GAE(``lam``) advantages
  with ``rl.gae`` (bootstrapped with the critic at the cap), ``ppo_epochs`` epochs of ``ppo_minibatches``
  minibatches of whole episodes, ``rl.ppo_loss`` (clip 0.2) on advantages normalized over the valid steps of
  the minibatch, plus 0.5 ``rl.ppo_value_loss`` (unclipped) on the lambda-returns, gradient norm clipped at 0.5.

Learning curve: every ``eval_every`` updates (and before the first) ``eval_episodes`` fresh episodes with
actions SAMPLED from the current stochastic policy (one evaluation key for all cells, so equal policies get
equal scores); a curve point is ``[environment steps, mean evaluation return, mean training
return over the updates since the last point (nan at 0), min evaluation return, training seconds]``. *Solved*:
the mean evaluation return reaches ``solve_return`` (500 by default, i.e. every evaluation episode reaches the
cap). The run stops ``after_solve`` evaluations after the first solved one, or at ``max_env_steps``. Recorded:
environment steps and training seconds (updates only; compilation and evaluation excluded) to the first
solved evaluation.

Gradient variance (per training run, at ``variance_points``: the initial policy and the checkpoints nearest
to 1/3 and 2/3 of the environment steps to solved, or of the whole run if it did not solve): at FIXED policy
and critic parameters, ``num_repeats`` independent batches of ``variance_batch`` episodes; on each, the
gradient with respect to the policy parameters of every estimator in ``ESTIMATORS``:

* ``REINFORCE``: ``rl.reinforce_loss`` without baseline; ``+ leave-one-out``, ``+ value`` (the critic at that
  checkpoint): the same with that baseline. All with reward-to-go and ``time_discount=False``. The three
  share one expectation (the usual policy gradient, which drops ``gamma^t``; unbiased for the discounted
  objective only with ``time_discount=True``). (A batch-mean baseline that includes the episode itself gives
  exactly ``(n - 1)/n`` times the leave-one-out gradient, the same ratio below; it is not measured.)
* ``actor-critic (GAE)``: ``rl.actor_critic_loss`` with ``lam``, bootstrapped at the cap,
  ``time_discount=False``: biased unless the critic is exact (``lam < 1``).
* ``PPO (first step)``: ``rl.ppo_loss`` at ``old_log_probs = log_probs`` (ratio 1) on the same GAE
  advantages, unnormalized: the actor-critic gradient times ``B / (valid steps)``, a random scale, because
  PPO averages over steps, not episodes.

Recorded per estimator: the total variance ``tr Cov = sum over parameters of the per-parameter variance`` (over
the repeats, ``ddof=1``), ``|E g|^2`` (the squared norm of the mean gradient over the repeats) and their ratio
``tr Cov / |E g|^2`` (``|E g|^2`` is that of the sample mean, so it includes ``tr Cov / num_repeats`` of
noise; the ratio is scale-free, so PPO's differently scaled gradient compares too; the variance of the
estimate of one batch relative to its signal). All at the same batch size: every estimator sees the same
``num_repeats`` batches.

Overhead (one cell, ``rl/overhead``): the jitted gradient of one update's loss on one rollout batch of
``overhead_batch`` episodes, ``sfe_jax.rl`` against the same maths written by hand in plain JAX
(:func:`overhead_functions`), timed round-robin in random order with ``benchmarks.throughput.time_interleaved``
beside an A/A copy of the hand-written program; the gradients must agree.

Seeds: every cell (one training run of one method) has the key ``fold_in(key(seed), crc32(cell id))``, so a
cell gives the same numbers whatever other cells run; ``runs`` > 1 adds independent runs (cell ids
``.../run1``, ...). The initial networks of run ``i`` come from ``crc32("rl/init/run<i>")`` instead, so all
methods of a run start from the same policy and critic (the same initial evaluation). The variance
measurement of checkpoint ``i`` uses ``fold_in(split(cell key)[1], i)``.

Times (2 CPU cores, jax 0.10.2 CPU): the quick preset takes about 45 seconds (all three methods solve in
1e5 to 2.2e5 environment steps, see rl.md); the full preset (5 runs per method, 128 repeats and 4 checkpoints
of the variance measurement) about 4.5 minutes, and every one of its 15 runs solves.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import optax

import sfe_jax as sfe
import sfe_jax.rl as rl
from benchmarks import report, store, throughput

SUITE = "rl"
ENV_NAME = "CartPole-v1"
METHODS = ("REINFORCE + leave-one-out", "REINFORCE + value baseline", "PPO")
SLUGS = {"REINFORCE + leave-one-out": "reinforce_loo", "REINFORCE + value baseline": "reinforce_value", "PPO": "ppo"}
ESTIMATORS = ("REINFORCE", "REINFORCE + leave-one-out", "REINFORCE + value", "actor-critic (GAE)", "PPO (first step)")
LEAVE_ONE_OUT = sfe.baselines.leave_one_out()
MAX_GRAD_NORM = 0.5  # PPO's global gradient-norm clipping
VALUE_COEF = 0.5  # PPO's weight of the value loss


# ----------------------------------------------------------------------------------------------------------
# Configuration.
# ----------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RLConfig:
  """What the CartPole benchmark measures.

  Attributes:
    methods: a subset of ``METHODS``.
    horizon: steps per rollout (and evaluation) episode, at most the environment's 500.
    hidden: width of the two hidden layers of the policy and the critic.
    gamma: the discount.
    lam: GAE's lambda (PPO, and the actor-critic / PPO rows of the variance table).
    reinforce_batch: episodes per REINFORCE update.
    reinforce_lr: Adam learning rate of the REINFORCE policies.
    critic_lr: Adam learning rate of the REINFORCE methods' critic.
    critic_steps: Adam steps of that critic per batch (after the policy's gradient is taken).
    ppo_batch: episodes per PPO rollout.
    ppo_epochs: passes over a rollout.
    ppo_minibatches: minibatches (of whole episodes) per epoch; must divide ``ppo_batch``.
    ppo_lr: Adam learning rate of PPO (policy and critic together).
    clip_eps: PPO's clipping radius.
    eval_every: updates (REINFORCE steps, PPO rollouts) between two evaluations.
    eval_episodes: episodes per evaluation.
    max_env_steps: the training budget per run, in (valid) environment steps.
    solve_return: the mean evaluation return that counts as solved; ``None``: ``horizon`` (every episode
      reaches the cap).
    after_solve: evaluations to keep training after the first solved one.
    variance_points: the fractions of the steps to solved at which the gradient variance is measured.
    variance_batch: episodes per batch of the variance measurement.
    num_repeats: independent batches per variance checkpoint.
    runs: independent training runs per method.
    overhead_batch: episodes in the batch of the overhead cell (``0``: no overhead cell).
    overhead_repeats: timed calls per function in the overhead cell.
    seed: the PRNG seed.
  """

  methods: tuple[str, ...] = METHODS
  horizon: int = 500
  hidden: int = 64
  gamma: float = 0.99
  lam: float = 0.95
  reinforce_batch: int = 16
  reinforce_lr: float = 3e-3
  critic_lr: float = 3e-3
  critic_steps: int = 8
  ppo_batch: int = 16
  ppo_epochs: int = 4
  ppo_minibatches: int = 4
  ppo_lr: float = 3e-3
  clip_eps: float = 0.2
  eval_every: int = 5
  eval_episodes: int = 128
  max_env_steps: int = 2_000_000
  solve_return: float | None = None
  after_solve: int = 1
  variance_points: tuple[float, ...] = (0.0, 1 / 3, 2 / 3)
  variance_batch: int = 16
  num_repeats: int = 64
  runs: int = 1
  overhead_batch: int = 16
  overhead_repeats: int = 50
  seed: int = 0


PRESETS = {
  "quick": RLConfig(),
  "full": RLConfig(runs=5, num_repeats=128, variance_points=(0.0, 1 / 3, 2 / 3, 1.0)),
}


def _check(config: RLConfig) -> None:
  report.check_subset(config.methods, METHODS, "methods")
  if not 1 <= config.horizon <= 500:
    raise ValueError(f"horizon must be in [1, 500] (CartPole-v1's cap); got {config.horizon}.")
  if not (0.0 <= config.gamma <= 1.0 and 0.0 <= config.lam <= 1.0):
    raise ValueError(f"gamma and lam must lie in [0, 1]; got {config.gamma}, {config.lam}.")
  for name in (
    "hidden",
    "critic_steps",
    "reinforce_batch",
    "ppo_batch",
    "ppo_epochs",
    "ppo_minibatches",
    "eval_every",
    "eval_episodes",
    "max_env_steps",
    "runs",
    "overhead_repeats",
  ):
    if getattr(config, name) < 1:
      raise ValueError(f"{name} must be at least 1; got {getattr(config, name)}.")
  if config.ppo_batch % config.ppo_minibatches:
    raise ValueError(f"ppo_minibatches ({config.ppo_minibatches}) must divide ppo_batch ({config.ppo_batch}).")
  if config.variance_batch < 2 or config.num_repeats < 2:
    raise ValueError(
      f"variance_batch and num_repeats must be at least 2 (leave-one-out, a variance); got "
      f"{config.variance_batch}, {config.num_repeats}."
    )
  if not config.variance_points or any(not 0.0 <= p <= 1.0 for p in config.variance_points):
    raise ValueError(f"variance_points must be fractions in [0, 1]; got {config.variance_points}.")
  if config.overhead_batch < 0 or config.overhead_batch == 1:
    raise ValueError(f"overhead_batch must be 0 (no overhead cell) or at least 2; got {config.overhead_batch}.")
  if config.after_solve < 0:
    raise ValueError(f"after_solve must be non-negative; got {config.after_solve}.")
  if config.solve_return is not None and not 0 < config.solve_return <= config.horizon:
    raise ValueError(f"solve_return must be in (0, horizon = {config.horizon}]; got {config.solve_return}.")


def solve_threshold(config: RLConfig) -> float:
  return float(config.horizon if config.solve_return is None else config.solve_return)


# ----------------------------------------------------------------------------------------------------------
# Environment, networks, rollouts.
# ----------------------------------------------------------------------------------------------------------


def make_env():
  """``(env, env_params)`` of gymnax's CartPole-v1."""
  import gymnax  # noqa: PLC0415 (bench extra)

  return gymnax.make(ENV_NAME)


def init_mlp(key: jax.Array, sizes: tuple[int, ...], out_scale: float) -> list[dict[str, jax.Array]]:
  """Layers ``{"w", "b"}`` with ``N(0, 1/fan_in)`` weights (the last layer times ``out_scale``), zero biases."""
  layers = []
  keys = jax.random.split(key, len(sizes) - 1)
  for i, (k, n_in, n_out) in enumerate(zip(keys, sizes[:-1], sizes[1:])):
    scale = (out_scale if i == len(sizes) - 2 else 1.0) / math.sqrt(n_in)
    layers.append(
      {"w": scale * jax.random.normal(k, (n_in, n_out), jnp.float32), "b": jnp.zeros((n_out,), jnp.float32)}
    )
  return layers


def mlp(layers: list[dict[str, jax.Array]], x: jax.Array) -> jax.Array:
  for layer in layers[:-1]:
    x = jnp.tanh(x @ layer["w"] + layer["b"])
  return x @ layers[-1]["w"] + layers[-1]["b"]


def init_params(key: jax.Array, hidden: int) -> dict[str, Any]:
  """``{"policy": ..., "critic": ...}``: two MLPs ``4 -> hidden -> hidden -> (2 | 1)``."""
  kp, kc = jax.random.split(key)
  return {"policy": init_mlp(kp, (4, hidden, hidden, 2), 0.01), "critic": init_mlp(kc, (4, hidden, hidden, 1), 1.0)}


def policy(policy_params, obs: jax.Array) -> distrax.Categorical:
  return distrax.Categorical(logits=mlp(policy_params, obs))


def value(critic_params, obs: jax.Array) -> jax.Array:
  return mlp(critic_params, obs)[..., 0]


class Batch(NamedTuple):
  """``B`` episodes padded to ``T`` steps (arrays ``[B, T, ...]``)."""

  obs: jax.Array  # [B, T, 4] the state before each action
  actions: jax.Array  # [B, T]
  rewards: jax.Array  # [B, T]
  mask: jax.Array  # [B, T] 1 up to and including the step where the episode terminates
  last_obs: jax.Array  # [B, 4] the observation after step T - 1
  terminated: jax.Array  # [B, T] whether step t ended the episode (pole fell or cart out)


def rollout(env, env_params, policy_params, key: jax.Array, num_episodes: int, horizon: int) -> Batch:
  """``num_episodes`` fresh episodes of at most ``horizon`` steps, actions sampled from the policy (jittable)."""
  k_reset, k_steps = jax.random.split(key)
  obs, state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(k_reset, num_episodes), env_params)
  step_env = jax.vmap(env.step_env, in_axes=(0, 0, 0, None))

  def step(carry, k):
    obs, state, alive = carry
    k_act, k_env = jax.random.split(k)
    action = policy(policy_params, obs).sample(seed=k_act)
    next_obs, next_state, reward, terminated, _ = step_env(
      jax.random.split(k_env, num_episodes), state, action, env_params
    )
    out = (obs, action, reward.astype(jnp.float32), alive, terminated)
    return (next_obs, next_state, alive & ~terminated), out

  alive = jnp.ones((num_episodes,), bool)
  (last_obs, _, _), (o, a, r, m, d) = jax.lax.scan(step, (obs, state, alive), jax.random.split(k_steps, horizon))
  swap = lambda x: jnp.swapaxes(x, 0, 1)  # noqa: E731 [T, B] -> [B, T]
  return Batch(swap(o), swap(a), swap(r), swap(m).astype(jnp.float32), last_obs, swap(d))


def episode_returns(batch: Batch) -> jax.Array:
  """``[B]`` undiscounted returns (= episode lengths on CartPole)."""
  return jnp.sum(batch.rewards * batch.mask, axis=1)


def bootstrap_value(critic_params, batch: Batch) -> jax.Array:
  """``[B]``: the critic's value after step ``T - 1`` for episodes cut off by the horizon, 0 for the others."""
  cut = batch.mask[:, -1] * (1.0 - batch.terminated[:, -1].astype(jnp.float32))
  return value(critic_params, batch.last_obs) * cut


def log_probs(policy_params, batch: Batch) -> jax.Array:
  return policy(policy_params, batch.obs).log_prob(batch.actions)


# ----------------------------------------------------------------------------------------------------------
# Updates.
# ----------------------------------------------------------------------------------------------------------


def make_optimizers(config: RLConfig, method: str):
  """``(policy optimizer, critic optimizer)``; PPO uses one optimizer on both (the second is ``None``)."""
  if method == "PPO":
    return optax.chain(optax.clip_by_global_norm(MAX_GRAD_NORM), optax.adam(config.ppo_lr)), None
  return optax.adam(config.reinforce_lr), optax.adam(config.critic_lr)


def make_update(env, env_params, config: RLConfig, method: str):
  """``update(carry, key) -> (carry, (env steps, mean training return))`` for one batch (scan body)."""
  policy_opt, critic_opt = make_optimizers(config, method)
  gamma = config.gamma

  if method != "PPO":
    baseline_kind = "leave_one_out" if method == "REINFORCE + leave-one-out" else "value"

    def update(carry, key):
      params, opt_state = carry
      batch = rollout(env, env_params, params["policy"], key, config.reinforce_batch, config.horizon)
      values = value(params["critic"], batch.obs)
      baseline = LEAVE_ONE_OUT if baseline_kind == "leave_one_out" else values

      def policy_loss(pp):
        return rl.reinforce_loss(
          log_probs(pp, batch),
          batch.rewards,
          batch.mask,
          gamma,
          baseline=baseline,
          reward_to_go=True,
          time_discount=False,
        )

      returns = rl.discounted_returns(batch.rewards, batch.mask, gamma)

      def critic_loss(cp):
        v = value(cp, batch.obs)
        return rl.ppo_value_loss(v, v, returns, batch.mask, clip_eps=None)

      def critic_step(carry, _):
        cp, sc = carry
        uc, sc = critic_opt.update(jax.grad(critic_loss)(cp), sc, cp)
        return (optax.apply_updates(cp, uc), sc), None

      gp = jax.grad(policy_loss)(params["policy"])
      up, sp = policy_opt.update(gp, opt_state[0], params["policy"])
      (cp, sc), _ = jax.lax.scan(critic_step, (params["critic"], opt_state[1]), None, length=config.critic_steps)
      params = {"policy": optax.apply_updates(params["policy"], up), "critic": cp}
      return (params, (sp, sc)), (jnp.sum(batch.mask), jnp.mean(episode_returns(batch)))

    def init(params):
      return (policy_opt.init(params["policy"]), critic_opt.init(params["critic"]))

    return update, init

  n_mb = config.ppo_minibatches
  mb = config.ppo_batch // n_mb

  def update(carry, key):
    params, opt_state = carry
    k_roll, k_perm = jax.random.split(key)
    batch = rollout(env, env_params, params["policy"], k_roll, config.ppo_batch, config.horizon)
    old_values = value(params["critic"], batch.obs)
    adv = rl.gae(
      batch.rewards, old_values, batch.mask, gamma, config.lam, bootstrap_value=bootstrap_value(params["critic"], batch)
    )
    targets = adv + old_values
    old_lp = log_probs(params["policy"], batch)
    data = (batch, old_lp, adv, old_values, targets)

    def minibatch_step(carry, idx):
      params, opt_state = carry
      b, lp0, a, v0, tg = jax.tree.map(lambda x: x[idx], data)
      count = jnp.maximum(jnp.sum(b.mask), 1.0)
      a_mean = jnp.sum(a * b.mask) / count
      a_std = jnp.sqrt(jnp.sum((a - a_mean) ** 2 * b.mask) / count)
      a = (a - a_mean) / (a_std + 1e-8)

      def loss(p):
        pi = rl.ppo_loss(log_probs(p["policy"], b), lp0, a, b.mask, config.clip_eps)
        vf = rl.ppo_value_loss(value(p["critic"], b.obs), v0, tg, b.mask, clip_eps=None)
        return pi + VALUE_COEF * vf

      grads = jax.grad(loss)(params)
      updates, opt_state = policy_opt.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), None

    def epoch(carry, k):
      perm = jax.random.permutation(k, config.ppo_batch).reshape(n_mb, mb)
      return jax.lax.scan(minibatch_step, carry, perm)[0], None

    (params, opt_state), _ = jax.lax.scan(epoch, (params, opt_state), jax.random.split(k_perm, config.ppo_epochs))
    return (params, opt_state), (jnp.sum(batch.mask), jnp.mean(episode_returns(batch)))

  return update, policy_opt.init


# ----------------------------------------------------------------------------------------------------------
# Gradient estimates at fixed parameters.
# ----------------------------------------------------------------------------------------------------------


def gradient_estimates(env, env_params, config: RLConfig, params, key: jax.Array) -> tuple[jax.Array, jax.Array]:
  """On one batch of ``variance_batch`` episodes: ``([len(ESTIMATORS), P] flat gradients, env steps)``.

  The gradients are those of the negated losses (ascent directions) with respect to the policy parameters.
  """
  batch = rollout(env, env_params, params["policy"], key, config.variance_batch, config.horizon)
  values = value(params["critic"], batch.obs)
  boot = bootstrap_value(params["critic"], batch)
  gamma, r, m = config.gamma, batch.rewards, batch.mask
  adv = rl.gae(r, values, m, gamma, config.lam, bootstrap_value=boot)

  def reinforce(baseline):
    return lambda lp: rl.reinforce_loss(lp, r, m, gamma, baseline=baseline, time_discount=False)

  losses = {
    "REINFORCE": reinforce(None),
    "REINFORCE + leave-one-out": reinforce(LEAVE_ONE_OUT),
    "REINFORCE + value": reinforce(values),
    "actor-critic (GAE)": lambda lp: (
      rl.actor_critic_loss(lp, values, r, m, gamma, config.lam, bootstrap_value=boot, time_discount=False)[
        1
      ].policy_loss
    ),
    "PPO (first step)": lambda lp: rl.ppo_loss(lp, jax.lax.stop_gradient(lp), adv, m, config.clip_eps),
  }
  grads = []
  for name in ESTIMATORS:
    g = jax.grad(lambda pp, f=losses[name]: -f(log_probs(pp, batch)))(params["policy"])
    grads.append(jnp.concatenate([x.ravel() for x in jax.tree.leaves(g)]))
  return jnp.stack(grads), jnp.sum(m)


def gradient_moments(env, env_params, config: RLConfig, params, key: jax.Array) -> dict[str, Any]:
  """Per estimator, over ``num_repeats`` independent batches at fixed ``params``: total variance, |mean|^2.

  Returns:
    ``{"total_variance": [E], "mean_sq_norm": [E], "env_steps_per_batch": float}`` (numpy).
  """
  grads, steps = jax.lax.map(
    lambda k: gradient_estimates(env, env_params, config, params, k), jax.random.split(key, config.num_repeats)
  )  # [R, E, P], [R]
  mean = jnp.mean(grads, axis=0)
  var = jnp.sum(jnp.var(grads, axis=0, ddof=1), axis=-1)
  return {"total_variance": var, "mean_sq_norm": jnp.sum(mean**2, axis=-1), "env_steps_per_batch": jnp.mean(steps)}


# ----------------------------------------------------------------------------------------------------------
# Overhead against hand-written JAX.
# ----------------------------------------------------------------------------------------------------------


def _hand_log_probs(policy_params, batch: Batch) -> jax.Array:
  logp = jax.nn.log_softmax(mlp(policy_params, batch.obs))
  return jnp.take_along_axis(logp, batch.actions[..., None], axis=-1)[..., 0]


def _hand_reverse_scan(x: jax.Array, decay: jax.Array) -> jax.Array:
  """``y_t = x_t + decay_t y_{t+1}`` backwards over the last axis of ``[B, T]`` arrays."""

  def step(carry, inputs):
    carry = inputs[0] + inputs[1] * carry
    return carry, carry

  return jax.lax.scan(step, jnp.zeros(x.shape[0], x.dtype), (x.T, decay.T), reverse=True)[1].T


def overhead_functions(config: RLConfig) -> dict[str, Callable]:
  """``{name: f(inputs, key) -> gradient}``: ``sfe_jax.rl`` losses and hand-written equivalents (same maths).

  ``inputs = {"policy", "critic", "batch", "old_log_probs"}`` (arrays only, so nothing is constant-folded);
  the key is unused. ``REINFORCE + leave-one-out``: the policy gradient of one REINFORCE update (reward-to-go,
  leave-one-out, ``time_discount=False``), policy log-probabilities through ``distrax.Categorical``. ``PPO``:
  the gradient of one PPO minibatch loss on the whole batch (GAE, clipped surrogate, value loss) with respect
  to the policy and the critic. The hand-written versions use ``log_softmax`` and their own scans.
  """
  gamma, lam, eps = config.gamma, config.lam, config.clip_eps

  def sfe_reinforce(inputs, key):
    del key
    b = inputs["batch"]
    loss = lambda pp: rl.reinforce_loss(
      log_probs(pp, b),
      b.rewards,
      b.mask,
      gamma,  # noqa: E731
      baseline=LEAVE_ONE_OUT,
      time_discount=False,
    )
    return jax.grad(loss)(inputs["policy"])

  def hand_reinforce(inputs, key):
    del key
    b = inputs["batch"]
    m = b.mask
    g = _hand_reverse_scan(b.rewards * m, gamma * m)
    others = jnp.sum(m, axis=0) - m
    adv = (g - (jnp.sum(g * m, axis=0) - g * m) / jnp.maximum(others, 1.0)) * m
    loss = lambda pp: -jnp.sum(m * _hand_log_probs(pp, b) * jax.lax.stop_gradient(adv)) / m.shape[0]  # noqa: E731
    return jax.grad(loss)(inputs["policy"])

  def sfe_ppo(inputs, key):
    del key
    b, lp0 = inputs["batch"], inputs["old_log_probs"]
    v0 = value(inputs["critic"], b.obs)
    adv = rl.gae(b.rewards, v0, b.mask, gamma, lam, bootstrap_value=bootstrap_value(inputs["critic"], b))

    def loss(p):
      pi = rl.ppo_loss(log_probs(p["policy"], b), lp0, adv, b.mask, eps)
      return pi + VALUE_COEF * rl.ppo_value_loss(value(p["critic"], b.obs), v0, adv + v0, b.mask, clip_eps=None)

    return jax.grad(loss)({"policy": inputs["policy"], "critic": inputs["critic"]})

  def hand_ppo(inputs, key):
    del key
    b, lp0 = inputs["batch"], inputs["old_log_probs"]
    m = b.mask
    v0 = value(inputs["critic"], b.obs) * m
    boot = bootstrap_value(inputs["critic"], b)
    next_v = jnp.concatenate([v0[:, 1:], boot[:, None] * m[:, -1:]], axis=1)
    deltas = m * (b.rewards + gamma * next_v - v0)
    adv = jax.lax.stop_gradient(_hand_reverse_scan(deltas, gamma * lam * jnp.pad(m[:, 1:], ((0, 0), (0, 1)))) * m)
    count = jnp.maximum(jnp.sum(m), 1.0)

    def loss(p):
      ratio = jnp.exp((_hand_log_probs(p["policy"], b) - lp0) * m)
      surrogate = jnp.minimum(ratio * adv, jnp.clip(ratio, 1 - eps, 1 + eps) * adv)
      v = value(p["critic"], b.obs)
      return (-jnp.sum(surrogate * m) + VALUE_COEF * 0.5 * jnp.sum((v - (adv + v0)) ** 2 * m)) / count

    return jax.grad(loss)({"policy": inputs["policy"], "critic": inputs["critic"]})

  return {
    "REINFORCE + leave-one-out": sfe_reinforce,
    "REINFORCE + leave-one-out/hand": hand_reinforce,
    "REINFORCE + leave-one-out/hand-copy": hand_reinforce,
    "PPO": sfe_ppo,
    "PPO/hand": hand_ppo,
    "PPO/hand-copy": hand_ppo,
  }


def measure_overhead(config: RLConfig, key: jax.Array) -> list[dict[str, Any]]:
  """Times the library's loss gradients against hand-written ones on one rollout batch; one record per loss."""
  env, env_params = make_env()
  k_init, k_roll, k_old = jax.random.split(key, 3)
  params = init_params(k_init, config.hidden)
  batch = jax.jit(lambda k: rollout(env, env_params, params["policy"], k, config.overhead_batch, config.horizon))(
    k_roll
  )
  # Old log-probabilities a little off the current ones, so that PPO's ratios are not all 1 (some clip).
  old = log_probs(params["policy"], batch) + 0.3 * jax.random.normal(k_old, batch.mask.shape)
  inputs = {**params, "batch": batch, "old_log_probs": old}
  functions = overhead_functions(config)
  timings = throughput.time_interleaved(functions, inputs, key, repeats=config.overhead_repeats, warmup=3)
  records = []
  for name in ("REINFORCE + leave-one-out", "PPO"):
    ours, hand, copy = timings[name], timings[f"{name}/hand"], timings[f"{name}/hand-copy"]
    g_ours, g_hand = (jax.tree.leaves(t["compiled"](inputs, key)) for t in (ours, hand))
    max_diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(g_ours, g_hand))
    scale = max(float(jnp.max(jnp.abs(a))) for a in g_hand)
    records.append(
      {
        "suite": SUITE,
        "kind": "overhead",
        "loss": name,
        "episodes": config.overhead_batch,
        "horizon": config.horizon,
        "valid_steps": float(jnp.sum(batch.mask)),
        "sfe_seconds": ours["median_seconds"],
        "hand_seconds": hand["median_seconds"],
        "sfe_over_hand_paired": throughput.paired_ratio(ours["times"], hand["times"]),
        # The A/A control: two copies of the same program; its distance from 1 is the measurement noise.
        "hand_copy_over_hand_paired": throughput.paired_ratio(copy["times"], hand["times"]),
        "sfe_compile_seconds": ours["compile_seconds"],
        "hand_compile_seconds": hand["compile_seconds"],
        "max_abs_diff": max_diff,
        "relative_diff": max_diff / max(scale, 1e-30),
        "repeats": len(ours["times"]),
      }
    )
  return records


# ----------------------------------------------------------------------------------------------------------
# One training run.
# ----------------------------------------------------------------------------------------------------------


def cell_key(config: RLConfig, cell_id: str) -> jax.Array:
  return report.cell_key(config.seed, cell_id)


def cell_id(method: str, run: int) -> str:
  return f"{SUITE}/training/{SLUGS[method]}/run{run}"


def _checkpoint_indices(curve: list[list[float]], target_steps: float, points: tuple[float, ...]) -> list[int]:
  """The curve points nearest to ``fraction * target_steps`` for every fraction (deduplicated, in order)."""
  steps = np.asarray([c[0] for c in curve], np.float64)
  out = []
  for p in points:
    i = int(np.argmin(np.abs(steps - p * target_steps)))
    if i not in out:
      out.append(i)
  return sorted(out)


def measure_training(config: RLConfig, method: str, run: int, key: jax.Array) -> dict[str, Any]:
  """Trains one method on CartPole; returns one record with the curve, the solve point and the variance."""
  wall_start = time.perf_counter()
  env, env_params = make_env()
  threshold = solve_threshold(config)
  key_train, key_var = jax.random.split(key)
  key_init = cell_key(config, f"{SUITE}/init/run{run}")  # shared by the methods: the same initial networks
  key_eval = cell_key(config, f"{SUITE}/evaluation")  # shared: the same policy gets the same score
  update, init_opt = make_update(env, env_params, config, method)
  params = init_params(key_init, config.hidden)
  opt_state = init_opt(params)

  def segment(params, opt_state, k):
    (params, opt_state), (steps, returns) = jax.lax.scan(
      update, (params, opt_state), jax.random.split(k, config.eval_every)
    )
    return params, opt_state, jnp.sum(steps), jnp.mean(returns)

  def evaluate(policy_params, k):
    batch = rollout(env, env_params, policy_params, k, config.eval_episodes, config.horizon)
    ret = episode_returns(batch)
    return jnp.mean(ret), jnp.min(ret)

  compiled_segment = jax.jit(segment).lower(params, opt_state, key_train).compile()
  eval_fn = jax.jit(evaluate)

  curve, snapshots = [], []
  env_steps, seconds, solved_at, updates = 0, 0.0, None, 0
  train_return = float("nan")
  while True:
    mean_ret, min_ret = (
      float(v) for v in jax.device_get(eval_fn(params["policy"], jax.random.fold_in(key_eval, len(curve))))
    )
    curve.append([env_steps, mean_ret, train_return, min_ret, seconds])
    snapshots.append(params)
    if solved_at is None and mean_ret >= threshold:
      solved_at = len(curve) - 1
    if solved_at is not None and len(curve) - 1 - solved_at >= config.after_solve:
      break
    if env_steps >= config.max_env_steps:
      break
    start = time.perf_counter()
    params, opt_state, steps, ret = jax.block_until_ready(
      compiled_segment(params, opt_state, jax.random.fold_in(key_train, len(curve)))
    )
    seconds += time.perf_counter() - start
    env_steps += int(steps)
    updates += config.eval_every
    train_return = float(ret)

  target = curve[solved_at][0] if solved_at is not None else curve[-1][0]
  moments = jax.jit(lambda p, k: gradient_moments(env, env_params, config, p, k))
  variance = []
  for i in _checkpoint_indices(curve, target, config.variance_points):
    m = jax.device_get(moments(snapshots[i], jax.random.fold_in(key_var, i)))
    entry = {
      "checkpoint": i,
      "env_steps": curve[i][0],
      "eval_return": curve[i][1],
      "env_steps_per_batch": float(m["env_steps_per_batch"]),
    }
    for j, name in enumerate(ESTIMATORS):
      tv, ms = float(m["total_variance"][j]), float(m["mean_sq_norm"][j])
      entry[name] = {"total_variance": tv, "mean_sq_norm": ms, "relative_variance": tv / ms if ms > 0 else float("inf")}
    variance.append(entry)

  return {
    "suite": SUITE,
    "kind": "training",
    "env": ENV_NAME,
    "method": method,
    "run": run,
    "horizon": config.horizon,
    "gamma": config.gamma,
    "lam": config.lam,
    "episodes_per_update": config.ppo_batch if method == "PPO" else config.reinforce_batch,
    "solve_return": threshold,
    "solved": solved_at is not None,
    "env_steps_to_solve": None if solved_at is None else curve[solved_at][0],
    "seconds_to_solve": None if solved_at is None else curve[solved_at][4],
    "updates": updates,
    "env_steps": env_steps,
    "seconds": seconds,
    "final_eval_return": curve[-1][1],
    "best_eval_return": max(c[1] for c in curve),
    "curve": curve,
    "variance": variance,
    "variance_batch": config.variance_batch,
    "num_repeats": config.num_repeats,
    "wall_seconds": time.perf_counter() - wall_start,  # the whole cell: compilation, evaluations, variance
  }


# ----------------------------------------------------------------------------------------------------------
# Cells.
# ----------------------------------------------------------------------------------------------------------


def _methods(config: RLConfig) -> list[str]:
  return [m for m in METHODS if m in config.methods]


def cells(config: RLConfig) -> list[tuple[str, Callable[[], list[dict[str, Any]]]]]:
  """``(cell id, measure)`` pairs, one training run per method and run index. ``measure()`` -> [record]."""
  _check(config)
  out = []
  for run in range(config.runs):
    for method in _methods(config):
      cid = cell_id(method, run)
      out.append(
        (cid, lambda method=method, run=run, cid=cid: [measure_training(config, method, run, cell_key(config, cid))])
      )
  if config.overhead_batch:
    cid = f"{SUITE}/overhead"
    out.append((cid, lambda: measure_overhead(config, cell_key(config, cid))))
  return out


# ----------------------------------------------------------------------------------------------------------
# Report.
# ----------------------------------------------------------------------------------------------------------


def _index(records: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
  out = {}
  for r in records:
    if r.get("suite", SUITE) == SUITE and r.get("kind") == "training" and r.get("method") in METHODS:
      out[(r["method"], int(r.get("run", 0)))] = r
  return out


def _each_run(config: RLConfig, runs: dict[tuple[str, int], dict[str, Any]], skip_missing: bool = False):
  """``(method, run, record or None)`` for every cell of ``config``, in report order."""
  for method in _methods(config):
    for run in range(config.runs):
      r = runs.get((method, run))
      if r is not None or not skip_missing:
        yield method, run, r


def _checkpoint_label(i: int, checkpoint: dict[str, Any]) -> str:
  return f"{'initial' if i == 0 else f'checkpoint {i}'} ({checkpoint.get('env_steps')} steps)"


def to_markdown(records: list[dict[str, Any]], config: RLConfig, env: dict[str, Any] | None) -> str:
  """The report, built from records alone (missing cells show as "not run")."""
  runs = _index(records)
  threshold = solve_threshold(config)
  parts = [
    f"# Policy gradients on gymnax {ENV_NAME}",
    f"Policy and critic: MLPs 4 -> {config.hidden} -> {config.hidden} -> (2 | 1), tanh, Adam. gamma "
    f"{config.gamma:g}; rollouts of {config.horizon} steps (episodes masked after they end). REINFORCE: "
    f"{config.reinforce_batch} episodes per update, lr {config.reinforce_lr:g}; PPO: {config.ppo_batch} "
    f"episodes per rollout, {config.ppo_epochs} epochs x {config.ppo_minibatches} minibatches, lr "
    f"{config.ppo_lr:g}, GAE lambda {config.lam:g}, clip {config.clip_eps:g}. Evaluation every "
    f"{config.eval_every} updates on {config.eval_episodes} fresh episodes with sampled actions. **Solved** = "
    f"mean evaluation return >= {threshold:g}"
    + (" (every evaluation episode reaches the cap)" if threshold == config.horizon else "")
    + f"; budget {config.max_env_steps:,} environment steps (valid steps only) per run.",
  ]
  if env:
    try:
      parts.append(report.environment_markdown(env))
    except KeyError:
      pass
  rows = []
  for method, run, r in _each_run(config, runs):
    if r is None:
      rows.append([method, run] + ["not run"] * 8)
      continue
    rows.append(
      [
        method,
        run,
        "yes" if r.get("solved") else "no",
        r.get("env_steps_to_solve"),
        report.number(r.get("seconds_to_solve")),
        r.get("updates"),
        r.get("env_steps"),
        report.number(r.get("best_eval_return")),
        report.number(r.get("final_eval_return")),
        report.number(r.get("wall_seconds")),
      ]
    )
  parts += [
    "## Solved?",
    report.markdown_table(
      [
        "method",
        "run",
        "solved",
        "env steps to solve",
        "training seconds to solve",
        "updates",
        "env steps (total)",
        "best eval return",
        "final eval return",
        "cell wall seconds",
      ],
      rows,
    ),
    "Training seconds: the jitted updates only (compilation and evaluations excluded); cell wall seconds: "
    "the whole cell (compilation, evaluations and the variance measurement included). Training stops "
    f"{config.after_solve} evaluation(s) after the first solved one.",
  ]
  if config.overhead_batch:
    overhead = {r.get("loss"): r for r in records if r.get("suite", SUITE) == SUITE and r.get("kind") == "overhead"}
    rows = []
    for name in ("REINFORCE + leave-one-out", "PPO"):
      r = overhead.get(name)
      if r is None:
        rows.append([name] + ["not run"] * 6)
        continue
      ratio = report.number(r.get("sfe_over_hand_paired"))
      rows.append(
        [
          name,
          1e3 * report.number(r.get("sfe_seconds")),
          1e3 * report.number(r.get("hand_seconds")),
          ratio,
          throughput.verdict(ratio, throughput.OVERHEAD_TARGET),
          report.number(r.get("hand_copy_over_hand_paired")),
          report.number(r.get("relative_diff")),
        ]
      )
    parts += [
      "## Overhead against hand-written JAX",
      f"The gradient of one update's loss on a batch of {config.overhead_batch} episodes x "
      f"{config.horizon} steps, jitted: `sfe_jax.rl` (policy log-probabilities through "
      "`distrax.Categorical`) against the same maths written by hand (`log_softmax`, own scans), timed "
      f"in random interleaved order ({config.overhead_repeats} calls each, median). Ratio: the median of "
      f"the paired per-round ratios (target <= {throughput.OVERHEAD_TARGET}); A/A: two copies of the "
      "hand-written program, the measurement noise; difference: max |g_sfe - g_hand| / max |g_hand|.",
      report.markdown_table(
        ["loss", "sfe_jax ms", "hand-written ms", "sfe / hand", "target", "A/A", "difference"], rows
      ),
    ]
  rows = []
  for method, run, r in _each_run(config, runs, skip_missing=True):
    curve = r.get("curve") or []
    pts = [(report.number(c[0]), report.number(c[1])) for c in curve]
    pts = [(s, v) for s, v in pts if s is not None and v is not None]
    firsts = [next((s for s, v in pts if v >= level), None) for level in (100, 200, 300, 400, threshold)]
    rows.append([method, run, len(curve)] + firsts)
  parts += [
    "## Learning curves",
    "Environment steps at the first evaluation whose mean return reaches each level (— : never); the "
    "full curves are in rl.json / rl.png.",
    report.markdown_table(["method", "run", "points", "return 100", "200", "300", "400", f"{threshold:g}"], rows),
  ]
  rows = []
  for method, run, r in _each_run(config, runs, skip_missing=True):
    checkpoints = r.get("variance") or []
    for i, c in enumerate(checkpoints):
      for name in ESTIMATORS:
        e = c.get(name) or {}
        rows.append(
          [
            method,
            run,
            _checkpoint_label(i, c),
            report.number(c.get("eval_return")),
            name,
            report.number(e.get("total_variance")),
            report.number(e.get("mean_sq_norm")),
            report.number(e.get("relative_variance")),
          ]
        )
  parts += [
    "## Gradient variance at fixed parameters",
    f"{config.num_repeats} independent batches of {config.variance_batch} episodes at the parameters of "
    "each checkpoint (the initial policy, then the checkpoints nearest to "
    + ", ".join(f"{p:.2g}" for p in config.variance_points if p > 0)
    + " of the way to solved); per estimator: tr Cov = sum over the policy parameters of the variance of "
    "the gradient estimate of one batch, |E g|^2 = squared norm of the mean over the batches, and their "
    "ratio (scale-free). The REINFORCE rows (reward-to-go, time_discount=False) share one expectation; "
    "actor-critic (GAE lambda, bootstrapped) and "
    "PPO are biased unless the critic is exact; PPO's first-step gradient is the actor-critic one times "
    "B / (valid steps).",
    report.markdown_table(
      ["method", "run", "checkpoint", "eval return", "estimator", "tr Cov", "|E g|^2", "tr Cov / |E g|^2"], rows
    ),
  ]
  return "\n\n".join(parts) + "\n"


# ----------------------------------------------------------------------------------------------------------
# Plots.
# ----------------------------------------------------------------------------------------------------------


def plot(records: list[dict[str, Any]], config: RLConfig, out_dir: str) -> list[str]:
  """``rl.png`` (learning curves) and ``rl_variance.png`` (tr Cov / |E g|^2 per estimator); returns the paths."""
  plt = report.pyplot(out_dir)
  runs = _index(records)
  colours = {m: f"C{i}" for i, m in enumerate(METHODS)}
  paths = []

  fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
  any_curve = False
  for (method, run), r in sorted(runs.items()):
    if method not in config.methods:
      continue
    pts = [tuple(report.number(v) for v in c[:3]) for c in r.get("curve") or []]
    pts = [p for p in pts if p[0] is not None and p[1] is not None]
    if not pts:
      continue
    any_curve = True
    s, ev, tr = zip(*pts)
    label = method if run == 0 else None
    axes[0].plot(s, ev, color=colours[method], marker=".", label=label, alpha=1.0 if run == 0 else 0.6)
    tr = [np.nan if v is None else v for v in tr]
    axes[1].plot(s, tr, color=colours[method], label=label, alpha=1.0 if run == 0 else 0.6)
  for ax, what in zip(axes, ("evaluation", "training")):
    ax.axhline(solve_threshold(config), color="k", lw=0.8, ls=":")
    ax.set_xlabel("environment steps")
    ax.set_ylabel(f"mean {what} return")
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize=8)
  fig.suptitle(f"{ENV_NAME}: learning curves")
  paths += report.save_figure(fig, out_dir, "rl.png", keep=any_curve)

  shown = [(m, r) for (m, run), r in sorted(runs.items()) if run == 0 and m in config.methods and r.get("variance")]
  if shown:
    fig, axes = plt.subplots(1, len(shown), figsize=(5 * len(shown), 4.2), squeeze=False)
    for ax, (method, r) in zip(axes[0], shown):
      checkpoints = r["variance"]
      width = 0.8 / len(checkpoints)
      for i, c in enumerate(checkpoints):
        vals = [report.number((c.get(name) or {}).get("relative_variance")) for name in ESTIMATORS]
        vals = [np.nan if v is None or not 0 < v < math.inf else v for v in vals]
        eval_return = report.number(c.get("eval_return"))
        ax.bar(
          np.arange(len(ESTIMATORS)) + (i - (len(checkpoints) - 1) / 2) * width,
          vals,
          width,
          label=_checkpoint_label(i, c) + ("" if eval_return is None else f", return {eval_return:.0f}"),
        )
      ax.set_yscale("log")
      ax.set_xticks(np.arange(len(ESTIMATORS)))
      ax.set_xticklabels(ESTIMATORS, rotation=35, ha="right", fontsize=7)
      ax.set_ylabel("tr Cov / |E g|^2 (scale-free)")
      ax.set_title(f"along {method} training", fontsize=9)
      ax.grid(True, axis="y", which="both", alpha=0.3)
      ax.legend(fontsize=7)
    fig.suptitle(f"Policy-gradient variance at fixed parameters ({config.variance_batch} episodes per batch)")
    paths += report.save_figure(fig, out_dir, "rl_variance.png")
  return paths


def run(config: RLConfig, out_dir: str | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
  """Runs (or resumes, from ``out_dir/rl.jsonl``) the CartPole suite and writes its reports.

  Returns:
    ``{"records": [...], "markdown": str, "meta": {...}, "paths": {...}}``.
  """
  return store.run_suite(SUITE, config, cells(config), to_markdown, plot, out_dir, log)
