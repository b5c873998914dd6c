"""The logistic-regression suite's cells: one training run per estimator, with the curve and the variance
checkpoints.

Every timed figure excludes compilation: each cell compiles its three programs (a training segment of
``log_every`` steps, the variance batch, the full-data evaluation) ahead of time (``jit(...).lower(...)
.compile()``, timed apart and recorded as ``compile_seconds``) and runs each once untimed (the warm-up,
results discarded) before the timed calls, which wait for their results (``block_until_ready``).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import sfe_jax as sfe
from benchmarks import suite
from benchmarks.logistic.problems import (
  ESTIMATORS,
  MA_DECAY,
  NUM_COEFFICIENT_SAMPLES,
  PARAM_NAMES,
  SLUGS,
  SUITE,
  LogisticConfig,
  dist_builder,
  evaluate,
  initial_params,
  kl_to_prior,
  load_data,
  make_cost,
)
from benchmarks.timing import compile_and_warm, timed

# ----------------------------------------------------------------------------------------------------------
# Estimators.
# ----------------------------------------------------------------------------------------------------------


def build_estimator(label: str) -> sfe.Estimator:
  """The estimator ``label`` (see the suite's docstring)."""
  base_label = label.replace(" + delta", "")
  if base_label == "pathwise":
    est = sfe.pathwise()
  elif base_label == "score function":
    est = sfe.score_function()
  elif base_label == "score function + MA":
    est = sfe.score_function(sfe.baselines.moving_average(MA_DECAY))
  elif base_label == "measure-valued":
    est = sfe.measure_valued()
  else:
    raise ValueError(f"unknown estimator {label!r}; expected one of {ESTIMATORS}.")
  if label.endswith(" + delta"):
    est = sfe.with_control_variate(
      est, sfe.control_variates.delta_method(), num_coefficient_samples=NUM_COEFFICIENT_SAMPLES
    )
  return est


def is_measure_valued(label: str) -> bool:
  """Whether ``label`` is one of the measure-valued estimators."""
  return label.startswith("measure-valued")


def evaluations_per_sample(label: str, dim: int) -> int:
  """Evaluations of ``f`` per sample (per base sample for measure-valued)."""
  return 4 * dim if is_measure_valued(label) else 1


def samples_per_step(label: str, config: LogisticConfig) -> int:
  """Posterior samples (base samples for measure-valued) per training step."""
  return config.measure_valued_samples if is_measure_valued(label) else config.num_samples


def coefficient_evaluations(label: str, dim: int) -> int:
  """Extra evaluations of ``f`` per estimate for the delta-method coefficient (0 without a control variate)."""
  return NUM_COEFFICIENT_SAMPLES * evaluations_per_sample(label, dim) if label.endswith(" + delta") else 0


def cell_id(label: str) -> str:
  """The id of the training cell of ``label``."""
  return f"{SUITE}/training/{SLUGS[label]}"


# ----------------------------------------------------------------------------------------------------------
# One training run.
# ----------------------------------------------------------------------------------------------------------


def _summaries(variance: dict[str, np.ndarray]) -> dict[str, float]:
  out = {}
  for name in PARAM_NAMES:
    v = np.asarray(variance[name], np.float64)
    out[f"var_{name}_avg"] = float(v.mean())
    out[f"var_{name}_max"] = float(v.max())
  return out


def measure_training(config: LogisticConfig, label: str, key: jax.Array) -> dict[str, Any]:
  """Trains ``q`` by SGD with one estimator; returns one record with the curve and the variance checkpoints.

  ``seconds`` is the wall time of the training segments alone, ``seconds_per_estimate`` (per checkpoint) that
  of one batch of ``num_repeats`` estimates divided by ``num_repeats``; both exclude compilation (the cell's
  ``compile_seconds``: the three programs of the module docstring) and the evaluation of the curve.
  """
  x_np, y_np = load_data()
  x, y = jnp.asarray(x_np), jnp.asarray(y_np)
  n, dim = x_np.shape
  estimator = build_estimator(label)
  num_samples = samples_per_step(label, config)
  per_sample = evaluations_per_sample(label, dim)  # sfe's num_samples counts evaluations of f
  steps, bs = config.steps, config.batch_size
  key_train, key_var = jax.random.split(key)
  key_eval = config.key(f"{SUITE}/evaluation")  # shared by all cells: the same q gives the same ELBO

  def step(carry, inputs):
    params, est_state = carry
    t, k = inputs
    k_batch, k_est = jax.random.split(k)
    idx = jax.random.choice(k_batch, n, (bs,), replace=False)
    f = make_cost(x[idx], y[idx], float(n))
    _, grads, est_state = sfe.value_and_grad(
      estimator, f, dist_builder, params, k_est, num_samples=num_samples * per_sample, state=est_state
    )
    kl_grads = jax.grad(kl_to_prior)(params)
    lr = config.learning_rate * jnp.cos(0.5 * jnp.pi * t.astype(jnp.float32) / steps)
    params = jax.tree.map(lambda p, g, gk: p + lr * (g - gk), params, grads, kl_grads)
    return (params, est_state), None

  def segment(params, est_state, k, start):
    ts = start + jnp.arange(config.log_every)
    (params, est_state), _ = jax.lax.scan(step, (params, est_state), (ts, jax.random.split(k, config.log_every)))
    return params, est_state

  def moments(params, est_state, k, xb, yb):
    # Inside this function's own jit (compiled once per cell below): gradient_moments' inner jit is inlined.
    m = sfe.diagnostics.gradient_moments(
      estimator,
      make_cost(xb, yb, float(n)),
      dist_builder,
      params,
      k,
      num_samples=per_sample,
      num_repeats=config.num_repeats,
      state=est_state,
    )
    return m.variance, m.mean

  def evaluation(params, k):
    return evaluate(params, k, x, y, config.eval_samples)

  params = initial_params(dim)
  est_state = estimator.init(params)
  compiled_moments, moments_compile = compile_and_warm(moments, params, est_state, key_var, x[:bs], y[:bs])
  compiled_segment, segment_compile = compile_and_warm(segment, params, est_state, key_train, jnp.asarray(0, jnp.int32))
  compiled_eval, eval_compile = compile_and_warm(evaluation, params, key_eval)
  compile_seconds = moments_compile + segment_compile + eval_compile

  def measure_variance(s, params, est_state):
    k_batch, k_rep = jax.random.split(jax.random.fold_in(key_var, s))
    idx = jax.random.choice(k_batch, n, (bs,), replace=False)
    (variance, _), seconds = timed(compiled_moments, params, est_state, k_rep, x[idx], y[idx])
    spe = seconds / config.num_repeats
    entry = {"step": s, **_summaries(jax.device_get(variance)), "seconds_per_estimate": spe}
    for name in PARAM_NAMES:
      entry[f"work_normalised_variance_{name}"] = entry[f"var_{name}_avg"] * spe
    return entry

  curve, checkpoints = [], []
  train_seconds = 0.0
  for s in range(0, steps + 1, config.log_every):
    elbo, acc = jax.device_get(compiled_eval(params, jax.random.fold_in(key_eval, s)))
    curve.append([s, float(elbo), float(acc)])
    if s % config.variance_every == 0:
      checkpoints.append(measure_variance(s, params, est_state))
    if s == steps:
      break
    (params, est_state), seconds = timed(
      compiled_segment, params, est_state, jax.random.fold_in(key_train, s), jnp.asarray(s, jnp.int32)
    )
    train_seconds += seconds
  coeff = coefficient_evaluations(label, dim)
  params_np = jax.device_get(params)
  return {
    "suite": SUITE,
    "kind": "training",
    "problem": "breast_cancer",
    "estimator": label,
    "estimator_name": estimator.name,
    "dim": dim,
    "num_data": n,
    "steps": steps,
    "learning_rate": config.learning_rate,
    "batch_size": bs,
    "samples_per_step": num_samples,
    "evaluations": num_samples * per_sample + coeff,  # evaluations of f per training step
    "evaluations_per_sample": per_sample,
    "coefficient_evaluations": coeff,
    "single_sample_evaluations": per_sample + coeff,  # per estimate of the variance checkpoints
    "eval_samples": config.eval_samples,
    "num_repeats": config.num_repeats,
    "final_elbo": curve[-1][1],
    "final_accuracy": curve[-1][2],
    "curve": curve,
    "variance": checkpoints,
    "final_mean_norm": float(np.linalg.norm(params_np["mean"])),
    "final_scale_mean": float(np.exp(params_np["log_scale"]).mean()),
    "seconds": train_seconds,  # training steps only (compilation, warm-up and evaluation excluded)
    "compile_seconds": compile_seconds,  # the three programs of this cell, compiled once each
  }


# ----------------------------------------------------------------------------------------------------------
# Cells.
# ----------------------------------------------------------------------------------------------------------


def cells(config: LogisticConfig) -> list[suite.Cell]:
  """One training run per estimator; ``measure()`` returns ``[record]``."""
  config.check()
  out: list[suite.Cell] = []
  for label in (e for e in ESTIMATORS if e in config.estimators):
    cid = cell_id(label)
    out.append((cid, lambda label=label, cid=cid: [measure_training(config, label, config.key(cid))]))
  return out
