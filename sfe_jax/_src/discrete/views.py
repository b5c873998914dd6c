r"""Shared machinery of the discrete estimators: one view of Bernoulli and categorical distributions.

Every discrete estimator (relaxations, straight-through, ARM/DisARM, REBAR/RELAX, the unordered set
estimator, enumeration) works on the *logits* of the distribution and differentiates through them: the
estimator computes a gradient with respect to the logits and the chain rule through ``dist_builder`` carries
it to ``params``. This module turns a distribution into that view and back:

* :func:`discrete_view` recognises Bernoulli, Categorical and OneHotCategorical distributions of distrax, TFP's
  JAX substrate and numpyro (through the adapter, :func:`sfe_jax._src.core.distributions.discrete_family`), in
  ``Independent`` wrappers too, and refuses anything else with an error naming the estimator;
* :func:`log_prob` is the joint log-probability computed from the logits (stable for logits of any size);
* :func:`to_sample` turns hard values (bits, category indices) into what the distribution's own ``sample``
  returns, so ``f`` sees the same input under every estimator;
* :func:`require_relaxable` refuses, for relaxation-based estimators, the encodings a relaxed value cannot
  take (category indices, integer dtypes), and :func:`relaxed_input` casts relaxed values to the
  distribution's own dtype;
* :func:`stick_breaking_logits` and :func:`stick_breaking_decode` write a categorical variable as K-1
  independent bits (``z`` = the first bit that is 1), which is how antithetic estimators reach categoricals.

Canonical representations: a Bernoulli sample is a float array of 0/1 with the shape of one sample; a
categorical sample is an integer array of category indices with shape ``batch_shape`` (one index per
variable), whatever the distribution's own encoding.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sfe_jax._src.core import distributions

Array = jax.Array

BERNOULLI = "bernoulli"
CATEGORICAL = "categorical"


class DiscreteView(NamedTuple):
  """A Bernoulli or categorical distribution seen through its logits.

  Attributes:
    kind: ``"bernoulli"`` or ``"categorical"``.
    logits: Bernoulli: the logit of each bit, with the shape of one sample. Categorical: normalised
      log-probabilities of shape ``variables_shape + (K,)``.
    one_hot: categorical only: whether the distribution's samples are one-hot vectors (OneHotCategorical)
      rather than indices.
    dtype: the dtype of the distribution's samples.
  """

  kind: str
  logits: Array
  one_hot: bool
  dtype: Any

  @property
  def variables_shape(self) -> tuple[int, ...]:
    """The shape of the array of discrete variables (bits, or categorical variables)."""
    return tuple(self.logits.shape) if self.kind == BERNOULLI else tuple(self.logits.shape[:-1])

  @property
  def num_variables(self) -> int:
    return int(jnp.size(self.logits)) // (1 if self.kind == BERNOULLI else self.num_categories)

  @property
  def num_categories(self) -> int:
    return 2 if self.kind == BERNOULLI else int(self.logits.shape[-1])

  @property
  def support_size(self) -> int:
    return self.num_categories**self.num_variables


def saturation(dtype: Any) -> float:
  """The finite stand-in ``C`` of an infinite logit: ``exp(-C)`` is 0 in ``dtype`` and ``C**2`` is finite."""
  return float(jnp.finfo(dtype).max) ** 0.25


def finite_logits(logits: Array) -> Array:
  r"""Infinite logits replaced by :math:`\pm C` (:func:`saturation`), with a zero derivative there.

  A logit of ``-inf`` masks a category (a bit of ``+-inf`` is deterministic). With :math:`C` instead, every
  probability, sample and log-probability of a category that can be drawn is the same number (``exp(-C)``
  underflows to 0 and no noise reaches ``C``), and the arithmetic of the estimators (differences of noisy logits,
  controls evaluated at them, ``0 * log p`` terms) stays finite. NaN logits stay NaN.
  """
  c = saturation(logits.dtype)
  return jnp.where(jnp.isinf(logits), jnp.sign(logits) * jnp.asarray(c, logits.dtype), logits)


def discrete_view(dist: Any, *, who: str, kinds: tuple[str, ...] = (BERNOULLI, CATEGORICAL)) -> DiscreteView:
  """The :class:`DiscreteView` of ``dist``; a ``TypeError`` naming ``who`` if ``dist`` is not supported.

  Args:
    dist: the distribution ``dist_builder(params)`` returned: a Bernoulli, Categorical or OneHotCategorical of
      distrax, TFP's JAX substrate or numpyro, optionally in ``Independent`` wrappers.
    who: the estimator's name, for the error message.
    kinds: the kinds the estimator supports.
  """
  family = distributions.discrete_family(dist)
  view = None
  if family is not None:
    one = distributions.one_sample(dist)  # shape and dtype from one trace of the sampler
    shape, dtype = tuple(one.shape), one.dtype
    logits = finite_logits(family.logits)
    if family.kind == BERNOULLI:
      view = DiscreteView(BERNOULLI, jnp.broadcast_to(logits, shape), False, dtype)
    else:
      one_hot = family.kind == distributions.ONE_HOT
      num_categories = logits.shape[-1]
      variables = shape[:-1] if one_hot else shape
      logits = jnp.broadcast_to(logits, variables + (num_categories,))
      view = DiscreteView(CATEGORICAL, jax.nn.log_softmax(logits, axis=-1), one_hot, dtype)
  if view is None or view.kind not in kinds:
    names = {
      BERNOULLI: distributions.DISCRETE_CLASSES[BERNOULLI],
      CATEGORICAL: (
        f"{distributions.DISCRETE_CLASSES[CATEGORICAL]} or {distributions.DISCRETE_CLASSES[distributions.ONE_HOT]}"
      ),
    }
    wanted = " or ".join(names[k] for k in kinds)
    hint = ""
    if not distributions.is_discrete(dist):
      hint = " It is not discrete: for a continuous distribution use sfe.pathwise() or sfe.score_function()."
    raise TypeError(
      f"{who} needs {wanted}, optionally wrapped in Independent; got {distributions.describe(dist)}.{hint}"
    )
  return view


def require_relaxable(view: DiscreteView, who: str) -> None:
  """Refuses a distribution whose own samples could not be relaxed without changing their encoding.

  Relaxation-based estimators feed ``f`` values between the discrete ones (and hard values with a surrogate
  derivative), which only exist in the distribution's own encoding when that encoding is floating-point bits
  or one-hot vectors. An index-valued Categorical, or integer samples, would silently change what ``f`` sees.
  """
  if view.kind == CATEGORICAL and not view.one_hot:
    raise TypeError(
      f"{who} relaxes the sample to a point of the simplex, which an index-valued Categorical cannot hold: f "
      "would receive one-hot vectors instead of the indices the distribution samples. Use OneHotCategorical "
      "(distrax.OneHotCategorical(logits, dtype=jnp.float32) or tfp's OneHotCategorical with a float dtype), "
      "whose samples are one-hot vectors, and write f for one-hot input (table[x] becomes x @ table)."
    )
  if not jnp.issubdtype(view.dtype, jnp.floating):
    name = "Bernoulli" if view.kind == BERNOULLI else "OneHotCategorical"
    raise TypeError(
      f"{who} feeds f relaxed (floating-point) values, but the distribution's samples have dtype {view.dtype}, "
      f"so f would receive a different dtype than the distribution samples. Build it with a floating-point "
      f"dtype: distrax.{name}(logits=..., dtype=jnp.float32), or TFP's {name} with dtype=jnp.float32 "
      "(numpyro's discrete distributions always sample integers)."
    )


def log_prob(view: DiscreteView, hard: Array) -> Array:
  """The joint log-probability of canonical hard values (bits, or category indices); a scalar."""
  if view.kind == BERNOULLI:
    # log p(b) = b * logit - softplus(logit), written so that logits of +-inf or +-50 stay finite.
    return jnp.sum(jnp.where(hard > 0.5, -jax.nn.softplus(-view.logits), -jax.nn.softplus(view.logits)))
  index = jnp.expand_dims(hard.astype(jnp.int32), -1)
  return jnp.sum(jnp.take_along_axis(view.logits, index, axis=-1))


def sample_hard(view: DiscreteView, key: jax.Array, num_samples: int) -> Array:
  """``num_samples`` canonical hard samples: shape ``(num_samples, *variables_shape)``."""
  shape = (num_samples,) + view.variables_shape
  if view.kind == BERNOULLI:
    u = jax.random.uniform(key, shape, dtype=view.logits.dtype)
    return (jnp.log(u) - jnp.log1p(-u) < view.logits).astype(view.logits.dtype)
  return jax.random.categorical(key, view.logits, axis=-1, shape=shape)


def to_sample(view: DiscreteView, hard: Array) -> Array:
  """Canonical hard values -> the encoding of the distribution's own samples (dtype included)."""
  if view.kind == CATEGORICAL and view.one_hot:
    return jax.nn.one_hot(hard, view.num_categories, dtype=view.dtype)
  return hard.astype(view.dtype)


def to_canonical(view: DiscreteView, samples: Array) -> Array:
  """The distribution's own samples -> canonical hard values (float bits, or integer category indices)."""
  if view.kind == CATEGORICAL:
    return jnp.argmax(samples, axis=-1) if view.one_hot else samples.astype(jnp.int32)
  return samples.astype(view.logits.dtype)


def one_hot(view: DiscreteView, hard: Array) -> Array:
  """Canonical categorical indices -> float one-hot vectors of shape ``hard.shape + (K,)``."""
  return jax.nn.one_hot(hard, view.num_categories, dtype=view.logits.dtype)


def relaxed_input(view: DiscreteView, soft: Array) -> Array:
  """What ``f`` receives under a relaxation: the relaxed values in the distribution's own (float) dtype.

  Bernoulli: values in [0, 1] with the shape of one sample. One-hot categorical: points of the simplex, shape
  ``variables_shape + (K,)``. :func:`require_relaxable` has checked that these are the distribution's own
  encoding.
  """
  return soft.astype(view.dtype)


# ----------------------------------------------------------------------------------------------------------
# Stick-breaking: a categorical variable over K classes as K - 1 independent bits.
# ----------------------------------------------------------------------------------------------------------


def stick_breaking_logits(logits: Array) -> Array:
  r"""Logits of the K - 1 bits whose first 1 (or K, if none) is a categorical sample with these logits.

  Bit k is 1 with the conditional probability :math:`p_k / \sum_{j \ge k} p_j`; its logit is
  :math:`\log p_k - \log \sum_{j > k} p_j`, computed with a reversed cumulative log-sum-exp, so it stays
  finite for logits of any size. Shape ``(..., K)`` -> ``(..., K - 1)``.
  """
  log_p = jax.nn.log_softmax(logits, axis=-1)
  # tail[k] = log sum_{j >= k} p_j, via a reversed cumulative logsumexp.
  tail = jnp.flip(jax.lax.cumlogsumexp(jnp.flip(log_p, -1), axis=log_p.ndim - 1), -1)
  return log_p[..., :-1] - tail[..., 1:]


def stick_breaking_decode(bits: Array) -> Array:
  """K - 1 bits (last axis) -> the categorical index: the first bit that is 1, or K - 1 if none is."""
  padded = jnp.concatenate([bits, jnp.ones(bits.shape[:-1] + (1,), bits.dtype)], axis=-1)
  return jnp.argmax(padded > 0.5, axis=-1)


# ----------------------------------------------------------------------------------------------------------
# Noisy logits: the continuous variable z whose threshold (Bernoulli) or argmax (categorical) is the sample.
# Relaxations, straight-through Gumbel, REBAR and RELAX all start from it.
# ----------------------------------------------------------------------------------------------------------


def noisy_logits(view: DiscreteView, key: jax.Array, num_samples: int) -> Array:
  r"""``z = logits + noise``, differentiable in the logits; shape ``(num_samples,) + logits.shape``.

  Bernoulli: logistic noise ``log u - log(1 - u)``, so ``z > 0`` with probability ``sigmoid(logit)``.
  Categorical: Gumbel noise ``-log(-log u)``, so ``argmax z`` is a sample (the Gumbel-max trick).
  """
  shape = (num_samples,) + tuple(view.logits.shape)
  dtype = view.logits.dtype
  if view.kind == BERNOULLI:
    return view.logits[None] + jax.random.logistic(key, shape, dtype=dtype)
  return view.logits[None] + jax.random.gumbel(key, shape, dtype=dtype)


def hard_from_noisy(view: DiscreteView, z: Array) -> Array:
  """The canonical hard value that ``z`` selects: bits ``z > 0`` or indices ``argmax z``."""
  if view.kind == BERNOULLI:
    return (z > 0).astype(view.logits.dtype)
  return jnp.argmax(z, axis=-1)


def soften(view: DiscreteView, z: Array, temperature: Array | float) -> Array:
  """The Concrete relaxation of ``z`` at ``temperature``: ``sigmoid(z / t)`` or ``softmax(z / t)``."""
  if view.kind == BERNOULLI:
    return jax.nn.sigmoid(z / temperature)
  return jax.nn.softmax(z / temperature, axis=-1)


# ----------------------------------------------------------------------------------------------------------
# The noisy logits z, and the conditional relaxation z~ ~ p(z | b). Used by REBAR and RELAX.
# ----------------------------------------------------------------------------------------------------------


def draw_noise(view: DiscreteView, key: Array, num_samples: int) -> tuple[Array, Array]:
  """The noise of ``z`` (logistic or Gumbel) and the uniforms ``v`` of ``z~``; both ``(N,) + logits.shape``."""
  key_z, key_v = jax.random.split(key)
  zero_view = view._replace(logits=jnp.zeros_like(view.logits))
  noise = noisy_logits(zero_view, key_z, num_samples)
  dtype = view.logits.dtype
  # v in [tiny, 1): log(v) and log(-log(v)) stay finite.
  v = jax.random.uniform(key_v, noise.shape, dtype=dtype, minval=jnp.finfo(dtype).tiny, maxval=1.0)
  return noise, v


def conditional_noisy_logits(view: DiscreteView, hard: Array, v: Array) -> Array:
  r"""``z~ ~ p(z | H(z) = hard)``, reparameterized by ``view.logits`` through the uniforms ``v``.

  Bernoulli, with :math:`\sigma = 2b - 1` and :math:`\phi` the logit: the noisy logit given ``b = 1`` is
  :math:`\phi - \mathrm{logit}(v\, \mathrm{sigmoid}(\phi))`, given ``b = 0`` it is
  :math:`\phi + \mathrm{logit}(v\, \mathrm{sigmoid}(-\phi))`; both equal

  .. math:: \tilde z = \sigma\, [\mathrm{softplus}(\sigma \phi + \log(1 - v)) - \log v],

  a form in which every term is finite for any logit and ``sign(z~) = sigma`` exactly.

  Categorical, with normalised log-probabilities :math:`\theta` (so the maximum of ``z`` is standard Gumbel)
  and ``b`` the argmax (Grathwohl et al. 2018, Appendix):
  :math:`\tilde z_b = -\log(-\log v_b)` and, for :math:`k \ne b`,
  :math:`\tilde z_k = -\log(-\log v_k\, e^{-\theta_k} - \log v_b)`
  (a Gumbel with location :math:`\theta_k` truncated below :math:`\tilde z_b`), computed with ``logaddexp``.

  Args:
    view: the :class:`DiscreteView`; its logits may be traced (differentiated).
    hard: canonical hard values, shape ``(N,) + variables_shape``.
    v: uniforms in ``(0, 1)``, shape ``(N,) + logits.shape``.

  Returns:
    ``z~``, shape ``(N,) + logits.shape``.
  """
  logits = view.logits[None]  # explicit rank against the sample axis of hard and v
  if view.kind == BERNOULLI:
    sign = 2.0 * hard.astype(logits.dtype) - 1.0
    return sign * (jax.nn.softplus(sign * logits + jnp.log1p(-v)) - jnp.log(v))
  log_neg_log_v = jnp.log(-jnp.log(v))
  top = jnp.take_along_axis(log_neg_log_v, hard[..., None].astype(jnp.int32), axis=-1)
  others = -jnp.logaddexp(log_neg_log_v - logits, top)
  return jnp.where(one_hot(view, hard) > 0.5, -top, others)


# ----------------------------------------------------------------------------------------------------------
# The joint support, for the exhaustive estimators (enumerate, and unordered_set's exact sums).
# ----------------------------------------------------------------------------------------------------------

DEFAULT_MAX_SUPPORT = 2**16


def support(view: DiscreteView) -> jax.Array:
  """Every joint value of the variables, canonical encoding: shape ``(support_size, *variables_shape)``.

  Bernoulli values are float bits; categorical values are integer indices. Row ``i`` is the base-K digits of
  ``i`` (the first variable is the most significant digit).
  """
  k, n = view.num_categories, view.num_variables
  powers = k ** np.arange(n - 1, -1, -1)
  digits = (np.arange(k**n)[:, None] // powers[None, :]) % k
  digits = digits.reshape((k**n,) + view.variables_shape)
  if view.kind == BERNOULLI:
    return jnp.asarray(digits, dtype=view.logits.dtype)
  return jnp.asarray(digits, dtype=jnp.int32)


def check_support_size(view: DiscreteView, max_support: int, who: str, alternative: str) -> int:
  """The joint support size of ``view``; a ``ValueError`` naming ``who`` when it exceeds ``max_support``."""
  size = view.support_size
  if size > max_support:
    raise ValueError(
      f"{who} enumerates the joint support, {view.num_categories}^{view.num_variables} = {size} values of "
      f"{view.num_variables} variables here, more than max_support={max_support}. {alternative}, or raise "
      "max_support if you have the memory."
    )
  return size
