"""The distribution adapter: everything sfe_jax needs to know about distribution classes, in one place.

Estimators code against a duck-typed protocol (``sample(seed=, sample_shape=)`` and ``log_prob``). What the
protocol cannot say is answered here:

* whether samples are differentiable in the parameters (pathwise estimators need it; distrax has no flag),
* whether a distribution is discrete,
* the natural parameters and family of the distributions that measure-valued derivatives and the
  delta-method control variate support.

Keeping distrax-specific knowledge in this module means a change in distrax touches one file.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import distrax
import jax.numpy as jnp

Array = Any

# Classes whose ``sample`` is differentiable in the parameters (location-scale transforms, or implicit
# reparameterization of gamma-based samplers as implemented by jax.random).
_REPARAMETERIZABLE: dict[type, bool] = {
    distrax.Normal: True,
    distrax.LogStddevNormal: True,
    distrax.MultivariateNormalDiag: True,
    distrax.MultivariateNormalTri: True,
    distrax.MultivariateNormalFullCovariance: True,
    distrax.MultivariateNormalDiagPlusLowRank: True,
    distrax.MultivariateNormalFromBijector: True,
    distrax.Laplace: True,
    distrax.Logistic: True,
    distrax.Gumbel: True,
    distrax.Uniform: True,
    distrax.Gamma: True,
    distrax.Beta: True,
    distrax.Dirichlet: True,
    distrax.ClippedNormal: True,
    distrax.ClippedLogistic: True,
    distrax.Deterministic: True,
    # Discrete (or mixtures, whose component choice is discrete): no pathwise gradient.
    distrax.Bernoulli: False,
    distrax.Categorical: False,
    distrax.OneHotCategorical: False,
    distrax.Multinomial: False,
    distrax.Softmax: False,
    distrax.EpsilonGreedy: False,
    distrax.Greedy: False,
    distrax.CategoricalUniform: False,
    distrax.MixtureSameFamily: False,
    distrax.MixtureOfTwo: False,
    distrax.Quantized: False,
    distrax.HMM: False,
}

_DISCRETE = (
    distrax.Bernoulli, distrax.Categorical, distrax.OneHotCategorical, distrax.Multinomial, distrax.Softmax,
    distrax.EpsilonGreedy, distrax.Greedy, distrax.Quantized,
)


def register_reparameterizable(cls: type, reparameterizable: bool = True) -> None:
  """Declares whether samples of distribution class ``cls`` are differentiable in its parameters.

  Use this for a distribution class sfe_jax does not know (your own, or a numpyro/TFP class whose own flag
  you want to override). Subclasses inherit the declaration.

  Args:
    cls: the distribution class.
    reparameterizable: ``True`` if ``cls(params).sample(seed=key)`` is differentiable in ``params``.
  """
  if not isinstance(cls, type):
    raise TypeError(f"`cls` must be a distribution class; got {type(cls).__name__}.")
  _REPARAMETERIZABLE[cls] = bool(reparameterizable)


def _registered(dist: Any) -> bool | None:
  for cls in type(dist).__mro__:
    if cls in _REPARAMETERIZABLE:
      return _REPARAMETERIZABLE[cls]
  return None


def is_reparameterizable(dist: Any) -> bool | None:
  """Whether ``dist``'s samples are differentiable in its parameters; ``None`` when it cannot be told.

  Registered classes (see :func:`register_reparameterizable`) come first; ``Transformed`` and
  ``Independent`` wrappers defer to their base distribution; TFP distributions answer through
  ``reparameterization_type`` and numpyro distributions through ``has_rsample``.
  """
  known = _registered(dist)
  if known is not None:
    return known
  if isinstance(dist, (distrax.Transformed, distrax.Independent)):
    return is_reparameterizable(dist.distribution)
  reparam_type = getattr(dist, "reparameterization_type", None)
  if reparam_type is not None:
    return "FULLY_REPARAMETERIZED" in str(reparam_type).upper()
  has_rsample = getattr(dist, "has_rsample", None)
  if isinstance(has_rsample, bool):
    return has_rsample
  return None


def is_discrete(dist: Any) -> bool:
  """Whether ``dist`` is a distribution over a discrete set."""
  if isinstance(dist, _DISCRETE):
    return True
  if isinstance(dist, (distrax.Transformed, distrax.Independent)):
    return is_discrete(dist.distribution)
  if getattr(dist, "is_discrete", False) is True:  # numpyro
    return True
  dtype = getattr(dist, "dtype", None)
  return dtype is not None and not jnp.issubdtype(dtype, jnp.floating)


def describe(dist: Any) -> str:
  shape = getattr(dist, "batch_shape", None)
  event = getattr(dist, "event_shape", None)
  extra = f" (batch_shape={tuple(shape)}, event_shape={tuple(event)})" if shape is not None else ""
  return f"{type(dist).__module__.split('.')[0]}.{type(dist).__name__}{extra}"


# ----------------------------------------------------------------------------------------------------------
# Families with known natural parameters (measure-valued derivatives, delta-method control variates).
# ----------------------------------------------------------------------------------------------------------


class GaussianDiag(NamedTuple):
  """A Gaussian with independent coordinates; ``loc`` and ``scale`` have the shape of one sample."""

  loc: Array
  scale: Array


class BernoulliProbs(NamedTuple):
  """Independent Bernoulli variables; ``probs`` has the shape of one sample."""

  probs: Array


class CategoricalProbs(NamedTuple):
  """Independent categorical variables; ``probs`` has shape ``sample_shape + (num_categories,)``."""

  probs: Array


def natural_parameters(dist: Any, *, who: str) -> GaussianDiag | BernoulliProbs | CategoricalProbs:
  """The natural parameters of a supported family, broadcast to the shape of one sample.

  Raises a ``TypeError`` naming ``who`` (the estimator) and the supported families otherwise.
  """
  if isinstance(dist, distrax.Normal):
    shape = dist.batch_shape
    return GaussianDiag(jnp.broadcast_to(dist.loc, shape), jnp.broadcast_to(dist.scale, shape))
  if isinstance(dist, distrax.MultivariateNormalDiag):
    shape = tuple(dist.batch_shape) + tuple(dist.event_shape)
    return GaussianDiag(jnp.broadcast_to(dist.loc, shape), jnp.broadcast_to(dist.scale_diag, shape))
  if isinstance(dist, distrax.Bernoulli):
    return BernoulliProbs(jnp.broadcast_to(dist.probs, dist.batch_shape))
  if isinstance(dist, distrax.Categorical) and not isinstance(dist, (distrax.Softmax,)):
    return CategoricalProbs(dist.probs)
  raise TypeError(
      f"{who} supports distrax.Normal, distrax.MultivariateNormalDiag, distrax.Bernoulli and "
      f"distrax.Categorical; got {describe(dist)}.")


def gaussian_mean_and_covariance(dist: Any, *, who: str) -> tuple[Array, Array, bool]:
  """Mean and covariance of a Gaussian over the flattened sample.

  Returns ``(mean, cov, diagonal)``: ``mean`` of shape (D,), and either the variances (D,) when
  ``diagonal`` or the full covariance (D, D).
  """
  if isinstance(dist, distrax.Normal):
    params = natural_parameters(dist, who=who)
    return params.loc.reshape(-1), jnp.square(params.scale).reshape(-1), True
  if isinstance(dist, distrax.MultivariateNormalDiag):
    params = natural_parameters(dist, who=who)
    return params.loc.reshape(-1), jnp.square(params.scale).reshape(-1), True
  if isinstance(dist, (distrax.MultivariateNormalTri, distrax.MultivariateNormalFullCovariance,
                       distrax.MultivariateNormalDiagPlusLowRank, distrax.MultivariateNormalFromBijector)):
    if tuple(dist.batch_shape):
      raise TypeError(f"{who} needs a single multivariate normal (no batch dimensions); got {describe(dist)}.")
    return dist.mean(), dist.covariance(), False
  raise TypeError(
      f"{who} needs a Gaussian distribution (distrax.Normal or a distrax multivariate normal); "
      f"got {describe(dist)}.")
