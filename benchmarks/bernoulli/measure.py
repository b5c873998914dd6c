"""The Bernoulli suite's cells: the variance sweep (one compiled batch of repeats per estimator) and the
training runs (one compiled ``lax.scan`` per run).

Every timed figure excludes compilation: each executable is compiled ahead of time (``jit(...).lower(...)
.compile()``, timed apart as ``compile_seconds``) and run once untimed (the warm-up) before the timed call,
which waits for its result (``block_until_ready``).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import sfe_jax as sfe
from benchmarks import suite
from benchmarks.bernoulli.problems import (
  ESTIMATORS,
  EVALUATIONS,
  GUMBEL_TEMPERATURE,
  NUM_SAMPLES,
  REBAR_TEMPERATURE,
  SUITE,
  TRAINING_ESTIMATORS,
  TRAINING_EVALUATIONS,
  BernoulliConfig,
  cost,
  cost_values,
  dist_builder,
  exact_gradient,
  exact_loss,
  gumbel_moments,
  logit,
  reference_variance,
  relax_control,
  relax_control_params,
)
from benchmarks.timing import compile_and_warm, timed

# ----------------------------------------------------------------------------------------------------------
# Variance sweep.
# ----------------------------------------------------------------------------------------------------------


def build_estimator(label: str) -> sfe.Estimator:
  """The estimator ``label`` of the variance sweep (see the suite's docstring)."""
  if label == "REINFORCE":
    return sfe.score_function()
  if label == "LOO":
    return sfe.score_function(sfe.baselines.leave_one_out())
  if label == "ARM":
    return sfe.arm()
  if label == "DisARM":
    return sfe.disarm()
  if label == "RELAX":
    return sfe.relax(relax_control, relax_control_params(), optimizer=optax.set_to_zero())
  if label == "Gumbel":
    return sfe.gumbel_softmax(GUMBEL_TEMPERATURE)
  raise ValueError(f"unknown estimator {label!r}; expected one of {ESTIMATORS}.")


_COMPILED: dict[tuple[str, int, int | None], tuple[Any, float]] = {}


def compiled_batch(label: str, num_repeats: int, batch_size: int | None) -> tuple[Any, float]:
  """``(run, compile_seconds)``: ``run(phi, p0, key) -> grads (R,)``, compiled and warmed up once per (estimator,
  repeats, batch size) and shared by the cells of that estimator (``phi``, ``p0`` and the key are arguments);
  ``compile_seconds`` is the time its compilation took."""
  cache_key = (label, num_repeats, batch_size)
  if cache_key not in _COMPILED:
    estimator = build_estimator(label)
    n = NUM_SAMPLES[label]

    def run(phi, p0, key):
      params = {"logits": phi}
      state = estimator.init(params)
      _, grads = sfe.diagnostics.repeated_estimates(
        estimator,
        cost(p0),
        dist_builder,
        params,
        key,
        num_samples=n,
        num_repeats=num_repeats,
        state=state,
        batch_size=batch_size,
      )
      return grads["logits"]

    zero = jnp.zeros((), jnp.float32)
    _COMPILED[cache_key] = compile_and_warm(run, zero, zero, jax.random.key(0))
  return _COMPILED[cache_key]


def measure_variance(config: BernoulliConfig, p0: float, p: float, label: str, key: jax.Array) -> dict[str, Any]:
  """One variance cell: ``num_repeats`` estimates of one estimator at one ``(p0, p)``.

  ``seconds`` is the wall time of the compiled, warmed-up batch (compilation excluded, recorded as
  ``compile_seconds``); ``seconds_per_estimate = seconds / num_repeats`` and ``work_normalised_variance =
  variance * seconds_per_estimate``.
  """
  run, compile_seconds = compiled_batch(label, config.num_repeats, config.batch_size)
  phi = jnp.asarray(logit(p), jnp.float32)
  grads, seconds = timed(run, phi, jnp.asarray(p0, jnp.float32), key)
  g = np.asarray(grads, dtype=np.float64)
  r = g.shape[0]
  mean = float(g.mean())
  mean_se = float(g.std(ddof=1) / math.sqrt(r))
  variance, variance_se = (float(v) for v in sfe.diagnostics.variance_and_std_error(g))
  exact_grad = exact_gradient(p0, p)
  if label == "Gumbel":
    expected_mean, expected_variance = gumbel_moments(p0, p)
    variance_source = "quadrature"
  else:
    expected_mean = exact_grad
    expected_variance, variance_source = reference_variance(label, p0, p)
  rounding = float(np.finfo(np.float32).eps) * sum(cost_values(p0))  # float32 allowance (suite docstring)
  mean_ok = abs(mean - expected_mean) <= config.num_se * mean_se + rounding
  if expected_variance is None:
    variance_ok, variance_z = True, None
  else:
    allowance = 1e-6 * abs(expected_variance) + rounding**2
    variance_ok = abs(variance - expected_variance) <= config.num_se * variance_se + allowance
    variance_z = (variance - expected_variance) / variance_se if variance_se > 0 else 0.0
  per_estimate = seconds / r
  return {
    "suite": SUITE,
    "kind": "variance",
    "problem": f"p0={p0}",
    "p0": p0,
    "p": p,
    "phi": logit(p),
    "estimator": label,
    "num_samples": NUM_SAMPLES[label],
    "evaluations": EVALUATIONS[label],
    "num_repeats": r,
    "exact_grad": exact_grad,
    "expected_mean": expected_mean,
    "mean": mean,
    "mean_se": mean_se,
    "mean_z": (mean - expected_mean) / mean_se if mean_se > 0 else 0.0,
    "bias": mean - exact_grad,
    "variance": variance,
    "variance_se": variance_se,
    "exact_variance": expected_variance,
    "exact_variance_source": variance_source,
    "variance_z": variance_z,
    "variance_ok": bool(variance_ok),
    "mean_ok": bool(mean_ok),
    "seconds": seconds,
    "compile_seconds": compile_seconds,
    "seconds_per_estimate": per_estimate,
    "work_normalised_variance": variance * per_estimate,
  }


# ----------------------------------------------------------------------------------------------------------
# Training.
# ----------------------------------------------------------------------------------------------------------


def training_estimator(label: str, config: BernoulliConfig) -> sfe.Estimator:
  """The estimator ``label`` of the training runs; REBAR and RELAX train their control with Adam."""
  if label == "REINFORCE":
    return sfe.score_function()
  if label == "REBAR":
    return sfe.rebar(temperature=REBAR_TEMPERATURE, scale=1.0, optimizer=optax.adam(config.control_learning_rate))
  if label == "RELAX":
    return sfe.relax(relax_control, relax_control_params(), optimizer=optax.adam(config.control_learning_rate))
  raise ValueError(f"unknown training estimator {label!r}; expected one of {TRAINING_ESTIMATORS}.")


def measure_training(config: BernoulliConfig, p0: float, label: str, key: jax.Array) -> dict[str, Any]:
  """Trains ``phi`` from 0 with Adam, one sample per step; returns one record with the curve.

  The whole run is one compiled ``lax.scan``, compiled (``compile_seconds``) and run once untimed before the
  timed run (``seconds``, compilation excluded), which gives the recorded results.
  """
  estimator = training_estimator(label, config)
  opt = optax.adam(config.learning_rate)
  f = cost(p0)
  params = {"logits": jnp.zeros((), jnp.float32)}

  def step(carry, k):
    params, opt_state, est_state = carry
    value, grads, est_state = sfe.value_and_grad(
      estimator, f, dist_builder, params, k, num_samples=TRAINING_EVALUATIONS[label], state=est_state
    )
    updates, opt_state = opt.update(grads, opt_state)
    new_params = optax.apply_updates(params, updates)
    return (new_params, opt_state, est_state), (params["logits"], grads["logits"], value)

  def train(params, k):
    carry = (params, opt.init(params), estimator.init(params))
    carry, (phis, grads, values) = jax.lax.scan(step, carry, jax.random.split(k, config.steps))
    return carry[0]["logits"], phis, grads, values, carry[2]

  compiled, compile_seconds = compile_and_warm(train, params, key)
  (final_phi, phis, grads, _, est_state), seconds = timed(compiled, params, key)
  phis, grads = np.asarray(phis, np.float64), np.asarray(grads, np.float64)
  probs = 1 / (1 + np.exp(-phis))
  errors_sq = (grads - (1 - 2 * p0) * probs * (1 - probs)) ** 2
  curve = []
  every = max(1, config.log_every)
  last = 0
  for s in list(range(0, config.steps, every)) + [config.steps]:
    if s == 0:
      var_est = None
    else:
      var_est = float(errors_sq[last:s].mean())
      last = s
    phi_s = float(final_phi) if s == config.steps else float(phis[s])
    curve.append([s, phi_s, exact_loss(p0, 1 / (1 + math.exp(-phi_s))), var_est])
    if s == config.steps:
      break
  if curve[-1][0] != config.steps:  # pragma: no cover (the loop always ends at `steps`)
    raise AssertionError("training curve does not end at the last step")
  final_phi = float(final_phi)
  final_p = 1 / (1 + math.exp(-final_phi))
  control = None
  if label in ("REBAR", "RELAX"):
    control = {k: np.asarray(v).tolist() for k, v in est_state.control_params.items()}
  return {
    "suite": SUITE,
    "kind": "training",
    "problem": f"p0={p0}",
    "p0": p0,
    "estimator": label,
    "num_samples": TRAINING_EVALUATIONS[label],
    "steps": config.steps,
    "learning_rate": config.learning_rate,
    "control_learning_rate": config.control_learning_rate if label != "REINFORCE" else None,
    "final_phi": final_phi,
    "final_p": final_p,
    "final_loss": exact_loss(p0, final_p),
    "initial_loss": exact_loss(p0, 0.5),
    "optimum_loss": p0**2 if p0 <= 0.5 else (1 - p0) ** 2,
    "mean_gradient_variance": float(errors_sq.mean()),
    "curve": curve,
    "final_control": control,
    "seconds": seconds,
    "compile_seconds": compile_seconds,
  }


# ----------------------------------------------------------------------------------------------------------
# Cells.
# ----------------------------------------------------------------------------------------------------------


def variance_cell_id(p0: float, p: float, label: str) -> str:
  """The id of the variance cell of ``label`` at ``(p0, p)``."""
  return f"{SUITE}/variance/p0={p0}/p={p}/{label}"


def training_cell_id(p0: float, label: str) -> str:
  """The id of the training cell of ``label`` at ``p0``."""
  return f"{SUITE}/training/p0={p0}/{label}"


def cells(config: BernoulliConfig) -> list[suite.Cell]:
  """The variance sweep, then the training runs; ``measure()`` returns ``[record]``."""
  config.check()
  out: list[suite.Cell] = []
  for p0 in config.p0_values:
    for p in config.p_values:
      for label in (e for e in ESTIMATORS if e in config.estimators):
        cid = variance_cell_id(p0, p, label)
        out.append(
          (cid, lambda p0=p0, p=p, label=label, cid=cid: [measure_variance(config, p0, p, label, config.key(cid))])
        )
  for p0 in config.training_p0s:
    for label in (e for e in TRAINING_ESTIMATORS if e in config.training_estimators):
      cid = training_cell_id(p0, label)
      out.append((cid, lambda p0=p0, label=label, cid=cid: [measure_training(config, p0, label, config.key(cid))]))
  return out
