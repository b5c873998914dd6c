r"""Score-function (policy) gradients on batched trajectories: REINFORCE, GAE, actor-critic, PPO, off-policy.

Every function works on a batch of ``B`` trajectories padded to ``T`` steps: arrays of shape ``[B, T]``
(``rewards[b, t]`` is the reward after action ``t``, ``log_probs[b, t] = log pi(a_t | s_t)``) and a ``mask`` of
the same shape that is 1 on each trajectory's valid prefix and 0 on the padding after its end. Padded entries of
every other array are ignored, whatever they hold.

The objective is the expected discounted return :math:`J(\theta) = E_{\tau \sim \pi_\theta}[\sum_t \gamma^t
r_t]`. The log-derivative trick gives

.. math:: \nabla J = E\Big[\sum_t \nabla \log \pi_\theta(a_t|s_t)\, \gamma^t (G_t - b_t)\Big],
   \qquad G_t = \sum_{k \ge t} \gamma^{k-t} r_k,

for any baseline ``b_t`` that does not depend on ``a_t`` or later. The losses here are surrogates in the sense of
the rest of the library: ``-jax.grad(loss)`` with respect to the policy parameters is the gradient estimate
(the log-probabilities carry the gradient; returns, advantages and baselines are wrapped in ``stop_gradient``).

References:
  Williams, "Simple statistical gradient-following algorithms for connectionist reinforcement learning", 1992.
  Schulman et al., "High-dimensional continuous control using generalized advantage estimation", 2016.
  Schulman et al., "Proximal policy optimization algorithms", 2017.
  Precup, Sutton and Singh, "Eligibility traces for off-policy policy evaluation", 2000.
  Espeholt et al., "IMPALA: scalable distributed deep-RL with importance weighted actor-learner
  architectures", 2018.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from sfe_jax._src.baselines import Baseline

Array = jax.Array
_sg = jax.lax.stop_gradient


# ----------------------------------------------------------------------------------------------------------
# Checks (trace time).
# ----------------------------------------------------------------------------------------------------------


def _check_bt(name: str, x: Any, shape: Optional[tuple] = None, fn: str = "") -> Array:
  x = jnp.asarray(x)
  where = f" of {fn}" if fn else ""
  if x.ndim != 2:
    raise ValueError(f"`{name}`{where} must have shape [B, T] (trajectories x time steps); got shape {x.shape}.")
  if shape is not None and x.shape != shape:
    raise ValueError(f"`{name}`{where} must have the shape of `rewards`/`log_probs`, {shape}; got {x.shape}.")
  return x


def check_unit(name: str, value: Any, fn: str) -> Array:
  if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
    if not 0.0 <= float(value) <= 1.0:
      raise ValueError(f"`{name}` of {fn} must lie in [0, 1]; got {value}.")
  value = jnp.asarray(value)
  if value.shape != ():
    raise ValueError(f"`{name}` of {fn} must be a scalar; got shape {value.shape}.")
  return value


def _float_mask(mask: Array, dtype) -> Array:
  return jnp.asarray(mask).astype(dtype)


def _reverse_accumulate(x: Array, decay: Array) -> Array:
  """``y_t = x_t + decay_t y_{t+1}`` (``y_T = 0``) over the time axis of ``[B, T]`` arrays, by ``lax.scan``."""
  def step(carry, inputs):
    carry = inputs[0] + inputs[1] * carry
    return carry, carry

  _, out = jax.lax.scan(step, jnp.zeros(x.shape[0], x.dtype), (x.T, decay.T), reverse=True)
  return out.T


def _next_values(v: Array, m: Array, bootstrap_value: Optional[Array], fn: str) -> Array:
  """``V(s_{t+1})`` per step: the next step's value, 0 after a trajectory's last valid step (terminal), and
  ``bootstrap_value`` after step ``T - 1`` of a trajectory valid up to there (cut off by the horizon)."""
  b = v.shape[0]
  if bootstrap_value is None:
    bootstrap_value = jnp.zeros((b,), v.dtype)
  bootstrap_value = jnp.asarray(bootstrap_value, v.dtype)
  if bootstrap_value.shape != (b,):
    raise ValueError(f"`bootstrap_value` of {fn} must have shape [B] = ({b},); got {bootstrap_value.shape}.")
  return jnp.concatenate([v[:, 1:], bootstrap_value[:, None] * m[:, -1:]], axis=1)


def _continues(m: Array) -> Array:
  """``m_{t+1}`` per step (0 at ``T - 1``): whether the trajectory goes on after step ``t``."""
  return jnp.concatenate([m[:, 1:], jnp.zeros((m.shape[0], 1), m.dtype)], axis=1)


def time_weights(gamma: Array, num_steps: int, dtype, discount: bool = True) -> Array:
  """``[1, T]`` per-step weights ``gamma^t`` (or ones without ``discount``), explicitly ranked against ``[B, T]``."""
  if not discount:
    return jnp.ones((1, num_steps), dtype)
  return gamma.astype(dtype) ** jnp.arange(num_steps, dtype=dtype)[None, :]


# ----------------------------------------------------------------------------------------------------------
# Returns and advantages.
# ----------------------------------------------------------------------------------------------------------


def discounted_returns(rewards: Array, mask: Array, gamma: Union[float, Array]) -> Array:
  r"""The reward-to-go :math:`G_t = \sum_{k \ge t} \gamma^{k-t} m_k r_k` of every step (``lax.scan`` backwards).

  Args:
    rewards: ``[B, T]`` rewards.
    mask: ``[B, T]``, 1 on each trajectory's valid prefix, 0 after its end.
    gamma: the discount, a scalar in ``[0, 1]``.

  Returns:
    ``[B, T]`` returns, 0 on padded steps. ``G[:, 0]`` is each trajectory's discounted return.

  Examples:
    >>> import jax.numpy as jnp, sfe_jax.rl as rl
    >>> rl.discounted_returns(jnp.array([[1., 1., 1.]]), jnp.array([[1., 1., 0.]]), 0.5)
    Array([[1.5, 1. , 0. ]], dtype=float32)
  """
  rewards = _check_bt("rewards", rewards, fn="discounted_returns")
  mask = _check_bt("mask", mask, rewards.shape, "discounted_returns")
  gamma = check_unit("gamma", gamma, "discounted_returns")
  dtype = jnp.result_type(rewards.dtype, float)
  m = _float_mask(mask, dtype)
  return _reverse_accumulate(rewards.astype(dtype) * m, gamma.astype(dtype) * m)


def gae(
    rewards: Array,
    values: Array,
    mask: Array,
    gamma: Union[float, Array],
    lam: Union[float, Array],
    bootstrap_value: Optional[Array] = None,
) -> Array:
  r"""Generalized advantage estimation: :math:`A_t = \sum_{l \ge 0} (\gamma\lambda)^l \delta_{t+l}`.

  With :math:`\delta_t = r_t + \gamma V_{t+1} - V_t`, where :math:`V_{t+1} = 0` after a trajectory's last
  valid step (a terminal state) unless the trajectory is valid up to ``T - 1``, where ``bootstrap_value`` is
  used (a trajectory cut off by the horizon). Computed by ``lax.scan`` backwards:
  :math:`A_t = \delta_t + \gamma \lambda m_{t+1} A_{t+1}`.

  Bias/variance: with the true value function every ``lambda`` gives an unbiased policy gradient (the
  ``delta_{t+l}``, ``l >= 1``, have zero mean given ``a_t``); with an approximate one ``lambda = 1`` is
  unbiased (``A_t = G_t - V_t``, a baseline) and high-variance, ``lambda = 0`` is the low-variance, biased
  one-step TD error.

  Args:
    rewards: ``[B, T]`` rewards.
    values: ``[B, T]`` state values ``V(s_t)`` (not differentiated through here; wrap as you need).
    mask: ``[B, T]`` validity mask (1 on the valid prefix).
    gamma: the discount in ``[0, 1]``.
    lam: GAE's ``lambda`` in ``[0, 1]``.
    bootstrap_value: ``[B]`` values of the state after step ``T - 1``; ``None`` means 0 (terminal).

  Returns:
    ``[B, T]`` advantages, 0 on padded steps.

  Examples:
    >>> import jax.numpy as jnp, sfe_jax.rl as rl
    >>> rl.gae(jnp.array([[1., 1.]]), jnp.array([[0.5, 0.5]]), jnp.ones((1, 2)), 1.0, 1.0)
    Array([[1.5, 0.5]], dtype=float32)

  References:
    Schulman et al., "High-dimensional continuous control using generalized advantage estimation", 2016.
  """
  rewards = _check_bt("rewards", rewards, fn="gae")
  values = _check_bt("values", values, rewards.shape, "gae")
  mask = _check_bt("mask", mask, rewards.shape, "gae")
  gamma = check_unit("gamma", gamma, "gae")
  lam = check_unit("lam", lam, "gae")
  dtype = jnp.result_type(rewards.dtype, values.dtype, float)
  m = _float_mask(mask, dtype)
  v = values.astype(dtype) * m
  g = gamma.astype(dtype)
  deltas = m * (rewards.astype(dtype) * m + g * _next_values(v, m, bootstrap_value, "gae") - v)
  return _reverse_accumulate(deltas, g * lam.astype(dtype) * _continues(m)) * m


# ----------------------------------------------------------------------------------------------------------
# REINFORCE.
# ----------------------------------------------------------------------------------------------------------


def check_baseline(baseline: Any, fn: str, arrays: bool = True) -> Any:
  """``None``, an :mod:`sfe_jax.baselines` baseline computable over trajectories, or (if ``arrays``) values."""
  if baseline is None or (isinstance(baseline, Baseline) and baseline.batch_compute is not None):
    return baseline
  if isinstance(baseline, Baseline):
    raise TypeError(
        f"`baseline` of {fn}: the {baseline.name} cannot be computed per step over a batch of trajectories "
        "(it is stateful or per parameter coordinate). Use sfe.baselines.leave_one_out() or "
        "sfe.baselines.constant(value)" + (", or pass learned values V(s_t) as a [B, T] array." if arrays else "."))
  if isinstance(baseline, str):
    raise TypeError(
        f"`baseline` of {fn} takes the baselines of sfe.baselines, not strings: got {baseline!r}. Use "
        "sfe.baselines.leave_one_out() (the batch mean including the trajectory itself is biased: its gradient "
        "is exactly (B - 1) / B times the leave-one-out one).")
  if not arrays:
    raise TypeError(
        f"`baseline` of {fn} must be None or a baseline of sfe.baselines (e.g. sfe.baselines.leave_one_out()); "
        f"got {type(baseline).__name__}.")
  return baseline


def reinforce_loss(
    log_probs: Array,
    rewards: Array,
    mask: Array,
    gamma: Union[float, Array],
    baseline: Union[None, str, Array] = None,
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
  log_probs = _check_bt("log_probs", log_probs, fn=fn)
  rewards = _check_bt("rewards", rewards, log_probs.shape, fn)
  mask = _check_bt("mask", mask, log_probs.shape, fn)
  gamma = check_unit("gamma", gamma, fn)
  b, t = log_probs.shape
  dtype = jnp.result_type(log_probs.dtype, rewards.dtype, float)
  m = _float_mask(mask, dtype)
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
    adv = returns - baseline.batch_compute(returns, m)
  else:
    values = _check_bt("baseline", baseline, log_probs.shape, fn)
    adv = returns - values.astype(dtype)
  terms = m * weights * log_probs.astype(dtype) * _sg(adv * m)
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
    gamma: Union[float, Array],
    lam: Union[float, Array] = 1.0,
    entropies: Optional[Array] = None,
    *,
    value_coef: float = 0.5,
    entropy_coef: float = 0.0,
    bootstrap_value: Optional[Array] = None,
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
  log_probs = _check_bt("log_probs", log_probs, fn=fn)
  values = _check_bt("values", values, log_probs.shape, fn)
  rewards = _check_bt("rewards", rewards, log_probs.shape, fn)
  mask = _check_bt("mask", mask, log_probs.shape, fn)
  gamma = check_unit("gamma", gamma, fn)
  b, t = log_probs.shape
  dtype = jnp.result_type(log_probs.dtype, values.dtype, rewards.dtype, float)
  m = _float_mask(mask, dtype)
  adv = _sg(gae(rewards, _sg(values), mask, gamma, lam, bootstrap_value)).astype(dtype)
  weights = time_weights(gamma, t, dtype, time_discount)
  policy_loss = -jnp.sum(m * weights * log_probs.astype(dtype) * adv) / b
  targets = _sg(adv + values.astype(dtype))
  value_loss = 0.5 * jnp.sum(m * (values.astype(dtype) - targets) ** 2) / b
  if entropies is None:
    entropy = jnp.zeros((), dtype)
  else:
    entropies = _check_bt("entropies", entropies, log_probs.shape, fn)
    entropy = jnp.sum(m * entropies.astype(dtype)) / b
  loss = policy_loss + value_coef * value_loss - entropy_coef * entropy
  return loss, ActorCriticTerms(policy_loss, value_loss, entropy, adv)


def _masked_mean(x: Array, m: Array) -> Array:
  return jnp.sum(x * m) / jnp.maximum(jnp.sum(m), 1.0)


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
    clip_eps: the clipping radius, ``> 0``.

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
  log_probs = _check_bt("log_probs", log_probs, fn=fn)
  old_log_probs = _check_bt("old_log_probs", old_log_probs, log_probs.shape, fn)
  advantages = _check_bt("advantages", advantages, log_probs.shape, fn)
  mask = _check_bt("mask", mask, log_probs.shape, fn)
  if isinstance(clip_eps, (int, float)) and not clip_eps > 0:
    raise ValueError(f"`clip_eps` of {fn} must be positive; got {clip_eps}.")
  dtype = jnp.result_type(log_probs.dtype, float)
  m = _float_mask(mask, dtype)
  ratio = jnp.exp((log_probs - _sg(old_log_probs)) * m)
  adv = _sg(advantages.astype(dtype))
  objective = jnp.minimum(ratio * adv, jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * adv)
  return -_masked_mean(objective, m)


def ppo_value_loss(
    values: Array,
    old_values: Array,
    returns: Array,
    mask: Array,
    clip_eps: Optional[float] = 0.2,
) -> Array:
  r"""PPO's clipped value loss :math:`\frac12 \mathrm{mean}_m \max((V - R)^2, (V_{old} + \mathrm{clip}(V -
  V_{old}, \pm\epsilon) - R)^2)`; ``clip_eps=None`` gives the plain ``0.5 * mean (V - R)^2``.

  Args:
    values: ``[B, T]`` current critic values (differentiable).
    old_values: ``[B, T]`` the values when the data was collected.
    returns: ``[B, T]`` regression targets (e.g. ``gae(...) + old_values``), treated as constants.
    mask: ``[B, T]`` validity mask.
    clip_eps: the clipping radius, or ``None``.

  Returns:
    A scalar loss.

  Examples:
    >>> import jax.numpy as jnp, sfe_jax.rl as rl
    >>> rl.ppo_value_loss(jnp.array([[1.0]]), jnp.array([[0.0]]), jnp.array([[2.0]]), jnp.ones((1, 1)), 0.5)
    Array(1.125, dtype=float32)
  """
  fn = "ppo_value_loss"
  values = _check_bt("values", values, fn=fn)
  old_values = _check_bt("old_values", old_values, values.shape, fn)
  returns = _check_bt("returns", returns, values.shape, fn)
  mask = _check_bt("mask", mask, values.shape, fn)
  dtype = jnp.result_type(values.dtype, float)
  m = _float_mask(mask, dtype)
  targets = _sg(returns.astype(dtype))
  loss = (values - targets) ** 2
  if clip_eps is not None:
    if isinstance(clip_eps, (int, float)) and not clip_eps > 0:
      raise ValueError(f"`clip_eps` of {fn} must be positive or None; got {clip_eps}.")
    old = _sg(old_values.astype(dtype))
    clipped = old + jnp.clip(values - old, -clip_eps, clip_eps)
    loss = jnp.maximum(loss, (clipped - targets) ** 2)
  return 0.5 * _masked_mean(loss, m)


# ----------------------------------------------------------------------------------------------------------
# Off-policy corrections.
# ----------------------------------------------------------------------------------------------------------


def importance_weights(target_log_probs: Array, behaviour_log_probs: Array, mask: Array) -> Array:
  r"""Per-step importance ratios :math:`\rho_t = \pi(a_t|s_t) / \mu(a_t|s_t)`, 1 on padded steps.

  Differentiable in ``target_log_probs`` (``grad rho = rho grad log pi``); ``behaviour_log_probs`` is wrapped
  in ``stop_gradient``.

  Args:
    target_log_probs: ``[B, T]`` ``log pi(a_t|s_t)`` of the target policy.
    behaviour_log_probs: ``[B, T]`` ``log mu(a_t|s_t)`` of the policy that logged the data.
    mask: ``[B, T]`` validity mask.

  Returns:
    ``[B, T]`` ratios.

  Examples:
    >>> import jax.numpy as jnp, sfe_jax.rl as rl
    >>> rl.importance_weights(jnp.log(jnp.array([[0.5, 0.2]])), jnp.log(jnp.array([[0.25, 0.1]])),
    ...                       jnp.array([[1, 0]]))
    Array([[2., 1.]], dtype=float32)
  """
  fn = "importance_weights"
  target_log_probs = _check_bt("target_log_probs", target_log_probs, fn=fn)
  behaviour_log_probs = _check_bt("behaviour_log_probs", behaviour_log_probs, target_log_probs.shape, fn)
  mask = _check_bt("mask", mask, target_log_probs.shape, fn)
  dtype = jnp.result_type(target_log_probs.dtype, float)
  m = _float_mask(mask, dtype)
  return jnp.exp(m * (target_log_probs - _sg(behaviour_log_probs)).astype(dtype))


OFF_POLICY_ESTIMATORS = ("ordinary", "weighted", "per_decision", "truncated")


def off_policy_value(
    target_log_probs: Array,
    behaviour_log_probs: Array,
    rewards: Array,
    mask: Array,
    gamma: Union[float, Array],
    estimator: str = "per_decision",
    clip_rho: Optional[float] = 1.0,
) -> Array:
  r"""An importance-sampling estimate of the target policy's value from trajectories logged under ``mu``.

  The result is a differentiable scalar: its value estimates :math:`J(\pi) = E_\pi[\sum_t \gamma^t r_t]` and
  its ``jax.grad`` with respect to the target policy's parameters (through ``target_log_probs``) estimates
  :math:`\nabla J(\pi)`. With :math:`\rho_t` from :func:`importance_weights`, :math:`W = \prod_t \rho_t`, and
  :math:`R = \sum_t \gamma^t r_t`:

  * ``"ordinary"``: :math:`\frac1B \sum_b W_b R_b`. Unbiased (value and gradient); variance grows
    exponentially with the horizon through the product of ratios.
  * ``"weighted"`` (self-normalised): :math:`\sum_b W_b R_b / \sum_b W_b`. Biased, O(1/B) (with ``B = 1``
    it returns ``R``, whose mean is the *behaviour* policy's value) but consistent, bounded by the rewards,
    and usually of much lower variance.
  * ``"per_decision"``: :math:`\frac1B \sum_b \sum_t \gamma^t r_{bt} \prod_{k \le t} \rho_{bk}`: reward
    ``r_t`` is weighted only by the ratios up to ``t`` (later actions cannot affect it). Unbiased, lower
    variance than ordinary.
  * ``"truncated"``: per-decision with every ratio clipped, :math:`\bar\rho_t = \min(\bar\rho, \rho_t)`
    (``clip_rho``; V-trace's truncation). Variance bounded (products of at most ``clip_rho ** T``); biased:
    its mean is the value of the unnormalised policy ``min(clip_rho * mu, pi)``, which lies between ``mu``'s
    and ``pi``'s with ``clip_rho = 1``, and it equals per-decision when ``clip_rho`` exceeds every ratio.
    Clipped ratios pass no gradient.

  Args:
    target_log_probs: ``[B, T]`` ``log pi(a_t|s_t)``, differentiable in the target policy.
    behaviour_log_probs: ``[B, T]`` ``log mu(a_t|s_t)`` (constants).
    rewards: ``[B, T]``.
    mask: ``[B, T]`` validity mask.
    gamma: discount in ``[0, 1]``.
    estimator: one of ``"ordinary"``, ``"weighted"``, ``"per_decision"``, ``"truncated"``.
    clip_rho: the truncation level ``rho_bar > 0`` of ``"truncated"`` (ignored by the others).

  Returns:
    A scalar.

  Examples:
    >>> import jax.numpy as jnp, sfe_jax.rl as rl
    >>> lp_pi, lp_mu = jnp.log(jnp.array([[0.5, 0.5]])), jnp.log(jnp.array([[0.25, 0.5]]))
    >>> r, m = jnp.array([[1., 1.]]), jnp.ones((1, 2))
    >>> rl.off_policy_value(lp_pi, lp_mu, r, m, 1.0, "ordinary"), rl.off_policy_value(lp_pi, lp_mu, r, m, 1.0)
    (Array(4., dtype=float32), Array(4., dtype=float32))
    >>> rl.off_policy_value(lp_pi, lp_mu, r, m, 1.0, "truncated", clip_rho=1.0)
    Array(2., dtype=float32)

  References:
    Precup, Sutton and Singh, "Eligibility traces for off-policy policy evaluation", 2000.
    Espeholt et al., "IMPALA", 2018 (V-trace truncation).
  """
  fn = "off_policy_value"
  if estimator not in OFF_POLICY_ESTIMATORS:
    raise ValueError(f"`estimator` of {fn} must be one of {OFF_POLICY_ESTIMATORS}; got {estimator!r}.")
  rho = importance_weights(target_log_probs, behaviour_log_probs, mask)
  rewards = _check_bt("rewards", rewards, rho.shape, fn)
  gamma = check_unit("gamma", gamma, fn)
  b, t = rho.shape
  dtype = rho.dtype
  m = _float_mask(mask, dtype)
  disc = time_weights(gamma, t, dtype) * m * rewards.astype(dtype)
  if estimator in ("ordinary", "weighted"):
    w = jnp.prod(rho, axis=1)
    ret = jnp.sum(disc, axis=1)
    if estimator == "ordinary":
      return jnp.mean(w * ret)
    return jnp.sum(w * ret) / jnp.sum(w)
  if estimator == "truncated":
    if clip_rho is None or (isinstance(clip_rho, (int, float)) and not clip_rho > 0):
      raise ValueError(f"`clip_rho` of {fn} must be positive for estimator='truncated'; got {clip_rho}.")
    rho = jnp.minimum(rho, clip_rho)
  return jnp.sum(disc * jnp.cumprod(rho, axis=1)) / b


class VTrace(NamedTuple):
  """The outputs of :func:`vtrace` (``[B, T]`` each, 0 on padded steps, constants: no gradient flows)."""

  vs: Array
  pg_advantages: Array


def _check_clip(name: str, value: Any, fn: str) -> Optional[Array]:
  if value is None:
    return None
  if isinstance(value, (int, float, np.integer, np.floating)) and not float(value) > 0:
    raise ValueError(f"`{name}` of {fn} must be positive or None (no clipping); got {value}.")
  value = jnp.asarray(value)
  if value.shape != ():
    raise ValueError(f"`{name}` of {fn} must be a scalar; got shape {value.shape}.")
  return value


def vtrace(
    target_log_probs: Array,
    behaviour_log_probs: Array,
    rewards: Array,
    values: Array,
    mask: Array,
    gamma: Union[float, Array],
    *,
    bootstrap_value: Optional[Array] = None,
    clip_rho: Optional[float] = 1.0,
    clip_c: Optional[float] = 1.0,
    clip_pg_rho: Optional[float] = 1.0,
    lam: Union[float, Array] = 1.0,
) -> VTrace:
  r"""V-trace value targets and policy-gradient advantages for trajectories logged under a behaviour policy.

  With :math:`\rho_t = \pi(a_t|s_t)/\mu(a_t|s_t)`, truncated :math:`\bar\rho_t = \min(\bar\rho, \rho_t)`
  and trace coefficients :math:`c_t = \lambda \min(\bar c, \rho_t)`:

  .. math:: v_s = V(s_s) + \sum_{t \ge s} \gamma^{t-s} \Big(\prod_{i=s}^{t-1} c_i\Big) \bar\rho_t
     \big(r_t + \gamma V(s_{t+1}) - V(s_t)\big),

  computed backwards as :math:`v_s - V_s = \delta_s + \gamma c_s (v_{s+1} - V_{s+1})`, with
  :math:`V(s_{t+1}) = 0` after a terminal step and ``bootstrap_value`` after step ``T - 1`` of a trajectory
  cut off by the horizon (as in :func:`gae`). The policy-gradient advantages are
  :math:`\min(\bar\rho_{pg}, \rho_s)\,(r_s + \gamma v_{s+1} - V(s_s))`. Use them as in IMPALA: the critic
  regresses on ``vs``, the actor minimises :math:`-\frac1B\sum m \log\pi(a_s|s_s)\,` ``pg_advantages``
  (both are returned under ``stop_gradient``).

  Bias and variance:

  * no clipping (``clip_rho = clip_c = None``): ``vs`` is an unbiased estimate of the target policy's value
    :math:`V^\pi(s_s)` for *any* ``values`` (a per-decision importance-sampling estimate with ``values`` as a
    control variate); the variance grows with the products of ratios, as for :func:`off_policy_value`.
  * clipping: the variance is bounded, and the fixed point (the ``values`` for which ``vs - values`` has mean
    0) is the value of the policy :math:`\pi_{\bar\rho} \propto \min(\bar\rho\mu, \pi)`, between ``mu`` and
    ``pi``, not :math:`V^\pi` (equal when :math:`\bar\rho` exceeds every ratio). ``clip_c`` only changes
    how fast the traces are cut (the contraction), not the fixed point.
  * on-policy (:math:`\pi = \mu`, ratios 1, clip levels >= 1): ``vs - values`` is exactly :func:`gae` with
    the same ``lam``.
  * the actor's gradient weighs states as the behaviour policy visits them (no correction of the state
    distribution): it is the usual off-policy actor-critic approximation, exact only on-policy.

  Args:
    target_log_probs: ``[B, T]`` ``log pi(a_t|s_t)`` of the policy being learned.
    behaviour_log_probs: ``[B, T]`` ``log mu(a_t|s_t)`` of the policy that logged the data.
    rewards: ``[B, T]``.
    values: ``[B, T]`` critic values ``V(s_t)``.
    mask: ``[B, T]`` validity mask.
    gamma: discount in ``[0, 1]``.
    bootstrap_value: ``[B]`` value of the state after step ``T - 1`` (``None``: 0, terminal).
    clip_rho: :math:`\bar\rho`, the truncation of the ratios in the temporal differences (``None``: none).
    clip_c: :math:`\bar c`, the truncation of the trace coefficients (``None``: none).
    clip_pg_rho: the truncation of the ratio of the policy-gradient advantages (``None``: none).
    lam: :math:`\lambda` in ``[0, 1]``, an extra factor on the traces.

  Returns:
    A :class:`VTrace` ``(vs, pg_advantages)``.

  Examples:
    >>> import jax.numpy as jnp, sfe_jax.rl as rl
    >>> lp = jnp.log(jnp.array([[0.5, 0.5]]))
    >>> out = rl.vtrace(lp, lp, jnp.array([[1., 1.]]), jnp.zeros((1, 2)), jnp.ones((1, 2)), 0.5)
    >>> out.vs, out.pg_advantages   # on-policy, zero values: the discounted returns
    (Array([[1.5, 1. ]], dtype=float32), Array([[1.5, 1. ]], dtype=float32))

  References:
    Espeholt et al., "IMPALA: scalable distributed deep-RL with importance weighted actor-learner
    architectures", 2018.
  """
  fn = "vtrace"
  rho = _sg(importance_weights(target_log_probs, behaviour_log_probs, mask))
  rewards = _check_bt("rewards", rewards, rho.shape, fn)
  values = _check_bt("values", values, rho.shape, fn)
  gamma = check_unit("gamma", gamma, fn)
  lam = check_unit("lam", lam, fn)
  clips = [_check_clip(name, value, fn) for name, value in
           (("clip_rho", clip_rho), ("clip_c", clip_c), ("clip_pg_rho", clip_pg_rho))]
  rho_bar, c_bar, pg_bar = (rho if c is None else jnp.minimum(rho, c) for c in clips)
  dtype = jnp.result_type(rho.dtype, rewards.dtype, values.dtype)
  m = _float_mask(mask, dtype)
  v = _sg(values.astype(dtype)) * m
  g = gamma.astype(dtype)
  bootstrap = None if bootstrap_value is None else _sg(jnp.asarray(bootstrap_value, dtype))
  next_v = _next_values(v, m, bootstrap, fn)
  r = rewards.astype(dtype) * m
  deltas = m * rho_bar * (r + g * next_v - v)
  vs = v + _reverse_accumulate(deltas, g * lam.astype(dtype) * c_bar * _continues(m)) * m
  # v_{s+1}: the next step's target, the bootstrap value at a cut-off, 0 after a terminal step.
  next_vs = _next_values(vs, m, bootstrap, fn)
  pg_advantages = m * pg_bar * (r + g * next_vs - v)
  return VTrace(_sg(vs), _sg(pg_advantages))
