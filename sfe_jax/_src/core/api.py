"""The entry points: :func:`expectation` and :func:`value_and_grad`.

:func:`prepare` runs every check once, in the order a user would want to hear about them;
:func:`call_surrogate` and :func:`value_and_grad_of` run an :class:`~sfe_jax._src.core.types.Estimator` or an
:class:`~sfe_jax._src.core.types.Objective` (the objectives' own entry points in :mod:`sfe_jax.objectives` use
them too).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax

from sfe_jax._src.core import checks, chunking, distributions, finite, samplers, sampling
from sfe_jax._src.core.differentiation import ParamsSplit, first_order, stop_gradient
from sfe_jax._src.core.types import Array, CostFn, DistBuilder, Estimator, Objective, Params, PRNGKey, State


class Prepared(NamedTuple):
  split: ParamsSplit
  diff: list[Any]
  num_samples: int
  state: State
  invalid: Array  # NaN in params or an out-of-domain distribution parameter (finite.py): a boolean scalar
  chunk_size: int | None = None  # None: one chunk (chunking.py)
  sample_sharding: Any = None  # a NamedSharding of the sample axis, or None (sampling.sample_sharding)
  sampler: str = "iid"  # how the base randomness is drawn (samplers.py)


def prepare(
  computation: Estimator | Objective,
  f: Any,
  dist_builder: Any,
  params: Params,
  key: Any,
  num_samples: Any,
  state: State,
  max_memory: Any = None,
  chunk_size: Any = None,
  sample_sharding: Any = None,
  sampler: Any = "iid",
) -> Prepared:
  """All the checks of an entry point, at trace time, in the order a user would want to hear about them."""
  if not callable(f):
    raise TypeError(f"`f` must be a callable mapping one sample to a scalar; got {type(f).__name__}.")
  split, diff = checks.check_params(params)
  checks.check_key(key)
  dist = checks.build_distribution(dist_builder, stop_gradient(params), probe=True)
  count = computation.sample_count(dist)
  num_samples = checks.check_num_samples(num_samples, count, computation.name)
  state = checks.check_state(state, computation.init, split, diff, computation.name)
  chunk_size = chunking.check_chunk_size(computation, chunk_size, num_samples, count, state)
  sample_sharding = checks.check_sample_sharding(sample_sharding, num_samples, chunk_size)
  shards = 1 if sample_sharding is None else sampling.num_shards(sample_sharding)
  checks.check_memory(dist, num_samples, max_memory, computation.name, chunk_size, shards)
  sampler = samplers.check_sampler(computation, sampler, num_samples)
  invalid = finite.any_nan(diff) | distributions.out_of_domain(dist)
  return Prepared(split, diff, num_samples, state, invalid, chunk_size, sample_sharding, sampler)


def call_surrogate(
  computation: Estimator | Objective,
  f: CostFn,
  dist_builder: DistBuilder,
  params: Params,
  key: PRNGKey,
  num_samples: int,
  state: State,
  invalid: Array,
  chunk_size: int | None = None,
  sample_sharding: Any = None,
) -> tuple[Array, State]:
  """``computation.surrogate`` under the library's rules (:mod:`sfe_jax._src.core.finite`).

  float16/bfloat16 params are computed in float32; ``invalid`` (:attr:`Prepared.invalid`: NaN in params or an
  out-of-domain parameter of the distribution) makes the value and every derivative NaN; first-order
  computations get the derivative-order guard; ``chunk_size`` (checked by :func:`prepare`) runs the surrogate
  in chunks (:mod:`sfe_jax._src.core.chunking`).
  """
  params = finite.upcast(params)
  known_good = not isinstance(invalid, jax.core.Tracer) and not bool(invalid)  # eager and valid: no poison
  if not known_good:
    params = finite.poison_derivatives(params, invalid)
  if computation.max_order == 1:
    params = first_order(params, computation.name)
  with sampling.sample_sharding(sample_sharding):
    if chunk_size is None:
      value, new_state = computation.surrogate(f, dist_builder, params, key, num_samples, state)
    else:
      value, new_state = chunking.surrogate_in_chunks(
        computation, f, dist_builder, params, key, num_samples, state, chunk_size
      )
  return (value if known_good else finite.poison(value, invalid)), new_state


def value_and_grad_of(
  computation: Estimator | Objective,
  f: CostFn,
  dist_builder: DistBuilder,
  params: Params,
  key: PRNGKey,
  num_samples: Any,
  state: State,
  max_memory: Any = None,
  chunk_size: Any = None,
  sample_sharding: Any = None,
  sampler: Any = "iid",
) -> tuple[Array, Params, State]:
  """``jax.value_and_grad`` of the surrogate in the differentiable leaves of ``params``."""
  prepared = prepare(
    computation, f, dist_builder, params, key, num_samples, state, max_memory, chunk_size, sample_sharding, sampler
  )
  with samplers.drawing(prepared.sampler, key, computation.name):
    return _value_and_grad(computation, f, dist_builder, key, prepared)


def _value_and_grad(
  computation: Estimator | Objective, f: CostFn, dist_builder: DistBuilder, key: PRNGKey, prepared: Prepared
) -> tuple[Array, Params, State]:
  split = prepared.split

  def surrogate(diff):
    return call_surrogate(
      computation,
      f,
      dist_builder,
      split.merge(diff),
      key,
      prepared.num_samples,
      prepared.state,
      prepared.invalid,
      None,
      prepared.sample_sharding,
    )

  if prepared.chunk_size is None:
    (value, new_state), grads = jax.value_and_grad(surrogate, has_aux=True)(prepared.diff)
    return value, split.grads(grads), new_state

  # In chunks: each chunk's value and gradient in one pass (no recomputation), summed by chunking.in_chunks in
  # float32 for float16/bfloat16 params (a low-precision running sum would stall), cast back at the end. The
  # checkpoint costs nothing unless the caller differentiates the result, and then keeps memory per chunk.
  wide = finite.upcast(prepared.diff)

  @functools.partial(jax.checkpoint, static_argnums=(1,))
  def chunk(k, size, offset):
    def chunk_surrogate(diff):
      params = split.merge(diff)
      return call_surrogate(
        computation, f, dist_builder, params, k, size, prepared.state, prepared.invalid, None, prepared.sample_sharding
      )[0]

    with samplers.block(offset):  # RQMC: this chunk's block of the one scrambled sequence
      return jax.value_and_grad(chunk_surrogate)(wide)

  value, grads = chunking.in_chunks(chunk, key, prepared.num_samples, prepared.chunk_size)
  grads = [g.astype(d.dtype) for g, d in zip(grads, prepared.diff)]
  return value, split.grads(grads), prepared.state


def expectation(
  estimator: Estimator,
  f: CostFn,
  dist_builder: DistBuilder,
  params: Params,
  key: PRNGKey,
  *,
  num_samples: int | None = None,
  state: State = None,
  max_memory: int | None = None,
  chunk_size: int | None = None,
  sample_sharding: jax.sharding.NamedSharding | None = None,
  sampler: str = "iid",
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
    max_memory: the most working memory, in bytes, an estimate may need; ``None`` means the memory of JAX's
      default device. The need is estimated at trace time as 8 x ``num_samples`` x the bytes of one sample
      (the score function's measured peak; ``f``'s own intermediates come on top), and a larger one is refused
      with a ``ValueError`` rather than left to run out of memory. With ``chunk_size``, one chunk's need.
    chunk_size: ``None`` (all samples at once) or a static Python int: draw, evaluate and differentiate the
      samples this many at a time (``lax.scan`` under ``jax.checkpoint``), so that peak memory is that of one
      chunk whatever ``num_samples`` is; the last chunk takes the remainder. For estimators whose samples are
      independent (``estimator.chunking == "independent"``) the estimate keeps the unchunked mean and
      variance; for ``"per_chunk"`` ones (leave-one-out and optimal baselines, estimated control-variate
      coefficients) those statistics come from each chunk. Each chunk draws from its own key
      (``jax.random.split(key, num_chunks)``), so the numbers differ from the unchunked call's unless
      ``chunk_size >= num_samples``. Stateful estimators and those with ``chunking == "none"`` refuse it.
    sample_sharding: ``None`` or a ``jax.sharding.NamedSharding`` that splits the leading (sample) axis, e.g.
      ``NamedSharding(mesh, P("samples"))``: under ``jax.jit``, the samples and the evaluations of ``f`` are
      constrained to it, so sampling, ``f`` and the reduction run across the mesh's devices while params stay
      replicated. The result is the full-sample estimate (the same numbers as on one device for the same key,
      up to the order of the final sum), and gradients in replicated params come out once. With
      ``chunk_size``, each chunk is sharded. ``num_samples`` (or ``chunk_size``, and the last chunk) must be
      a multiple of the number of devices on the sample axis; ``max_memory`` is checked per device.
    sampler: how the base randomness is drawn: ``"iid"`` (the distribution's own sampler), ``"antithetic"``
      (pairs ``u, 1 - u``: ``x`` and its reflection about the location), ``"stratified"`` (a Latin hypercube)
      or ``"rqmc"`` (scrambled Sobol points, randomized by ``key``), mapped by the distribution's quantile
      function. Every point is marginally exact, so estimators that average independent per-sample terms
      (``estimator.chunking == "independent"``) stay unbiased; the others refuse anything but ``"iid"``, as do
      distributions without a quantile function or location-scale form. See the README's section on samplers
      for when each helps (and when antithetic hurts).

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
  checks.check_estimator(estimator)
  prepared = prepare(
    estimator, f, dist_builder, params, key, num_samples, state, max_memory, chunk_size, sample_sharding, sampler
  )
  with samplers.drawing(prepared.sampler, key, estimator.name):
    return call_surrogate(
      estimator,
      f,
      dist_builder,
      params,
      key,
      prepared.num_samples,
      prepared.state,
      prepared.invalid,
      prepared.chunk_size,
      prepared.sample_sharding,
    )


def value_and_grad(
  estimator: Estimator,
  f: CostFn,
  dist_builder: DistBuilder,
  params: Params,
  key: PRNGKey,
  *,
  num_samples: int | None = None,
  state: State = None,
  max_memory: int | None = None,
  chunk_size: int | None = None,
  sample_sharding: jax.sharding.NamedSharding | None = None,
  sampler: str = "iid",
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
  checks.check_estimator(estimator)
  return value_and_grad_of(
    estimator, f, dist_builder, params, key, num_samples, state, max_memory, chunk_size, sample_sharding, sampler
  )
