r"""Model-based policy gradients: backpropagation through a known differentiable model, or the score function.

With a known deterministic dynamics :math:`s_{t+1} = f(s_t, a_t)` and reward :math:`r(s_t, a_t)`, a policy
:math:`a_t \sim \pi_\theta(\cdot|s_t)` and a fixed start :math:`s_0`, the objective over a horizon ``T`` is

.. math:: J(\theta) = E\Big[\sum_{t<T} \gamma^t r(s_t, a_t)\Big].

Two unbiased estimators of :math:`\nabla J` are built from the same sampled trajectories:

* **pathwise** (reparameterized actions, backpropagation through time): :math:`a_t = g_\theta(\epsilon_t;
  s_t)` with noise :math:`\epsilon_t` independent of :math:`\theta`, so :math:`\sum_t \gamma^t r(s_t, a_t)` is
  a differentiable function of :math:`\theta` along the whole trajectory and its gradient (``jax.grad``
  through ``lax.scan``) is the estimate. Needs a reparameterizable policy (``Normal``,
  :class:`~sfe_jax.rl.TanhNormal`) and differentiable ``f`` and ``r``; uses their derivatives, so its
  variance is usually far lower. Its variance can grow with the horizon when the closed-loop Jacobians
  :math:`\partial s_{t+1} / \partial s_t` have norm above 1 (chaotic or unstable models).
* **score function** (REINFORCE, the model treated as a black box): :math:`\sum_t \nabla_\theta \log
  \pi_\theta(a_t|s_t)\, \gamma^t (G_t - b_t)` with the reward-to-go :math:`G_t`, as
  :func:`sfe_jax.rl.reinforce_loss` computes it, but built as a DiCE surrogate
  (:func:`sfe_jax.objectives.dice`) so that every derivative, not only the first, is unbiased. Uses no
  derivative of ``f`` or ``r`` (they may be non-differentiable or discrete) and works for any policy,
  including ``Categorical``.

Both objectives can be differentiated any number of times (``jax.hessian``): the pathwise one along the
sampling path (when the policy's sampler, ``f`` and ``r`` are), the score-function one by DiCE.

References:
  Nguyen and Widrow, "Neural networks for self-learning control systems", 1990 (backpropagation through
  time for control). Heess et al., "Learning continuous control policies by stochastic value gradients",
  2015. Mohamed et al., "Monte Carlo gradient estimation in machine learning", JMLR 2020, Section 9.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from sfe_jax._src.core import checks, distributions
from sfe_jax._src.objectives import dice
from sfe_jax._src.rl import losses, policies, returns

Array = jax.Array
PolicyFn = Callable[[Any, Any], Any]
Dynamics = Callable[[Any, Array], Any]
Reward = Callable[[Any, Array], Array]

MODEL_BASED_ESTIMATORS = ("pathwise", "score_function")


class ModelRollout(NamedTuple):
  """One trajectory of :func:`model_rollout`; leading axis ``T`` (time) on every field."""

  states: Any  # s_0 .. s_{T-1}, the state's structure with a leading [T] axis.
  actions: Array  # [T, *action_shape]
  rewards: Array  # [T]
  log_probs: Array  # [T], log pi(a_t | s_t)


def _check_shapes_match(name: str, got: Any, expected: Any) -> None:
  got_shape = jax.tree.map(lambda x: (jnp.shape(x), jnp.result_type(x)), got)
  want_shape = jax.tree.map(lambda x: (jnp.shape(x), jnp.result_type(x)), expected)
  if jax.tree.structure(got) != jax.tree.structure(expected) or got_shape != want_shape:  # type: ignore[operator]
    raise ValueError(
      f"model_rollout: `{name}` must return a state with the structure, shapes and dtypes of `init_state` "
      f"({want_shape}); got {got_shape}."
    )


def model_rollout(
  policy_fn: PolicyFn,
  dynamics: Dynamics,
  reward: Reward,
  params: Any,
  init_state: Any,
  key: Any,
  horizon: int,
  *,
  reparameterize: bool = True,
) -> ModelRollout:
  r"""Samples one trajectory of ``horizon`` steps through a known model (``lax.scan``).

  At each step ``policy = policy_fn(params, s_t)``, ``a_t`` and ``log pi(a_t|s_t)`` come from
  :func:`sfe_jax.rl.sample_actions` (with ``batch_ndims=0``), then ``r_t = reward(s_t, a_t)`` and
  ``s_{t+1} = dynamics(s_t, a_t)``. With ``reparameterize=True`` the actions, and so the states and rewards,
  are differentiable in ``params`` (backpropagation through time); with ``False`` the actions and states are
  constants and only ``log_probs`` depends on ``params``.

  Args:
    policy_fn: ``(params, state) -> distrax distribution`` over one action.
    dynamics: ``(state, action) -> next state``, deterministic, same structure, shapes and dtypes as the state.
    reward: ``(state, action) -> scalar``.
    params: the policy's parameters (any pytree).
    init_state: ``s_0`` (an array or a pytree of arrays).
    key: a JAX PRNG key.
    horizon: the number of steps ``T``, a static int >= 1.
    reparameterize: pathwise (True) or score-function (False) sampling.

  Returns:
    A :class:`ModelRollout`.
  """
  fn = "model_rollout"
  checks.check_key(key)
  horizon = checks.check_static_int(horizon, "horizon", 1, f" for {fn}")
  for name, value in (("policy_fn", policy_fn), ("dynamics", dynamics), ("reward", reward)):
    if not callable(value):
      raise TypeError(f"`{name}` of {fn} must be callable; got {type(value).__name__}.")
  init_state = jax.tree.map(jnp.asarray, init_state)

  def step(state, step_key):
    policy = policy_fn(params, state)
    action, log_prob = policies.sample_actions(policy, step_key, 0, reparameterize=reparameterize)
    r = jnp.asarray(reward(state, action))
    if r.shape != ():
      raise ValueError(f"`reward` of {fn} must return a scalar; got shape {r.shape}.")
    next_state = dynamics(state, action)
    _check_shapes_match("dynamics", next_state, state)
    return next_state, ModelRollout(state, action, r, log_prob)

  _, trajectory = jax.lax.scan(step, init_state, jax.random.split(key, horizon))
  return trajectory


def model_based_objective(
  policy_fn: PolicyFn,
  dynamics: Dynamics,
  reward: Reward,
  params: Any,
  init_state: Any,
  key: Any,
  horizon: int,
  gamma: float | Array = 1.0,
  *,
  estimator: str = "pathwise",
  num_trajectories: int = 1,
  baseline: Any = None,
) -> Array:
  r"""A Monte Carlo estimate of :math:`J(\theta)` whose ``jax.grad`` in ``params`` estimates :math:`\nabla J`.

  Samples ``num_trajectories`` independent trajectories with :func:`model_rollout`. The value is the mean
  discounted return :math:`\frac1N \sum_n \sum_t \gamma^t r_{nt}` for both estimators (unbiased for
  :math:`J`); the gradient is the ``estimator``'s (see the module notes):

  * ``"pathwise"``: the gradient of that mean through reparameterized actions and the model (BPTT).
    ``baseline`` must be ``None``.
  * ``"score_function"``: ``-grad`` of :func:`sfe_jax.rl.reinforce_loss` (reward-to-go, ``gamma^t``
    weights) over the ``[N, T]`` trajectories, with ``baseline`` ``None``, ``sfe.baselines.leave_one_out()``
    (unbiased, needs ``num_trajectories >= 2`` to help) or ``sfe.baselines.constant(value)``.

  Both gradients are unbiased for :math:`\nabla J`, so on the same problem their means agree and only their
  variances differ. To maximise ``J``, follow the gradient (or
  minimise ``-model_based_objective(...)``).

  Args:
    policy_fn: ``(params, state) -> distrax distribution`` over one action.
    dynamics: ``(state, action) -> next state`` (deterministic; differentiable for ``"pathwise"``). A
      dynamics that stops gradients inside (gymnax environments do, unless built with
      ``env.with_transition_gradients()``) gives a pathwise gradient that silently drops every effect of an
      action on later states; the score function does not differentiate the dynamics and is unaffected.
    reward: ``(state, action) -> scalar`` (differentiable for ``"pathwise"``).
    params: the policy's parameters (any pytree).
    init_state: ``s_0``.
    key: a JAX PRNG key.
    horizon: the number of steps ``T`` (static).
    gamma: the discount in [0, 1] (an array outside it gives NaN).
    estimator: ``"pathwise"`` or ``"score_function"``.
    num_trajectories: ``N``, the number of trajectories averaged (static).
    baseline: for ``"score_function"``: ``None`` or a baseline of :mod:`sfe_jax.baselines` that works over
      trajectories (``leave_one_out()``, ``constant(value)``).

  Returns:
    A scalar.

  Examples:
    >>> import distrax, jax, jax.numpy as jnp, sfe_jax.rl as rl
    >>> policy_fn = lambda k, s: distrax.Normal(-k * s, 0.5)     # a = -k s + 0.5 eps
    >>> dynamics = lambda s, a: s + a
    >>> reward = lambda s, a: -(s ** 2) - a ** 2
    >>> objective = lambda k, est: rl.model_based_objective(policy_fn, dynamics, reward, k, jnp.array(1.0),
    ...     jax.random.key(0), horizon=5, estimator=est, num_trajectories=20_000)
    >>> g_pw, g_sf = jax.grad(objective)(0.5, "pathwise"), jax.grad(objective)(0.5, "score_function")
    >>> bool(jnp.abs(g_pw - g_sf) < 0.1 * jnp.abs(g_pw))
    True
  """
  fn = "model_based_objective"
  if estimator not in MODEL_BASED_ESTIMATORS:
    raise ValueError(f"`estimator` of {fn} must be one of {MODEL_BASED_ESTIMATORS}; got {estimator!r}.")
  num_trajectories = checks.check_static_int(num_trajectories, "num_trajectories", 1, f" for {fn}")
  checks.check_key(key)
  gamma = returns.check_unit("gamma", gamma, fn)
  if estimator == "pathwise":
    if baseline is not None:
      raise ValueError(
        f"`baseline` of {fn} applies to estimator='score_function' only; got baseline={baseline!r} with "
        "estimator='pathwise'."
      )
    distributions.check_reparameterizable(
      policy_fn(params, jax.tree.map(jnp.asarray, init_state)), f"{fn}(estimator='pathwise')"
    )
  else:
    baseline = losses.check_baseline(baseline, fn, arrays=False)

  keys = jax.random.split(key, num_trajectories)
  rollout = jax.vmap(
    lambda k: model_rollout(
      policy_fn, dynamics, reward, params, init_state, k, horizon, reparameterize=estimator == "pathwise"
    )
  )(keys)
  rewards = rollout.rewards
  value = jnp.mean(jnp.sum(rewards * returns.time_weights(gamma, rewards.shape[1], rewards.dtype), axis=1))
  if estimator == "pathwise":
    return value
  # DiCE over the trajectory (Foerster et al. 2018): cost t is gamma^t r_t, influenced by actions 0..t; its
  # first derivative is REINFORCE with reward-to-go and gamma^t weights, and every derivative is unbiased.
  costs = rewards * returns.time_weights(gamma, rewards.shape[1], rewards.dtype)
  baselines = None
  if baseline is not None:  # Mao et al. (2019): b_t from the OTHER trajectories' discounted reward-to-go.
    to_go = jnp.flip(jnp.cumsum(jnp.flip(costs, axis=1), axis=1), axis=1)
    baselines = jax.lax.stop_gradient(
      baseline.batch_compute(jax.lax.stop_gradient(to_go), jnp.ones(rewards.shape, rewards.dtype))
    )
  return dice.surrogate(costs, rollout.log_probs, baselines=baselines)
