"""The RL suite's updates, gradient estimates, overhead timings, training runs (compilation timed apart), cells."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import sfe_jax.rl as rl
from benchmarks import suite, timing
from benchmarks.rl.problems import (
  ENV_NAME,
  ESTIMATORS,
  LEAVE_ONE_OUT,
  MAX_GRAD_NORM,
  OVERHEAD_WARMUP,
  SLUGS,
  SUITE,
  VALUE_COEF,
  Batch,
  RLConfig,
  bootstrap_value,
  episode_returns,
  init_params,
  log_probs,
  make_env,
  mlp,
  rollout,
  selected_methods,
  solve_threshold,
  value,
)

# ----------------------------------------------------------------------------------------------------------
# Updates.
# ----------------------------------------------------------------------------------------------------------


def make_optimizers(config: RLConfig, method: str):
  """``(policy optimizer, critic optimizer)``; PPO uses one optimizer on both (the second is ``None``)."""
  if method == "PPO":
    return optax.chain(optax.clip_by_global_norm(MAX_GRAD_NORM), optax.adam(config.ppo_lr)), None
  return optax.adam(config.reinforce_lr), optax.adam(config.critic_lr)


def make_learn(config: RLConfig, method: str):
  """``(learn, init)`` for one method: ``learn((params, opt_state), batch, key) -> (params, opt_state)``.

  One update on a collected :class:`Batch` (any number of episodes; PPO's must be a multiple of
  ``ppo_minibatches``). ``key`` draws PPO's minibatch permutations; the REINFORCE updates draw nothing.
  ``init(params)`` is the optimizer state.
  """
  policy_opt, critic_opt = make_optimizers(config, method)
  gamma = config.gamma

  if method != "PPO":
    baseline_kind = "leave_one_out" if method == "REINFORCE + leave-one-out" else "value"

    def learn(carry, batch, key):
      del key
      params, opt_state = carry
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
      return {"policy": optax.apply_updates(params["policy"], up), "critic": cp}, (sp, sc)

    def init(params):
      return (policy_opt.init(params["policy"]), critic_opt.init(params["critic"]))

    return learn, init

  n_mb = config.ppo_minibatches

  def learn(carry, batch, key):
    params, opt_state = carry
    episodes = batch.mask.shape[0]
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
      perm = jax.random.permutation(k, episodes).reshape(n_mb, episodes // n_mb)
      return jax.lax.scan(minibatch_step, carry, perm)[0], None

    return jax.lax.scan(epoch, (params, opt_state), jax.random.split(key, config.ppo_epochs))[0]

  return learn, policy_opt.init


def make_update(env, env_params, config: RLConfig, method: str):
  """``update(carry, key) -> (carry, (env steps, mean training return))``: a rollout, then ``make_learn``'s
  update on it (a scan body)."""
  learn, init = make_learn(config, method)
  episodes = config.ppo_batch if method == "PPO" else config.reinforce_batch

  def update(carry, key):
    k_roll, k_learn = jax.random.split(key) if method == "PPO" else (key, key)
    batch = rollout(env, env_params, carry[0]["policy"], k_roll, episodes, config.horizon)
    return learn(carry, batch, k_learn), (jnp.sum(batch.mask), jnp.mean(episode_returns(batch)))

  return update, init


# ----------------------------------------------------------------------------------------------------------
# Gradient estimates at fixed parameters.
# ----------------------------------------------------------------------------------------------------------


def gradient_estimates(env, env_params, config: RLConfig, params, key: jax.Array) -> tuple[jax.Array, jax.Array]:
  """On one batch of ``variance_batch`` episodes: ``([len(ESTIMATORS), P] flat gradients, env steps)``."""
  batch = rollout(env, env_params, params["policy"], key, config.variance_batch, config.horizon)
  return batch_gradient_estimates(config, params, batch), jnp.sum(batch.mask)


def batch_gradient_estimates(config: RLConfig, params, batch: Batch) -> jax.Array:
  """``[len(ESTIMATORS), P]``: each estimator's flat policy gradient on one collected batch.

  The gradients are those of the negated losses (ascent directions) with respect to the policy parameters.
  """
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
  return jnp.stack(grads)


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
  timings = timing.time_interleaved(functions, inputs, key, repeats=config.overhead_repeats, warmup=OVERHEAD_WARMUP)
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
        "sfe_over_hand_paired": timing.paired_ratio(ours["times"], hand["times"]),
        # The A/A control: two copies of the same program; its distance from 1 is the measurement noise.
        "hand_copy_over_hand_paired": timing.paired_ratio(copy["times"], hand["times"]),
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


def cell_id(method: str, run: int) -> str:
  """``rl/training/<method slug>/run<run>``."""
  return f"{SUITE}/training/{SLUGS[method]}/run{run}"


def checkpoint_indices(curve: list[list[float]], target_steps: float, points: tuple[float, ...]) -> list[int]:
  """The curve points nearest to ``fraction * target_steps`` for every fraction (deduplicated, in order)."""
  steps = np.asarray([c[0] for c in curve], np.float64)
  out = []
  for p in points:
    i = int(np.argmin(np.abs(steps - p * target_steps)))
    if i not in out:
      out.append(i)
  return sorted(out)


def measure_training(config: RLConfig, method: str, run: int, key: jax.Array) -> dict[str, Any]:
  """Trains one method on CartPole; returns one record with the curve, the solve point and the variance.

  Times: the cell's three programs (``eval_every`` updates under ``lax.scan``, the evaluation and the variance
  measurement) are compiled ahead of time (``compile_seconds``); the training program is then run once untimed
  (a warm-up: the first call's one-off costs, its result discarded) and every segment of updates is timed to
  completion (``block_until_ready``): ``seconds``, ``seconds_to_solve`` and the curve's seconds are the
  steady-state training time, without compilation or evaluations. ``wall_seconds`` is the whole cell by
  design (environment, compilation, warm-up, training, evaluations and the variance measurement).
  """
  wall_start = time.perf_counter()
  env, env_params = make_env()
  threshold = solve_threshold(config)
  key_train, key_var = jax.random.split(key)
  key_init = config.key(f"{SUITE}/init/run{run}")  # shared by the methods: the same initial networks
  key_eval = config.key(f"{SUITE}/evaluation")  # shared: the same policy gets the same score
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

  def moments(params, k):
    return gradient_moments(env, env_params, config, params, k)

  start = time.perf_counter()
  compiled_segment = jax.jit(segment).lower(params, opt_state, key_train).compile()
  eval_fn = jax.jit(evaluate).lower(params["policy"], key_eval).compile()
  moments_fn = jax.jit(moments).lower(params, key_var).compile()
  compile_seconds = time.perf_counter() - start
  # Warm-up: the first segment's work (the same inputs and key), untimed and discarded (the function is pure).
  jax.block_until_ready(compiled_segment(params, opt_state, jax.random.fold_in(key_train, 1)))

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
    k = jax.block_until_ready(jax.random.fold_in(key_train, len(curve)))
    start = time.perf_counter()
    params, opt_state, steps, ret = jax.block_until_ready(compiled_segment(params, opt_state, k))
    seconds += time.perf_counter() - start
    env_steps += int(steps)
    updates += config.eval_every
    train_return = float(ret)

  target = curve[solved_at][0] if solved_at is not None else curve[-1][0]
  variance = []
  for i in checkpoint_indices(curve, target, config.variance_points):
    m = jax.device_get(moments_fn(snapshots[i], jax.random.fold_in(key_var, i)))
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
    "seconds": seconds,  # the compiled updates only (steady state)
    "compile_seconds": compile_seconds,  # the training, evaluation and variance programs
    "final_eval_return": curve[-1][1],
    "best_eval_return": max(c[1] for c in curve),
    "curve": curve,
    "variance": variance,
    "variance_batch": config.variance_batch,
    "num_repeats": config.num_repeats,
    # By design a wall-clock figure: the whole cell, compilation, evaluations and variance measurement included.
    "wall_seconds": time.perf_counter() - wall_start,
  }


# ----------------------------------------------------------------------------------------------------------
# Cells.
# ----------------------------------------------------------------------------------------------------------


def cells(config: RLConfig) -> list[suite.Cell]:
  """``(cell id, measure)`` pairs, one training run per method and run index. ``measure()`` -> [record]."""
  out: list[suite.Cell] = []
  for run in range(config.runs):
    for method in selected_methods(config):
      cid = cell_id(method, run)
      out.append(
        (cid, lambda method=method, run=run, cid=cid: [measure_training(config, method, run, config.key(cid))])
      )
  if config.overhead_batch:
    cid = f"{SUITE}/overhead"
    out.append((cid, lambda: measure_overhead(config, config.key(cid))))
  return out
