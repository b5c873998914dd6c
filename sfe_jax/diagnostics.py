"""Diagnostics: the mean, variance, signal-to-noise ratio, bias and cost of a gradient estimator."""

from sfe_jax._src.diagnostics import GradientBias as GradientBias
from sfe_jax._src.diagnostics import GradientMoments as GradientMoments
from sfe_jax._src.diagnostics import Report as Report
from sfe_jax._src.diagnostics import Timing as Timing
from sfe_jax._src.diagnostics import bias as bias
from sfe_jax._src.diagnostics import evaluate as evaluate
from sfe_jax._src.diagnostics import gradient_moments as gradient_moments
from sfe_jax._src.diagnostics import repeated_estimates as repeated_estimates
from sfe_jax._src.diagnostics import time_per_estimate as time_per_estimate

__all__ = (
    "GradientBias",
    "GradientMoments",
    "Report",
    "Timing",
    "bias",
    "evaluate",
    "gradient_moments",
    "repeated_estimates",
    "time_per_estimate",
)
