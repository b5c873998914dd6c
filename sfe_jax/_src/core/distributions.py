"""The distribution adapter: everything sfe_jax needs to know about distribution classes, in one place.

Estimators code against a small protocol: draw samples, evaluate ``log_prob``. Three libraries implement it
with their own spellings, and this module is the only place that knows them:

* distrax (the first-class citizen): ``sample(seed=key, sample_shape=...)``;
* TensorFlow Probability's JAX substrate (``tensorflow_probability.substrates.jax``): the same signature;
* numpyro: ``sample(key, sample_shape)``, and ``Independent``/``ExpandedDistribution`` wrappers with
  ``base_dist``.

What the protocol cannot say is answered here too:

* whether samples are differentiable in the parameters (pathwise estimators need it; distrax has no flag, TFP
  has ``reparameterization_type``, numpyro ``has_rsample``),
* whether a distribution is discrete,
* the parameters of the families that measure-valued derivatives, the delta-method control variate and the
  discrete estimators work with: a Gaussian with independent coordinates (:func:`gaussian_diag`), any
  Gaussian (:func:`gaussian_mean_and_covariance`), and Bernoulli / categorical / one-hot categorical
  variables (:func:`discrete_family`), each seen through ``Independent``-style wrappers.

Keeping the library-specific knowledge in this module means a change in distrax, TFP or numpyro touches one
file. numpyro is optional: it is looked up only when a numpyro distribution is passed in.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, NamedTuple

import distrax
import jax
import jax.numpy as jnp
from tensorflow_probability.substrates import jax as tfp

tfd = tfp.distributions
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
  distrax.Bernoulli,
  distrax.Categorical,
  distrax.OneHotCategorical,
  distrax.Multinomial,
  distrax.Softmax,
  distrax.EpsilonGreedy,
  distrax.Greedy,
  distrax.Quantized,
)


def _numpyro() -> Any:
  """``numpyro.distributions`` if numpyro is imported (it is, whenever a numpyro distribution exists)."""
  return sys.modules.get("numpyro.distributions")


def library(dist: Any) -> str:
  """``"distrax"``, ``"tfp"``, ``"numpyro"`` or the top-level module of another duck-typed distribution."""
  module = type(dist).__module__
  if module.startswith("tensorflow_probability"):
    return "tfp"
  return module.split(".")[0]


def describe(dist: Any) -> str:
  shape = getattr(dist, "batch_shape", None)
  event = getattr(dist, "event_shape", None)
  extra = f" (batch_shape={tuple(shape)}, event_shape={tuple(event or ())})" if shape is not None else ""
  return f"{library(dist)}.{type(dist).__name__}{extra}"


def sample_shape(dist: Any) -> tuple[int, ...]:
  """The shape of one joint sample: ``batch_shape + event_shape``."""
  return tuple(dist.batch_shape) + tuple(dist.event_shape)


def sample(dist: Any, key: jax.Array, num_samples: int) -> Array:
  """``num_samples`` joint samples, shape ``(num_samples,) + batch_shape + event_shape``, in any library."""
  if library(dist) == "numpyro":
    return dist.sample(key, (num_samples,))
  return dist.sample(seed=key, sample_shape=(num_samples,))


def one_sample(dist: Any) -> jax.ShapeDtypeStruct:
  """The shape and dtype of one sample, as the distribution's own ``sample`` gives it (nothing is drawn)."""
  key = jax.ShapeDtypeStruct((), jax.random.key(0).dtype)
  out = jax.eval_shape(lambda k: sample(dist, k, 1), key)
  return jax.ShapeDtypeStruct(out.shape[1:], out.dtype)


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


def check_reparameterizable(dist: Any, who: str, alternative: str | None = None) -> None:
  """Raises a ``TypeError`` naming ``dist`` unless its samples are differentiable in its parameters.

  ``alternative`` says what to use instead (it completes "...; "); by default the score function, and the
  measure-valued estimator for a discrete distribution.
  """
  answer = is_reparameterizable(dist)
  if answer:
    return
  if alternative is None:
    alternative = (
      "use sfe.score_function() (any distribution) or sfe.measure_valued()"
      if is_discrete(dist)
      else "use sfe.score_function()"
    )
  if answer is None:
    raise TypeError(
      f"{who} cannot tell whether samples of {describe(dist)} are differentiable in its parameters. If they "
      f"are, declare it with sfe.register_reparameterizable(type(dist)); otherwise {alternative}."
    )
  raise TypeError(
    f"{who} needs a reparameterizable distribution, but samples of {describe(dist)} are not differentiable in "
    f"its parameters; {alternative}."
  )


def is_discrete(dist: Any) -> bool:
  """Whether ``dist`` is a distribution over a discrete set."""
  if isinstance(dist, _DISCRETE):
    return True
  if isinstance(dist, (distrax.Transformed, distrax.Independent)):
    return is_discrete(dist.distribution)
  if getattr(dist, "is_discrete", False) is True:  # numpyro
    return True
  dtype = getattr(dist, "dtype", None)
  try:
    return dtype is not None and not jnp.issubdtype(dtype, jnp.floating)
  except TypeError:  # a dtype object JAX does not know
    return False


def unwrap(dist: Any) -> Any:
  """The innermost distribution under ``Independent`` (distrax, TFP, numpyro) and numpyro's ``expand``.

  Those wrappers change which dimensions are batch and which are event, not the joint distribution of one
  sample: the innermost distribution, broadcast to the wrapper's sample shape, is the same distribution.
  """
  nd = _numpyro()
  while True:
    if isinstance(dist, (distrax.Independent, tfd.Independent)):
      dist = dist.distribution
    elif nd is not None and isinstance(dist, (nd.Independent, nd.ExpandedDistribution)):
      dist = dist.base_dist
    else:
      return dist


# ----------------------------------------------------------------------------------------------------------
# Squashed distributions: log_prob from the pre-image of a sample, never by inverting a saturated tanh.
# ----------------------------------------------------------------------------------------------------------


class Squashed(NamedTuple):
  """A distribution ``y = g(x)``, ``x ~ base``, with ``g`` an elementwise, parameter-free squash (tanh, sigmoid).

  Attributes:
    base: the distribution of ``x``, with the wrappers (``Independent``) of the squashed one moved onto it.
    forward: ``g``, elementwise.
    log_det: ``log |g'(x)|``, elementwise, computed from ``x`` (finite where ``g(x)`` rounds to the bound).
  """

  base: Any
  forward: Callable[[Array], Array]
  log_det: Callable[[Array], Array]


def _squash(bijector: Any) -> tuple[Callable, Callable] | None:
  """``(forward, log_det)`` of a parameter-free elementwise squash of distrax, TFP or numpyro; else ``None``."""
  if isinstance(bijector, distrax.Block):
    bijector = bijector.bijector
  if isinstance(bijector, (distrax.Tanh, distrax.Sigmoid)):  # subclasses too: rl.TanhNormal's clipped tanh
    return bijector.forward, bijector.forward_log_det_jacobian
  if type(bijector) is tfp.bijectors.Tanh or (
    type(bijector) is tfp.bijectors.Sigmoid and bijector.low is None and bijector.high is None
  ):
    return bijector.forward, lambda x: bijector.forward_log_det_jacobian(x, event_ndims=0)
  nd = _numpyro()
  if nd is not None and type(bijector) is nd.transforms.SigmoidTransform:
    return bijector, lambda x: bijector.log_abs_det_jacobian(x, bijector(x))
  return None


def squashed(dist: Any) -> Squashed | None:
  """The :class:`Squashed` form of a tanh- or sigmoid-transformed distribution (under ``Independent``); else None.

  Such a squash rounds to its bound (``tanh(u) == 1`` in float32 for ``u > 9.01``), and ``log_prob`` of the
  rounded sample inverts it to ``inf`` and returns NaN. Computed from the pre-image instead,
  ``log p(y) = log p_base(x) - log |g'(x)|`` is exact, and so is its gradient in the base's parameters.
  """
  nd = _numpyro()
  if isinstance(dist, (distrax.Independent, tfd.Independent)):
    inner = squashed(dist.distribution)
    if inner is None:
      return None
    wrap = distrax.Independent if isinstance(dist, distrax.Independent) else tfd.Independent
    return inner._replace(base=wrap(inner.base, dist.reinterpreted_batch_ndims))
  if nd is not None and isinstance(dist, nd.Independent):
    inner = squashed(dist.base_dist)
    return None if inner is None else inner._replace(base=inner.base.to_event(dist.reinterpreted_batch_ndims))
  if isinstance(dist, distrax.Transformed) or isinstance(dist, tfd.TransformedDistribution):
    squash = _squash(dist.bijector)
    return None if squash is None else Squashed(dist.distribution, *squash)
  if nd is not None and isinstance(dist, nd.TransformedDistribution) and len(dist.transforms) == 1:
    squash = _squash(dist.transforms[0])
    return None if squash is None else Squashed(dist.base_dist, *squash)
  return None


# Parameters that must be positive, by attribute name, in every library (``scale`` of location-scale families,
# the shape parameters of Gamma/Beta/Dirichlet/StudentT). 0 is accepted: it is the degenerate limit.
_POSITIVE_PARAMETERS = ("scale", "scale_diag", "concentration", "concentration0", "concentration1", "rate", "df")


def _wrapped(dist: Any) -> list[Any]:
  """``dist`` and every distribution it wraps (Independent, Transformed, numpyro's expand and masks)."""
  out = []
  while dist is not None and dist not in out:
    out.append(dist)
    dist = getattr(dist, "distribution", None) or getattr(dist, "base_dist", None)
  return out


def out_of_domain(dist: Any) -> Array:
  """A boolean scalar: whether a parameter of ``dist`` is out of its domain.

  Flagged: a negative ``scale``, ``concentration``, ``rate`` or ``df``; probabilities outside [0, 1] (NaN
  logits); a categorical variable whose logits are all ``-inf`` (no category left).

  The samplers of these families do not check their parameters: ``Normal(loc, -1)`` draws ``loc - eps``, and a
  pathwise or measure-valued gradient of it is a plausible wrong number. Attributes that are not arrays (TFP's
  linear operators) are skipped; unknown families are never flagged.
  """
  flags = []
  for d in _wrapped(dist):
    for name in _POSITIVE_PARAMETERS:
      try:
        value = getattr(d, name, None)
      except Exception:  # a property that cannot be computed for this distribution
        continue
      if isinstance(value, jax.Array) or hasattr(value, "__jax_array__") or type(value).__module__ == "numpy":
        value = jnp.asarray(value)
        if jnp.issubdtype(value.dtype, jnp.floating):
          flags.append(jnp.any(value < 0))
  family = discrete_family(dist)
  if family is not None:  # probabilities outside [0, 1] give NaN logits; a categorical needs one finite logit
    flags.append(jnp.any(jnp.isnan(family.logits)))
    if family.kind != BERNOULLI:
      flags.append(jnp.any(jnp.all(jnp.isneginf(family.logits), axis=-1)))
  return jnp.any(jnp.stack(flags)) if flags else jnp.asarray(False)


# ----------------------------------------------------------------------------------------------------------
# Gaussian families (measure-valued derivatives, delta-method control variates).
# ----------------------------------------------------------------------------------------------------------


class GaussianDiag(NamedTuple):
  """A Gaussian with independent coordinates; ``loc`` and ``scale`` have the shape of one sample."""

  loc: Array
  scale: Array


GAUSSIAN_DIAG_CLASSES = (
  "distrax.Normal, distrax.MultivariateNormalDiag, tfp Normal and MultivariateNormalDiag, "
  "numpyro Normal, and Independent wrappers of these"
)


def gaussian_diag(dist: Any) -> GaussianDiag | None:
  """``loc`` and ``scale`` of a Gaussian with independent coordinates, broadcast to one sample; else ``None``.

  Both are differentiable in the distribution's parameters (they carry the chain rule to ``params``).
  """
  inner = unwrap(dist)
  nd = _numpyro()
  if isinstance(inner, (distrax.Normal, tfd.Normal)) or (nd is not None and isinstance(inner, nd.Normal)):
    loc, scale = inner.loc, inner.scale
  elif isinstance(inner, distrax.MultivariateNormalDiag):
    loc, scale = inner.loc, inner.scale_diag
  elif isinstance(inner, tfd.MultivariateNormalDiag):
    loc, scale = inner.loc, inner.stddev()
  else:
    return None
  shape = sample_shape(dist)
  loc = jnp.zeros((), jnp.result_type(scale)) if loc is None else loc  # TFP's MultivariateNormalDiag(scale_diag=...)
  return GaussianDiag(jnp.broadcast_to(loc, shape), jnp.broadcast_to(scale, shape))


_FULL_GAUSSIANS = (
  distrax.MultivariateNormalTri,
  distrax.MultivariateNormalFullCovariance,
  distrax.MultivariateNormalDiagPlusLowRank,
  distrax.MultivariateNormalFromBijector,
  tfd.MultivariateNormalLinearOperator,
)


def gaussian_mean_and_covariance(dist: Any, *, who: str) -> tuple[Array, Array, bool]:
  """Mean and covariance of a Gaussian over the flattened sample.

  Returns ``(mean, cov, diagonal)``: ``mean`` of shape (D,), and either the variances (D,) when
  ``diagonal`` or the full covariance (D, D). Raises a ``TypeError`` naming ``who`` for anything else.
  """
  diag = gaussian_diag(dist)
  if diag is not None:
    return diag.loc.reshape(-1), jnp.square(diag.scale).reshape(-1), True
  nd = _numpyro()
  numpyro_full = nd is not None and isinstance(dist, (nd.MultivariateNormal, nd.LowRankMultivariateNormal))
  if isinstance(dist, _FULL_GAUSSIANS) or numpyro_full:
    if tuple(dist.batch_shape):
      raise TypeError(f"{who} needs a single multivariate normal (no batch dimensions); got {describe(dist)}.")
    if numpyro_full:
      return dist.loc, dist.covariance_matrix, False
    return dist.mean(), dist.covariance(), False
  raise TypeError(
    f"{who} needs a Gaussian distribution ({GAUSSIAN_DIAG_CLASSES}; or a single multivariate normal with a "
    f"full covariance: distrax MultivariateNormalTri/FullCovariance/DiagPlusLowRank/FromBijector, tfp "
    f"MultivariateNormalTriL/FullCovariance, numpyro MultivariateNormal); got {describe(dist)}."
  )


# ----------------------------------------------------------------------------------------------------------
# Discrete families: Bernoulli, categorical (index samples) and one-hot categorical, in every library.
# ----------------------------------------------------------------------------------------------------------

BERNOULLI = "bernoulli"
CATEGORICAL = "categorical"
ONE_HOT = "one_hot"

DISCRETE_CLASSES = {
  BERNOULLI: "Bernoulli (distrax, tfp, numpyro)",
  CATEGORICAL: "Categorical (distrax, tfp, numpyro)",
  ONE_HOT: "OneHotCategorical (distrax, tfp)",
}


class DiscreteFamily(NamedTuple):
  """The innermost discrete distribution of ``dist``: its family and its logits, not yet broadcast."""

  kind: str
  logits: Array


def discrete_family(dist: Any) -> DiscreteFamily | None:
  """The family and logits of a Bernoulli or (one-hot) categorical distribution, or ``None``.

  Logits are differentiable in the parameters (for a distribution built from probabilities, they are
  ``log p`` or ``log p - log(1 - p)``).
  """
  inner = unwrap(dist)
  nd = _numpyro()
  if isinstance(inner, distrax.Bernoulli):
    return DiscreteFamily(BERNOULLI, inner.logits)
  if isinstance(inner, distrax.OneHotCategorical):
    return DiscreteFamily(ONE_HOT, inner.logits)
  if isinstance(inner, distrax.Categorical):
    return DiscreteFamily(CATEGORICAL, inner.logits)
  if isinstance(inner, tfd.Bernoulli):
    return DiscreteFamily(BERNOULLI, inner.logits_parameter())
  if isinstance(inner, tfd.OneHotCategorical):
    return DiscreteFamily(ONE_HOT, inner.logits_parameter())
  if isinstance(inner, tfd.Categorical):
    return DiscreteFamily(CATEGORICAL, inner.logits_parameter())
  if nd is not None:
    if isinstance(inner, (nd.BernoulliLogits, nd.BernoulliProbs)):
      return DiscreteFamily(BERNOULLI, inner.logits)
    if isinstance(inner, (nd.CategoricalLogits, nd.CategoricalProbs)):
      return DiscreteFamily(CATEGORICAL, inner.logits)
  return None
