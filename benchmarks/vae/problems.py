"""What the VAE suite measures: the configuration, the data and the discrete VAE (encoder, decoder, bounds)."""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

import distrax
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import suite

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
class VAEConfig(suite.SuiteConfig):
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
    log_every: steps per point of the training curve (and per timed segment of compiled steps).
    checkpoint_every: steps between checkpoints (a multiple of ``log_every``).
    num_test: test images for the bounds (the first ones).
    iw_samples: samples of the importance-weighted bound.
    variance_repeats: independent gradient estimates per variance measurement.
    max_train: if set, only the first ``max_train`` training images are used.
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

  def check(self) -> None:
    """Raises a ``ValueError`` naming the first setting that is out of range."""
    super().check()
    self.require_subset("models", MODELS)
    self.require_subset("estimators", ESTIMATORS)
    self.require_multiple("steps", of="log_every")
    self.require_multiple("checkpoint_every", of="log_every")
    self.require_at_least(2, "variance_repeats")


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


# ----------------------------------------------------------------------------------------------------------
# Data.
# ----------------------------------------------------------------------------------------------------------

_DATA: dict[Any, dict[str, Any]] = {}


def load_data(data_path: str | None) -> dict[str, Any]:
  """``{"train", "valid", "test", "name"}``: float32 0/1 arrays of shape (n, pixels), and the data's name.

  Args:
    data_path: an ``.npz`` with ``train``/``valid``/``test`` arrays; ``None``: scikit-learn's 8x8 digits
      binarized at ``>= 8``, permuted with a fixed seed and split ``DIGITS_SPLIT`` (no download).

  Returns:
    The splits (cached per path).
  """
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
  """``{"enc", "dec", "prior"}``: Glorot-normal layers, the decoder's output bias at the logit of ``mean_pixel``."""
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
  """The encoder's logits of ``q(b | x)`` for one example."""
  return _mlp(params["enc"], x)


def log_joint(params, x, b):
  """``log p(x, b)`` for one example (``b`` may be relaxed, in [0, 1])."""
  pix = _mlp(params["dec"], b)
  log_px = -jnp.sum(jax.nn.softplus(-(2 * x - 1) * pix))
  a = params["prior"]
  log_pb = jnp.sum(b * jax.nn.log_sigmoid(a) + (1 - b) * jax.nn.log_sigmoid(-a))
  return log_px + log_pb


def log_q(logits, b):
  """``log q(b | x)`` of the factorised Bernoulli with ``logits``."""
  return jnp.sum(b * jax.nn.log_sigmoid(logits) + (1 - b) * jax.nn.log_sigmoid(-logits))


def entropy(logits):
  """Entropy of the factorised Bernoulli: ``sum softplus(l) - sigmoid(l) l``."""
  return jnp.sum(jax.nn.softplus(logits) - jax.nn.sigmoid(logits) * logits)


def dist_builder(p):
  """``distrax.Bernoulli`` of the estimator's params ``{"logits"}``."""
  # Float bits: the Gumbel-softmax relaxation needs the samples' own dtype to hold relaxed values.
  return distrax.Bernoulli(logits=p["logits"], dtype=jnp.float32)


def elbo_one_sample(params, x, key):
  """``log p(x, b) + H(q(.|x))`` with one hard sample ``b ~ q(.|x)``: the training monitor (unbiased ELBO)."""
  logits = encode(params, x)
  b = jax.random.bernoulli(key, jax.nn.sigmoid(logits)).astype(jnp.float32)
  return log_joint(params, x, b) + entropy(logits)


def bounds(params, x, key, k):
  """(IW bound with k samples, one-sample ELBO log p(x,b)-log q(b|x)) for one example."""
  logits = encode(params, x)
  b = jax.random.bernoulli(key, jax.nn.sigmoid(logits), (k,) + logits.shape).astype(jnp.float32)
  log_w = jax.vmap(lambda bi: log_joint(params, x, bi) - log_q(logits, bi))(b)
  return jax.nn.logsumexp(log_w) - math.log(k), log_w[0]
