r"""Off-policy corrections: importance weights, off-policy value estimates and V-trace.

The conventions (``[B, T]`` arrays, ``mask``) and the handling of non-finite values (ignored padding; NaN for
an array hyperparameter out of its range; products of ratios in log space) are those of
:mod:`sfe_jax._src.rl.returns`.

References:
  Precup, Sutton and Singh, "Eligibility traces for off-policy policy evaluation", 2000.
  Espeholt et al., "IMPALA: scalable distributed deep-RL with importance weighted actor-learner
  architectures", 2018.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from sfe_jax._src.rl.returns import (
  check_bt,
  check_clip,
  check_positive,
  check_unit,
  continues,
  float_mask,
  next_values,
  reverse_accumulate,
  time_weights,
  zero_padding,
)

Array = jax.Array


# ----------------------------------------------------------------------------------------------------------
# Off-policy corrections.
# ----------------------------------------------------------------------------------------------------------


def log_ratios(target_log_probs: Array, behaviour_log_probs: Array, mask: Array, fn: str) -> tuple[Array, Array]:
  """Checked ``(log rho, mask)``: ``[B, T]`` log-ratios ``log pi - sg(log mu)``, 0 on the padding (a select)."""
  target_log_probs = check_bt("target_log_probs", target_log_probs, fn=fn)
  behaviour_log_probs = check_bt("behaviour_log_probs", behaviour_log_probs, target_log_probs.shape, fn)
  mask = check_bt("mask", mask, target_log_probs.shape, fn)
  dtype = jnp.result_type(target_log_probs.dtype, float)
  target, behaviour = (zero_padding(x, mask).astype(dtype) for x in (target_log_probs, behaviour_log_probs))
  return target - jax.lax.stop_gradient(behaviour), mask


def exp_weighted_sum(log_w: Array, coef: Array, divisor: int) -> Array:
  r""":math:`\frac1n \sum_i c_i e^{w_i}` whose intermediates neither overflow nor underflow when the result is finite.

  The exponents are shifted by their largest value over the terms with :math:`c_i \ne 0` (a constant: the
  gradient is exact), and the sum is scaled back by two factors, each a finite float, in the order that keeps
  the partial product finite. Terms with :math:`c_i = 0` contribute 0 and a zero gradient, whatever :math:`w_i`.
  """
  used = coef != 0
  shift = jax.lax.stop_gradient(jnp.max(jnp.where(used, log_w, -jnp.inf)))
  shift = jnp.where(jnp.isfinite(shift), shift, 0.0)  # all weights 0 (-inf), or an inf / NaN that must show
  total = jnp.sum(coef * jnp.exp(jnp.where(used, log_w, shift) - shift)) / divisor
  near = jnp.clip(shift, -80.0, 80.0)  # exp(near) is a normal float32; exp(shift - near) is 1 unless |shift| > 80
  return total * jnp.exp(shift - near) * jnp.exp(near)


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
  return jnp.exp(log_ratios(target_log_probs, behaviour_log_probs, mask, "importance_weights")[0])


OFF_POLICY_ESTIMATORS = ("ordinary", "weighted", "per_decision", "truncated")


def off_policy_value(
  target_log_probs: Array,
  behaviour_log_probs: Array,
  rewards: Array,
  mask: Array,
  gamma: float | Array,
  estimator: str = "per_decision",
  clip_rho: float | None = 1.0,
) -> Array:
  r"""An importance-sampling estimate of the target policy's value from trajectories logged under ``mu``.

  The result is a differentiable scalar: its value estimates :math:`J(\pi) = E_\pi[\sum_t \gamma^t r_t]` and
  its ``jax.grad`` with respect to the target policy's parameters (through ``target_log_probs``) estimates
  :math:`\nabla J(\pi)`. With :math:`\rho_t` from :func:`importance_weights`, :math:`W = \prod_t \rho_t`, and
  :math:`R = \sum_t \gamma^t r_t` (all computed in log space: ``"weighted"`` as a softmax over :math:`\log W`, the
  others as shifted sums of :math:`\exp(\sum \log\rho + t\log\gamma)`, so that no product of ratios overflows or
  underflows when the estimate itself is a finite float):

  * ``"ordinary"``: :math:`\frac1B \sum_b W_b R_b`. Unbiased (value and gradient); variance grows
    exponentially with the horizon through the product of ratios.
  * ``"weighted"`` (self-normalised): :math:`\sum_b W_b R_b / \sum_b W_b`. Biased, O(1/B) (with ``B = 1``
    it returns ``R``, whose mean is the *behaviour* policy's value) but consistent, bounded by the rewards,
    and usually of much lower variance.
  * ``"per_decision"``: :math:`\frac1B \sum_b \sum_t \gamma^t r_{bt} \prod_{k \le t} \rho_{bk}`: reward
    ``r_t`` is weighted only by the ratios up to ``t`` (later actions cannot affect it). Unbiased, usually
    of lower variance than ordinary (not always: the terms' covariances can add up to more).
  * ``"truncated"``: per-decision with every ratio clipped, :math:`\bar\rho_t = \min(\bar\rho, \rho_t)`
    (``clip_rho``; V-trace's truncation). Variance bounded (products of at most ``clip_rho ** T``); biased:
    its mean is the "value" of the unnormalised policy ``min(clip_rho * mu, pi)``, whose mass per step is
    below 1, so the mean is not in general between ``mu``'s and ``pi``'s values (one step, rewards 1,
    ``pi = [0.2, 0.8]``, ``mu = [0.5, 0.5]``, ``clip_rho = 1``: both values are 1, the mean is 0.7; V-trace
    normalises that policy instead). It equals per-decision when ``clip_rho`` exceeds every ratio.
    Clipped ratios pass no gradient.

  Args:
    target_log_probs: ``[B, T]`` ``log pi(a_t|s_t)``, differentiable in the target policy.
    behaviour_log_probs: ``[B, T]`` ``log mu(a_t|s_t)`` (constants).
    rewards: ``[B, T]``.
    mask: ``[B, T]`` validity mask.
    gamma: discount in ``[0, 1]``.
    estimator: one of ``"ordinary"``, ``"weighted"``, ``"per_decision"``, ``"truncated"``.
    clip_rho: the truncation level ``rho_bar > 0`` of ``"truncated"`` (ignored by the others; an array that
      is not positive gives NaN).

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
  log_rho, mask = log_ratios(target_log_probs, behaviour_log_probs, mask, fn)
  rewards = check_bt("rewards", rewards, log_rho.shape, fn)
  gamma = check_unit("gamma", gamma, fn)
  clip = check_positive("clip_rho", clip_rho, fn) if estimator == "truncated" else None
  b, t = log_rho.shape
  dtype = log_rho.dtype
  m = float_mask(mask, dtype, gamma, clip)
  r = zero_padding(rewards, mask).astype(dtype) * m
  if estimator == "weighted":  # a softmax over the log-weights: no product of ratios is ever formed
    returns = jnp.sum(time_weights(gamma, t, dtype) * r, axis=1)
    return jnp.sum(jax.nn.softmax(jnp.sum(log_rho, axis=1)) * returns)
  # log(gamma^t prod rho) as t log gamma + a sum of log-ratios: neither gamma^t nor the product under/overflows.
  steps = jnp.arange(t, dtype=dtype)[None, :]
  log_disc = jnp.where(steps > 0, steps * jnp.log(gamma.astype(dtype)), 0.0)
  if estimator == "ordinary":
    return exp_weighted_sum(jnp.sum(log_rho, axis=1, keepdims=True) + log_disc, r, b)
  if clip is not None:
    log_rho = jnp.minimum(log_rho, jnp.log(clip.astype(dtype)))
  return exp_weighted_sum(jnp.cumsum(log_rho, axis=1) + log_disc, r, b)


class VTrace(NamedTuple):
  """The outputs of :func:`vtrace` (``[B, T]`` each, 0 on padded steps, constants: no gradient flows)."""

  vs: Array
  pg_advantages: Array


def vtrace(
  target_log_probs: Array,
  behaviour_log_probs: Array,
  rewards: Array,
  values: Array,
  mask: Array,
  gamma: float | Array,
  *,
  bootstrap_value: Array | None = None,
  clip_rho: float | None = 1.0,
  clip_c: float | None = 1.0,
  clip_pg_rho: float | None = 1.0,
  lam: float | Array = 1.0,
) -> VTrace:
  r"""V-trace value targets and policy-gradient advantages for trajectories logged under a behaviour policy.

  With :math:`\rho_t = \pi(a_t|s_t)/\mu(a_t|s_t)`, truncated :math:`\bar\rho_t = \min(\bar\rho, \rho_t)`
  and trace coefficients :math:`c_t = \lambda \min(\bar c, \rho_t)`:

  .. math:: v_s = V(s_s) + \sum_{t \ge s} \gamma^{t-s} \Big(\prod_{i=s}^{t-1} c_i\Big) \bar\rho_t
     \big(r_t + \gamma V(s_{t+1}) - V(s_t)\big),

  computed backwards as :math:`v_s - V_s = \delta_s + \gamma c_s (v_{s+1} - V_{s+1})`, with
  :math:`V(s_{t+1}) = 0` after a terminal step and ``bootstrap_value`` after step ``T - 1`` of a trajectory
  cut off by the horizon (as in :func:`sfe_jax.rl.gae`). The policy-gradient advantages are
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
  * on-policy (:math:`\pi = \mu`, ratios 1, clip levels >= 1): ``vs - values`` is exactly :func:`sfe_jax.rl.gae` with
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
    clip_pg_rho: the truncation of the ratio of the policy-gradient advantages (``None``: none). The clip
      levels are positive (``inf`` is no clipping); an array that is not gives NaN outputs. Ratios are clipped
      in log space, :math:`\min(\log\rho, \log\bar c)`: an infinite ratio is clipped to the level.
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
  log_rho, mask = log_ratios(target_log_probs, behaviour_log_probs, mask, fn)
  rewards = check_bt("rewards", rewards, log_rho.shape, fn)
  values = check_bt("values", values, log_rho.shape, fn)
  gamma = check_unit("gamma", gamma, fn)
  lam = check_unit("lam", lam, fn)
  clips = [
    check_clip(name, value, fn)
    for name, value in (("clip_rho", clip_rho), ("clip_c", clip_c), ("clip_pg_rho", clip_pg_rho))
  ]
  dtype = jnp.result_type(log_rho.dtype, rewards.dtype, values.dtype)
  log_rho = jax.lax.stop_gradient(log_rho.astype(dtype))
  # Clipped in log space, min(log rho, log c): an infinite ratio becomes c, never inf * 0.
  rho_bar, c_bar, pg_bar = (
    jnp.exp(log_rho if c is None else jnp.minimum(log_rho, jnp.log(c.astype(dtype)))) for c in clips
  )
  m = float_mask(mask, dtype, gamma, lam, *clips)
  v = jax.lax.stop_gradient(zero_padding(values, mask).astype(dtype)) * m
  g = gamma.astype(dtype)
  bootstrap = None if bootstrap_value is None else jax.lax.stop_gradient(jnp.asarray(bootstrap_value, dtype))
  next_v = next_values(v, m, bootstrap, fn)
  r = zero_padding(rewards, mask).astype(dtype) * m
  deltas = m * rho_bar * (r + g * next_v - v)
  vs = v + reverse_accumulate(deltas, g * lam.astype(dtype) * c_bar * continues(m)) * m
  # v_{s+1}: the next step's target, the bootstrap value at a cut-off, 0 after a terminal step.
  next_vs = next_values(vs, m, bootstrap, fn)
  pg_advantages = m * pg_bar * (r + g * next_vs - v)
  return VTrace(jax.lax.stop_gradient(vs), jax.lax.stop_gradient(pg_advantages))
