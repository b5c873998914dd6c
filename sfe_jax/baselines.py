"""Baselines for :func:`sfe_jax.score_function`: ``b`` in ``(f(x) - b) grad log p(x)``."""

from sfe_jax._src.variance.baselines import Baseline as Baseline
from sfe_jax._src.variance.baselines import MovingAverageState as MovingAverageState
from sfe_jax._src.variance.baselines import constant as constant
from sfe_jax._src.variance.baselines import leave_one_out as leave_one_out
from sfe_jax._src.variance.baselines import moving_average as moving_average
from sfe_jax._src.variance.baselines import optimal as optimal

__all__ = ("Baseline", "MovingAverageState", "constant", "leave_one_out", "moving_average", "optimal")
