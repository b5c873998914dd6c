"""sfe_jax: Monte Carlo gradient estimators for JAX.

Estimate ``grad_params E_{x ~ dist_builder(params)}[f(x)]`` with one interface over every estimator::

    value, grads, state = sfe.value_and_grad(estimator, f, dist_builder, params, key, num_samples=1000)
    surrogate, state = sfe.expectation(estimator, f, dist_builder, params, key, num_samples=1000)
"""

from sfe_jax import baselines as baselines
from sfe_jax import control_variates as control_variates
from sfe_jax import diagnostics as diagnostics
from sfe_jax import objectives as objectives
from sfe_jax import rl as rl
from sfe_jax._src.antithetic import arm as arm
from sfe_jax._src.antithetic import disarm as disarm
from sfe_jax._src.base import EmptyState as EmptyState
from sfe_jax._src.base import Estimator as Estimator
from sfe_jax._src.base import HigherOrderError as HigherOrderError
from sfe_jax._src.base import SampleCount as SampleCount
from sfe_jax._src.base import expectation as expectation
from sfe_jax._src.base import value_and_grad as value_and_grad
from sfe_jax._src.control_variates import with_control_variate as with_control_variate
from sfe_jax._src.distributions import is_reparameterizable as is_reparameterizable
from sfe_jax._src.distributions import register_reparameterizable as register_reparameterizable
from sfe_jax._src.enumeration import enumerate as enumerate  # pylint: disable=redefined-builtin
from sfe_jax._src.measure_valued import measure_valued as measure_valued
from sfe_jax._src.pathwise import pathwise as pathwise
from sfe_jax._src.relax import rebar as rebar
from sfe_jax._src.relax import relax as relax
from sfe_jax._src.relaxations import gumbel_softmax as gumbel_softmax
from sfe_jax._src.relaxations import straight_through as straight_through
from sfe_jax._src.score_function import score_function as score_function
from sfe_jax._src.unordered_set import unordered_set as unordered_set

__version__ = "0.1.0.dev0"

__all__ = (
    "arm",
    "baselines",
    "control_variates",
    "diagnostics",
    "disarm",
    "EmptyState",
    "Estimator",
    "expectation",
    "gumbel_softmax",
    "HigherOrderError",
    "is_reparameterizable",
    "measure_valued",
    "objectives",
    "pathwise",
    "rebar",
    "register_reparameterizable",
    "rl",
    "SampleCount",
    "relax",
    "score_function",
    "straight_through",
    "unordered_set",
    "value_and_grad",
    "with_control_variate",
)
