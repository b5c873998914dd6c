r"""Discrete VAE benchmark (``closed_forms.md``, Section 4): Bernoulli latents, training with each estimator.

Model. ``latent`` Bernoulli latents ``b`` with learnable prior logits ``a`` (``log p(b) = sum b log sigmoid(a) +
(1 - b) log sigmoid(-a)``); Bernoulli pixels. ``linear``: encoder ``x -> logits`` and decoder ``b -> pixel
logits`` are affine maps. ``nonlinear``: two hidden layers of ``hidden`` units with LeakyReLU(0.3) in the
encoder, the mirror in the decoder. The decoder's output bias starts at the logit of the mean training pixel.

Objective. The ELBO per example is ``E_q[log p(x, b)] + H(q(.|x))``. The first term's gradient is estimated by
``sfe.expectation`` with ``f(b) = -log p(x, b)`` (the decoder and prior are closed over, so they get the
ordinary gradient of the Monte Carlo average), per example under ``jax.vmap`` (the estimator's params are the
encoder's logits for that example, ``dist_builder`` makes ``distrax.Bernoulli``); the entropy of the factorised
``q`` is exact and differentiated analytically. The loss is minus the batch mean; Adam on every model parameter.

Estimators, at equal evaluations of ``f`` per example and step (2 each; ``evaluations`` is in every record):

* ``LOO``: REINFORCE with the leave-one-out baseline, ``sfe.score_function(sfe.baselines.leave_one_out())``,
  2 samples.
* ``ARM`` / ``DisARM``: ``sfe.arm()`` / ``sfe.disarm()``, one antithetic pair (``num_samples=2``).
* ``RELAX``: ``sfe.relax``, 2 samples (2 evaluations of ``f`` plus 4 of the control). The control is small and
  does not call ``f``: ``c(z) = a + w2 . tanh(Wz z + Wx x + b1)`` with ``RELAX_HIDDEN`` units, so it depends on
  the noisy logits ``z`` and on the example ``x`` (closed over). ``a`` starts at the mean of ``f`` over the
  first training batch at the initial model (a data-dependent start, so the control begins as a baseline of
  the right size), ``w2 = 0``, ``Wz, Wx`` small random. It is trained by ``sfe.relax`` itself with
  ``optax.adam(control_learning_rate)`` on the single-estimate variance; under ``jax.vmap`` each example
  proposes an updated control state and the benchmark keeps their batch mean (exact for the control
  gradient's first moment; an approximation of Adam on the batch-mean variance objective).
* ``Gumbel``: ``sfe.gumbel_softmax(GUMBEL_TEMPERATURE)`` (binary Concrete, temperature 0.5), 2 samples (2
  evaluations of ``f`` and its derivative at relaxed points). Biased; its decoder gradient is also that of
  relaxed samples.

Measures, per training run (one cell per ``(model, estimator)``):

* ``curve``: ``[step, training ELBO]`` every ``log_every`` steps, the ELBO being the mean over the window's
  batches of ``log p(x, b) + H(q)`` with ONE fresh hard sample ``b ~ q`` per example (the same unbiased monitor
  for every estimator, Gumbel included; this extra evaluation of ``f`` is not part of the estimators' cost).
* ``checkpoints``: every ``checkpoint_every`` steps (and at 0 and at the end), ``[step, test IW bound, test
  ELBO, gradient variance, gradient mean square]``: the ``iw_samples``-sample importance-weighted bound
  ``log 1/K sum_k p(x, b_k) / q(b_k | x)`` and the ELBO (``K = 1``, same samples' first) averaged over the
  first ``num_test`` test images; and, on a fixed batch (the first ``batch_size`` training images),
  ``variance_repeats`` independent estimates of the gradient of the loss with respect to the encoder's
  logits (shape ``(batch, latent)``): the per-coordinate variance averaged over examples and latents, and the
  mean square of the per-coordinate mean less variance / repeats (unbiased for the squared gradient, the
  signal) likewise.

Data. ``data_path``: an ``.npz`` with ``train``/``valid``/``test`` uint8 0/1 arrays (binarized MNIST, 784 pixels).
``data_path=None``: an embedded default needing no download, scikit-learn's ``load_digits`` (1797 8x8 images,
64 pixels) binarized at ``>= 8``, permuted with a fixed seed and split 1200 / 297 / 300.

Seeds: every cell's key is ``fold_in(key(seed), crc32(cell id))``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable
from typing import Any

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import optax

import sfe_jax as sfe
from benchmarks import report, store

SUITE = "vae"
MODELS = ("linear", "nonlinear")
ESTIMATORS = ("LOO", "ARM", "DisARM", "RELAX", "Gumbel")
NUM_SAMPLES = {"LOO": 2, "ARM": 2, "DisARM": 2, "RELAX": 2, "Gumbel": 2}
EVALUATIONS = dict(NUM_SAMPLES)  # evaluations of f per example per step
GUMBEL_TEMPERATURE = 0.5
RELAX_HIDDEN = 16
LEAKY_SLOPE = 0.3
DIGITS_SPLIT = (1200, 297, 300)


@dataclasses.dataclass(frozen=True)
class VAEConfig:
  """What the VAE benchmark measures.

  Attributes:
    data_path: an ``.npz`` with ``train``/``valid``/``test`` 0/1 arrays; ``None``: binarized sklearn digits.
    models: a subset of ``MODELS``.
    estimators: a subset of ``ESTIMATORS``.
    latent: number of Bernoulli latents.
    hidden: hidden units per layer of the nonlinear model.
    steps: Adam steps per training run.
    batch_size: examples per step.
    learning_rate: Adam's learning rate for the model.
    control_learning_rate: Adam's learning rate for the RELAX control.
    log_every: steps per point of the training curve.
    checkpoint_every: steps between checkpoints (a multiple of ``log_every``).
    num_test: test images for the bounds (the first ones).
    iw_samples: samples of the importance-weighted bound.
    variance_repeats: independent gradient estimates per variance measurement.
    max_train: if set, only the first ``max_train`` training images are used.
    seed: the PRNG seed.
  """

  data_path: str | None = None
  models: tuple[str, ...] = MODELS
  estimators: tuple[str, ...] = ESTIMATORS
  latent: int = 200
  hidden: int = 200
  steps: int = 1000
  batch_size: int = 50
  learning_rate: float = 1e-4
  control_learning_rate: float = 1e-3
  log_every: int = 50
  checkpoint_every: int = 500
  num_test: int = 500
  iw_samples: int = 100
  variance_repeats: int = 20
  max_train: int | None = None
  seed: int = 0


PRESETS = {
  # Quick: 32 latents (not 200), learning rate 1e-3 (not 1e-4) and 300 steps, so the 10 runs fit in ~2 minutes
  # on 2 CPU cores.
  "quick": VAEConfig(
    latent=32, steps=300, learning_rate=1e-3, log_every=25, checkpoint_every=150, num_test=200, variance_repeats=16
  ),
  "full": VAEConfig(
    latent=200,
    steps=20_000,
    learning_rate=1e-4,
    log_every=200,
    checkpoint_every=5_000,
    num_test=1000,
    variance_repeats=50,
  ),
}


def _check(config: VAEConfig) -> None:
  report.check_subset(config.models, MODELS, "models")
  report.check_subset(config.estimators, ESTIMATORS, "estimators")
  if config.steps < 1 or config.log_every < 1 or config.steps % config.log_every:
    raise ValueError(f"steps ({config.steps}) must be a positive multiple of log_every ({config.log_every}).")
  if config.checkpoint_every % config.log_every:
    raise ValueError("checkpoint_every must be a multiple of log_every.")
  if config.variance_repeats < 2:
    raise ValueError("variance_repeats must be at least 2.")


# ----------------------------------------------------------------------------------------------------------
# Data.
# ----------------------------------------------------------------------------------------------------------

_DATA: dict[Any, dict[str, np.ndarray]] = {}


def load_data(data_path: str | None) -> dict[str, np.ndarray]:
  """``{"train", "valid", "test", "name"}``: float32 0/1 arrays of shape (n, pixels)."""
  if data_path in _DATA:
    return _DATA[data_path]
  if data_path is None:
    from sklearn.datasets import load_digits  # noqa: PLC0415 (shipped with scikit-learn, no download)

    images = (load_digits().data >= 8).astype(np.float32)
    perm = np.random.RandomState(0).permutation(images.shape[0])
    images = images[perm]
    a, b, _ = DIGITS_SPLIT
    data = {"train": images[:a], "valid": images[a : a + b], "test": images[a + b :], "name": "sklearn digits 8x8"}
  else:
    with np.load(data_path) as npz:
      data = {k: np.asarray(npz[k], np.float32) for k in ("train", "valid", "test")}
    data["name"] = os.path.basename(data_path)
  _DATA[data_path] = data
  return data


# ----------------------------------------------------------------------------------------------------------
# Model.
# ----------------------------------------------------------------------------------------------------------


def _dense(key, n_in, n_out):
  scale = math.sqrt(2.0 / (n_in + n_out))
  return {"w": scale * jax.random.normal(key, (n_in, n_out)), "b": jnp.zeros(n_out)}


def init_model(key, model: str, pixels: int, latent: int, hidden: int, mean_pixel: np.ndarray):
  if model == "linear":
    enc_sizes, dec_sizes = [pixels, latent], [latent, pixels]
  else:
    enc_sizes, dec_sizes = [pixels, hidden, hidden, latent], [latent, hidden, hidden, pixels]
  keys = jax.random.split(key, len(enc_sizes) + len(dec_sizes))
  enc = [_dense(k, a, b) for k, a, b in zip(keys, enc_sizes[:-1], enc_sizes[1:])]
  dec = [_dense(k, a, b) for k, a, b in zip(keys[len(enc_sizes) :], dec_sizes[:-1], dec_sizes[1:])]
  m = np.clip(mean_pixel, 1e-3, 1 - 1e-3)
  dec[-1]["b"] = jnp.asarray(np.log(m) - np.log1p(-m), jnp.float32)
  return {"enc": enc, "dec": dec, "prior": jnp.zeros(latent)}


def _mlp(layers, h):
  for i, layer in enumerate(layers):
    h = h @ layer["w"] + layer["b"]
    if i < len(layers) - 1:
      h = jax.nn.leaky_relu(h, LEAKY_SLOPE)
  return h


def encode(params, x):
  return _mlp(params["enc"], x)


def log_joint(params, x, b):
  """``log p(x, b)`` for one example (``b`` may be relaxed, in [0, 1])."""
  pix = _mlp(params["dec"], b)
  log_px = -jnp.sum(jax.nn.softplus(-(2 * x - 1) * pix))
  a = params["prior"]
  log_pb = jnp.sum(b * jax.nn.log_sigmoid(a) + (1 - b) * jax.nn.log_sigmoid(-a))
  return log_px + log_pb


def log_q(logits, b):
  return jnp.sum(b * jax.nn.log_sigmoid(logits) + (1 - b) * jax.nn.log_sigmoid(-logits))


def entropy(logits):
  """Entropy of the factorised Bernoulli: ``sum softplus(l) - sigmoid(l) l``."""
  return jnp.sum(jax.nn.softplus(logits) - jax.nn.sigmoid(logits) * logits)


def dist_builder(p):
  # Float bits: the Gumbel-softmax relaxation needs the samples' own dtype to hold relaxed values.
  return distrax.Bernoulli(logits=p["logits"], dtype=jnp.float32)


# ----------------------------------------------------------------------------------------------------------
# Estimators.
# ----------------------------------------------------------------------------------------------------------


def init_control(key, latent: int, pixels: int, offset: float) -> dict[str, jax.Array]:
  k1, k2 = jax.random.split(key)
  return {
    "a": jnp.asarray(offset, jnp.float32),
    "wz": 0.1 * jax.random.normal(k1, (latent, RELAX_HIDDEN)),
    "wx": 0.1 * jax.random.normal(k2, (pixels, RELAX_HIDDEN)),
    "b1": jnp.zeros(RELAX_HIDDEN),
    "w2": jnp.zeros(RELAX_HIDDEN),
  }


def _control_for(x):
  def control(cp, z):
    return cp["a"] + jnp.tanh(z @ cp["wz"] + x @ cp["wx"] + cp["b1"]) @ cp["w2"]

  return control


def make_estimator(label: str, config: VAEConfig, x=None, control_params=None) -> sfe.Estimator:
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


def _per_example_loss(label, config, params, state, x, logits, key):
  """``-(sfe surrogate of E_q log p(x, b)) - H(q)`` for one example, and the new estimator state."""
  cp = None if state is None else state.control_params
  estimator = make_estimator(label, config, x, cp)
  f = lambda b: -log_joint(params, x, b)
  surrogate, new_state = sfe.expectation(
    estimator, f, dist_builder, {"logits": logits}, key, num_samples=NUM_SAMPLES[label], state=state
  )
  return surrogate - entropy(logits), new_state


def _batch_loss(label, config, params, state, xb, key):
  logits = jax.vmap(lambda x: encode(params, x))(xb)
  keys = jax.random.split(key, xb.shape[0])
  losses, new_states = jax.vmap(lambda x, l, k: _per_example_loss(label, config, params, state, x, l, k))(
    xb, logits, keys
  )
  new_state = None if state is None else _average_states(new_states)
  return jnp.mean(losses), new_state


def _elbo_one_sample(params, x, key):
  logits = encode(params, x)
  b = jax.random.bernoulli(key, jax.nn.sigmoid(logits)).astype(jnp.float32)
  return log_joint(params, x, b) + entropy(logits)


def _bounds(params, x, key, k):
  """(IW bound with k samples, one-sample ELBO log p(x,b)-log q(b|x)) for one example."""
  logits = encode(params, x)
  b = jax.random.bernoulli(key, jax.nn.sigmoid(logits), (k,) + logits.shape).astype(jnp.float32)
  log_w = jax.vmap(lambda bi: log_joint(params, x, bi) - log_q(logits, bi))(b)
  return jax.nn.logsumexp(log_w) - math.log(k), log_w[0]


# ----------------------------------------------------------------------------------------------------------
# One training run.
# ----------------------------------------------------------------------------------------------------------


def measure_training(config: VAEConfig, model: str, label: str, key: jax.Array) -> dict[str, Any]:
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
    f0 = -jnp.mean(
      jax.vmap(_elbo_one_sample, (None, 0, 0))(params, fixed_batch, jax.random.split(k_control, fixed_batch.shape[0]))
    )
    cp = init_control(k_control, config.latent, pixels, float(f0))
    state = make_estimator(label, config, fixed_batch[0], cp).init({"logits": jnp.zeros(config.latent)})

  def step(carry, k):
    params, opt_state, state = carry
    k_batch, k_est, k_mon = jax.random.split(k, 3)
    idx = jax.random.choice(k_batch, train_j.shape[0], (config.batch_size,), replace=False)
    xb = train_j[idx]
    (loss, new_state), grads = jax.value_and_grad(
      lambda p: _batch_loss(label, config, p, state, xb, k_est), has_aux=True
    )(params)
    updates, opt_state = opt.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    elbo = jnp.mean(jax.vmap(_elbo_one_sample, (None, 0, 0))(params, xb, jax.random.split(k_mon, xb.shape[0])))
    return (params, opt_state, new_state), elbo

  @jax.jit
  def segment(carry, k):
    return jax.lax.scan(step, carry, jax.random.split(k, config.log_every))

  @jax.jit
  def evaluate(params, state, k):
    k_b, k_v = jax.random.split(k)
    iw, elbo = jax.vmap(lambda x, kk: _bounds(params, x, kk, config.iw_samples))(
      test_j, jax.random.split(k_b, test_j.shape[0])
    )

    def logit_grad(kk):
      # Gradient of the batch loss with respect to the encoder's logits (the per-example estimates).
      logits = jax.vmap(lambda x: encode(params, x))(fixed_batch)
      keys = jax.random.split(kk, fixed_batch.shape[0])
      return jax.vmap(jax.grad(lambda l, x, ke: _per_example_loss(label, config, params, state, x, l, ke)[0]))(
        logits, fixed_batch, keys
      )

    g = jax.lax.map(logit_grad, jax.random.split(k_v, config.variance_repeats))  # (R, B, L)
    var = jnp.mean(jnp.var(g, axis=0, ddof=1))
    # Mean square of the per-coordinate mean, less var / R: unbiased for the squared true gradient.
    mean_sq = jnp.mean(jnp.mean(g, axis=0) ** 2) - var / config.variance_repeats
    return jnp.mean(iw), jnp.mean(elbo), var, mean_sq

  def checkpoint(step_count, params, state):
    vals = evaluate(params, state, jax.random.fold_in(k_eval, step_count))
    return [step_count] + [float(v) for v in vals]

  start = time.perf_counter()
  carry = (params, opt_state, state)
  checkpoints = [checkpoint(0, params, state)]
  curve = []
  step_count = 0
  while step_count < config.steps:
    carry, elbos = segment(carry, jax.random.fold_in(k_train, step_count))
    step_count += config.log_every
    curve.append([step_count, float(jnp.mean(elbos))])
    if step_count % config.checkpoint_every == 0 or step_count == config.steps:
      if checkpoints[-1][0] != step_count:
        checkpoints.append(checkpoint(step_count, carry[0], carry[2]))
  seconds = time.perf_counter() - start
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
    "seconds": seconds,
  }


def cell_id(model: str, label: str) -> str:
  return f"{SUITE}/{model}/{label}"


def cell_key(config: VAEConfig, cid: str) -> jax.Array:
  return report.cell_key(config.seed, cid)


def cells(config: VAEConfig) -> list[tuple[str, Callable[[], list[dict[str, Any]]]]]:
  """One training run per ``(model, estimator)``; ``measure()`` -> [record]."""
  _check(config)
  out = []
  for model in (m for m in MODELS if m in config.models):
    for label in (e for e in ESTIMATORS if e in config.estimators):
      cid = cell_id(model, label)
      out.append(
        (cid, lambda model=model, label=label, cid=cid: [measure_training(config, model, label, cell_key(config, cid))])
      )
  return out


# ----------------------------------------------------------------------------------------------------------
# Report.
# ----------------------------------------------------------------------------------------------------------


def _index(records):
  out = {}
  for r in records:
    if r.get("suite", SUITE) == SUITE and r.get("kind") == "training":
      out[(r.get("model"), r.get("estimator"))] = r
  return out


def _fmt(value: Any) -> str:
  v = report.number(value)
  return report.format_number(v) if v is not None else ("—" if value is None else str(value))


def _ordering(table, model, labels, field):
  vals = []
  for e in labels:
    r = table.get((model, e))
    v = None if r is None else report.number(r.get(field))
    if v is not None and not math.isnan(v):
      vals.append((v, e))
  vals.sort(reverse=True)
  return " > ".join(f"{e} ({report.format_number(v)})" for v, e in vals) or "no runs"


def to_markdown(records: list[dict[str, Any]], config: VAEConfig, env: dict[str, Any] | None) -> str:
  """The report, built from records alone (missing cells show as "not run")."""
  table = _index(records)
  labels = [e for e in ESTIMATORS if e in config.estimators]
  models = [m for m in MODELS if m in config.models]
  data_name = "sklearn digits 8x8 (64 pixels)" if config.data_path is None else os.path.basename(config.data_path)
  parts = [
    "# Discrete VAE with Bernoulli latents (closed_forms.md, Section 4)",
    f"Data: {data_name}. {config.latent} latents; linear and nonlinear (2 x {config.hidden} LeakyReLU(0.3)) "
    f"models; Adam {config.learning_rate:g}, batch {config.batch_size}, {config.steps} steps. Evaluations of f "
    "per example and step: " + ", ".join(f"{e} {EVALUATIONS[e]}" for e in labels) + " (RELAX also evaluates "
    f"its small control 4 times; Gumbel-softmax at t = {GUMBEL_TEMPERATURE:g} is biased). Test bounds on the "
    f"first {config.num_test} test images, IW bound with {config.iw_samples} samples. Gradient variance: of the "
    f"encoder-logit gradient on a fixed batch, {config.variance_repeats} repeats, mean over examples and latents.",
  ]
  if env:
    try:
      parts.append(report.environment_markdown(env))
    except KeyError:
      pass
  rows = []
  for m in models:
    for e in labels:
      r = table.get((m, e))
      if r is None:
        rows.append([m, e] + ["not run"] * 8)
        continue
      var, sq = report.number(r.get("final_grad_variance")), report.number(r.get("final_grad_mean_sq"))
      snr = None if var is None or sq is None or var <= 0 else sq / var
      seconds, steps = report.number(r.get("seconds")), report.number(r.get("steps", config.steps))
      # Work-normalised variance: the variance times the seconds of one training step (which estimates the
      # gradient of the whole batch), so estimators of different cost compare fairly.
      wnv = None if var is None or seconds is None or not steps else var * seconds / steps
      rows.append(
        [
          m,
          e,
          _fmt(r.get("evaluations")),
          _fmt(r.get("final_train_elbo")),
          _fmt(r.get("final_test_elbo")),
          _fmt(r.get("final_test_iw")),
          _fmt(var),
          _fmt(snr),
          _fmt(r.get("seconds")),
          _fmt(wnv),
        ]
      )
  parts += [
    "## Final values",
    report.markdown_table(
      [
        "model",
        "estimator",
        "f evals",
        "train ELBO (last window)",
        "test ELBO",
        f"test IW-{config.iw_samples}",
        "grad variance",
        "mean^2 / variance",
        "seconds",
        "variance x seconds / step",
      ],
      rows,
    ),
  ]
  parts.append("## Ordering at equal steps (higher is better)")
  for m in models:
    parts.append(f"* {m}, training ELBO: " + _ordering(table, m, labels, "final_train_elbo"))
    parts.append(f"* {m}, test IW bound: " + _ordering(table, m, labels, "final_test_iw"))
  parts.append("## Checkpoints")
  for m in models:
    rows = []
    for e in labels:
      r = table.get((m, e))
      if r is None:
        rows.append([e, "not run", "not run", "not run", "not run"])
        continue
      for c in r.get("checkpoints") or []:
        rows.append([e] + [_fmt(v) for v in c[:4]])
    parts += [
      f"### {m}",
      report.markdown_table(["estimator", "step", f"test IW-{config.iw_samples}", "test ELBO", "grad variance"], rows),
    ]
  return "\n\n".join(parts) + "\n"


def plot(records: list[dict[str, Any]], config: VAEConfig, out_dir: str) -> list[str]:
  """Training ELBO vs step and gradient variance vs step, one panel per model; returns the PNG paths."""
  plt = report.pyplot(out_dir)
  table = _index(records)
  models = [m for m in MODELS if m in config.models]
  colours = {e: f"C{i}" for i, e in enumerate(ESTIMATORS)}
  paths = []
  for what, title in (("elbo", "training ELBO"), ("variance", "encoder-logit gradient variance")):
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4.5), squeeze=False)
    for ax, m in zip(axes[0], models):
      for e in (x for x in ESTIMATORS if x in config.estimators):
        r = table.get((m, e))
        if r is None:
          continue
        if what == "elbo":
          pts = [(report.number(c[0]), report.number(c[1])) for c in r.get("curve") or []]
        else:
          pts = [(report.number(c[0]), report.number(c[3])) for c in r.get("checkpoints") or []]
        pts = [
          (s, v) for s, v in pts if s is not None and v is not None and math.isfinite(v) and (what == "elbo" or v > 0)
        ]
        if pts:
          xs, ys = zip(*pts)
          ax.plot(xs, ys, "-" if what == "elbo" else "o-", color=colours[e], label=e)
      if what == "variance":
        ax.set_yscale("log")
      ax.set_xlabel("step")
      ax.set_ylabel(title)
      ax.set_title(f"{m} model")
      ax.grid(True, alpha=0.3)
      ax.legend(fontsize=8)
    paths += report.save_figure(fig, out_dir, f"vae_{what}.png")
  return paths


def run(config: VAEConfig, out_dir: str | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
  """Runs (or resumes, from ``out_dir/vae.jsonl``) the VAE suite and writes its reports."""
  return store.run_suite(SUITE, config, cells(config), to_markdown, plot, out_dir, log)
