"""Diagnostics: the mean, variance, signal-to-noise ratio, bias and cost of a gradient estimator."""

from sfe_jax._src.diagnostics.moments import GradientBias as GradientBias
from sfe_jax._src.diagnostics.moments import GradientMoments as GradientMoments
from sfe_jax._src.diagnostics.moments import bias as bias
from sfe_jax._src.diagnostics.moments import gradient_moments as gradient_moments
from sfe_jax._src.diagnostics.moments import repeated_estimates as repeated_estimates
from sfe_jax._src.diagnostics.moments import variance_and_std_error as variance_and_std_error
from sfe_jax._src.diagnostics.report import Report as Report
from sfe_jax._src.diagnostics.report import Timing as Timing
from sfe_jax._src.diagnostics.report import evaluate as evaluate
from sfe_jax._src.diagnostics.report import time_per_estimate as time_per_estimate

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
  "variance_and_std_error",
)
