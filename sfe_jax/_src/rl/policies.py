r"""distrax policies for trajectories: the tanh-squashed Normal, and per-step log-probabilities and entropies.

A policy is any distrax distribution over actions. Its batch shape starts with the ``batch_ndims`` axes of
the data (``[B, T]`` for a batch of trajectories, ``[]`` for one state), and whatever follows is the action's
own shape: a ``Categorical`` over ``[B, T]`` gives one log-probability per step, a ``Normal`` with
``loc.shape == [B, T, A]`` gives ``A`` of them, whose sum is the log-density of the ``A``-dimensional
action. :func:`action_log_probs` and :func:`action_entropies` do that sum, so the ``[B, T]`` arrays that
:func:`sfe_jax.rl.reinforce_loss` and the other losses take come out the same for every policy.

For bounded continuous actions :class:`TanhNormal` squashes a Normal into ``(-1, 1)``. Its log-density at
an action :math:`a = \tanh(u)` is

.. math:: \log p(a) = \log \mathcal N(u; \mu, \sigma^2) - \log(1 - \tanh^2 u),
   \qquad \log(1 - \tanh^2 u) = 2(\log 2 - u - \mathrm{softplus}(-2u)),

the second form being exact for every ``u``. Sampling with :func:`sample_actions` (``sample_and_log_prob``)
computes it from the pre-squash ``u`` and is exact; ``log_prob`` of a stored action must invert the tanh,
which float32 cannot do near the bounds (``tanh(u)`` rounds to 1 for ``u > 9.01``), so actions are first
clipped to the largest float below 1 in magnitude: the result is finite everywhere, and exact wherever
``|u| < 8.3`` (float32) — beyond that it is the density at the clipped action.
"""

from __future__ import annotations

from typing import Any

import distrax
import jax
import jax.numpy as jnp

from sfe_jax._src.core import checks, distributions

Array = jax.Array


class _ClippedTanh(distrax.Tanh):
  """``tanh`` whose inverse clips its input into the open interval (-1, 1) of its dtype: finite everywhere."""

  def inverse_and_log_det(self, y: Array) -> tuple[Array, Array]:
    y = jnp.asarray(y)
    dtype = y.dtype if jnp.issubdtype(y.dtype, jnp.floating) else jnp.result_type(float)
    limit = 1.0 - jnp.finfo(dtype).epsneg
    return super().inverse_and_log_det(jnp.clip(y.astype(dtype), -limit, limit))


class TanhNormal(distrax.Transformed):
  r"""The tanh-squashed Normal: ``a = tanh(u)``, ``u ~ Normal(loc, scale)``, elementwise, actions in (-1, 1).

  Reparameterizable (``sample`` is differentiable in ``loc`` and ``scale``), so it serves the pathwise
  estimators (:func:`sfe_jax.pathwise`, :func:`sfe_jax.rl.model_based_objective`) as well as score-function
  policy gradients. ``log_prob`` is finite at every action including ±1 (see the module notes on its
  accuracy near the bounds); :func:`sample_actions` returns exact log-probabilities of its own samples.
  There is no closed-form entropy: ``entropy()`` raises, and ``-log_prob`` of a sample is an unbiased
  single-sample estimate of it.

  Args:
    loc: mean of the Gaussian before squashing; any shape.
    scale: its standard deviation, positive, broadcastable with ``loc``.

  Examples:
    >>> import jax, jax.numpy as jnp, sfe_jax.rl as rl
    >>> policy = rl.TanhNormal(jnp.zeros(3), jnp.ones(3))
    >>> actions, log_probs = policy.sample_and_log_prob(seed=jax.random.key(0))
    >>> bool(jnp.all(jnp.abs(actions) < 1)), bool(jnp.allclose(log_probs, policy.log_prob(actions), atol=1e-4))
    (True, True)
    >>> bool(jnp.isfinite(policy.log_prob(jnp.ones(3))).all())
    True

  References:
    Haarnoja et al., "Soft actor-critic: off-policy maximum entropy deep reinforcement learning with a
    stochastic actor", 2018, Appendix C.
  """

  def __init__(self, loc: Any, scale: Any):
    super().__init__(distrax.Normal(loc, scale), _ClippedTanh())

  @property
  def loc(self) -> Array:
    """The mean of the Gaussian before squashing."""
    return self.distribution.loc

  @property
  def scale(self) -> Array:
    """The standard deviation of the Gaussian before squashing."""
    return self.distribution.scale


def _check_batch_ndims(batch_ndims: Any, fn: str) -> int:
  return checks.check_static_int(batch_ndims, "batch_ndims", 0, f" for {fn}")


def _sum_action_axes(x: Array, batch_ndims: int, what: str, policy: Any, fn: str) -> Array:
  """Sums the axes after the first ``batch_ndims`` (the action's own axes); checks there are enough axes."""
  x = jnp.asarray(x)
  if x.ndim < batch_ndims:
    raise ValueError(
      f"{fn}: the policy's {what} has shape {x.shape}, fewer than batch_ndims={batch_ndims} axes; the policy "
      f"({type(policy).__name__} with batch_shape={tuple(policy.batch_shape)}) must have a batch shape that "
      f"starts with the data's {batch_ndims} axes (e.g. [B, T])."
    )
  return jnp.sum(x, axis=tuple(range(batch_ndims, x.ndim)))


def action_log_probs(policy: Any, actions: Any, batch_ndims: int = 2) -> Array:
  r"""``log pi(a | s)`` per step: ``policy.log_prob(actions)`` summed over the action's own axes.

  Args:
    policy: a distrax distribution whose batch shape starts with the data's ``batch_ndims`` axes.
    actions: actions, shaped like the policy's samples.
    batch_ndims: how many leading axes index data (2 for ``[B, T]`` trajectories).

  Returns:
    An array of the leading ``batch_ndims`` axes' shape (``[B, T]``), differentiable in the policy's
    parameters.

  Examples:
    >>> import distrax, jax.numpy as jnp, sfe_jax.rl as rl
    >>> policy = distrax.Normal(jnp.zeros((2, 3, 4)), 1.0)           # B=2 trajectories, T=3, 4-D actions
    >>> rl.action_log_probs(policy, jnp.zeros((2, 3, 4))).shape
    (2, 3)
  """
  fn = "action_log_probs"
  batch_ndims = _check_batch_ndims(batch_ndims, fn)
  return _sum_action_axes(policy.log_prob(actions), batch_ndims, "log_prob", policy, fn)


def action_entropies(policy: Any, batch_ndims: int = 2) -> Array:
  """The policy's entropy per step, summed over the action's own axes (for ``actor_critic_loss``).

  Needs a closed-form ``entropy()`` (``Categorical``, ``Normal``, ...). :class:`TanhNormal` has none: pass
  ``-action_log_probs(policy, actions)`` of sampled actions instead, an unbiased estimate.

  Args:
    policy: a distrax distribution whose batch shape starts with the data's ``batch_ndims`` axes.
    batch_ndims: how many leading axes index data.

  Returns:
    An array of the leading ``batch_ndims`` axes' shape.
  """
  fn = "action_entropies"
  batch_ndims = _check_batch_ndims(batch_ndims, fn)
  try:
    entropy = policy.entropy()
  except NotImplementedError as e:
    raise TypeError(
      f"{fn}: {type(policy).__name__} has no closed-form entropy; use -action_log_probs(policy, actions) "
      "of sampled actions, an unbiased estimate."
    ) from e
  return _sum_action_axes(entropy, batch_ndims, "entropy", policy, fn)


def sample_actions(policy: Any, key: Any, batch_ndims: int = 2, *, reparameterize: bool = False) -> tuple[Array, Array]:
  r"""Samples one action per step with its log-probability, for score-function or pathwise gradients.

  * ``reparameterize=False`` (the score-function form, REINFORCE): the actions are constants
    (``stop_gradient``) and ``log_probs`` is :math:`\log\pi_\theta(a)` at those fixed actions, whose gradient
    is the score :math:`\nabla_\theta \log\pi_\theta(a)`. For :class:`TanhNormal` it is computed from the
    pre-squash sample, exact even where ``tanh`` rounds to ±1.
  * ``reparameterize=True`` (pathwise): ``sample_and_log_prob``; the actions are differentiable in the
    policy's parameters (the policy must be reparameterizable, e.g. ``Normal`` or :class:`TanhNormal`) and
    ``log_probs`` carries the total derivative through them (what an entropy bonus on reparameterized
    actions needs, as in soft actor-critic).

  Args:
    policy: a distrax distribution whose batch shape starts with the data's ``batch_ndims`` axes.
    key: a JAX PRNG key.
    batch_ndims: how many leading axes index data (2 for ``[B, T]``, 0 for one state).
    reparameterize: pathwise (True) or score-function (False) sampling.

  Returns:
    ``(actions, log_probs)``: actions of the policy's sample shape and ``log_probs`` of the leading
    ``batch_ndims`` axes' shape.

  Examples:
    >>> import distrax, jax, jax.numpy as jnp, sfe_jax.rl as rl
    >>> def j(logits):                  # REINFORCE estimate of grad E[a] for a 3-way choice a in {0, 1, 2}
    ...   actions, log_probs = rl.sample_actions(distrax.Categorical(logits=logits), jax.random.key(0), 0)
    ...   return log_probs * actions
    >>> jax.grad(j)(jnp.zeros(3)).shape
    (3,)
  """
  fn = "sample_actions"
  checks.check_key(key)
  batch_ndims = _check_batch_ndims(batch_ndims, fn)
  if reparameterize:
    distributions.check_reparameterizable(policy, f"{fn}(..., reparameterize=True)")
    actions, log_probs = policy.sample_and_log_prob(seed=key)
  elif isinstance(policy, TanhNormal):
    pre_squash = jax.lax.stop_gradient(policy.distribution.sample(seed=key))
    actions, log_det = policy.bijector.forward_and_log_det(pre_squash)
    log_probs = policy.distribution.log_prob(pre_squash) - log_det
  else:
    actions = jax.lax.stop_gradient(policy.sample(seed=key))
    log_probs = policy.log_prob(actions)
  return actions, _sum_action_axes(log_probs, batch_ndims, "log_prob", policy, fn)
