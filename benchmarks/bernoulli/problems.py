r"""What the Bernoulli suite measures: the toy's cost, its exact values (``closed_forms.md``, Section 2), the
fixed RELAX control, and the configuration with its presets.

With :math:`p = \sigma(\phi)`, :math:`f(b) = (b - p_0)^2` and :math:`\Delta = f(1) - f(0) = 1 - 2 p_0`, the
objective is :math:`F = p (1 - p_0)^2 + (1 - p) p_0^2` and its exact gradient :math:`\Delta p (1 - p)`.
"""

from __future__ import annotations

import dataclasses
import math

import distrax
import jax
import jax.numpy as jnp

from benchmarks import suite

SUITE = "bernoulli"
ESTIMATORS = ("REINFORCE", "LOO", "ARM", "DisARM", "RELAX", "Gumbel")
WITH_CLOSED_FORM = ("REINFORCE", "LOO", "ARM", "DisARM")
TRAINING_ESTIMATORS = ("REINFORCE", "REBAR", "RELAX")
TRAINING_EVALUATIONS = {"REINFORCE": 1, "REBAR": 3, "RELAX": 1}  # one sample per step; REBAR evaluates f 3 times
NUM_SAMPLES = {"REINFORCE": 1, "LOO": 2, "ARM": 2, "DisARM": 2, "RELAX": 2, "Gumbel": 1}
EVALUATIONS = dict(NUM_SAMPLES)  # evaluations of f per estimate
GUMBEL_TEMPERATURE = 0.5
REBAR_TEMPERATURE = 0.5

RELAX_HIDDEN = 10
RELAX_CONTROL_PARAMS = {
  "a": 0.25,
  "w1": (0.1,) * RELAX_HIDDEN,
  "b1": (0.0,) * RELAX_HIDDEN,
  "w2": (0.1,) * RELAX_HIDDEN,
}


def relax_control(cp: dict[str, jax.Array], z: jax.Array) -> jax.Array:
  """The RELAX control ``a + w2 . tanh(w1 z + b1)`` for one noisy logit ``z`` (shape ``()``)."""
  return cp["a"] + jnp.sum(jnp.tanh(z * cp["w1"] + cp["b1"]) * cp["w2"])


def relax_control_params() -> dict[str, jax.Array]:
  """:data:`RELAX_CONTROL_PARAMS` as float32 arrays."""
  return {k: jnp.asarray(v, jnp.float32) for k, v in RELAX_CONTROL_PARAMS.items()}


def dist_builder(params):
  """``Bernoulli(logits=params["logits"])`` with float samples.

  Float bits: the relaxation-based estimators (Gumbel, REBAR) need the samples' own dtype to hold relaxed values.
  """
  return distrax.Bernoulli(logits=params["logits"], dtype=jnp.float32)


def cost(p0):
  """``f(b) = (b - p0)^2``."""
  return lambda b: (b - p0) ** 2


# ----------------------------------------------------------------------------------------------------------
# Exact values (closed_forms.md, Section 2).
# ----------------------------------------------------------------------------------------------------------


def cost_values(p0: float) -> tuple[float, float]:
  """``(f(0), f(1))``."""
  return p0**2, (1 - p0) ** 2


def exact_gradient(p0: float, p: float) -> float:
  """``dF/dphi = (1 - 2 p0) p (1 - p)``."""
  return (1 - 2 * p0) * p * (1 - p)


def exact_loss(p0: float, p: float) -> float:
  """``F = E[(b - p0)^2] = p (1 - p0)^2 + (1 - p) p0^2``."""
  f0, f1 = cost_values(p0)
  return p * f1 + (1 - p) * f0


def exact_variance(label: str, p0: float, p: float) -> float | None:
  """Variance of ONE estimate (at the estimator's cost) from the reference's closed forms; None if none."""
  f0, f1 = cost_values(p0)
  delta = f1 - f0
  q = p * (1 - p)
  m = min(p, 1 - p)
  big = 1 - m
  if label == "REINFORCE":
    return q * (f1**2 * (1 - p) + f0**2 * p) - delta**2 * q**2
  if label == "LOO":
    return 0.5 * delta**2 * q * (1 - 2 * q)
  if label == "ARM":
    return (2 / 3) * delta**2 * (1 / 8 - (0.5 - m) ** 3) - delta**2 * q**2
  if label == "DisARM":
    return 0.5 * delta**2 * big**2 * m * (1 - 2 * m)
  return None


def gumbel_moments(p0: float, p: float, temperature: float = GUMBEL_TEMPERATURE) -> tuple[float, float]:
  """Mean and variance of the single-sample Gumbel-softmax (binary Concrete) estimate, by quadrature.

  With logistic noise ``L`` and ``s = sigmoid((phi + L) / t)``, the estimate is
  ``g = 2 (s - p0) s (1 - s) / t``; its moments are integrals over ``L`` against the logistic density.
  """
  from scipy import integrate  # noqa: PLC0415 (only needed here)

  phi = math.log(p) - math.log1p(-p)

  def g(noise):
    s = 0.5 * (1 + math.tanh((phi + noise) / (2 * temperature)))
    return 2 * (s - p0) * s * (1 - s) / temperature

  def density(noise):
    e = math.exp(-abs(noise))
    return e / (1 + e) ** 2

  opts = dict(epsabs=1e-14, epsrel=1e-11, limit=400, points=(-phi,))
  lo, hi = -60.0, 60.0
  mean = integrate.quad(lambda x: g(x) * density(x), lo, hi, **opts)[0]
  second = integrate.quad(lambda x: g(x) ** 2 * density(x), lo, hi, **opts)[0]
  return mean, second - mean**2


def reference_variance(label: str, p0: float, p: float) -> tuple[float | None, str | None]:
  """The value a measured variance is compared with, and where it comes from."""
  value = exact_variance(label, p0, p)
  if value is not None:
    return value, "closed form"
  if label == "Gumbel":
    return gumbel_moments(p0, p)[1], "quadrature"
  return None, None


def logit(p: float) -> float:
  """``log(p / (1 - p))``."""
  return math.log(p) - math.log1p(-p)


# ----------------------------------------------------------------------------------------------------------
# Configuration.
# ----------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class BernoulliConfig(suite.SuiteConfig):
  """What the Bernoulli benchmark measures.

  Attributes:
    p0_values: the targets ``p0`` of the variance sweep.
    p_values: the probabilities ``p = sigmoid(phi)`` at which the gradient is estimated, in (0, 1).
    num_repeats: independent estimates per variance cell.
    estimators: a subset of ``ESTIMATORS`` for the variance sweep.
    batch_size: repeats evaluated at once (``jax.lax.map``); ``None`` for all at once.
    training_p0s: the targets of the training runs.
    training_estimators: a subset of ``TRAINING_ESTIMATORS``.
    steps: Adam steps per training run.
    learning_rate: Adam's learning rate for ``phi``.
    control_learning_rate: Adam's learning rate for the REBAR / RELAX control.
    log_every: steps between the points of a training curve.
    num_se: the half-width of the intervals, in standard errors.
  """

  p0_values: tuple[float, ...] = (0.49, 0.499)
  p_values: tuple[float, ...] = (0.05, 0.1, 0.3, 0.5, 0.7, 0.9, 0.95)
  num_repeats: int = 20_000
  estimators: tuple[str, ...] = ESTIMATORS
  batch_size: int | None = None
  training_p0s: tuple[float, ...] = (0.45, 0.499)
  training_estimators: tuple[str, ...] = TRAINING_ESTIMATORS
  steps: int = 1_000
  learning_rate: float = 0.01
  control_learning_rate: float = 0.01
  log_every: int = 50
  num_se: float = 5.0

  def check(self) -> None:
    """Raises a ``ValueError`` naming the first setting that is out of range."""
    super().check()
    self.require_subset("estimators", ESTIMATORS)
    self.require_subset("training_estimators", TRAINING_ESTIMATORS)
    for p in self.p_values:
      if not 0 < p < 1:
        raise ValueError(f"p_values must lie in (0, 1); got {p}.")
    self.require_at_least(2, "num_repeats")


PRESETS = {
  "quick": BernoulliConfig(num_repeats=100_000, steps=2_000, log_every=50),
  "full": BernoulliConfig(
    p_values=tuple(round(0.05 * i, 2) for i in range(1, 20)),
    num_repeats=1_000_000,
    batch_size=250_000,
    steps=5_000,
    log_every=100,
  ),
}
