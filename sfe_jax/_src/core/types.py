"""The types every estimator shares: :class:`Estimator`, :class:`Objective`, their function protocols, and
:class:`SampleCount`.

An estimator is an :class:`Estimator`: a NamedTuple of pure functions and static facts,

* ``init(params) -> state`` (an :class:`InitFn`), and
* ``surrogate(f, dist_builder, params, key, num_samples, state) -> (surrogate, state)`` (a
  :class:`SurrogateFn`),

where ``surrogate`` is a scalar whose *value* is the Monte Carlo estimate of ``E_{x ~ p_params}[f(x)]`` and
whose ``jax.grad`` with respect to ``params`` is the estimator's gradient estimate. Everything else
(``sfe.value_and_grad``, ``sfe.expectation``, jit, vmap, higher derivatives) follows from that one function.
An :class:`Objective` (the multi-sample bounds of :mod:`sfe_jax.objectives`) has the same shape but a different
meaning (its value is not ``E[f]``), and is a different type so that nothing can mistake one for the other.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Protocol, TypeAlias

import jax

Array: TypeAlias = jax.Array
PRNGKey: TypeAlias = jax.Array
Params: TypeAlias = Any
"""A pytree of parameters. Its floating-point array leaves are differentiated; every other leaf (functions and
flags of an equinox Module, integer arrays, PRNG keys) is passed through unchanged."""
State: TypeAlias = Any
"""An estimator's or baseline's state: a pytree of arrays, ``EmptyState()`` when there is none."""
CostFn: TypeAlias = Callable[[Array], Array]
"""``f``: one sample (the distribution's own shape and dtype) to a real scalar."""
DistBuilder: TypeAlias = Callable[[Params], Any]
"""``dist_builder``: params to a distribution (distrax, TFP's JAX substrate or numpyro)."""


class InitFn(Protocol):
  """``init(params) -> state``: the initial state of an estimator or baseline."""

  def __call__(self, params: Params) -> State: ...


class SurrogateFn(Protocol):
  """``surrogate(f, dist_builder, params, key, num_samples, state) -> (surrogate, new_state)``.

  ``surrogate`` is a scalar whose value is the Monte Carlo estimate and whose derivatives in ``params`` are
  the estimator's derivative estimates. ``num_samples`` is a Python int, already checked.
  """

  def __call__(
    self, f: CostFn, dist_builder: DistBuilder, params: Params, key: PRNGKey, num_samples: int, state: State
  ) -> tuple[Array, State]: ...


class SampleCountFn(Protocol):
  """``sample_count(dist) -> SampleCount``: what ``num_samples`` may be for this distribution."""

  def __call__(self, dist: Any) -> SampleCount: ...


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


def fixed_count(**rule: Any) -> SampleCountFn:
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
      Call it through :func:`sfe_jax.expectation` or :func:`sfe_jax.value_and_grad`, which check the input and guard the
      derivative order.
    name: the estimator's name, as its constructor is written (``"sfe.disarm()"``), used in errors and reports.
    sample_count: ``sample_count(dist) -> SampleCount``: what ``num_samples`` (evaluations of ``f``) may be.
    max_order: ``None`` if every derivative of the surrogate in ``params`` is an unbiased estimate of the
      same derivative of ``E[f]``; ``1`` if only the first is, in which case a second derivative in
      ``params`` raises :class:`sfe_jax.HigherOrderError` at trace time.
    chunking: what ``chunk_size`` means for this estimator: ``"independent"`` (independent samples or
      groups: the chunked estimate has the unchunked mean and variance), ``"per_chunk"`` (statistics of the
      samples, such as a leave-one-out baseline, are computed within each chunk: unbiased, variance of the
      estimator at ``chunk_size`` samples over the number of chunks) or ``"none"`` (``chunk_size`` is refused;
      the default, so an estimator written outside the library is never chunked silently).
  """

  init: InitFn
  surrogate: SurrogateFn
  name: str = "estimator"
  sample_count: SampleCountFn = any_count
  max_order: int | None = 1
  chunking: str = "none"


class Objective(NamedTuple):
  """A Monte Carlo objective that is not ``E[f]`` (the K-sample bounds of :mod:`sfe_jax.objectives`).

  The fields are those of :class:`Estimator`, but the function in the ``f`` position and the surrogate's value
  mean something else (a log-joint, and the bound). It is a different type so that estimator combinators
  (control variates) refuse it and diagnostics report its value as what it is.
  """

  init: InitFn
  surrogate: SurrogateFn
  name: str = "objective"
  sample_count: SampleCountFn = any_count
  max_order: int | None = 1
  value_name: str = "the objective"


jax.tree_util.register_static(Estimator)
jax.tree_util.register_static(Objective)


def empty_init(params: Params) -> EmptyState:
  del params
  return EmptyState()
