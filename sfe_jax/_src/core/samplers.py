r"""How the base randomness is drawn: i.i.d., antithetic, stratified (Latin hypercube) or randomized QMC.

Every sampler gives ``N`` points :math:`u_1, \dots, u_N \in (0, 1)^d`, each marginally uniform, mapped to
samples by the distribution's quantile function (its location-scale standard form for the Gaussians). An
estimator that averages per-sample terms (``Estimator.chunking == "independent"``) stays unbiased under any
of them, because the mean of its average only involves the marginal of each point; only the variance changes:

* ``"iid"``: independent uniforms (the default; the distribution's own sampler).
* ``"antithetic"``: pairs :math:`(u, 1 - u)`, i.e. :math:`x` and its reflection :math:`2\mu - x` about the
  location for symmetric location-scale families. The variance of a pair's average is
  :math:`\tfrac12\mathrm{Var}[g](1 + \rho)`, :math:`\rho` the correlation of :math:`g(x)` and :math:`g(2\mu -
  x)`: it helps for integrands that are odd about the location (monotone ones: the pathwise gradient of a
  convex ``f``), is useless for even ones (:math:`\rho = 1`: twice the variance per evaluation).
* ``"stratified"``: a Latin hypercube: in every coordinate, each of the ``N`` strata :math:`[k/N, (k+1)/N)`
  holds exactly one point (McKay, Beckman and Conover 1979). Never worse than i.i.d. by more than a factor
  :math:`N/(N-1)`; removes the additive (one-coordinate) part of the variance.
* ``"rqmc"``: scrambled Sobol points: Joe and Kuo's direction numbers (through scipy, up to
  :data:`MAX_SOBOL_DIMENSION` coordinates), a random linear matrix scramble and a random digital shift drawn
  from the key (Matoušek 1998; Owen 1997), so each point is uniform and the estimate unbiased, while the set
  keeps the net's balance: for smooth integrands the variance decays like :math:`N^{-2}` to :math:`N^{-3}`
  in low dimension instead of :math:`N^{-1}` (Buchholz, Wenzel and Mandt 2018). Best at powers of two.

With ``chunk_size``, RQMC chunks take consecutive blocks of one scrambled sequence (the same scramble, points
``[offset, offset + chunk)``), so chunking does not change the point set; antithetic and stratified chunks are
independent antithetic sets and Latin hypercubes of ``chunk_size`` points. Under ``sample_sharding`` the point
set is that of the unsharded call.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import math
from collections.abc import Callable, Iterator
from typing import Any

import distrax
import jax
import jax.numpy as jnp
import numpy as np
from tensorflow_probability.substrates import jax as tfp

from sfe_jax._src.core import distributions
from sfe_jax._src.core.types import Array, PRNGKey

tfd = tfp.distributions

SAMPLERS = ("iid", "antithetic", "stratified", "rqmc")
MAX_SOBOL_DIMENSION = 21201
"""Joe and Kuo's table (``new-joe-kuo-6.21201``, shipped with scipy) covers this many coordinates."""
_BITS = 32


@dataclasses.dataclass
class _Drawing:
  """The sampler of the computation being traced, the scramble's key and where the current block starts."""

  kind: str
  key: PRNGKey
  offset: Any = 0
  calls: int = 0
  used: bool = False


_ACTIVE: contextvars.ContextVar[_Drawing | None] = contextvars.ContextVar("sampler", default=None)


def check_sampler(computation: Any, sampler: Any, num_samples: int | None = None) -> str:
  """``sampler`` checked against :data:`SAMPLERS` and what ``computation`` allows; a clear error otherwise."""
  if not isinstance(sampler, str) or sampler not in SAMPLERS:
    raise ValueError(f"`sampler` must be one of {SAMPLERS}; got {sampler!r}.")
  if sampler == "rqmc" and num_samples is not None and num_samples > 2**_BITS:
    raise ValueError(f"sampler='rqmc' indexes its points with {_BITS} bits: num_samples must be at most 2**{_BITS}.")
  if sampler != "iid" and getattr(computation, "chunking", "none") != "independent":
    raise ValueError(
      f"{computation.name} does not support sampler={sampler!r}: its estimate couples its samples (a baseline, "
      "a coefficient or a bound computed from them), which stays unbiased only for independent samples. "
      "Samplers apply to estimators with chunking == 'independent' (the score function without a baseline or "
      "with a constant one, pathwise, measure-valued, and control variates with a fixed coefficient)."
    )
  return sampler


@contextlib.contextmanager
def drawing(sampler: str, key: PRNGKey, name: str) -> Iterator[None]:
  """While tracing under this context, :func:`sfe_jax._src.core.sampling.sample` draws with ``sampler``.

  Raises a ``ValueError`` at the end if nothing was drawn through it: the computation draws its randomness
  some other way, so the sampler would silently change nothing.
  """
  # Always set, to None for "iid": an sfe call nested in f (or a jitted function traced under another call)
  # draws with its own sampler and key, never with an outer call's.
  state = None if sampler == "iid" else _Drawing(sampler, key)
  token = _ACTIVE.set(state)
  try:
    yield
  finally:
    _ACTIVE.reset(token)
  if state is not None and not state.used:
    raise ValueError(
      f"{name} draws its random numbers without sfe_jax's samplers, so sampler={sampler!r} would change nothing; "
      "use sampler='iid'."
    )


@contextlib.contextmanager
def block(offset: Any) -> Iterator[None]:
  """While tracing one chunk: RQMC points start at ``offset`` (a traced int is fine), calls are counted anew."""
  state = _ACTIVE.get()
  if state is None:
    yield
    return
  saved = (state.offset, state.calls)
  state.offset, state.calls = offset, 0
  try:
    yield
  finally:
    state.offset, state.calls = saved


def active() -> bool:
  """Whether a sampler other than ``"iid"`` is drawing (then :func:`sample` replaces the distribution's own)."""
  return _ACTIVE.get() is not None


def uniforms(key: PRNGKey, num: int, dim: int, dtype: Any) -> Array:
  """``(num, dim)`` points in (0, 1) from the active sampler (float32 for float16/bfloat16 ``dtype``)."""
  state = _ACTIVE.get()
  if state is None:
    raise RuntimeError("uniforms() is only called while a sampler is active.")
  state.used = True
  dtype = jnp.float64 if jnp.dtype(dtype) == jnp.float64 else jnp.float32
  call, state.calls = state.calls, state.calls + 1
  if state.kind == "antithetic":
    if num % 2:
      raise ValueError(
        f"sampler='antithetic' draws pairs (u, 1 - u): it needs an even number of samples (per chunk); got {num}."
      )
    half = _open_uniform(key, (num // 2, dim), dtype)
    return _inside(jnp.reshape(jnp.stack([half, 1.0 - half], axis=1), (num, dim)))
  if state.kind == "stratified":
    k_perm, k_jitter = jax.random.split(key)
    # One exact random permutation of the strata per coordinate (integers: no ties, any N).
    strata = jax.vmap(lambda k: jax.random.permutation(k, num))(jax.random.split(k_perm, dim)).T.astype(dtype)
    return _inside((strata + _open_uniform(k_jitter, (num, dim), dtype)) / num)
  if dim > MAX_SOBOL_DIMENSION:
    raise ValueError(
      f"sampler='rqmc' supports up to {MAX_SOBOL_DIMENSION} coordinates per sample (Joe and Kuo's Sobol "
      f"table); this draw needs {dim}. Use sampler='stratified' or 'iid'."
    )
  if num > 2**_BITS:
    raise ValueError(f"sampler='rqmc' supports up to 2**{_BITS} points; got {num}.")
  key = jax.random.fold_in(state.key, call)
  bits = _scrambled_sobol(key, state.offset, num, dim)
  if dtype == jnp.float64:  # 32 more bits from a second, independently shifted sequence: the tails of iid float64
    return _sixty_four(bits, _scrambled_sobol(jax.random.fold_in(key, 1), state.offset, num, dim))
  return _to_unit(bits, dtype)


def _inside(u: Array) -> Array:
  """``u`` clipped into ``[tiny, 1 - epsneg]``: rounding (``1 - u`` for a tiny ``u``, ``(N - 1 + v) / N`` for ``v``
  next to 1) can give exactly 0 or 1, where quantile functions are infinite (a NaN gradient, seen once in 3e6
  float32 points before this clip). The clip moves a point by at most one unit in the last place."""
  info = jnp.finfo(u.dtype)
  return jnp.clip(u, info.tiny, 1.0 - info.epsneg)


def _open_uniform(key: PRNGKey, shape: tuple[int, ...], dtype: Any) -> Array:
  """Uniforms on the midpoints of a grid in (0, 1), symmetric about 1/2: ``1 - u`` is on the grid too, and no
  point is an atom at the smallest float (where ``jax.random.uniform(minval=tiny)`` puts its zero draws)."""
  if dtype == jnp.float64:  # 64 bits: the tails of iid float64
    high, low = jax.random.bits(key, (2, *shape), jnp.uint32)
    return _sixty_four(high, low)
  return _to_unit(jax.random.bits(key, shape, jnp.uint32), dtype)


def _sixty_four(high: Array, low: Array) -> Array:
  """Two 32-bit integers as one point of the 2^-64 grid in float64 (rounded to 53 bits), inside (0, 1)."""
  return _inside((high.astype(jnp.float64) + (low.astype(jnp.float64) + 0.5) * 2.0**-_BITS) * 2.0**-_BITS)


def _to_unit(bits: Array, dtype: Any) -> Array:
  """32-bit integers to the midpoints of a grid in (0, 1): exactly representable, never 0 or 1, uniform on the grid."""
  if dtype == jnp.float64:
    return (bits.astype(jnp.float64) + 0.5) * 2.0**-_BITS
  # 23 bits: the midpoints (k + 1/2) 2^-23 are exact in float32 (near 1 its spacing is 2^-24), none rounds to 1.
  return ((bits >> 9).astype(jnp.float32) + 0.5) * 2.0**-23


@functools.cache
def _direction_numbers(dim: int) -> np.ndarray:
  """Sobol direction numbers ``v[j, i]`` (bit ``j``, coordinate ``i``) as uint32, from scipy's Joe-Kuo table.

  scipy's ``qmc.Sobol`` keeps them (``_sv``, coordinate by bit) once initialised. Its public interface pins
  them too: in scipy's Gray-code order, point ``2^(j+1) - 1`` is the XOR of exactly ``v_j``; the first bits are
  checked that way, so a change of scipy's internals fails loudly here instead of giving other points.
  """
  from scipy.stats import qmc  # type: ignore[import-untyped]  # noqa: PLC0415 (scipy comes with jax)

  table = np.asarray(qmc.Sobol(dim, scramble=False, bits=_BITS)._sv, np.uint64).T  # noqa: SLF001
  for j in range(4):
    engine = qmc.Sobol(dim, scramble=False, bits=_BITS)
    engine.fast_forward(2 ** (j + 1) - 1)
    if not np.array_equal(np.asarray(engine.random(1)[0] * 2.0**_BITS, np.uint64), table[j]):
      raise RuntimeError("scipy's Sobol direction numbers are not where sfe_jax expects them; please report this.")
  return table.astype(np.uint32)


def _scrambled_sobol(key: PRNGKey, offset: Any, num: int, dim: int) -> Array:
  """Points ``offset .. offset + num - 1`` of a Sobol sequence, linearly scrambled and digitally shifted.

  The scramble is a random lower-triangular binary matrix ``M`` per coordinate (output digit ``k`` is digit ``k``
  plus a random combination of the more significant digits): linear over GF(2), so applying it to the direction
  numbers scrambles every point, ``M (XOR_j b_j v_j) = XOR_j b_j (M v_j)``. The shift XORs a random 32-bit
  integer into each coordinate. Both come from ``key``, the same for every block of one sequence.
  """
  k_matrix, k_shift = jax.random.split(key)
  v = jnp.asarray(_direction_numbers(dim))  # (32, dim)
  digit = jnp.arange(_BITS, dtype=jnp.uint32)  # digit k: bit 31 - k
  position = jnp.uint32(_BITS - 1) - digit
  above = jnp.where(digit == 0, jnp.uint32(0), ~((jnp.uint32(1) << (jnp.uint32(_BITS) - digit)) - 1))
  random_bits = jax.random.bits(k_matrix, (dim, _BITS), jnp.uint32)
  rows = (jnp.uint32(1) << position) | (random_bits & above)  # (dim, 32): row k of M per coordinate
  parity = jax.lax.population_count(v[:, :, None] & rows[None]) & 1  # (32 directions, dim, 32 digits)
  scrambled = jnp.sum(parity << position, axis=-1, dtype=jnp.uint32)  # (32, dim): distinct bits, OR = sum
  index = (jnp.asarray(offset, jnp.uint32) + jnp.arange(num, dtype=jnp.uint32))[:, None]  # (num, 1)

  def add_direction(j: Array, points: Array) -> Array:  # XOR in v_j where bit j of the index is set
    bit = (index >> j.astype(jnp.uint32)) & 1
    return points ^ (scrambled[j][None, :] * bit)

  points = jax.lax.fori_loop(0, _BITS, add_direction, jnp.zeros((num, dim), jnp.uint32))
  return points ^ jax.random.bits(k_shift, (dim,), jnp.uint32)


# ----------------------------------------------------------------------------------------------------------
# Quantile functions of the supported distributions.
# ----------------------------------------------------------------------------------------------------------


def _family(dist: Any, names: tuple[str, ...]) -> bool:
  """Whether ``dist`` is an instance of a class named in ``names`` of distrax, TFP or numpyro."""
  nd = distributions._numpyro()  # noqa: SLF001 (the adapter's own helper)
  modules = [distrax, tfd] + ([nd] if nd is not None else [])
  classes = tuple(c for m in modules for n in names if isinstance(c := getattr(m, n, None), type))
  return isinstance(distributions.unwrap(dist), classes)


def _param(dist: Any, *names: str) -> Array:
  for name in names:
    value = getattr(dist, name, None)
    if value is not None:
      return jnp.asarray(value)
  raise TypeError(f"{distributions.describe(dist)} has none of the parameters {names}.")


def _location_scale(dist: Any) -> tuple[Array, Array, Callable[[Array], Array]] | None:
  """``(loc, scale, standard quantile)`` of the scalar location-scale families; else ``None``."""
  if _family(dist, ("Laplace",)):
    quantile = lambda u: jnp.where(u < 0.5, jnp.log(2.0 * u), -jnp.log(2.0 * (1.0 - u)))  # noqa: E731
  elif _family(dist, ("Logistic",)):
    quantile = lambda u: jnp.log(u) - jnp.log1p(-u)  # noqa: E731
  elif _family(dist, ("Gumbel",)):
    quantile = lambda u: -jnp.log(-jnp.log(u))  # noqa: E731
  else:
    return None
  inner = distributions.unwrap(dist)
  return _param(inner, "loc"), _param(inner, "scale"), quantile


def _flat_uniforms(key: PRNGKey, num: int, shape: tuple[int, ...], dtype: Any) -> Array:
  return jnp.reshape(uniforms(key, num, math.prod(shape), dtype), (num, *shape))


def sample(dist: Any, key: PRNGKey, num: int) -> Array:
  """``num`` samples of ``dist`` from the active sampler's points, shape ``(num,) + batch_shape + event_shape``.

  Differentiable in the distribution's parameters along the quantile map (location-scale families), so the
  pathwise estimator works; discrete samples (Bernoulli, Categorical by the inverse CDF) are not. Anything else
  is refused with a ``TypeError`` naming the distribution.
  """
  kind = _ACTIVE.get().kind  # type: ignore[union-attr]
  squashed = distributions.squashed(dist)
  if squashed is not None:  # tanh/sigmoid squashes: the base's points, squashed (pathwise reaches here)
    return squashed.forward(sample(squashed.base, key, num))
  shape = distributions.sample_shape(dist)
  out_dtype = distributions.one_sample(dist).dtype
  dtype = out_dtype if jnp.issubdtype(out_dtype, jnp.floating) else jnp.float32
  diag = distributions.gaussian_diag(dist)
  if diag is not None:
    z = jax.scipy.special.ndtri(_flat_uniforms(key, num, shape, dtype))
    return (diag.loc + diag.scale * z).astype(out_dtype)
  if (
    isinstance(dist, distrax.MultivariateNormalTri)
    or _numpyro_mvn(dist)
    or isinstance(dist, tfd.MultivariateNormalTriL)
  ):
    if tuple(dist.batch_shape):
      raise TypeError(f"sampler={kind!r}: a batched {distributions.describe(dist)} is not supported.")
    loc = jnp.asarray(dist.loc)
    tril = jnp.asarray(dist.scale_tri if hasattr(dist, "scale_tri") else _tril(dist))
    z = jax.scipy.special.ndtri(_flat_uniforms(key, num, shape, dtype))
    return (loc + z @ tril.T).astype(out_dtype)
  location_scale = _location_scale(dist)
  if location_scale is not None:
    loc, scale, quantile = location_scale
    return (
      jnp.broadcast_to(loc, shape) + jnp.broadcast_to(scale, shape) * quantile(_flat_uniforms(key, num, shape, dtype))
    ).astype(out_dtype)
  if _family(dist, ("Uniform",)):
    inner = distributions.unwrap(dist)
    low, high = jnp.broadcast_to(_param(inner, "low"), shape), jnp.broadcast_to(_param(inner, "high"), shape)
    return (low + (high - low) * _flat_uniforms(key, num, shape, dtype)).astype(out_dtype)
  if _family(dist, ("Bernoulli", "BernoulliProbs", "BernoulliLogits")):
    probs = jnp.broadcast_to(_probs(distributions.unwrap(dist)), shape)
    return (_flat_uniforms(key, num, shape, probs.dtype) < probs).astype(out_dtype)
  categorical = ("Categorical", "CategoricalProbs", "CategoricalLogits")
  if _family(dist, categorical) and not tuple(distributions.unwrap(dist).event_shape):
    probs = _probs(distributions.unwrap(dist))
    cdf = jnp.cumsum(probs, axis=-1)
    u = _flat_uniforms(key, num, shape, probs.dtype)[..., None] * cdf[..., -1:]
    index = jnp.sum(u >= cdf, axis=-1)  # the first category whose CDF exceeds u
    index = jnp.minimum(index, probs.shape[-1] - 1)
    return index.astype(out_dtype)
  raise TypeError(
    f"sampler={kind!r} needs a distribution with a quantile function or a location-scale standard form "
    "(Normal, MultivariateNormalDiag, MultivariateNormalTri, Laplace, Logistic, Gumbel, Uniform, Bernoulli, "
    f"Categorical); got {distributions.describe(dist)}. Use sampler='iid'."
  )


def _probs(dist: Any) -> Array:
  """The probabilities of a Bernoulli or Categorical, float64 under x64 with float64 parameters, else float32
  (TFP keeps only the parameter it was given)."""
  probs = jnp.asarray(dist.probs_parameter() if hasattr(dist, "probs_parameter") else dist.probs)
  dtype = jnp.float64 if probs.dtype == jnp.float64 else jnp.float32
  return jax.lax.stop_gradient(probs.astype(dtype))


def _numpyro_mvn(dist: Any) -> bool:
  nd = distributions._numpyro()  # noqa: SLF001
  return nd is not None and isinstance(dist, nd.MultivariateNormal)


def _tril(dist: Any) -> Array:
  return dist.scale_tril if hasattr(dist, "scale_tril") else dist.scale.to_dense()
