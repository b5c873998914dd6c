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

Non-finite values: nothing is silently wrong.

* Padding is ignored whatever it holds: every padded entry of every ``[B, T]`` input, and the
  ``bootstrap_value`` of a trajectory that ends before step ``T - 1``, is replaced by 0 with a select (not a
  product: ``nan * 0`` is NaN) before any arithmetic. NaN or infinite padding changes neither the values nor
  the gradients, and the gradient at padded entries is exactly 0.
* On valid steps, non-finite inputs are data and follow IEEE arithmetic. A log-probability of ``-inf`` (an
  action impossible under that policy) makes REINFORCE and actor-critic losses infinite (NaN where its
  advantage is 0); as a *target* log-probability it gives an importance ratio of 0, and the off-policy
  estimates and their gradients stay finite and exact (the trajectory weighs 0 from that step on); as a
  *behaviour* one an infinite ratio: infinite or NaN estimates, unless a clip level bounds it (``"truncated"``,
  V-trace). NaN inputs give NaN.
* Products of importance ratios are computed in log space (sums of log-ratios, shifted sums of exponentials,
  a softmax for the self-normalised estimate): long horizons neither overflow nor underflow float32 when the
  result itself is a finite float.
* Hyperparameters (``gamma``, ``lam``, clip levels) out of their range raise ``ValueError`` when given as
  Python numbers. A JAX array (traced or not) cannot be checked at trace time: out of its range, or NaN, it
  makes every output NaN, and the gradient at every valid step, never a plausible number.
* Empty batches (``B = 0`` or ``T = 0``) raise ``ValueError`` at trace time.

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
  if 0 in x.shape:
    raise ValueError(
      f"`{name}`{where} must hold at least one trajectory and one step (B, T >= 1); got shape {x.shape}."
    )
  return x


def _scalar(name: str, value: Any, fn: str) -> Array:
  value = jnp.asarray(value)
  if value.shape != ():
    raise ValueError(f"`{name}` of {fn} must be a scalar; got shape {value.shape}.")
  if not jnp.issubdtype(value.dtype, jnp.inexact):
    value = value.astype(jax.dtypes.canonicalize_dtype(jnp.float64))
  return value


def _is_number(value: Any) -> bool:
  return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def check_unit(name: str, value: Any, fn: str) -> Array:
  """A scalar in ``[0, 1]``: a Python number outside raises; an array outside (or NaN) becomes NaN."""
  if _is_number(value) and not 0.0 <= float(value) <= 1.0:
    raise ValueError(f"`{name}` of {fn} must lie in [0, 1]; got {value}.")
  value = _scalar(name, value, fn)
  # An array cannot be checked at trace time: out of range it is NaN, and so is every output (float_mask).
  return jnp.where((value >= 0) & (value <= 1), value, jnp.nan)


def check_positive(name: str, value: Any, fn: str, or_none: str = "") -> Array:
  """A positive scalar (``inf`` allowed): as :func:`check_unit`, a Python number raises, an array becomes NaN."""
  if value is None or (_is_number(value) and not float(value) > 0):
    raise ValueError(f"`{name}` of {fn} must be positive{or_none}; got {value}.")
  value = _scalar(name, value, fn)
  return jnp.where(value > 0, value, jnp.nan)


def check_clip(name: str, value: Any, fn: str) -> Array | None:
  """A clip level: ``None`` (no clipping) or :func:`check_positive`."""
  return None if value is None else check_positive(name, value, fn, " or None (no clipping)")


def float_mask(mask: Array, dtype, *hyperparameters: Array | None) -> Array:
  """The mask as ``dtype``; all NaN if a checked hyperparameter is NaN (out of range), so that every output,
  and the gradient at every valid step, is NaN."""
  m = jnp.asarray(mask).astype(dtype)
  for h in hyperparameters:
    if h is not None:
      m = jnp.where(jnp.isnan(h), jnp.nan, m)
  return m


def zero_padding(x: Array, mask: Array) -> Array:
  """``x`` with every padded entry replaced by 0: a select, so the padding (even NaN or inf) never reaches the
  arithmetic, and the cotangent at padded entries is exactly 0."""
  return jnp.where(jnp.asarray(mask).astype(bool), x, jnp.zeros((), x.dtype))


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
  # A select: the value of a trajectory that ends before T - 1 is ignored, whatever it holds.
  last = jnp.where(m[:, -1:] != 0, bootstrap_value[:, None], jnp.zeros((), v.dtype))
  return jnp.concatenate([v[:, 1:], last], axis=1)


def continues(m: Array) -> Array:
  """``m_{t+1}`` per step (0 at ``T - 1``): whether the trajectory goes on after step ``t``."""
  return jnp.concatenate([m[:, 1:], jnp.zeros((m.shape[0], 1), m.dtype)], axis=1)


def time_weights(gamma: Array, num_steps: int, dtype, discount: bool = True) -> Array:
  """``[1, T]`` per-step weights ``gamma^t`` (or ones without ``discount``), explicitly ranked against ``[B, T]``."""
  if not discount:
    return jnp.ones((1, num_steps), dtype)
  g = gamma.astype(dtype)
  return g ** jnp.arange(num_steps, dtype=dtype)[None, :] + 0 * g  # + 0 * g: a NaN gamma reaches t = 0 too


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
    ``[B, T]`` returns, 0 on padded steps (all NaN for an array ``gamma`` outside ``[0, 1]``). ``G[:, 0]`` is
    each trajectory's discounted return.

  Examples:
    >>> import jax.numpy as jnp, sfe_jax.rl as rl
    >>> rl.discounted_returns(jnp.array([[1., 1., 1.]]), jnp.array([[1., 1., 0.]]), 0.5)
    Array([[1.5, 1. , 0. ]], dtype=float32)
  """
  rewards = check_bt("rewards", rewards, fn="discounted_returns")
  mask = check_bt("mask", mask, rewards.shape, "discounted_returns")
  gamma = check_unit("gamma", gamma, "discounted_returns")
  dtype = jnp.result_type(rewards.dtype, float)
  m = float_mask(mask, dtype, gamma)
  return reverse_accumulate(zero_padding(rewards, mask).astype(dtype) * m, gamma.astype(dtype) * m)


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
    bootstrap_value: ``[B]`` values of the state after step ``T - 1``; ``None`` means 0 (terminal). Ignored
      (whatever it holds) for trajectories that end before ``T - 1``.

  Returns:
    ``[B, T]`` advantages, 0 on padded steps (all NaN for an array ``gamma`` or ``lam`` outside ``[0, 1]``).

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
  m = float_mask(mask, dtype, gamma, lam)
  v = zero_padding(values, mask).astype(dtype) * m
  g = gamma.astype(dtype)
  deltas = m * (zero_padding(rewards, mask).astype(dtype) * m + g * next_values(v, m, bootstrap_value, "gae") - v)
  return reverse_accumulate(deltas, g * lam.astype(dtype) * continues(m)) * m
