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
environment steps and training seconds to the first solved evaluation.

Times of a training cell: its programs (``eval_every`` updates under ``lax.scan``, the evaluation, the variance
measurement) are compiled ahead of time, timed apart (``compile_seconds``); the training program then runs
once untimed (a warm-up, its result discarded), and every segment of updates is timed to completion
(``block_until_ready``). ``seconds``, ``seconds_to_solve`` and the curve's seconds are this steady-state
training time (compilation and evaluations excluded); ``wall_seconds`` is by design the wall clock of the whole
cell (compilation, warm-up, evaluations and the variance measurement included).

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
(:func:`overhead_functions`), timed round-robin in random order with ``benchmarks.timing.time_interleaved``
beside an A/A copy of the hand-written program, each call to completion after ahead-of-time compilation (timed
apart: ``sfe_compile_seconds``, ``hand_compile_seconds``) and ``OVERHEAD_WARMUP`` untimed rounds; the gradients
must agree.

Seeds: every cell (one training run of one method) has the key ``config.key(cell id)`` = ``fold_in(key(seed),
crc32(cell id))``, so a cell gives the same numbers whatever other cells run; ``runs`` > 1 adds independent
runs (cell ids ``.../run1``, ...). The initial networks of run ``i`` come from ``config.key("rl/init/run<i>")``
instead, so all methods of a run start from the same policy and critic (the same initial evaluation). The
variance measurement of checkpoint ``i`` uses ``fold_in(split(cell key)[1], i)``.

Times (2 CPU cores, jax 0.10.2 CPU): the quick preset takes about 45 seconds (all three methods solve in
1e5 to 2.2e5 environment steps, see rl.md); the full preset (5 runs per method, 128 repeats and 4 checkpoints
of the variance measurement) about 4.5 minutes, and every one of its 15 runs solves.
"""

from __future__ import annotations

from benchmarks import suite
from benchmarks.rl.measure import (
  batch_gradient_estimates,
  cell_id,
  cells,
  checkpoint_indices,
  gradient_estimates,
  gradient_moments,
  make_learn,
  make_optimizers,
  make_update,
  measure_overhead,
  measure_training,
  overhead_functions,
)
from benchmarks.rl.problems import (
  ENV_NAME,
  ESTIMATORS,
  LEAVE_ONE_OUT,
  MAX_GRAD_NORM,
  METHODS,
  OVERHEAD_WARMUP,
  PRESETS,
  SLUGS,
  SUITE,
  VALUE_COEF,
  Batch,
  RLConfig,
  bootstrap_value,
  episode_returns,
  init_mlp,
  init_params,
  log_probs,
  make_env,
  mlp,
  policy,
  rollout,
  selected_methods,
  solve_threshold,
  value,
)
from benchmarks.rl.render import plot, to_markdown

SUMMARY = """\
Policy gradients (sfe_jax.rl) on gymnax CartPole-v1: REINFORCE with a leave-one-out or a learned
value baseline and PPO trained until the mean return of sampled evaluation episodes is 500 (the
cap): environment steps and seconds to solve (compiled updates; compilation timed apart), learning
curves, and the variance of five policy-gradient estimators (no baseline, leave-one-out, value,
actor-critic GAE, PPO's first step) at fixed parameters along training, and the time of the losses'
gradients against hand-written JAX."""

OPTIONS: tuple[suite.Option, ...] = ()

__all__ = [
  "ENV_NAME",
  "ESTIMATORS",
  "LEAVE_ONE_OUT",
  "MAX_GRAD_NORM",
  "METHODS",
  "OPTIONS",
  "OVERHEAD_WARMUP",
  "PRESETS",
  "SLUGS",
  "SUITE",
  "SUMMARY",
  "VALUE_COEF",
  "Batch",
  "RLConfig",
  "batch_gradient_estimates",
  "bootstrap_value",
  "cell_id",
  "cells",
  "checkpoint_indices",
  "episode_returns",
  "gradient_estimates",
  "gradient_moments",
  "init_mlp",
  "init_params",
  "log_probs",
  "make_env",
  "make_learn",
  "make_optimizers",
  "make_update",
  "measure_overhead",
  "measure_training",
  "mlp",
  "overhead_functions",
  "plot",
  "policy",
  "rollout",
  "run",
  "selected_methods",
  "solve_threshold",
  "to_markdown",
  "value",
]


def run(config: RLConfig, out_dir: str | None = None, log: suite.Log = print) -> dict:
  """Runs (or resumes, from ``out_dir/rl.jsonl``) the CartPole suite and writes its reports.

  Args:
    config: the configuration (checked first).
    out_dir: the folder of the results and reports; ``None``: in memory only.
    log: receives the progress lines.

  Returns:
    ``{"records": [...], "markdown": str, "meta": {...}, "paths": {...}}``.
  """
  return suite.run(SUITE, config, cells, to_markdown, plot, out_dir, log)
