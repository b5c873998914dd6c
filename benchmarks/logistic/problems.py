"""What the logistic-regression suite measures: the data, the model (likelihood, prior, variational family),
the full-data evaluation, and the configuration with its presets.

``y ~ Bernoulli(sigmoid(x . w))``, prior ``w ~ N(0, I)``, posterior ``q = N(mean, diag(exp(log_scale))^2)``;
``ELBO = E_q[log p(y | x, w)] - KL(q || p)``, the KL exact.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import distrax
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import suite

SUITE = "logistic"
ESTIMATORS = (
  "pathwise",
  "pathwise + delta",
  "score function",
  "score function + delta",
  "score function + MA",
  "measure-valued",
  "measure-valued + delta",
)
SLUGS = {
  "pathwise": "pathwise",
  "pathwise + delta": "pathwise_delta",
  "score function": "score_function",
  "score function + delta": "score_function_delta",
  "score function + MA": "score_function_ma",
  "measure-valued": "measure_valued",
  "measure-valued + delta": "measure_valued_delta",
}
MA_DECAY = 0.9
NUM_COEFFICIENT_SAMPLES = 10  # sfe.with_control_variate's default
PARAM_NAMES = ("mean", "log_scale")
NUM_DATA = 569  # load_breast_cancer()'s points
DIM = 31  # its 30 features plus the constant column


# ----------------------------------------------------------------------------------------------------------
# Data and model.
# ----------------------------------------------------------------------------------------------------------


_DATA: dict[str, tuple[np.ndarray, np.ndarray]] = {}


def load_data() -> tuple[np.ndarray, np.ndarray]:
  """``(x, y)``: standardized breast-cancer features plus a constant column (569 x 31, float32), labels."""
  if "data" not in _DATA:
    from sklearn.datasets import load_breast_cancer  # noqa: PLC0415 (bench extra)

    data = load_breast_cancer()
    x = np.asarray(data.data, np.float64)
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    x = np.concatenate([x, np.ones((x.shape[0], 1))], axis=1)
    _DATA["data"] = (x.astype(np.float32), np.asarray(data.target, np.float32))
  return _DATA["data"]


def dist_builder(params):
  """``q = N(mean, diag(exp(log_scale))^2)``."""
  return distrax.MultivariateNormalDiag(params["mean"], jnp.exp(params["log_scale"]))


def log_likelihood(w: jax.Array, x: jax.Array, y: jax.Array, scale: float) -> jax.Array:
  """``scale * mean_i log p(y_i | x_i, w)`` for one weight vector ``w`` (shape ``(D,)``)."""
  logits = x @ w
  return scale * jnp.mean(y * logits - jax.nn.softplus(logits))


def make_cost(x: jax.Array, y: jax.Array, scale: float) -> Callable[[jax.Array], jax.Array]:
  """``f(w)``: the (rescaled) batch log-likelihood of ONE weight sample, closing over the batch."""
  return lambda w: log_likelihood(w, x, y, scale)


def kl_to_prior(params) -> jax.Array:
  """``KL(N(mean, diag(s^2)) || N(0, I))``, ``s = exp(log_scale)``."""
  m, ls = params["mean"], params["log_scale"]
  return 0.5 * jnp.sum(jnp.exp(2 * ls) + m**2 - 1 - 2 * ls)


def initial_params(dim: int) -> dict[str, jax.Array]:
  """``mean = 0``, ``log_scale = 0``: ``q`` is the prior."""
  return {"mean": jnp.zeros((dim,), jnp.float32), "log_scale": jnp.zeros((dim,), jnp.float32)}


def evaluate(params, key, x, y, num_samples: int) -> tuple[jax.Array, jax.Array]:
  """``(ELBO, accuracy)`` on the full data with ``num_samples`` posterior samples (jittable)."""
  ws = dist_builder(params).sample(seed=key, sample_shape=(num_samples,))  # (S, D)
  logits = ws @ x.T  # (S, N)
  loglik = jnp.sum(y * logits - jax.nn.softplus(logits), axis=1)  # full-data log-likelihood per sample
  elbo = jnp.mean(loglik) - kl_to_prior(params)
  predictive = jnp.mean(jax.nn.sigmoid(logits), axis=0)
  accuracy = jnp.mean((predictive > 0.5) == (y > 0.5))
  return elbo, accuracy


# ----------------------------------------------------------------------------------------------------------
# Configuration.
# ----------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LogisticConfig(suite.SuiteConfig):
  """What the logistic-regression benchmark measures.

  Attributes:
    estimators: a subset of ``ESTIMATORS``.
    steps: SGD steps per training run.
    learning_rate: the initial SGD learning rate (cosine-decayed to 0 at ``steps``).
    batch_size: data points per step.
    num_samples: posterior samples per step (pathwise, score function).
    measure_valued_samples: base samples per step of the measure-valued estimators (each ``4 D`` evaluations).
    log_every: steps between the points of a curve (must divide ``steps``).
    eval_samples: posterior samples for the full-data ELBO and accuracy of a curve point.
    variance_every: steps between variance checkpoints (a multiple of ``log_every`` dividing ``steps``).
    num_repeats: single-sample estimates per variance checkpoint.
  """

  estimators: tuple[str, ...] = ESTIMATORS
  steps: int = 5_000
  learning_rate: float = 1e-3
  batch_size: int = 32
  num_samples: int = 50
  measure_valued_samples: int = 50
  log_every: int = 100
  eval_samples: int = 1_000
  variance_every: int = 1_000
  num_repeats: int = 1_000

  def check(self) -> None:
    """Raises a ``ValueError`` naming the first setting that is out of range."""
    super().check()
    self.require_subset("estimators", ESTIMATORS)
    if self.steps < 1 or self.log_every < 1 or self.steps % self.log_every:
      raise ValueError(f"log_every ({self.log_every}) must divide steps ({self.steps}).")
    self.require_at_least(1, "variance_every")
    if self.variance_every % self.log_every or self.steps % self.variance_every:
      raise ValueError(
        f"variance_every ({self.variance_every}) must be a multiple of log_every "
        f"({self.log_every}) and divide steps ({self.steps})."
      )
    self.require_at_least(2, "num_repeats")
    if not 1 <= self.batch_size <= NUM_DATA:
      raise ValueError(f"batch_size must be in [1, {NUM_DATA}]; got {self.batch_size}.")


PRESETS = {
  "quick": LogisticConfig(
    steps=1_000, measure_valued_samples=10, log_every=50, eval_samples=200, variance_every=250, num_repeats=300
  ),
  "full": LogisticConfig(),
}
