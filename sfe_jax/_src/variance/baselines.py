r"""Baselines for the score-function estimator.

A baseline ``b`` turns the score-function estimate ``f(x) grad log p(x)`` into ``(f(x) - b) grad log p(x)``.
Because ``E[grad log p(x)] = 0``, the estimator stays unbiased whenever ``b`` is independent of the sample it
multiplies; every baseline here is built so that this holds (past samples only, or the *other* samples of the
same batch), and reduces variance when ``b`` is close to ``E[f s^2] / E[s^2]`` (``s`` the score).

A :class:`Baseline` is a NamedTuple of pure functions, like an estimator:

* ``init(params) -> state``;
* ``compute(f_values, scores, state) -> (b, new_state)``, where ``f_values`` has shape ``(N,)`` and holds no
  gradient, ``scores`` is ``None`` for a scalar baseline or, for a per-coordinate one, the per-sample scores
  (a pytree like ``params`` with a leading ``N`` axis), and ``b`` has shape ``(N,)`` (scalar) or the structure
  of ``scores`` (per coordinate).

The same baselines serve the policy-gradient losses of :mod:`sfe_jax.rl`, through ``batch_compute(returns,
mask) -> b``, which computes them per time step over a batch of masked ``[B, T]`` trajectories (a baseline
without one, stateful or per-coordinate, is refused there with a clear error).
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from sfe_jax._src.core import finite, types

Array = jax.Array


class BaselineComputeFn(Protocol):
  """``compute(f_values, scores, state) -> (b, new_state)``.

  ``f_values`` has shape ``(N,)`` and carries no gradient; ``scores`` is ``None`` for a scalar baseline or, for a
  per-coordinate one, the per-sample scores (a pytree like ``params`` with a leading ``N`` axis); ``b`` has
  shape ``(N,)`` or the structure of ``scores``. ``b_i`` must not depend on sample ``i``.
  """

  def __call__(self, f_values: Array, scores: Any, state: types.State) -> tuple[Any, types.State]: ...


class BatchBaselineFn(Protocol):
  """``batch_compute(returns, mask) -> b``, all ``[B, T]``: the baseline of each step of a batch of trajectories."""

  def __call__(self, returns: Array, mask: Array) -> Array: ...


class Baseline(NamedTuple):
  """A baseline for :func:`sfe_jax.score_function`.

  Attributes:
    init: ``init(params) -> state``.
    compute: ``compute(f_values, scores, state) -> (b, new_state)``.
    name: for messages and reports.
    per_coordinate: whether ``b`` has one value per parameter coordinate (then ``compute`` receives the
      per-sample scores, which costs one ``log_prob`` gradient per sample).
    min_samples: the smallest batch the baseline works with.
    batch_compute: ``batch_compute(returns, mask) -> b``, all ``[B, T]``: the baseline of each step of a batch of
      trajectories, from the returns of the trajectories still running at that step (``mask`` 1 on each
      trajectory's valid prefix); ``None`` for a baseline that cannot be computed so (stateful, or per
      parameter coordinate).
  """

  init: types.InitFn
  compute: BaselineComputeFn
  name: str
  per_coordinate: bool = False
  min_samples: int = 1
  batch_compute: BatchBaselineFn | None = None


def constant(value: float = 0.0) -> Baseline:
  r"""A fixed baseline ``b = value``.

  Unbiased for any value; the variance is lowest when ``value`` is near ``E[f s^2] / E[s^2]``.

  Args:
    value: the baseline, a scalar.
  """
  b = jnp.asarray(value)
  if b.shape != ():
    raise ValueError(f"`value` of baselines.constant must be a scalar; got shape {b.shape}.")

  def compute(f_values, scores, state):
    del scores
    return jnp.broadcast_to(b.astype(f_values.dtype), f_values.shape), state

  def batch_compute(returns, mask):
    del mask
    return jnp.broadcast_to(b.astype(returns.dtype), returns.shape)

  return Baseline(types.empty_init, compute, name="sfe.baselines.constant()", batch_compute=batch_compute)


class MovingAverageState(NamedTuple):
  """State of :func:`moving_average`: the biased running average, the number of updates so far, and the number
  of updates skipped because the batch mean was not finite (the state is then left as it was)."""

  average: Array
  count: Array  # type: ignore[assignment]  # the field shadows tuple.count, as the public name requires
  skipped: Any = np.zeros((), np.int32)


def moving_average(decay: float = 0.9) -> Baseline:
  r"""An exponential moving average of past Monte Carlo estimates of ``E[f]``, zero-debiased.

  After ``t`` updates with batch means :math:`\bar f_1, \dots, \bar f_t`,
  :math:`b = \frac{(1-\delta)\sum_s \delta^{t-s} \bar f_s}{1 - \delta^t}` (``b = 0`` before the first update).
  ``b`` depends on past calls only, so the estimate stays unbiased. The state is updated with the current
  batch after use; carry it between calls (``state`` in, ``state`` out). A batch whose mean is not finite (NaN
  or inf in ``f``) leaves the state unchanged and increments ``state.skipped``: one bad batch does not poison
  every later call.

  Args:
    decay: :math:`\delta \in [0, 1)`; larger values average over more past steps.
  """
  if isinstance(decay, jax.core.Tracer) or not isinstance(decay, (int, float, np.integer, np.floating)):
    raise TypeError(
      f"`decay` of baselines.moving_average must be a concrete Python number; got {type(decay).__name__}. "
      "Call the constructor outside jax.jit."
    )
  if not 0.0 <= float(decay) < 1.0:
    raise ValueError(f"`decay` of baselines.moving_average must be in [0, 1); got {decay}.")

  def init(params):
    del params
    return MovingAverageState(average=jnp.zeros(()), count=jnp.zeros((), jnp.int32), skipped=jnp.zeros((), jnp.int32))

  def compute(f_values, scores, state):
    del scores
    correction = 1.0 - decay ** state.count.astype(state.average.dtype)
    b = jnp.where(state.count > 0, state.average / jnp.where(state.count > 0, correction, 1.0), 0.0)
    new_average = decay * state.average + (1.0 - decay) * jnp.mean(f_values).astype(state.average.dtype)
    (average, count), skipped = finite.update_if_finite(
      (state.average, state.count), (new_average, state.count + 1), state.skipped
    )
    new_state = MovingAverageState(average=average, count=count, skipped=skipped)
    return jnp.broadcast_to(b.astype(f_values.dtype), f_values.shape), new_state

  return Baseline(init, compute, name="sfe.baselines.moving_average()")


def leave_one_out() -> Baseline:
  r"""The mean of the *other* samples: :math:`b_i = \frac{1}{N-1} \sum_{j \ne i} f(x_j)`.

  Unbiased (``b_i`` is independent of ``x_i``); needs ``num_samples >= 2``. With ``N`` samples the
  estimate equals :math:`\frac{1}{N-1}\sum_i (f_i - \bar f) \nabla \log p(x_i)` (the RLOO estimator of
  Kool et al. 2019). In :func:`sfe_jax.rl.reinforce_loss` it is the mean return of the other trajectories
  still running at each step. (The batch mean *including* the sample itself, common in RL code, is biased:
  its gradient is exactly ``(N - 1) / N`` times this one.)
  """

  def compute(f_values, scores, state):
    del scores
    n = f_values.shape[0]
    return (jnp.sum(f_values) - f_values) / (n - 1), state

  def batch_compute(returns, mask):
    # Per step, the mean over the OTHER trajectories still running; 0 when no other one is.
    total = jnp.sum(returns * mask, axis=0, keepdims=True)
    others = jnp.sum(mask, axis=0, keepdims=True) - mask
    return (total - returns * mask) / jnp.maximum(others, 1.0)

  return Baseline(
    types.empty_init, compute, name="sfe.baselines.leave_one_out()", min_samples=2, batch_compute=batch_compute
  )


def optimal() -> Baseline:
  r"""The per-coordinate optimal constant baseline :math:`b^*_d = E[f s_d^2] / E[s_d^2]`, leave-one-out.

  For coordinate ``d`` of the parameters and sample ``i``,
  :math:`b_{id} = \sum_{j \ne i} f_j s_{jd}^2 / \sum_{j \ne i} s_{jd}^2`, which uses only the other samples
  so the estimate stays unbiased; as ``N`` grows its variance approaches
  :math:`\mathrm{Var}_{SF} - E[f s_d^2]^2 / E[s_d^2]`, the minimum over constant baselines.

  Cost: the per-sample scores (one gradient of ``log_prob`` per sample, memory ``N x num_params``).
  Needs ``num_samples >= 2``.
  """

  def compute(f_values, scores, state):
    def per_leaf(s):
      s2 = jnp.square(s)
      fb = jnp.reshape(f_values, (-1,) + (1,) * (s.ndim - 1)).astype(s.dtype)
      num = jnp.sum(fb * s2, axis=0, keepdims=True) - fb * s2
      den = jnp.sum(s2, axis=0, keepdims=True) - s2
      positive = den > 0
      return jnp.where(positive, num / jnp.where(positive, den, 1.0), 0.0)

    return jax.tree.map(per_leaf, scores), state

  return Baseline(types.empty_init, compute, name="sfe.baselines.optimal()", per_coordinate=True, min_samples=2)
