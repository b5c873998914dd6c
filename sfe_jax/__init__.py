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
from sfe_jax._src.core.api import expectation as expectation
from sfe_jax._src.core.api import value_and_grad as value_and_grad
from sfe_jax._src.core.differentiation import HigherOrderError as HigherOrderError
from sfe_jax._src.core.distributions import is_reparameterizable as is_reparameterizable
from sfe_jax._src.core.distributions import register_reparameterizable as register_reparameterizable
from sfe_jax._src.core.types import EmptyState as EmptyState
from sfe_jax._src.core.types import Estimator as Estimator
from sfe_jax._src.core.types import SampleCount as SampleCount
from sfe_jax._src.discrete.antithetic import arm as arm
from sfe_jax._src.discrete.antithetic import disarm as disarm
from sfe_jax._src.discrete.relax import rebar as rebar
from sfe_jax._src.discrete.relax import relax as relax
from sfe_jax._src.discrete.relaxations import gumbel_softmax as gumbel_softmax
from sfe_jax._src.discrete.relaxations import straight_through as straight_through
from sfe_jax._src.discrete.unordered_set import unordered_set as unordered_set
from sfe_jax._src.estimators.enumeration import enumerate as enumerate  # pylint: disable=redefined-builtin
from sfe_jax._src.estimators.measure_valued import measure_valued as measure_valued
from sfe_jax._src.estimators.pathwise import pathwise as pathwise
from sfe_jax._src.estimators.score_function import score_function as score_function
from sfe_jax._src.variance.control_variates import with_control_variate as with_control_variate

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
