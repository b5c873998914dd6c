"""Sampling a distribution and evaluating the user's ``f`` on the samples, the same way for every estimator."""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from sfe_jax._src.core import distributions, samplers
from sfe_jax._src.core.differentiation import HigherOrderError
from sfe_jax._src.core.types import Array, CostFn, PRNGKey

# The sharding of the sample axis, set by the entry points while they trace an estimator (``sample_sharding=``).
_SAMPLE_SHARDING: contextvars.ContextVar[Any] = contextvars.ContextVar("sample_sharding", default=None)


@contextlib.contextmanager
def sample_sharding(sharding: Any) -> Iterator[None]:
  """While tracing under this context, :func:`evaluate` shards the leading (sample) axis with ``sharding``."""
  token = _SAMPLE_SHARDING.set(sharding)
  try:
    yield
  finally:
    _SAMPLE_SHARDING.reset(token)


def num_shards(sharding: Any) -> int:
  """The number of devices the leading axis is split over by a ``NamedSharding`` such as ``P("samples")``."""
  axes = sharding.spec[0] if len(sharding.spec) else None
  if axes is None:
    return 1
  names = axes if isinstance(axes, tuple) else (axes,)
  return math.prod(sharding.mesh.shape[name] for name in names)


def _constrain(xs: Array) -> Array:
  """``xs`` with its leading axis sharded as the current :func:`sample_sharding` says (when it divides)."""
  sharding = _SAMPLE_SHARDING.get()
  if sharding is None or xs.ndim == 0 or xs.shape[0] % num_shards(sharding):
    return xs
  return jax.lax.with_sharding_constraint(xs, sharding)


def sample(dist: Any, key: PRNGKey, num_samples: int) -> Array:
  """Draws ``num_samples`` joint samples; the result has shape ``(num_samples, *batch_shape, *event_shape)``.

  Under a sampler other than ``"iid"`` (:mod:`sfe_jax._src.core.samplers`) the samples are its points mapped by
  the distribution's quantile function; otherwise they are the distribution's own.
  """
  if samplers.active():
    return samplers.sample(dist, key, num_samples)
  return distributions.sample(dist, key, num_samples)


class Draw(NamedTuple):
  """Samples for ``f``, and the points at which :func:`joint_log_prob` evaluates their log-probabilities.

  The points are the samples themselves, except for a tanh- or sigmoid-squashed distribution
  (:func:`~sfe_jax._src.core.distributions.squashed`), where they are the pre-images of the samples.
  """

  samples: Array
  points: Array


def draw(dist: Any, key: PRNGKey, num_samples: int) -> Draw:
  """``num_samples`` joint samples of ``dist`` (differentiable where its sampler is) and their log-prob points."""
  squashed = distributions.squashed(dist)
  if squashed is None:
    xs = sample(dist, key, num_samples)
    return Draw(xs, xs)
  pre = sample(squashed.base, key, num_samples)
  return Draw(squashed.forward(pre), pre)


def joint_log_prob(dist: Any, points: Array) -> Array:
  """``log p(x)`` of each joint sample, summed over batch and event dimensions: shape ``(num_samples,)``.

  ``points`` come from :func:`draw` on a distribution of the same form (``dist_builder`` at other parameter
  values): the samples, or for a squashed distribution their pre-images ``x``, where
  ``log p(g(x)) = log p_base(x) - log |g'(x)|`` is finite even when ``g(x)`` rounds to the squash's bound.

  ``log_prob`` is called on the stacked samples, the very array ``sample`` returned: TFP's bijectors cache the
  pre-image of their samples, and only that array hits the cache. Broadcasting the sample axis against the
  parameters is the distribution library's own business, so it runs with rank promotion allowed even when the
  user's JAX raises on it.
  """
  per_sample = lambda x: jnp.reshape(x, (points.shape[0], -1)).sum(axis=1)
  squashed = distributions.squashed(dist)
  diag = distributions.gaussian_diag(dist) if squashed is None else None
  if diag is not None:
    return _gaussian_diag_log_prob(diag, points)
  with jax.numpy_rank_promotion("allow"):
    if squashed is None:
      return per_sample(dist.log_prob(points))
    return per_sample(squashed.base.log_prob(points)) - per_sample(squashed.log_det(points))


def _gaussian_diag_log_prob(diag: distributions.GaussianDiag, points: Array) -> Array:
  r"""The joint log-density of a Gaussian with independent coordinates, its per-sample work kept to the samples:

  .. math::
     \log p(x) = -\tfrac12 \sum_j \Big(\frac{x_j - \mu_j}{\sigma_j}\Big)^2 - \sum_j \log \sigma_j
     - \tfrac{D}{2} \log 2\pi.

  The same function as the libraries' ``log_prob`` summed over coordinates (so every derivative is the same),
  but the normalizer is summed once instead of once per sample: the score function's gradient at D = 100,
  N = 1e4 took 21 ms through ``distrax.Normal.log_prob`` and 12 ms this way (2 CPU cores).
  """
  shape = points.shape[1:]
  z = (points - diag.loc[None]) / diag.scale[None]
  normalizer = jnp.sum(jnp.log(diag.scale)) + 0.5 * math.log(2.0 * math.pi) * math.prod(shape)
  return -0.5 * jnp.sum(jnp.reshape(jnp.square(z), (points.shape[0], -1)), axis=1) - normalizer


def call_error(error: Exception, what: str, arg: Any) -> Exception:
  """An error saying that the user's function ``what`` failed on an argument like ``arg`` (shape, dtype)."""
  cls = TypeError if isinstance(error, TypeError) else IndexError if isinstance(error, IndexError) else ValueError
  described = (
    f"one sample of shape {tuple(arg.shape)} and dtype {arg.dtype}"
    if hasattr(arg, "shape")
    else f"{type(arg).__name__}"
  )
  return cls(
    f"{what} raised {type(error).__name__} when called with {described} (the library vmaps it over the "
    f"samples, so it never sees a sample axis): {error}"
  )


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
      f"{got}. Reduce the output (for example with jnp.sum) inside f."
    )
  if jnp.issubdtype(out_shape.dtype, jnp.complexfloating):
    raise TypeError(f"{what} must return a real scalar; it returned dtype {out_shape.dtype}.")
  xs = _constrain(xs)
  try:
    values = jax.vmap(f)(xs)
  except HigherOrderError:
    raise
  except Exception as e:
    raise call_error(e, what, one) from e
  values = _constrain(values)
  if not jnp.issubdtype(values.dtype, jnp.floating):
    values = values.astype(jnp.result_type(float))
  return values


def evaluate_batched(f: CostFn, xs: Array, batch_ndim: int) -> Array:
  """Evaluates ``f`` on samples stacked along the first ``batch_ndim`` axes of ``xs``."""
  lead = xs.shape[:batch_ndim]
  flat = jnp.reshape(xs, (math.prod(lead),) + xs.shape[batch_ndim:])
  return jnp.reshape(evaluate(f, flat), lead)
