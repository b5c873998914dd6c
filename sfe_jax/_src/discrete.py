r"""Shared machinery of the discrete estimators: one view of Bernoulli and categorical distributions.

Every discrete estimator (relaxations, straight-through, ARM/DisARM, REBAR/RELAX, the unordered set
estimator, enumeration) works on the *logits* of the distribution and differentiates through them: the
estimator computes a gradient with respect to the logits and the chain rule through ``dist_builder`` carries
it to ``params``. This module turns a distribution into that view and back:

* :func:`discrete_view` recognises ``distrax.Bernoulli``, ``distrax.Categorical`` (and its subclasses),
  ``distrax.OneHotCategorical``, and ``distrax.Independent`` wrappers of these, and refuses anything else with
  an error naming the estimator;
* :func:`log_prob` is the joint log-probability computed from the logits (stable for logits of any size);
* :func:`to_sample` turns hard values (bits, category indices) into what the distribution's own ``sample``
  returns, so ``f`` sees the same input under every estimator;
* :func:`relaxed_input` turns relaxed values into the input ``f`` receives under a relaxation;
* :func:`stick_breaking_logits` and :func:`stick_breaking_decode` write a categorical variable as K-1
  independent bits (``z`` = the first bit that is 1), which is how antithetic estimators reach categoricals.

Canonical representations: a Bernoulli sample is a float array of 0/1 with the shape of one sample; a
categorical sample is an integer array of category indices with shape ``batch_shape`` (one index per
variable), whatever the distribution's own encoding.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import distrax
import jax
import jax.numpy as jnp

from sfe_jax._src import distributions

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
    return self.num_categories ** self.num_variables


def discrete_view(dist: Any, *, who: str, kinds: tuple[str, ...] = (BERNOULLI, CATEGORICAL)) -> DiscreteView:
  """The :class:`DiscreteView` of ``dist``; a ``TypeError`` naming ``who`` if ``dist`` is not supported.

  Args:
    dist: the distribution ``dist_builder(params)`` returned.
    who: the estimator's name, for the error message.
    kinds: the kinds the estimator supports.
  """
  inner = dist
  while isinstance(inner, distrax.Independent):
    inner = inner.distribution
  view = None
  if isinstance(inner, distrax.Bernoulli):
    logits = jnp.broadcast_to(inner.logits, tuple(inner.batch_shape))
    view = DiscreteView(BERNOULLI, logits, False, inner.dtype)
  elif isinstance(inner, distrax.OneHotCategorical):
    view = DiscreteView(CATEGORICAL, _normalised(inner.logits, inner), True, inner.dtype)
  elif isinstance(inner, distrax.Categorical):
    view = DiscreteView(CATEGORICAL, _normalised(inner.logits, inner), False, inner.dtype)
  if view is None or view.kind not in kinds:
    names = {BERNOULLI: "distrax.Bernoulli", CATEGORICAL: "distrax.Categorical or distrax.OneHotCategorical"}
    wanted = " or ".join(names[k] for k in kinds)
    hint = ""
    if not distributions.is_discrete(dist):
      hint = (" It is not discrete: for a continuous distribution use sfe.pathwise() or "
              "sfe.score_function().")
    raise TypeError(
        f"{who} needs {wanted} (optionally wrapped in distrax.Independent); got "
        f"{distributions.describe(dist)}.{hint}")
  return view


def _normalised(logits: Array, dist: Any) -> Array:
  shape = tuple(dist.batch_shape) + (logits.shape[-1],)
  return jax.nn.log_softmax(jnp.broadcast_to(logits, shape), axis=-1)


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


def one_hot(view: DiscreteView, hard: Array) -> Array:
  """Canonical categorical indices -> float one-hot vectors of shape ``hard.shape + (K,)``."""
  return jax.nn.one_hot(hard, view.num_categories, dtype=view.logits.dtype)


def relaxed_input(view: DiscreteView, soft: Array) -> Array:
  """What ``f`` receives under a relaxation: the relaxed values themselves, as floats.

  Bernoulli: values in [0, 1] with the shape of one sample. Categorical: points of the simplex, shape
  ``variables_shape + (K,)``; for a ``Categorical`` (index samples) ``f`` must therefore accept one-hot
  vectors, which every relaxation documents.
  """
  return soft.astype(view.logits.dtype)


def hard_input(view: DiscreteView, hard: Array) -> Array:
  """The input ``f`` receives for hard values under a relaxation-based estimator (floats; one-hot for
  categoricals), so that relaxed and hard evaluations of ``f`` see the same encoding."""
  if view.kind == BERNOULLI:
    return hard.astype(view.logits.dtype)
  return one_hot(view, hard)


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
    return view.logits + jax.random.logistic(key, shape, dtype=dtype)
  return view.logits + jax.random.gumbel(key, shape, dtype=dtype)


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
