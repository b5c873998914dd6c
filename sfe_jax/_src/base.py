"""The estimator interface and the machinery every estimator shares.

An estimator is an :class:`Estimator`: a NamedTuple of two pure functions,

* ``init(params) -> state``, and
* ``surrogate(f, dist_builder, params, key, num_samples, state) -> (surrogate, state)``,

where ``surrogate`` is a scalar whose *value* is the Monte Carlo estimate of ``E_{x ~ p_params}[f(x)]`` and
whose ``jax.grad`` with respect to ``params`` is the estimator's gradient estimate. Everything else
(:func:`value_and_grad`, :func:`expectation`, jit, vmap, higher derivatives) follows from that one function.

This module also holds the checks and the sampling helpers that all estimators use, so that every estimator
validates its input and evaluates ``f`` in exactly the same way.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
PRNGKey = jax.Array
Params = Any
State = Any
CostFn = Callable[[Array], Array]
DistBuilder = Callable[[Params], Any]


class EmptyState(NamedTuple):
  """The state of a stateless estimator or baseline."""


class Estimator(NamedTuple):
  """A Monte Carlo gradient estimator.

  Attributes:
    init: ``init(params) -> state``; the initial state (``EmptyState()`` when stateless).
    surrogate: ``surrogate(f, dist_builder, params, key, num_samples, state) -> (surrogate, new_state)``.
      ``surrogate`` is a scalar whose value is the Monte Carlo estimate of ``E[f(x)]`` and whose gradient
      with respect to ``params`` is the gradient estimate. ``num_samples`` is a Python int, already checked.
    name: a short human-readable name, used in error messages and reports.
    sample_multiple: ``num_samples`` must be a multiple of this (2 for antithetic pairs, 1 otherwise).
    min_samples: the smallest ``num_samples`` the estimator accepts (2 for leave-one-out baselines).
  """

  init: Callable[[Params], State]
  surrogate: Callable[..., tuple[Array, State]]
  name: str = "estimator"
  sample_multiple: int = 1
  min_samples: int = 1


def empty_init(params: Params) -> EmptyState:
  del params
  return EmptyState()


# ----------------------------------------------------------------------------------------------------------
# Input checks. All of them run at trace time (on shapes, dtypes and Python values), so they are free under
# jit and give an error that names the argument, the expectation and what was given.
# ----------------------------------------------------------------------------------------------------------


def check_key(key: Any, name: str = "key") -> None:
  """Raises unless ``key`` is a JAX PRNG key (new-style ``jax.random.key`` or a legacy uint32[2] key)."""
  if isinstance(key, (bool, int, np.integer)):
    raise TypeError(
        f"`{name}` must be a JAX PRNG key such as jax.random.key(0); got the integer {key!r}. "
        "sfe_jax never takes integer seeds: pass jax.random.key(seed).")
  if not hasattr(key, "dtype") or not hasattr(key, "shape"):
    raise TypeError(f"`{name}` must be a JAX PRNG key such as jax.random.key(0); got {type(key).__name__}.")
  if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
    if key.shape != ():
      raise ValueError(
          f"`{name}` must be a single PRNG key of shape (); got a key array of shape {key.shape}. "
          "To use several keys, jax.vmap over them.")
    return
  if key.dtype == jnp.uint32 and key.shape == (2,):
    return  # A legacy raw key from jax.random.PRNGKey.
  raise TypeError(
      f"`{name}` must be a JAX PRNG key such as jax.random.key(0); got an array of dtype {key.dtype} and "
      f"shape {key.shape}. sfe_jax never takes integer seeds: pass jax.random.key(seed).")


def check_static_int(value: Any, name: str, minimum: int, why: str = "") -> int:
  """Checks that argument ``name`` is a static Python int of at least ``minimum``; returns it as an int."""
  if isinstance(value, jax.core.Tracer):
    raise TypeError(
        f"`{name}` must be a static Python int (it fixes array shapes); got a traced value. Under "
        f"jax.jit, mark it static (static_argnames=('{name}',)) or close over it.")
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    raise TypeError(f"`{name}` must be a Python int; got {type(value).__name__} {value!r}.")
  if value < minimum:
    raise ValueError(f"`{name}` must be at least {minimum}{why}; got {int(value)}.")
  return int(value)


def check_num_samples(num_samples: Any, estimator: Estimator) -> int:
  """Checks that ``num_samples`` is a static int that the estimator accepts; returns it as an int."""
  num_samples = check_static_int(num_samples, "num_samples", estimator.min_samples, f" for {estimator.name}")
  if num_samples % estimator.sample_multiple:
    raise ValueError(
        f"`num_samples` must be a multiple of {estimator.sample_multiple} for {estimator.name} (it uses "
        f"samples in groups of {estimator.sample_multiple}); got {num_samples}.")
  return num_samples


def check_estimator(estimator: Any) -> None:
  if not isinstance(estimator, Estimator):
    raise TypeError(
        "`estimator` must be an sfe_jax Estimator built by a constructor such as sfe.score_function() or "
        f"sfe.pathwise(); got {type(estimator).__name__}.")


def check_params(params: Params) -> None:
  """Raises unless every leaf of ``params`` is a floating-point array (gradients need real leaves)."""
  leaves = jax.tree_util.tree_leaves_with_path(params)
  if not leaves:
    raise ValueError("`params` must be a pytree with at least one floating-point leaf; it has no leaves.")
  for path, leaf in leaves:
    dtype = jnp.result_type(leaf)
    if not jnp.issubdtype(dtype, jnp.floating):
      raise TypeError(
          f"`params` leaves must be floating-point arrays (they are differentiated); the leaf "
          f"params{jax.tree_util.keystr(path)} has dtype {dtype}.")


def build_distribution(dist_builder: DistBuilder, params: Params) -> Any:
  """Calls ``dist_builder(params)`` and checks that the result is a distribution."""
  if not callable(dist_builder):
    raise TypeError(f"`dist_builder` must be a callable params -> distribution; got {type(dist_builder).__name__}.")
  try:
    dist = dist_builder(params)
    # distrax checks parameter shapes lazily; ask for the shapes now so a mismatch is reported here.
    getattr(dist, "batch_shape", None)
    getattr(dist, "event_shape", None)
  except Exception as e:  # The user's function failed: say where, keep the cause.
    raise TypeError(
        f"`dist_builder(params)` raised {type(e).__name__}: {e}. `params` must be the pytree that "
        "`dist_builder` expects, with compatible shapes (see the traceback above for the failing line).") from e
  if not (callable(getattr(dist, "sample", None)) and callable(getattr(dist, "log_prob", None))):
    raise TypeError(
        "`dist_builder(params)` must return a distribution with `sample(seed=, sample_shape=)` and "
        f"`log_prob(x)` (a distrax distribution, for example); got {type(dist).__name__}.")
  return dist


def sample(dist: Any, key: PRNGKey, num_samples: int) -> Array:
  """Draws ``num_samples`` joint samples; the result has shape ``(num_samples, *batch_shape, *event_shape)``."""
  return dist.sample(seed=key, sample_shape=(num_samples,))


def joint_log_prob(dist: Any, xs: Array) -> Array:
  """``log p(x)`` of each joint sample, summed over batch and event dimensions: shape ``(num_samples,)``."""
  logp = dist.log_prob(xs)
  return jnp.reshape(logp, (xs.shape[0], -1)).sum(axis=1)


def evaluate(f: CostFn, xs: Array) -> Array:
  """Evaluates ``f`` on each sample along the leading axis of ``xs`` (vmapped); checks ``f`` is scalar."""
  if not callable(f):
    raise TypeError(f"`f` must be a callable mapping one sample to a scalar; got {type(f).__name__}.")
  out_shape = jax.eval_shape(f, jax.ShapeDtypeStruct(xs.shape[1:], xs.dtype))
  if not hasattr(out_shape, "shape") or out_shape.shape != ():
    got = getattr(out_shape, "shape", type(out_shape).__name__)
    raise ValueError(
        f"`f` must return a scalar for one sample; for a sample of shape {tuple(xs.shape[1:])} it returned "
        f"{got}. Reduce the output (for example with jnp.sum) inside f.")
  if jnp.issubdtype(out_shape.dtype, jnp.complexfloating):
    raise TypeError(f"`f` must return a real scalar; it returned dtype {out_shape.dtype}.")
  values = jax.vmap(f)(xs)
  if not jnp.issubdtype(values.dtype, jnp.floating):
    values = values.astype(jnp.result_type(float))
  return values


def evaluate_batched(f: CostFn, xs: Array, batch_ndim: int) -> Array:
  """Evaluates ``f`` on samples stacked along the first ``batch_ndim`` axes of ``xs``."""
  lead = xs.shape[:batch_ndim]
  flat = jnp.reshape(xs, (math.prod(lead),) + xs.shape[batch_ndim:])
  return jnp.reshape(evaluate(f, flat), lead)


def linear_surrogate(params: Params, grads: Params) -> Array:
  """``sum(stop_gradient(g) * (p - stop_gradient(p)))``: zero in value, gradient ``g`` with respect to params."""
  terms = jax.tree.map(
      lambda p, g: jnp.sum(jax.lax.stop_gradient(g) * (p - jax.lax.stop_gradient(p))), params, grads)
  return sum(jax.tree.leaves(terms), jnp.zeros(()))


def magic_box(x: Array) -> Array:
  """DiCE's magic box ``exp(x - stop_gradient(x))``: 1 in value, ``d box(x) = box(x) dx``."""
  return jnp.exp(x - jax.lax.stop_gradient(x))


# ----------------------------------------------------------------------------------------------------------
# The two public entry points.
# ----------------------------------------------------------------------------------------------------------


def _prepare(estimator, f, dist_builder, params, key, num_samples, state):
  check_estimator(estimator)
  if not callable(f):
    raise TypeError(f"`f` must be a callable mapping one sample to a scalar; got {type(f).__name__}.")
  check_params(params)
  check_key(key)
  num_samples = check_num_samples(num_samples, estimator)
  if state is None:
    state = estimator.init(params)
  return num_samples, state


def expectation(
    estimator: Estimator,
    f: CostFn,
    dist_builder: DistBuilder,
    params: Params,
    key: PRNGKey,
    *,
    num_samples: int,
    state: State = None,
) -> tuple[Array, State]:
  r"""A differentiable Monte Carlo estimate of ``E_{x ~ dist_builder(params)}[f(x)]``.

  The returned scalar's value is the Monte Carlo estimate of the expectation and ``jax.grad`` of it with
  respect to ``params`` is ``estimator``'s gradient estimate (the same numbers :func:`value_and_grad` returns
  for the same key). Gradients with respect to anything ``f`` closes over (a decoder, a critic) are the
  ordinary gradients of the Monte Carlo average, so the result can be used as a term of any JAX loss.

  Args:
    estimator: an :class:`Estimator`, e.g. ``sfe.score_function()``.
    f: a function of ONE sample (shape ``batch_shape + event_shape``) returning a real scalar.
    dist_builder: maps ``params`` to a distribution with ``sample(seed=, sample_shape=)`` and ``log_prob``.
    params: a pytree of floating-point arrays.
    key: a JAX PRNG key (``jax.random.key(0)``); never an integer seed.
    num_samples: the number of samples, a static Python int (see each estimator for its cost in
      evaluations of ``f``).
    state: the estimator's state; ``None`` means ``estimator.init(params)``.

  Returns:
    ``(surrogate, new_state)``: a scalar and the updated estimator state.

  Examples:
    >>> import jax, jax.numpy as jnp, distrax, sfe_jax as sfe
    >>> params = {"loc": jnp.zeros(2), "scale": jnp.ones(2)}
    >>> dist_builder = lambda p: distrax.Normal(p["loc"], p["scale"])
    >>> f = lambda x: jnp.sum(x ** 2)
    >>> loss = lambda p: sfe.expectation(sfe.pathwise(), f, dist_builder, p, jax.random.key(0),
    ...                                  num_samples=100)[0]
    >>> jax.tree.map(jnp.shape, jax.grad(loss)(params))
    {'loc': (2,), 'scale': (2,)}
  """
  num_samples, state = _prepare(estimator, f, dist_builder, params, key, num_samples, state)
  return estimator.surrogate(f, dist_builder, params, key, num_samples, state)


def value_and_grad(
    estimator: Estimator,
    f: CostFn,
    dist_builder: DistBuilder,
    params: Params,
    key: PRNGKey,
    *,
    num_samples: int,
    state: State = None,
) -> tuple[Array, Params, State]:
  r"""The Monte Carlo estimate of ``E[f(x)]`` and ``estimator``'s estimate of its gradient.

  ``value`` estimates :math:`F(\theta) = E_{x \sim p_\theta}[f(x)]` and ``grads`` estimates
  :math:`\nabla_\theta F(\theta)`, with the structure of ``params``. Arguments are those of
  :func:`expectation`; this is ``jax.value_and_grad`` of its surrogate.

  Returns:
    ``(value, grads, new_state)``.

  Examples:
    >>> import jax, jax.numpy as jnp, distrax, sfe_jax as sfe
    >>> params = {"loc": jnp.zeros(3), "scale": jnp.ones(3)}
    >>> dist_builder = lambda p: distrax.Normal(p["loc"], p["scale"])
    >>> f = lambda x: jnp.sum((x - 0.5) ** 2)
    >>> est = sfe.score_function(baseline=sfe.baselines.leave_one_out())
    >>> value, grads, state = sfe.value_and_grad(est, f, dist_builder, params, jax.random.key(0),
    ...                                          num_samples=1000)
    >>> grads["loc"].shape
    (3,)
  """
  num_samples, state = _prepare(estimator, f, dist_builder, params, key, num_samples, state)

  def surrogate(p):
    return estimator.surrogate(f, dist_builder, p, key, num_samples, state)

  (value, new_state), grads = jax.value_and_grad(surrogate, has_aux=True)(params)
  return value, grads, new_state
