"""Chunked estimation: ``num_samples`` drawn, evaluated and differentiated ``chunk_size`` at a time.

With ``chunk_size=c < num_samples = n``, the estimate is the weighted mean of ``m = n // c`` chunk estimates of
``c`` samples and, when ``r = n - m c > 0``, one of ``r`` samples:

.. math::  \\hat F = \\frac{c}{n} \\sum_{j=1}^{m} \\hat F_j(c) + \\frac{r}{n} \\hat F_{m+1}(r),

each chunk a call of the estimator's surrogate with its own key (``jax.random.split(key, chunks)``), run one
after another by ``lax.scan``. :func:`sfe_jax.value_and_grad` computes each chunk's value and gradient in one
pass and sums them; :func:`sfe_jax.expectation` runs each chunk under ``jax.checkpoint``, so that reverse mode
keeps only each chunk's key and recomputes the chunk on the way back. Either way peak memory is that of one
chunk whatever ``n`` is, for the value and for gradients in ``params`` and in what ``f`` closes over, at every
derivative order the estimator allows.

What chunking means depends on how an estimator's samples are coupled (:attr:`Estimator.chunking`):

* ``"independent"``: the samples (or groups, such as antithetic pairs) are independent and the estimate is
  their mean; the chunked estimate has the unchunked one's mean and variance. The draws differ: a chunk's
  samples come from its own key, so only ``chunk_size >= num_samples`` (one chunk, the original key) gives
  the unchunked numbers bit for bit.
* ``"per_chunk"``: statistics computed from the samples themselves (a leave-one-out or optimal baseline,
  control-variate coefficients) are computed within each chunk. The estimate stays unbiased; its variance is
  that of the estimator at ``chunk_size`` samples divided by the number of chunks, slightly above the
  unchunked variance when chunks are small.
* ``"none"``: the estimator refuses ``chunk_size`` (unordered sets, enumeration, stateful estimators and any
  estimator that does not declare otherwise).

A stateful estimator (a moving-average baseline, REBAR/RELAX) refuses ``chunk_size``: its state update is
defined on the whole sample.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from sfe_jax._src.core import checks, samplers
from sfe_jax._src.core.types import (
  Array,
  CostFn,
  DistBuilder,
  Estimator,
  Objective,
  Params,
  PRNGKey,
  SampleCount,
  State,
)

CHUNKING = ("independent", "per_chunk", "none")


def check_chunk_size(
  computation: Any, chunk_size: Any, num_samples: int, count: SampleCount, state: State
) -> int | None:
  """The chunk size to run with: ``None`` (one chunk, the unchunked computation) or an int below ``num_samples``.

  Raises a clear error where ``computation`` refuses chunking or ``chunk_size`` (or the last, smaller chunk)
  is not a sample count it accepts.
  """
  if chunk_size is None:
    return None
  name = computation.name
  chunk_size = checks.check_static_int(chunk_size, "chunk_size", 1)
  chunking = getattr(computation, "chunking", "none")
  if chunking not in CHUNKING:
    raise ValueError(f"{name} has chunking={chunking!r}; an Estimator's chunking must be one of {CHUNKING}.")
  if chunking == "none":
    raise ValueError(
      f"{name} does not support `chunk_size`: its estimate is defined on the whole set of samples at once "
      "(see the README's section on chunked estimation for the estimators that do). Leave chunk_size=None."
    )
  if jax.tree.leaves(state):
    raise ValueError(
      f"{name} carries state, whose update is defined on the whole sample, so it does not support "
      "`chunk_size`. Use a stateless estimator (e.g. the leave-one-out baseline instead of a moving average) "
      "or leave chunk_size=None."
    )
  if chunk_size >= num_samples:
    return None

  def refuse(rule: str, size: int) -> None:
    raise ValueError(
      f"{rule} for {name}{count.reason}; got {size} (num_samples={num_samples}, chunk_size={chunk_size})."
    )

  if chunk_size < count.minimum:
    refuse(f"`chunk_size` must be at least {count.minimum}", chunk_size)
  if chunk_size % count.multiple:  # otherwise the last chunk, num_samples % chunk_size, is a multiple too
    refuse(f"`chunk_size` must be a multiple of {count.multiple}", chunk_size)
  rest = num_samples % chunk_size
  if 0 < rest < count.minimum:
    refuse(f"the last chunk (num_samples % chunk_size) must be at least {count.minimum}", rest)
  return chunk_size


def in_chunks(fn: Callable[[PRNGKey, int, Array], Any], key: PRNGKey, num_samples: int, chunk_size: int) -> Any:
  """``sum_j (n_j / num_samples) fn(key_j, n_j, offset_j)`` over the chunks: ``num_samples // chunk_size``
  chunks of ``chunk_size`` run by ``lax.scan`` and, if there is a remainder, one smaller chunk; ``offset_j`` (a
  traced uint32) is the index of the chunk's first sample, which ``fn`` passes to :func:`samplers.block` (RQMC
  chunks are blocks of one sequence). ``fn`` returns a pytree of arrays (a value, or a value and gradients).
  """
  num_full, rest = divmod(num_samples, chunk_size)
  keys = jax.random.split(key, num_full + (1 if rest else 0))
  offsets = jnp.arange(num_full + (1 if rest else 0), dtype=jnp.uint32) * jnp.uint32(chunk_size)

  def step(total: Any, chunk: tuple[PRNGKey, Array]) -> tuple[Any, None]:
    k, offset = chunk
    return jax.tree.map(jnp.add, total, fn(k, chunk_size, offset)), None

  shapes = jax.eval_shape(lambda k, o: fn(k, chunk_size, o), keys[0], offsets[0])
  zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
  total, _ = jax.lax.scan(step, zeros, (keys[:num_full], offsets[:num_full]))
  total = jax.tree.map(lambda t: t * jnp.asarray(chunk_size / num_samples, t.dtype), total)
  if rest:
    last = fn(keys[num_full], rest, offsets[num_full])
    total = jax.tree.map(lambda t, x: t + x * jnp.asarray(rest / num_samples, x.dtype), total, last)
  return total


def surrogate_in_chunks(
  computation: Estimator | Objective,
  f: CostFn,
  dist_builder: DistBuilder,
  params: Params,
  key: PRNGKey,
  num_samples: int,
  state: State,
  chunk_size: int,
) -> tuple[Array, State]:
  """The surrogate over ``num_samples`` samples, ``chunk_size`` at a time, for :func:`sfe_jax.expectation`.

  Each chunk runs under ``jax.checkpoint``: differentiating the result (to any order) keeps one chunk's key
  and recomputes the chunk, so memory stays that of one chunk whatever derivative the caller takes.
  """

  @functools.partial(jax.checkpoint, static_argnums=(1,))
  def chunk(k: PRNGKey, size: int, offset: Array) -> Array:
    with samplers.block(offset):
      value, _ = computation.surrogate(f, dist_builder, params, k, size, state)
    return value

  return in_chunks(chunk, key, num_samples, chunk_size), state
