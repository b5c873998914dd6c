r"""Policy-gradient losses on batched trajectories: REINFORCE, actor-critic (A2C) and PPO.

The conventions (``[B, T]`` arrays, ``mask``, the surrogate sign) and the handling of non-finite values (ignored
padding; NaN for an array hyperparameter out of its range) are those of :mod:`sfe_jax._src.rl.returns`.

References:
  Williams, "Simple statistical gradient-following algorithms for connectionist reinforcement learning", 1992.
  Mnih et al., "Asynchronous methods for deep reinforcement learning", 2016.
  Schulman et al., "Proximal policy optimization algorithms", 2017.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from sfe_jax._src.rl.returns import (
  check_bt,
  check_clip,
  check_positive,
  check_unit,
  discounted_returns,
  float_mask,
  gae,
  masked_mean,
  time_weights,
  zero_padding,
)
from sfe_jax._src.variance.baselines import Baseline

Array = jax.Array


# ----------------------------------------------------------------------------------------------------------
# REINFORCE.
# ----------------------------------------------------------------------------------------------------------


def check_baseline(baseline: Any, fn: str, arrays: bool = True) -> Any:
  """``None``, an :mod:`sfe_jax.baselines` baseline computable over trajectories, or (if ``arrays``) values."""
  if baseline is None or (isinstance(baseline, Baseline) and baseline.batch_compute is not None):
    return baseline
  if isinstance(baseline, Baseline):
    raise TypeError(
      f"`baseline` of {fn}: {baseline.name} cannot be computed per step over a batch of trajectories "
      "(it is stateful or per parameter coordinate). Use sfe.baselines.leave_one_out() or "
      "sfe.baselines.constant(value)" + (", or pass learned values V(s_t) as a [B, T] array." if arrays else ".")
    )
  if isinstance(baseline, str):
    raise TypeError(
      f"`baseline` of {fn} takes the baselines of sfe.baselines, not strings: got {baseline!r}. Use "
      "sfe.baselines.leave_one_out() (the batch mean including the trajectory itself is biased: its gradient "
      "is exactly (B - 1) / B times the leave-one-out one)."
    )
  if not arrays:
    raise TypeError(
      f"`baseline` of {fn} must be None or a baseline of sfe.baselines (e.g. sfe.baselines.leave_one_out()); "
      f"got {type(baseline).__name__}."
    )
  return baseline


def reinforce_loss(
  log_probs: Array,
  rewards: Array,
  mask: Array,
  gamma: float | Array,
  baseline: None | str | Array = None,
  reward_to_go: bool = True,
  time_discount: bool = True,
) -> Array:
  r"""REINFORCE surrogate loss: ``-grad`` of it is the policy-gradient estimate, averaged over trajectories.

  .. math:: L = -\frac1B \sum_{b,t} m_{bt}\, w_t \log\pi_\theta(a_{bt}|s_{bt})\,
     \mathrm{sg}(R_{bt} - b_{bt}),

  with :math:`R_{bt} = G_{bt}` (reward-to-go, causality) and :math:`w_t = \gamma^t`, or :math:`R_{bt} =
  G_{b0}` (the whole return) and :math:`w_t = 1`. ``-jax.grad(L)`` estimates :math:`\nabla_\theta J`,
  :math:`J = E[\sum_t \gamma^t r_t]`. Both forms are unbiased; reward-to-go drops the past rewards, which have
  zero-mean products with the score, and so has lower variance. The value of ``L`` is not an estimate of J.

  Baselines (subtracted per time step from ``R``), the same objects as for :func:`sfe_jax.score_function`:

  * ``None``: no baseline.
  * ``sfe.baselines.leave_one_out()``: the mean of ``R`` over the *other* trajectories running at ``t``:
    unbiased (independent of the trajectory it multiplies), needs ``B >= 2`` to help. (The batch mean
    *including* the trajectory, common in RL code, gives exactly ``(n - 1) / n`` times this gradient with ``n``
    running trajectories: biased, and no lower in variance once rescaled.)
  * ``sfe.baselines.constant(value)``: a fixed value, unbiased.
  * an array ``[B, T]`` of learned values ``V(s_t)`` (wrapped in ``stop_gradient``): unbiased for any
    function of the state; the true value gives the actor-critic (lower-variance) estimate.

  Stateful or per-coordinate baselines (``moving_average``, ``optimal``) are refused with a clear error; keep
  a running mean yourself and pass it as an array.

  Args:
    log_probs: ``[B, T]`` ``log pi_theta(a_t | s_t)``, differentiable in the policy parameters.
    rewards: ``[B, T]`` rewards.
    mask: ``[B, T]`` validity mask.
    gamma: discount in ``[0, 1]``.
    baseline: ``None``, ``sfe.baselines.leave_one_out()``, ``sfe.baselines.constant(v)`` or a ``[B, T]``
      array of values.
    reward_to_go: use ``G_t`` (True) or the whole return ``G_0`` (False) for every step.
    time_discount: keep the ``gamma^t`` weight of the reward-to-go form (True, the unbiased gradient of the
      discounted objective); False drops it, as most implementations do (biased for ``gamma < 1``: it is the
      gradient of an undiscounted state distribution).

  Returns:
    A scalar loss.

  Examples:
    >>> import jax, jax.numpy as jnp, sfe_jax.rl as rl
    >>> logits = jnp.zeros(2)
    >>> actions, rewards = jnp.array([[0, 1]]), jnp.array([[1., 0.]])
    >>> loss = lambda l: rl.reinforce_loss(jax.nn.log_softmax(l)[actions], rewards, jnp.ones((1, 2)), 1.0)
    >>> jax.grad(loss)(logits)
    Array([-0.5,  0.5], dtype=float32)
  """
  fn = "reinforce_loss"
  log_probs = check_bt("log_probs", log_probs, fn=fn)
  rewards = check_bt("rewards", rewards, log_probs.shape, fn)
  mask = check_bt("mask", mask, log_probs.shape, fn)
  gamma = check_unit("gamma", gamma, fn)
  b, t = log_probs.shape
  dtype = jnp.result_type(log_probs.dtype, rewards.dtype, float)
  m = float_mask(mask, dtype, gamma)
  log_probs = zero_padding(log_probs, mask)
  g = discounted_returns(rewards, mask, gamma).astype(dtype)
  if reward_to_go:
    returns = g
    weights = time_weights(gamma, t, dtype, time_discount)
  else:
    returns = jnp.broadcast_to(g[:, :1], (b, t)) * m
    weights = time_weights(gamma, t, dtype, discount=False)
  baseline = check_baseline(baseline, fn)
  if baseline is None:
    adv = returns
  elif isinstance(baseline, Baseline):
    assert baseline.batch_compute is not None  # check_baseline refused the others
    adv = returns - baseline.batch_compute(returns, m)
  else:
    values = zero_padding(check_bt("baseline", baseline, log_probs.shape, fn), mask)
    adv = returns - values.astype(dtype)
  terms = m * weights * log_probs.astype(dtype) * jax.lax.stop_gradient(adv * m)
  return -jnp.sum(terms) / b


# ----------------------------------------------------------------------------------------------------------
# Actor-critic and PPO.
# ----------------------------------------------------------------------------------------------------------


class ActorCriticTerms(NamedTuple):
  """The parts of :func:`actor_critic_loss` (scalars, per trajectory averaged over the batch) and advantages."""

  policy_loss: Array
  value_loss: Array
  entropy: Array
  advantages: Array


def actor_critic_loss(
  log_probs: Array,
  values: Array,
  rewards: Array,
  mask: Array,
  gamma: float | Array,
  lam: float | Array = 1.0,
  entropies: Array | None = None,
  *,
  value_coef: float = 0.5,
  entropy_coef: float = 0.0,
  bootstrap_value: Array | None = None,
  time_discount: bool = True,
) -> tuple[Array, ActorCriticTerms]:
  r"""Advantage actor-critic loss: ``policy_loss + value_coef * value_loss - entropy_coef * entropy``.

  * policy: :math:`-\frac1B\sum_{b,t} m\, w_t \log\pi(a_t|s_t)\, \mathrm{sg}(A_t)` with GAE(``lam``)
    advantages from the critic ``values`` (:func:`gae`), :math:`w_t = \gamma^t` (``time_discount``) or 1;
  * value: :math:`\frac1{2B}\sum_{b,t} m\, (V(s_t) - \mathrm{sg}(A_t + V(s_t)))^2`, regression on the
    lambda-returns;
  * entropy: :math:`\frac1B\sum_{b,t} m\, H_t` (``entropies``, e.g. ``policy.entropy()``), a bonus.

  With the true value function the policy gradient is unbiased for every ``lam``; see :func:`gae`.

  Args:
    log_probs: ``[B, T]`` log-probabilities of the taken actions (differentiable in the actor).
    values: ``[B, T]`` critic values ``V(s_t)`` (differentiable in the critic).
    rewards: ``[B, T]``.
    mask: ``[B, T]`` validity mask.
    gamma: discount in ``[0, 1]``.
    lam: GAE lambda in ``[0, 1]``.
    entropies: ``[B, T]`` policy entropies, or ``None`` (no entropy term).
    value_coef: weight of the value loss.
    entropy_coef: weight of the entropy bonus.
    bootstrap_value: ``[B]`` value after step ``T - 1`` for trajectories cut off by the horizon.
    time_discount: keep the ``gamma^t`` weight (unbiased for the discounted objective).

  Returns:
    ``(loss, ActorCriticTerms)``.

  Examples:
    >>> import jax.numpy as jnp, sfe_jax.rl as rl
    >>> loss, terms = rl.actor_critic_loss(jnp.zeros((1, 2)), jnp.zeros((1, 2)), jnp.ones((1, 2)),
    ...                                    jnp.ones((1, 2)), 1.0)
    >>> terms.advantages, terms.value_loss
    (Array([[2., 1.]], dtype=float32), Array(2.5, dtype=float32))
  """
  fn = "actor_critic_loss"
  log_probs = check_bt("log_probs", log_probs, fn=fn)
  values = check_bt("values", values, log_probs.shape, fn)
  rewards = check_bt("rewards", rewards, log_probs.shape, fn)
  mask = check_bt("mask", mask, log_probs.shape, fn)
  gamma = check_unit("gamma", gamma, fn)
  lam = check_unit("lam", lam, fn)
  b, t = log_probs.shape
  dtype = jnp.result_type(log_probs.dtype, values.dtype, rewards.dtype, float)
  m = float_mask(mask, dtype, gamma, lam)
  log_probs, values = zero_padding(log_probs, mask), zero_padding(values, mask)
  adv = jax.lax.stop_gradient(gae(rewards, jax.lax.stop_gradient(values), mask, gamma, lam, bootstrap_value)).astype(
    dtype
  )
  weights = time_weights(gamma, t, dtype, time_discount)
  policy_loss = -jnp.sum(m * weights * log_probs.astype(dtype) * adv) / b
  targets = jax.lax.stop_gradient(adv + values.astype(dtype))
  value_loss = 0.5 * jnp.sum(m * (values.astype(dtype) - targets) ** 2) / b
  if entropies is None:
    entropy = jnp.zeros((), dtype)
  else:
    entropies = zero_padding(check_bt("entropies", entropies, log_probs.shape, fn), mask)
    entropy = jnp.sum(m * entropies.astype(dtype)) / b
  loss = policy_loss + value_coef * value_loss - entropy_coef * entropy
  return loss, ActorCriticTerms(policy_loss, value_loss, entropy, adv)


def ppo_loss(
  log_probs: Array,
  old_log_probs: Array,
  advantages: Array,
  mask: Array,
  clip_eps: float = 0.2,
) -> Array:
  r"""PPO's clipped surrogate, negated: :math:`-\mathrm{mean}_{m}\min(\rho A, \mathrm{clip}(\rho, 1 \pm
  \epsilon) A)`, :math:`\rho = \exp(\log\pi - \mathrm{sg}(\log\pi_{old}))`.

  The mean is over valid steps. At ``log_probs == old_log_probs`` the gradient equals the policy gradient
  ``-mean(A grad log pi)`` (without ``gamma^t``); away from it the clipping removes the incentive to move
  ``rho`` beyond ``1 +- clip_eps``: a pessimistic, biased bound that keeps updates near the data's policy.

  Args:
    log_probs: ``[B, T]`` log-probabilities under the current policy (differentiable).
    old_log_probs: ``[B, T]`` under the policy that collected the data.
    advantages: ``[B, T]`` advantages (e.g. :func:`gae`), treated as constants.
    mask: ``[B, T]`` validity mask.
    clip_eps: the clipping radius, ``> 0`` (an array that is not gives NaN).

  Returns:
    A scalar loss.

  Examples:
    >>> import jax.numpy as jnp, sfe_jax.rl as rl
    >>> # ratios 1.5 and 0.5: min(1.5 * 1, 1.2 * 1) = 1.2 and min(0.5 * -1, 0.8 * -1) = -0.8
    >>> loss = rl.ppo_loss(jnp.log(jnp.array([[1.5, 0.5]])), jnp.zeros((1, 2)), jnp.array([[1., -1.]]),
    ...                    jnp.ones((1, 2)), 0.2)
    >>> round(float(loss), 6)
    -0.2

  References:
    Schulman et al., "Proximal policy optimization algorithms", 2017.
  """
  fn = "ppo_loss"
  log_probs = check_bt("log_probs", log_probs, fn=fn)
  old_log_probs = check_bt("old_log_probs", old_log_probs, log_probs.shape, fn)
  advantages = check_bt("advantages", advantages, log_probs.shape, fn)
  mask = check_bt("mask", mask, log_probs.shape, fn)
  eps = check_positive("clip_eps", clip_eps, fn)
  dtype = jnp.result_type(log_probs.dtype, float)
  m = float_mask(mask, dtype, eps)
  log_probs, old_log_probs, advantages = (zero_padding(x, mask) for x in (log_probs, old_log_probs, advantages))
  ratio = jnp.exp((log_probs - jax.lax.stop_gradient(old_log_probs)).astype(dtype))
  adv = jax.lax.stop_gradient(advantages.astype(dtype))
  eps = eps.astype(dtype)
  objective = jnp.minimum(ratio * adv, jnp.clip(ratio, 1.0 - eps, 1.0 + eps) * adv)
  return -masked_mean(objective, m)


def ppo_value_loss(
  values: Array,
  old_values: Array,
  returns: Array,
  mask: Array,
  clip_eps: float | None = 0.2,
) -> Array:
  r"""PPO's clipped value loss :math:`\frac12 \mathrm{mean}_m \max((V - R)^2, (V_{old} + \mathrm{clip}(V -
  V_{old}, \pm\epsilon) - R)^2)`; ``clip_eps=None`` gives the plain ``0.5 * mean (V - R)^2``.

  Args:
    values: ``[B, T]`` current critic values (differentiable).
    old_values: ``[B, T]`` the values when the data was collected.
    returns: ``[B, T]`` regression targets (e.g. ``gae(...) + old_values``), treated as constants.
    mask: ``[B, T]`` validity mask.
    clip_eps: the clipping radius, ``> 0`` (an array that is not gives NaN), or ``None``.

  Returns:
    A scalar loss.

  Examples:
    >>> import jax.numpy as jnp, sfe_jax.rl as rl
    >>> rl.ppo_value_loss(jnp.array([[1.0]]), jnp.array([[0.0]]), jnp.array([[2.0]]), jnp.ones((1, 1)), 0.5)
    Array(1.125, dtype=float32)
  """
  fn = "ppo_value_loss"
  values = check_bt("values", values, fn=fn)
  old_values = check_bt("old_values", old_values, values.shape, fn)
  returns = check_bt("returns", returns, values.shape, fn)
  mask = check_bt("mask", mask, values.shape, fn)
  eps = check_clip("clip_eps", clip_eps, fn)
  dtype = jnp.result_type(values.dtype, float)
  m = float_mask(mask, dtype, eps)
  values, old_values, returns = (zero_padding(x, mask).astype(dtype) for x in (values, old_values, returns))
  targets = jax.lax.stop_gradient(returns)
  loss = (values - targets) ** 2
  if eps is not None:
    eps = eps.astype(dtype)
    old = jax.lax.stop_gradient(old_values)
    clipped = old + jnp.clip(values - old, -eps, eps)
    loss = jnp.maximum(loss, (clipped - targets) ** 2)
  return 0.5 * masked_mean(loss, m)
