"""The estimator interface and the machinery every estimator shares.

An estimator is an :class:`Estimator`: a NamedTuple of pure functions and static facts,

* ``init(params) -> state``, and
* ``surrogate(f, dist_builder, params, key, num_samples, state) -> (surrogate, state)``,

where ``surrogate`` is a scalar whose *value* is the Monte Carlo estimate of ``E_{x ~ p_params}[f(x)]`` and
whose ``jax.grad`` with respect to ``params`` is the estimator's gradient estimate. Everything else
(:func:`value_and_grad`, :func:`expectation`, jit, vmap, higher derivatives) follows from that one function.
An :class:`Objective` (the multi-sample bounds of :mod:`sfe_jax.objectives`) has the same shape but a different
meaning (its value is not ``E[f]``), and is a different type so that nothing can mistake one for the other.

This module also holds what every estimator shares, so that each one validates its input and evaluates ``f``
in exactly the same way: the checks (key, params, ``num_samples``, state), the split of ``params`` into the
leaves that are differentiated and those passed through, the guard that refuses a second derivative of a
first-order estimator, and the sampling and evaluation helpers.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sfe_jax._src import distributions

Array = jax.Array
PRNGKey = jax.Array
Params = Any
State = Any
CostFn = Callable[[Array], Array]
DistBuilder = Callable[[Params], Any]


class HigherOrderError(TypeError):
  """Raised at trace time when a first-order estimator is differentiated a second time in its parameters."""


class EmptyState(NamedTuple):
  """The state of a stateless estimator or baseline."""


class SampleCount(NamedTuple):
  """What ``num_samples`` may be for one estimator and one distribution.

  ``num_samples`` always counts evaluations of ``f``; an estimator that evaluates ``f`` in groups (an
  antithetic pair, the ``4 D`` evaluations of one measure-valued base sample) needs a multiple of the group.

  Attributes:
    multiple: ``num_samples`` must be a multiple of this (the evaluations of ``f`` per group).
    minimum: the smallest ``num_samples`` accepted.
    maximum: the largest, or ``None``.
    default: the count used when ``num_samples`` is ``None`` (exhaustive estimators), or ``None`` if
      ``num_samples`` is required.
    reason: why the constraint exists, appended to the error message (starts with a space or is empty).
  """

  multiple: int = 1
  minimum: int = 1
  maximum: int | None = None
  default: int | None = None
  reason: str = ""

  @property
  def smallest(self) -> int:
    """The smallest valid count: ``minimum`` rounded up to a multiple of ``multiple``."""
    return -(-self.minimum // self.multiple) * self.multiple


def any_count(dist: Any) -> SampleCount:
  """The sample count of an estimator that evaluates ``f`` once per independent sample."""
  del dist
  return SampleCount()


def fixed_count(**rule: Any) -> Callable[[Any], SampleCount]:
  """A sample count that does not depend on the distribution, e.g. ``fixed_count(multiple=2, minimum=2)``."""
  count = SampleCount(**rule)
  return lambda dist: count


class Estimator(NamedTuple):
  """A Monte Carlo gradient estimator of ``grad E[f]``.

  Estimators are static: hashable, and pytrees without leaves, so they can be passed through ``jax.jit``
  either as static arguments or as ordinary ones.

  Attributes:
    init: ``init(params) -> state``; the initial state (``EmptyState()`` when stateless).
    surrogate: ``surrogate(f, dist_builder, params, key, num_samples, state) -> (surrogate, new_state)``.
      ``surrogate`` is a scalar whose value is the Monte Carlo estimate of ``E[f(x)]`` and whose gradient
      with respect to ``params`` is the gradient estimate. ``num_samples`` is a Python int, already checked.
      Call it through :func:`expectation` or :func:`value_and_grad`, which check the input and guard the
      derivative order.
    name: the estimator's name, as its constructor is written (``"sfe.disarm()"``), used in errors and reports.
    sample_count: ``sample_count(dist) -> SampleCount``: what ``num_samples`` (evaluations of ``f``) may be.
    max_order: ``None`` if every derivative of the surrogate in ``params`` is an unbiased estimate of the
      same derivative of ``E[f]``; ``1`` if only the first is, in which case a second derivative in
      ``params`` raises :class:`HigherOrderError` at trace time.
  """

  init: Callable[[Params], State]
  surrogate: Callable[..., tuple[Array, State]]
  name: str = "estimator"
  sample_count: Callable[[Any], SampleCount] = any_count
  max_order: int | None = 1


class Objective(NamedTuple):
  """A Monte Carlo objective that is not ``E[f]`` (the K-sample bounds of :mod:`sfe_jax.objectives`).

  The fields are those of :class:`Estimator`, but the function in the ``f`` position and the surrogate's value
  mean something else (a log-joint, and the bound). It is a different type so that estimator combinators
  (control variates) refuse it and diagnostics report its value as what it is.
  """

  init: Callable[[Params], State]
  surrogate: Callable[..., tuple[Array, State]]
  name: str = "objective"
  sample_count: Callable[[Any], SampleCount] = any_count
  max_order: int | None = 1
  value_name: str = "the objective"


jax.tree_util.register_static(Estimator)
jax.tree_util.register_static(Objective)


def empty_init(params: Params) -> EmptyState:
  del params
  return EmptyState()


# ----------------------------------------------------------------------------------------------------------
# Params: the floating-point array leaves are differentiated; every other leaf (functions and flags of an
# equinox Module, integer arrays, PRNG keys) is passed through, as equinox's filtered transformations do.
# ----------------------------------------------------------------------------------------------------------


def is_differentiable(leaf: Any) -> bool:
  """Whether a params leaf is differentiated: a JAX or NumPy array with a floating-point dtype."""
  if not isinstance(leaf, (jax.Array, np.ndarray, np.generic)):
    return False
  dtype = leaf.dtype
  return jnp.issubdtype(dtype, jnp.floating) and not jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


class ParamsSplit(NamedTuple):
  """The leaves of a params pytree, split into those differentiated and those passed through."""

  treedef: Any
  mask: tuple[bool, ...]
  static: tuple[Any, ...]

  def merge(self, diff: list[Any]) -> Params:
    """The params pytree with the differentiable leaves ``diff`` (``None`` at the other positions)."""
    leaves = [d if m else s for d, s, m in zip(diff, self.static, self.mask)]
    return self.treedef.unflatten(leaves)

  def grads(self, diff_grads: list[Any]) -> Params:
    """Gradients with the structure of params: ``None`` at the leaves that are not differentiated."""
    return self.treedef.unflatten([g if m else None for g, m in zip(diff_grads, self.mask)])


def split_params(params: Params) -> tuple[ParamsSplit, list[Any]]:
  """``(split, diff)``: ``diff`` lists the leaves of ``params``, ``None`` where a leaf is not differentiated."""
  leaves, treedef = jax.tree.flatten(params)
  mask = tuple(is_differentiable(leaf) for leaf in leaves)
  static = tuple(None if m else leaf for leaf, m in zip(leaves, mask))
  diff = [leaf if m else None for leaf, m in zip(leaves, mask)]
  return ParamsSplit(treedef, mask, static), diff


def stop_gradient(tree: Any) -> Any:
  """``jax.lax.stop_gradient`` on the differentiable leaves of ``tree``; other leaves pass through."""
  return jax.tree.map(lambda x: jax.lax.stop_gradient(x) if is_differentiable(x) else x, tree)


def linear_surrogate(params: Params, grads: Params) -> Array:
  """``sum(g * (p - stop_gradient(p)))``: zero in value, gradient ``g`` with respect to params.

  ``grads`` has the structure of ``params`` (``None`` at leaves that are not differentiated). ``g`` is not
  stop-gradient-ed: it must not depend on ``params`` (samples are), but may depend on what ``f`` closes over,
  so that the mixed derivative in ``params`` and in those is the derivative of the estimate.
  """
  leaves, treedef = jax.tree.flatten(params)
  grad_leaves = treedef.flatten_up_to(grads)
  terms = [jnp.sum(g * (p - jax.lax.stop_gradient(p)))
           for p, g in zip(leaves, grad_leaves) if g is not None and is_differentiable(p)]
  return sum(terms, jnp.zeros(()))


def magic_box(x: Array) -> Array:
  """DiCE's magic box ``exp(x - stop_gradient(x))``: 1 in value, ``d box(x) = box(x) dx``."""
  return jnp.exp(x - jax.lax.stop_gradient(x))


# ----------------------------------------------------------------------------------------------------------
# The derivative-order guard. ``first_order(params, name)`` is ``params`` in value and in its first
# derivative; a second derivative with respect to the same params (jax.hessian, grad of grad, jacfwd of grad,
# in any order of forward and reverse mode) raises HigherOrderError while the outer transformation traces.
# Mixed derivatives in params and in what f closes over stay available, since they differentiate params once.
# ----------------------------------------------------------------------------------------------------------

HIGHER_ORDER_ESTIMATORS = (
    "sfe.score_function() (with any baseline), sfe.pathwise(), sfe.enumerate(), sfe.with_control_variate() of "
    "these, and the objective sfe.objectives.iwae()")


def _higher_order_message(name: str) -> str:
  return (
      f"{name} gives first-order gradients only, and it was differentiated a second time with respect to the "
      "distribution's parameters (jax.hessian, jax.grad of jax.grad, jax.jacfwd of jax.grad, ...): its second "
      "derivative would not be an estimate of the Hessian. Estimators whose every derivative is unbiased: "
      f"{HIGHER_ORDER_ESTIMATORS}. Derivatives with respect to what f closes over, and mixed ones (once in "
      "the parameters), are allowed.")


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _one(x: Array, name: str) -> Array:
  del name
  return jnp.ones_like(x)


@_one.defjvp
def _one_jvp(name, primals, tangents):
  del primals, tangents
  raise HigherOrderError(_higher_order_message(name))


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _first_order_leaf(x: Array, name: str) -> Array:
  del name
  return x


@_first_order_leaf.defjvp
def _first_order_leaf_jvp(name, primals, tangents):
  (x,), (t,) = primals, tangents
  # The tangent is t times a one whose own derivative raises: differentiating this rule, which is what a
  # second derivative in x does, calls _one_jvp.
  return x, t * _one(x, name)


def first_order(params: Params, name: str) -> Params:
  """``params``, differentiable once: a second derivative in them raises :class:`HigherOrderError`."""
  return jax.tree.map(lambda x: _first_order_leaf(x, name) if is_differentiable(x) else x, params)


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


def check_num_samples(num_samples: Any, count: SampleCount, name: str) -> int:
  """Checks ``num_samples`` (evaluations of ``f``) against ``count``; returns it as an int.

  This is the one place where every sample count of the library is validated.
  """
  if num_samples is None:
    if count.default is None:
      raise TypeError(
          f"`num_samples` is required for {name}: pass the number of evaluations of f as a static Python int.")
    return count.default
  who = f" for {name}{count.reason}"
  if count.maximum is not None and count.minimum == count.maximum:
    num_samples = check_static_int(num_samples, "num_samples", 1)
    if num_samples != count.minimum:
      raise ValueError(f"`num_samples` must be {count.minimum} (or None){who}; got {num_samples}.")
    return num_samples
  num_samples = check_static_int(num_samples, "num_samples", count.minimum, who)
  if count.maximum is not None and num_samples > count.maximum:
    raise ValueError(f"`num_samples` must be at most {count.maximum}{who}; got {num_samples}.")
  if num_samples % count.multiple:
    raise ValueError(f"`num_samples` must be a multiple of {count.multiple}{who}; got {num_samples}.")
  return num_samples


def check_estimator(estimator: Any) -> None:
  if isinstance(estimator, Objective):
    raise TypeError(
        f"`estimator` is {estimator.name}, a multi-sample objective: its value is {estimator.value_name}, not "
        "an estimate of E[f], and the function it takes is a log-joint. Use "
        "sfe.objectives.value_and_grad(...) or sfe.objectives.surrogate(...); estimator combinators and "
        "baselines do not apply to it.")
  if not isinstance(estimator, Estimator):
    raise TypeError(
        "`estimator` must be an sfe_jax Estimator built by a constructor such as sfe.score_function() or "
        f"sfe.pathwise(); got {type(estimator).__name__}.")


def check_objective(objective: Any) -> None:
  if isinstance(objective, Estimator):
    raise TypeError(
        f"`objective` is {objective.name}, an estimator of E[f]: use sfe.value_and_grad or sfe.expectation. "
        "sfe.objectives takes the multi-sample objectives sfe.objectives.iwae(), dreg() and vimco().")
  if not isinstance(objective, Objective):
    raise TypeError(
        "`objective` must be an sfe_jax Objective such as sfe.objectives.iwae(); got "
        f"{type(objective).__name__}.")


def check_params(params: Params) -> tuple[ParamsSplit, list[Any]]:
  """Splits ``params``; raises unless it has at least one floating-point array leaf to differentiate."""
  split, diff = split_params(params)
  if not any(split.mask):
    leaves = jax.tree_util.tree_leaves_with_path(params)
    found = ", ".join(f"params{jax.tree_util.keystr(path)}: {_describe_leaf(leaf)}" for path, leaf in leaves[:4])
    raise TypeError(
        "`params` must hold at least one floating-point array leaf (those are the leaves that are "
        f"differentiated; others are passed through); it has none ({found or 'no leaves'}). Python floats are "
        "not differentiated, as in equinox's filtered transformations: wrap them with jnp.asarray.")
  return split, diff


def _describe_leaf(leaf: Any) -> str:
  if hasattr(leaf, "dtype") and hasattr(leaf, "shape"):
    return f"array of dtype {leaf.dtype}"
  return type(leaf).__name__


def check_state(state: State, init: Callable[[Params], State], split: ParamsSplit, diff: list[Any],
                name: str) -> State:
  """``init(params)`` when ``state`` is ``None``; otherwise checks that ``state`` has its structure and shapes."""
  params = split.merge(diff)
  if state is None:
    return init(params)
  expected = jax.eval_shape(lambda d: init(split.merge(d)), diff)
  expected_def, got_def = jax.tree.structure(expected), jax.tree.structure(state)
  hint = ("Pass the state returned by estimator.init(params) or by the previous call with this estimator, or "
          "state=None.")
  if expected_def != got_def:
    raise TypeError(
        f"`state` does not match {name}: expected the structure of estimator.init(params), {expected_def}; "
        f"got {got_def}. {hint}")
  for (path, want), got in zip(jax.tree_util.tree_leaves_with_path(expected), jax.tree.leaves(state)):
    if not (hasattr(got, "shape") or isinstance(got, (int, float, complex, np.generic))):
      raise TypeError(f"`state`{jax.tree_util.keystr(path)} must be an array; got {type(got).__name__}. {hint}")
    if tuple(jnp.shape(got)) != tuple(want.shape):
      raise TypeError(
          f"`state`{jax.tree_util.keystr(path)} must have shape {tuple(want.shape)} for {name}; got shape "
          f"{tuple(jnp.shape(got))}. {hint}")
  return state


def build_distribution(dist_builder: DistBuilder, params: Params) -> Any:
  """Calls ``dist_builder(params)`` and checks that the result is a distribution."""
  if not callable(dist_builder):
    raise TypeError(f"`dist_builder` must be a callable params -> distribution; got {type(dist_builder).__name__}.")
  try:
    dist = dist_builder(params)
    # distrax checks parameter shapes lazily; ask for the shapes now so a mismatch is reported here.
    getattr(dist, "batch_shape", None)
    getattr(dist, "event_shape", None)
  except HigherOrderError:
    raise
  except Exception as e:  # The user's function failed: say where, keep the cause.
    raise TypeError(
        f"`dist_builder(params)` raised {type(e).__name__}: {e}. `params` must be the pytree that "
        "`dist_builder` expects, with compatible shapes (see the traceback above for the failing line).") from e
  if not (callable(getattr(dist, "sample", None)) and callable(getattr(dist, "log_prob", None))):
    raise TypeError(
        "`dist_builder(params)` must return a distribution with `sample` and `log_prob` (distrax, TFP's JAX "
        f"substrate or numpyro); got {type(dist).__name__}.")
  return dist


# ----------------------------------------------------------------------------------------------------------
# Sampling and evaluation.
# ----------------------------------------------------------------------------------------------------------


def sample(dist: Any, key: PRNGKey, num_samples: int) -> Array:
  """Draws ``num_samples`` joint samples; the result has shape ``(num_samples, *batch_shape, *event_shape)``."""
  return distributions.sample(dist, key, num_samples)


def joint_log_prob(dist: Any, xs: Array) -> Array:
  """``log p(x)`` of each joint sample, summed over batch and event dimensions: shape ``(num_samples,)``."""
  logp = dist.log_prob(xs)
  return jnp.reshape(logp, (xs.shape[0], -1)).sum(axis=1)


def call_error(error: Exception, what: str, arg: Any) -> Exception:
  """An error saying that the user's function ``what`` failed on an argument like ``arg`` (shape, dtype)."""
  cls = TypeError if isinstance(error, TypeError) else IndexError if isinstance(error, IndexError) else ValueError
  described = (f"one sample of shape {tuple(arg.shape)} and dtype {arg.dtype}" if hasattr(arg, "shape")
               else f"{type(arg).__name__}")
  return cls(
      f"{what} raised {type(error).__name__} when called with {described} (the library vmaps it over the "
      f"samples, so it never sees a sample axis): {error}")


def evaluate(f: CostFn, xs: Array, what: str = "`f`") -> Array:
  """Evaluates ``f`` on each sample along the leading axis of ``xs`` (vmapped); checks ``f`` is scalar."""
  if not callable(f):
    raise TypeError(f"{what} must be a callable mapping one sample to a scalar; got {type(f).__name__}.")
  one = jax.ShapeDtypeStruct(xs.shape[1:], xs.dtype)
  try:
    out_shape = jax.eval_shape(f, one)
  except HigherOrderError:
    raise
  except Exception as e:  # The user's function failed on one sample: say on what, keep the cause.
    raise call_error(e, what, one) from e
  if not hasattr(out_shape, "shape") or out_shape.shape != ():
    got = getattr(out_shape, "shape", type(out_shape).__name__)
    raise ValueError(
        f"{what} must return a scalar for one sample; for a sample of shape {tuple(xs.shape[1:])} it returned "
        f"{got}. Reduce the output (for example with jnp.sum) inside f.")
  if jnp.issubdtype(out_shape.dtype, jnp.complexfloating):
    raise TypeError(f"{what} must return a real scalar; it returned dtype {out_shape.dtype}.")
  try:
    values = jax.vmap(f)(xs)
  except HigherOrderError:
    raise
  except Exception as e:
    raise call_error(e, what, one) from e
  if not jnp.issubdtype(values.dtype, jnp.floating):
    values = values.astype(jnp.result_type(float))
  return values


def evaluate_batched(f: CostFn, xs: Array, batch_ndim: int) -> Array:
  """Evaluates ``f`` on samples stacked along the first ``batch_ndim`` axes of ``xs``."""
  lead = xs.shape[:batch_ndim]
  flat = jnp.reshape(xs, (math.prod(lead),) + xs.shape[batch_ndim:])
  return jnp.reshape(evaluate(f, flat), lead)


# ----------------------------------------------------------------------------------------------------------
# The entry points. `prepare` checks everything once; `surrogate` and `value_and_grad_of` run an Estimator or
# an Objective; `expectation` and `value_and_grad` are the public names for estimators.
# ----------------------------------------------------------------------------------------------------------


class Prepared(NamedTuple):
  split: ParamsSplit
  diff: list[Any]
  num_samples: int
  state: State


def prepare(computation: Estimator | Objective, f: Any, dist_builder: Any, params: Params, key: Any,
            num_samples: Any, state: State) -> Prepared:
  """All the checks of an entry point, at trace time, in the order a user would want to hear about them."""
  if not callable(f):
    raise TypeError(f"`f` must be a callable mapping one sample to a scalar; got {type(f).__name__}.")
  split, diff = check_params(params)
  check_key(key)
  dist = build_distribution(dist_builder, stop_gradient(params))
  num_samples = check_num_samples(num_samples, computation.sample_count(dist), computation.name)
  state = check_state(state, computation.init, split, diff, computation.name)
  return Prepared(split, diff, num_samples, state)


def call_surrogate(computation: Estimator | Objective, f: CostFn, dist_builder: DistBuilder, params: Params,
                   key: PRNGKey, num_samples: int, state: State) -> tuple[Array, State]:
  """``computation.surrogate``, with the derivative-order guard on ``params`` for first-order ones."""
  if computation.max_order == 1:
    params = first_order(params, computation.name)
  return computation.surrogate(f, dist_builder, params, key, num_samples, state)


def value_and_grad_of(computation: Estimator | Objective, f: CostFn, dist_builder: DistBuilder, params: Params,
                      key: PRNGKey, num_samples: Any, state: State) -> tuple[Array, Params, State]:
  """``jax.value_and_grad`` of the surrogate in the differentiable leaves of ``params``."""
  prepared = prepare(computation, f, dist_builder, params, key, num_samples, state)
  split = prepared.split

  def surrogate(diff):
    return call_surrogate(computation, f, dist_builder, split.merge(diff), key, prepared.num_samples,
                          prepared.state)

  (value, new_state), grads = jax.value_and_grad(surrogate, has_aux=True)(prepared.diff)
  return value, split.grads(grads), new_state


def expectation(
    estimator: Estimator,
    f: CostFn,
    dist_builder: DistBuilder,
    params: Params,
    key: PRNGKey,
    *,
    num_samples: int | None = None,
    state: State = None,
) -> tuple[Array, State]:
  r"""A differentiable Monte Carlo estimate of ``E_{x ~ dist_builder(params)}[f(x)]``.

  The returned scalar's value is the Monte Carlo estimate of the expectation and ``jax.grad`` of it with
  respect to ``params`` is ``estimator``'s gradient estimate (the same numbers :func:`value_and_grad` returns
  for the same key). Gradients with respect to anything ``f`` closes over (a decoder, a critic) are the
  ordinary gradients of the Monte Carlo average, so the result can be used as a term of any JAX loss.
  Higher derivatives in ``params`` are unbiased estimates for the estimators that allow them (see the
  README's table); the others raise :class:`sfe_jax.HigherOrderError` when differentiated twice.

  Args:
    estimator: an :class:`Estimator`, e.g. ``sfe.score_function()``.
    f: a function of ONE sample (shape ``batch_shape + event_shape``, the distribution's own dtype) returning
      a real scalar.
    dist_builder: maps ``params`` to a distribution (distrax, TFP's JAX substrate or numpyro).
    params: a pytree; its floating-point array leaves are differentiated, every other leaf (functions and
      flags of an equinox Module, integer arrays) is passed through to ``dist_builder`` unchanged.
    key: a JAX PRNG key (``jax.random.key(0)``); never an integer seed.
    num_samples: the number of evaluations of ``f``, a static Python int (a multiple of the group size for
      estimators that evaluate ``f`` in groups); ``None`` only for ``sfe.enumerate()``.
    state: the estimator's state; ``None`` means ``estimator.init(params)``. Checked against the structure
      and shapes of ``estimator.init(params)``.

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
  check_estimator(estimator)
  prepared = prepare(estimator, f, dist_builder, params, key, num_samples, state)
  return call_surrogate(estimator, f, dist_builder, params, key, prepared.num_samples, prepared.state)


def value_and_grad(
    estimator: Estimator,
    f: CostFn,
    dist_builder: DistBuilder,
    params: Params,
    key: PRNGKey,
    *,
    num_samples: int | None = None,
    state: State = None,
) -> tuple[Array, Params, State]:
  r"""The Monte Carlo estimate of ``E[f(x)]`` and ``estimator``'s estimate of its gradient.

  ``value`` estimates :math:`F(\theta) = E_{x \sim p_\theta}[f(x)]` and ``grads`` estimates
  :math:`\nabla_\theta F(\theta)`, with the structure of ``params`` (``None`` at leaves that are not
  floating-point arrays, as ``equinox.filter_grad`` gives). Arguments are those of :func:`expectation`; this is
  ``jax.value_and_grad`` of its surrogate.

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
  check_estimator(estimator)
  return value_and_grad_of(estimator, f, dist_builder, params, key, num_samples, state)
