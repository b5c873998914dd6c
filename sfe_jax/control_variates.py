"""Control variates for :func:`sfe_jax.with_control_variate`: a function ``h`` with a known ``E[h]``."""

from sfe_jax._src.variance.control_variates import ControlVariate as ControlVariate
from sfe_jax._src.variance.control_variates import delta_method as delta_method
from sfe_jax._src.variance.control_variates import estimate_coefficient as estimate_coefficient

__all__ = ("ControlVariate", "delta_method", "estimate_coefficient")
