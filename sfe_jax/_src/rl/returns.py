r"""Returns and advantages of batched trajectories, and the conventions every :mod:`sfe_jax.rl` function shares.

Every function works on a batch of ``B`` trajectories padded to ``T`` steps: arrays of shape ``[B, T]``
(``rewards[b, t]`` is the reward after action ``t``, ``log_probs[b, t] = log pi(a_t | s_t)``) and a ``mask`` of
the same shape that is 1 on each trajectory's valid prefix and 0 on the padding after its end. Padded entries of
every other array are ignored, whatever they hold.

The objective is the expected discounted return :math:`J(\theta) = E_{\tau \sim \pi_\theta}[\sum_t \gamma^t
r_t]`. The log-derivative trick gives

.. math:: \nabla J = E\Big[\sum_t \nabla \log \pi_\theta(a_t|s_t)\, \gamma^t (G_t - b_t)\Big],
   \qquad G_t = \sum_{k \ge t} \gamma^{k-t} r_k,

for any baseline ``b_t`` that does not depend on ``a_t`` or later. The losses (:mod:`.losses`,
:mod:`.off_policy`) are surrogates in the sense of
the rest of the library: ``-jax.grad(loss)`` with respect to the policy parameters is the gradient estimate
(the log-probabilities carry the gradient; returns, advantages and baselines are wrapped in ``stop_gradient``).

References:
  Williams, "Simple statistical gradient-following algorithms for connectionist reinforcement learning", 1992.
  Schulman et al., "High-dimensional continuous control using generalized advantage estimation", 2016.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


# ----------------------------------------------------------------------------------------------------------
# Checks (trace time).
# ----------------------------------------------------------------------------------------------------------


def check_bt(name: str, x: Any, shape: tuple | None = None, fn: str = "") -> Array:
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


def float_mask(mask: Array, dtype) -> Array:
  return jnp.asarray(mask).astype(dtype)


def reverse_accumulate(x: Array, decay: Array) -> Array:
  """``y_t = x_t + decay_t y_{t+1}`` (``y_T = 0``) over the time axis of ``[B, T]`` arrays, by ``lax.scan``."""

  def step(carry, inputs):
    carry = inputs[0] + inputs[1] * carry
    return carry, carry

  _, out = jax.lax.scan(step, jnp.zeros(x.shape[0], x.dtype), (x.T, decay.T), reverse=True)
  return out.T


def next_values(v: Array, m: Array, bootstrap_value: Array | None, fn: str) -> Array:
  """``V(s_{t+1})`` per step: the next step's value, 0 after a trajectory's last valid step (terminal), and
  ``bootstrap_value`` after step ``T - 1`` of a trajectory valid up to there (cut off by the horizon)."""
  b = v.shape[0]
  if bootstrap_value is None:
    bootstrap_value = jnp.zeros((b,), v.dtype)
  bootstrap_value = jnp.asarray(bootstrap_value, v.dtype)
  if bootstrap_value.shape != (b,):
    raise ValueError(f"`bootstrap_value` of {fn} must have shape [B] = ({b},); got {bootstrap_value.shape}.")
  return jnp.concatenate([v[:, 1:], bootstrap_value[:, None] * m[:, -1:]], axis=1)


def continues(m: Array) -> Array:
  """``m_{t+1}`` per step (0 at ``T - 1``): whether the trajectory goes on after step ``t``."""
  return jnp.concatenate([m[:, 1:], jnp.zeros((m.shape[0], 1), m.dtype)], axis=1)


def time_weights(gamma: Array, num_steps: int, dtype, discount: bool = True) -> Array:
  """``[1, T]`` per-step weights ``gamma^t`` (or ones without ``discount``), explicitly ranked against ``[B, T]``."""
  if not discount:
    return jnp.ones((1, num_steps), dtype)
  return gamma.astype(dtype) ** jnp.arange(num_steps, dtype=dtype)[None, :]


def masked_mean(x: Array, m: Array) -> Array:
  return jnp.sum(x * m) / jnp.maximum(jnp.sum(m), 1.0)


# ----------------------------------------------------------------------------------------------------------
# Returns and advantages.
# ----------------------------------------------------------------------------------------------------------


def discounted_returns(rewards: Array, mask: Array, gamma: float | Array) -> Array:
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
  rewards = check_bt("rewards", rewards, fn="discounted_returns")
  mask = check_bt("mask", mask, rewards.shape, "discounted_returns")
  gamma = check_unit("gamma", gamma, "discounted_returns")
  dtype = jnp.result_type(rewards.dtype, float)
  m = float_mask(mask, dtype)
  return reverse_accumulate(rewards.astype(dtype) * m, gamma.astype(dtype) * m)


def gae(
  rewards: Array,
  values: Array,
  mask: Array,
  gamma: float | Array,
  lam: float | Array,
  bootstrap_value: Array | None = None,
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
  rewards = check_bt("rewards", rewards, fn="gae")
  values = check_bt("values", values, rewards.shape, "gae")
  mask = check_bt("mask", mask, rewards.shape, "gae")
  gamma = check_unit("gamma", gamma, "gae")
  lam = check_unit("lam", lam, "gae")
  dtype = jnp.result_type(rewards.dtype, values.dtype, float)
  m = float_mask(mask, dtype)
  v = values.astype(dtype) * m
  g = gamma.astype(dtype)
  deltas = m * (rewards.astype(dtype) * m + g * next_values(v, m, bootstrap_value, "gae") - v)
  return reverse_accumulate(deltas, g * lam.astype(dtype) * continues(m)) * m
