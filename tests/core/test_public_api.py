"""The public API, pinned: every name users import, with its parameters.

This test is the contract of a refactor: moving code inside ``sfe_jax._src`` must leave it passing unchanged.
A deliberate API change edits ``PUBLIC`` here and says so in the CHANGELOG.
"""

import importlib
import inspect

import pytest

import sfe_jax

# module -> public name -> the names of its parameters (None for exception classes).
PUBLIC = {
  "sfe_jax": {
    "arm": (),
    "disarm": (),
    "EmptyState": (),
    "enumerate": ("max_support",),
    "Estimator": ("init", "surrogate", "name", "sample_count", "max_order", "chunking"),
    "expectation": (
      "estimator",
      "f",
      "dist_builder",
      "params",
      "key",
      "num_samples",
      "state",
      "max_memory",
      "chunk_size",
      "sample_sharding",
      "sampler",
    ),
    "gumbel_softmax": ("temperature", "straight_through"),
    "HigherOrderError": None,
    "is_reparameterizable": ("dist",),
    "measure_valued": ("coupling",),
    "pathwise": (),
    "rebar": ("temperature", "scale", "optimizer"),
    "register_reparameterizable": ("cls", "reparameterizable"),
    "relax": ("control_fn", "control_params", "optimizer"),
    "SampleCount": ("multiple", "minimum", "maximum", "default", "reason"),
    "score_function": ("baseline",),
    "straight_through": (),
    "unordered_set": ("max_support",),
    "value_and_grad": (
      "estimator",
      "f",
      "dist_builder",
      "params",
      "key",
      "num_samples",
      "state",
      "max_memory",
      "chunk_size",
      "sample_sharding",
      "sampler",
    ),
    "with_control_variate": ("estimator", "control_variate", "num_coefficient_samples", "coefficient"),
  },
  "sfe_jax.baselines": {
    "Baseline": ("init", "compute", "name", "per_coordinate", "min_samples", "batch_compute"),
    "constant": ("value",),
    "leave_one_out": (),
    "moving_average": ("decay",),
    "MovingAverageState": ("average", "count", "skipped"),
    "optimal": (),
  },
  "sfe_jax.control_variates": {
    "ControlVariate": ("name", "make"),
    "delta_method": (),
    "estimate_coefficient": ("grads_f", "grads_h", "eps"),
  },
  "sfe_jax.diagnostics": {
    "bias": ("moments", "exact_grad"),
    "evaluate": (
      "estimator",
      "f",
      "dist_builder",
      "params",
      "key",
      "num_samples",
      "num_repeats",
      "exact_grad",
      "state",
      "batch_size",
      "sampler",
      "chunk_size",
      "timing_repeats",
      "warmup",
    ),
    "gradient_moments": (
      "estimator",
      "f",
      "dist_builder",
      "params",
      "key",
      "num_samples",
      "num_repeats",
      "state",
      "batch_size",
      "sampler",
      "chunk_size",
    ),
    "GradientBias": ("bias", "z_score", "max_abs_z"),
    "GradientMoments": (
      "mean",
      "variance",
      "snr",
      "std_error",
      "variance_std_error",
      "value_mean",
      "num_repeats",
      "num_samples",
    ),
    "repeated_estimates": (
      "estimator",
      "f",
      "dist_builder",
      "params",
      "key",
      "num_samples",
      "num_repeats",
      "state",
      "batch_size",
      "sampler",
      "chunk_size",
    ),
    "Report": ("moments", "bias", "timing", "work_normalized_variance", "estimator_name", "value_name"),
    "time_per_estimate": (
      "estimator",
      "f",
      "dist_builder",
      "params",
      "key",
      "num_samples",
      "repeats",
      "warmup",
      "state",
      "sampler",
      "chunk_size",
    ),
    "Timing": ("median_seconds", "min_seconds", "compile_seconds"),
    "variance_and_std_error": ("samples", "axis"),
  },
  "sfe_jax.objectives": {
    "dice": ("costs", "log_probs", "dependencies", "baselines"),
    "dreg": (),
    "iwae": (),
    "magic_box": ("x",),
    "Objective": ("init", "surrogate", "name", "sample_count", "max_order", "value_name"),
    "surrogate": ("objective", "log_joint", "dist_builder", "params", "key", "num_samples", "state"),
    "value_and_grad": ("objective", "log_joint", "dist_builder", "params", "key", "num_samples", "state"),
    "vimco": (),
  },
  "sfe_jax.rl": {
    "action_entropies": ("policy", "batch_ndims"),
    "action_log_probs": ("policy", "actions", "batch_ndims"),
    "actor_critic_loss": (
      "log_probs",
      "values",
      "rewards",
      "mask",
      "gamma",
      "lam",
      "entropies",
      "value_coef",
      "entropy_coef",
      "bootstrap_value",
      "time_discount",
    ),
    "ActorCriticTerms": ("policy_loss", "value_loss", "entropy", "advantages"),
    "discounted_returns": ("rewards", "mask", "gamma"),
    "gae": ("rewards", "values", "mask", "gamma", "lam", "bootstrap_value"),
    "importance_weights": ("target_log_probs", "behaviour_log_probs", "mask"),
    "model_based_objective": (
      "policy_fn",
      "dynamics",
      "reward",
      "params",
      "init_state",
      "key",
      "horizon",
      "gamma",
      "estimator",
      "num_trajectories",
      "baseline",
    ),
    "model_rollout": ("policy_fn", "dynamics", "reward", "params", "init_state", "key", "horizon", "reparameterize"),
    "ModelRollout": ("states", "actions", "rewards", "log_probs"),
    "off_policy_value": (
      "target_log_probs",
      "behaviour_log_probs",
      "rewards",
      "mask",
      "gamma",
      "estimator",
      "clip_rho",
    ),
    "ppo_loss": ("log_probs", "old_log_probs", "advantages", "mask", "clip_eps"),
    "ppo_value_loss": ("values", "old_values", "returns", "mask", "clip_eps"),
    "reinforce_loss": ("log_probs", "rewards", "mask", "gamma", "baseline", "reward_to_go", "time_discount"),
    "sample_actions": ("policy", "key", "batch_ndims", "reparameterize"),
    "TanhNormal": ("loc", "scale"),
    "VTrace": ("vs", "pg_advantages"),
    "vtrace": (
      "target_log_probs",
      "behaviour_log_probs",
      "rewards",
      "values",
      "mask",
      "gamma",
      "bootstrap_value",
      "clip_rho",
      "clip_c",
      "clip_pg_rho",
      "lam",
    ),
  },
}

# Importable as ``sfe.enumerate`` but left out of ``__all__``: ``from sfe_jax import *`` must not shadow the builtin.
NOT_IN_ALL = {"sfe_jax": {"enumerate"}}
SUBMODULES = ("baselines", "control_variates", "diagnostics", "objectives", "rl")


@pytest.mark.parametrize("module_name", sorted(PUBLIC))
def test_every_public_name_is_importable_with_its_parameters(module_name):
  module = importlib.import_module(module_name)
  for name, parameters in PUBLIC[module_name].items():
    obj = getattr(module, name)
    if parameters is not None:
      assert tuple(inspect.signature(obj).parameters) == parameters, f"{module_name}.{name}"


@pytest.mark.parametrize("module_name", sorted(PUBLIC))
def test_all_lists_exactly_the_public_names(module_name):
  module = importlib.import_module(module_name)
  expected = set(PUBLIC[module_name]) - NOT_IN_ALL.get(module_name, set())
  if module_name == "sfe_jax":
    expected |= set(SUBMODULES)
  assert set(module.__all__) == expected
  assert len(module.__all__) == len(set(module.__all__))


def test_star_import_does_not_shadow_builtins():
  namespace = {}
  exec("from sfe_jax import *", namespace)  # pylint: disable=exec-used
  assert "enumerate" not in namespace
  assert "score_function" in namespace
  assert sfe_jax.enumerate is not enumerate  # still importable as sfe.enumerate
