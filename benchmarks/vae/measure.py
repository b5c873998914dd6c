"""The VAE suite's estimators, one training run (timed apart from its compilation) and the cells."""

from __future__ import annotations

import time
from typing import Any

import jax
import jax.numpy as jnp
import optax

import sfe_jax as sfe
from benchmarks import suite
from benchmarks.vae.problems import (
  ESTIMATORS,
  EVALUATIONS,
  GUMBEL_TEMPERATURE,
  MODELS,
  NUM_SAMPLES,
  RELAX_HIDDEN,
  SUITE,
  VAEConfig,
  bounds,
  dist_builder,
  elbo_one_sample,
  encode,
  entropy,
  init_model,
  load_data,
  log_joint,
)

# ----------------------------------------------------------------------------------------------------------
# Estimators.
# ----------------------------------------------------------------------------------------------------------


def init_control(key, latent: int, pixels: int, offset: float) -> dict[str, jax.Array]:
  """RELAX's control ``c(z) = a + w2 . tanh(Wz z + Wx x + b1)``: ``a = offset``, ``w2 = 0``, small ``Wz, Wx``."""
  k1, k2 = jax.random.split(key)
  return {
    "a": jnp.asarray(offset, jnp.float32),
    "wz": 0.1 * jax.random.normal(k1, (latent, RELAX_HIDDEN)),
    "wx": 0.1 * jax.random.normal(k2, (pixels, RELAX_HIDDEN)),
    "b1": jnp.zeros(RELAX_HIDDEN),
    "w2": jnp.zeros(RELAX_HIDDEN),
  }


def control_offset(params, xb, key) -> jax.Array:
  """The mean of ``f(b) = -log p(x, b)`` over the examples ``xb``, one ``b ~ q(. | x)`` each: RELAX's
  data-dependent starting offset ``a`` (the control then starts as the constant baseline ``E[f]``)."""

  def one(x, k):
    logits = encode(params, x)
    return -log_joint(params, x, jax.random.bernoulli(k, jax.nn.sigmoid(logits)).astype(jnp.float32))

  return jnp.mean(jax.vmap(one)(xb, jax.random.split(key, xb.shape[0])))


def _control_for(x):
  def control(cp, z):
    return cp["a"] + jnp.tanh(z @ cp["wz"] + x @ cp["wx"] + cp["b1"]) @ cp["w2"]

  return control


def make_estimator(label: str, config: VAEConfig, x=None, control_params=None) -> sfe.Estimator:
  """The estimator ``label`` of ``ESTIMATORS`` (RELAX's control closes over the example ``x``)."""
  if label == "LOO":
    return sfe.score_function(sfe.baselines.leave_one_out())
  if label == "ARM":
    return sfe.arm()
  if label == "DisARM":
    return sfe.disarm()
  if label == "RELAX":
    return sfe.relax(_control_for(x), control_params, optax.adam(config.control_learning_rate))
  if label == "Gumbel":
    return sfe.gumbel_softmax(GUMBEL_TEMPERATURE)
  raise ValueError(f"unknown estimator {label!r}; expected one of {ESTIMATORS}.")


def _average_states(states):
  """The batch mean of per-example estimator states (integers, e.g. Adam's count, are equal: the first)."""
  return jax.tree.map(lambda s: jnp.mean(s, axis=0) if jnp.issubdtype(s.dtype, jnp.floating) else s[0], states)


def per_example_loss(label, config, params, state, x, logits, key):
  """``-(sfe surrogate of E_q log p(x, b)) - H(q)`` for one example, and the new estimator state."""
  cp = None if state is None else state.control_params
  estimator = make_estimator(label, config, x, cp)
  f = lambda b: -log_joint(params, x, b)
  surrogate, new_state = sfe.expectation(
    estimator, f, dist_builder, {"logits": logits}, key, num_samples=NUM_SAMPLES[label], state=state
  )
  return surrogate - entropy(logits), new_state


def batch_loss(label, config, params, state, xb, key):
  """The batch mean of :func:`per_example_loss` (under ``jax.vmap``) and the batch mean of the new states."""
  logits = jax.vmap(lambda x: encode(params, x))(xb)
  keys = jax.random.split(key, xb.shape[0])
  losses, new_states = jax.vmap(lambda x, l, k: per_example_loss(label, config, params, state, x, l, k))(
    xb, logits, keys
  )
  new_state = None if state is None else _average_states(new_states)
  return jnp.mean(losses), new_state


# ----------------------------------------------------------------------------------------------------------
# One training run.
# ----------------------------------------------------------------------------------------------------------


def measure_training(config: VAEConfig, model: str, label: str, key: jax.Array) -> dict[str, Any]:
  """Trains ``model`` with the estimator ``label``; one record with the curve, the checkpoints and the times.

  Times: the training program (``log_every`` steps under ``lax.scan``) and the checkpoint evaluation are
  compiled ahead of time (``compile_seconds``), the training program is then run once untimed (a warm-up: the
  first call's one-off costs) and every segment of the run is timed to completion (``block_until_ready``):
  ``seconds`` is the steady-state training time, without compilation or the checkpoint evaluations, and
  ``seconds_per_step`` is ``seconds / steps``. ``wall_seconds`` is the whole cell (data, initialisation,
  compilation, warm-up, training and checkpoints).
  """
  wall_start = time.perf_counter()
  data = load_data(config.data_path)
  train = data["train"] if config.max_train is None else data["train"][: config.max_train]
  train_j = jnp.asarray(train)
  test_j = jnp.asarray(data["test"][: config.num_test])
  pixels = train.shape[1]
  k_init, k_control, k_train, k_eval = jax.random.split(key, 4)
  params = init_model(k_init, model, pixels, config.latent, config.hidden, train.mean(0))
  opt = optax.adam(config.learning_rate)
  opt_state = opt.init(params)
  fixed_batch = train_j[: config.batch_size]

  state = None
  if label == "RELAX":
    # Data-dependent start of the control's offset: the mean of f over the fixed batch at the initial model.
    cp = init_control(k_control, config.latent, pixels, float(control_offset(params, fixed_batch, k_control)))
    state = make_estimator(label, config, fixed_batch[0], cp).init({"logits": jnp.zeros(config.latent)})

  def step(carry, k):
    params, opt_state, state = carry
    k_batch, k_est, k_mon = jax.random.split(k, 3)
    idx = jax.random.choice(k_batch, train_j.shape[0], (config.batch_size,), replace=False)
    xb = train_j[idx]
    (loss, new_state), grads = jax.value_and_grad(
      lambda p: batch_loss(label, config, p, state, xb, k_est), has_aux=True
    )(params)
    updates, opt_state = opt.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    elbo = jnp.mean(jax.vmap(elbo_one_sample, (None, 0, 0))(params, xb, jax.random.split(k_mon, xb.shape[0])))
    return (params, opt_state, new_state), elbo

  def segment(carry, k):
    return jax.lax.scan(step, carry, jax.random.split(k, config.log_every))

  def evaluate(params, state, k):
    k_b, k_v = jax.random.split(k)
    iw, elbo = jax.vmap(lambda x, kk: bounds(params, x, kk, config.iw_samples))(
      test_j, jax.random.split(k_b, test_j.shape[0])
    )

    def logit_grad(kk):
      # Gradient of the batch loss with respect to the encoder's logits (the per-example estimates).
      logits = jax.vmap(lambda x: encode(params, x))(fixed_batch)
      keys = jax.random.split(kk, fixed_batch.shape[0])
      return jax.vmap(jax.grad(lambda l, x, ke: per_example_loss(label, config, params, state, x, l, ke)[0]))(
        logits, fixed_batch, keys
      )

    g = jax.lax.map(logit_grad, jax.random.split(k_v, config.variance_repeats))  # (R, B, L)
    var = jnp.mean(jnp.var(g, axis=0, ddof=1))
    # Mean square of the per-coordinate mean, less var / R: unbiased for the squared true gradient.
    mean_sq = jnp.mean(jnp.mean(g, axis=0) ** 2) - var / config.variance_repeats
    return jnp.mean(iw), jnp.mean(elbo), var, mean_sq

  carry = (params, opt_state, state)
  segment_keys = jax.block_until_ready(
    [jax.random.fold_in(k_train, s) for s in range(0, config.steps, config.log_every)]
  )
  start = time.perf_counter()
  compiled_segment = jax.jit(segment).lower(carry, segment_keys[0]).compile()
  compiled_evaluate = jax.jit(evaluate).lower(params, state, k_eval).compile()
  compile_seconds = time.perf_counter() - start
  # Warm-up: the first segment's work, untimed and discarded (the pure function leaves the run unchanged).
  jax.block_until_ready(compiled_segment(carry, segment_keys[0]))

  def checkpoint(step_count, params, state):
    vals = compiled_evaluate(params, state, jax.random.fold_in(k_eval, step_count))
    return [step_count] + [float(v) for v in vals]

  checkpoints = [checkpoint(0, params, state)]
  curve = []
  seconds = 0.0
  for i, k in enumerate(segment_keys):
    start = time.perf_counter()
    carry, elbos = jax.block_until_ready(compiled_segment(carry, k))
    seconds += time.perf_counter() - start
    step_count = (i + 1) * config.log_every
    curve.append([step_count, float(jnp.mean(elbos))])
    if step_count % config.checkpoint_every == 0 or step_count == config.steps:
      checkpoints.append(checkpoint(step_count, carry[0], carry[2]))
  final = checkpoints[-1]
  return {
    "suite": SUITE,
    "kind": "training",
    "model": model,
    "estimator": label,
    "dataset": data["name"],
    "pixels": pixels,
    "num_train": int(train.shape[0]),
    "latent": config.latent,
    "hidden": config.hidden if model == "nonlinear" else None,
    "num_samples": NUM_SAMPLES[label],
    "evaluations": EVALUATIONS[label],
    "steps": config.steps,
    "batch_size": config.batch_size,
    "learning_rate": config.learning_rate,
    "num_test": int(test_j.shape[0]),
    "iw_samples": config.iw_samples,
    "variance_repeats": config.variance_repeats,
    "curve": curve,
    "checkpoints": checkpoints,
    "final_train_elbo": curve[-1][1],
    "final_test_iw": final[1],
    "final_test_elbo": final[2],
    "final_grad_variance": final[3],
    "final_grad_mean_sq": final[4],
    "seconds": seconds,  # the compiled training steps only (steady state)
    "seconds_per_step": seconds / config.steps,
    "compile_seconds": compile_seconds,  # the training and evaluation programs
    "wall_seconds": time.perf_counter() - wall_start,  # the whole cell, compilation and checkpoints included
  }


def cell_id(model: str, label: str) -> str:
  """``vae/<model>/<estimator>``."""
  return f"{SUITE}/{model}/{label}"


def cells(config: VAEConfig) -> list[suite.Cell]:
  """One training run per ``(model, estimator)``; ``measure()`` -> [record]."""
  out: list[suite.Cell] = []
  for model in (m for m in MODELS if m in config.models):
    for label in (e for e in ESTIMATORS if e in config.estimators):
      cid = cell_id(model, label)
      out.append(
        (cid, lambda model=model, label=label, cid=cid: [measure_training(config, model, label, config.key(cid))])
      )
  return out
