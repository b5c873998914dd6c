r"""The peers suite's problem, its closed forms, the peers and the configuration.

Problem: :math:`x \sim N(\mu, \mathrm{diag}\,\sigma^2)` in :math:`D` dimensions and
:math:`f(x) = \sum_i (x_i - 1/2)^2`, at :math:`\mu_i` evenly spaced in :math:`[-1/2, 3/2]` and :math:`\sigma_i`
in :math:`[1/2, 3/2]` (so that a sign or a scale error in one coordinate shows). With :math:`a_i = \mu_i - 1/2`,
:math:`E[f] = \sum_i a_i^2 + \sigma_i^2` and the exact gradient is

.. math::
   \partial E[f] / \partial \mu_i = 2 a_i, \qquad \partial E[f] / \partial \sigma_i = 2 \sigma_i.

The single-sample variances of the two estimators (per coordinate, :math:`z \sim N(0, 1)`,
:math:`x_i = \mu_i + \sigma_i z_i`) are closed forms too, so that every measured gradient gets a standard error
per coordinate (:func:`single_sample_variance`): the pathwise estimate :math:`(2 (x_i - 1/2), 2 (x_i - 1/2) z_i)`
has variances :math:`4 \sigma_i^2` and :math:`4 a_i^2 + 8 \sigma_i^2`; the score-function estimate
:math:`(f z_i / \sigma_i, f (z_i^2 - 1) / \sigma_i)` has second moments built from the moments of
:math:`g_i = (a_i + \sigma_i z_i)^2` and of :math:`R_i = f - g_i` (independent of :math:`z_i`):

.. math::
   E[f^2 z_i^2] = E[g_i^2 z_i^2] + 2 E[R_i] E[g_i z_i^2] + E[R_i^2], \quad
   E[f^2 (z_i^2 - 1)^2] = E[g_i^2 w_i] + 2 E[R_i] E[g_i w_i] + 2 E[R_i^2]

with :math:`w_i = (z_i^2 - 1)^2`, :math:`E[g z^2] = a^2 + 3 \sigma^2`, :math:`E[g^2 z^2] = a^4 + 18 a^2 \sigma^2 +
15 \sigma^4`, :math:`E[g w] = 2 a^2 + 10 \sigma^2`, :math:`E[g^2 w] = 2 a^4 + 60 a^2 \sigma^2 + 78 \sigma^4`,
:math:`E[R_i] = \sum_{j \ne i} (a_j^2 + \sigma_j^2)` and :math:`\mathrm{Var}\,R_i = \sum_{j \ne i} (4 a_j^2
\sigma_j^2 + 2 \sigma_j^4)`.
"""

from __future__ import annotations

import dataclasses
import importlib
import math

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import suite

SUITE = "peers"
PEERS = ("hand", "sfe_jax", "tfp", "numpyro")
"""The implementations timed, in the order of the report; ``hand`` (hand-written JAX) is the floor."""
ESTIMATORS = ("score_function", "pathwise")
SHORT = {"score_function": "SF", "pathwise": "PW"}
SIZES = ((10, 1_000), (100, 10_000), (1_000, 100_000))
"""``(D, N)``: the dimension and the number of samples per gradient."""
OPTIONAL = {
  "tfp": ("tensorflow_probability.substrates.jax", "pip install tensorflow-probability (it comes with distrax)"),
  "numpyro": ("numpyro", "pip install numpyro, or the project's peers extra"),
}
"""The peers that are optional dependencies: the module they need and how to install it."""
DESCRIPTION = {
  "hand": "hand-written JAX: `jax.random.normal`, the Gaussian log-density formula, a stop-gradient surrogate "
  "(SF) or `f(mu + sigma * eps)` (PW), `jax.value_and_grad`",
  "sfe_jax": "`sfe.value_and_grad(sfe.score_function() | sfe.pathwise(), f, distrax.Normal, params, key, "
  "num_samples=N)`",
  "tfp": "`tfp.monte_carlo.expectation(f, samples, log_prob=d.log_prob, use_reparameterization=False | True)` "
  "on `tfd.Independent(tfd.Normal(mu, sigma), 1)`, under `jax.value_and_grad`",
  "numpyro": "`TraceGraph_ELBO` (SF: the guide's Normal marked non-reparameterizable) | `Trace_ELBO` (PW), "
  "`num_particles=N, vectorize_particles=True`, `jax.value_and_grad` of `elbo.loss`; the model's log density "
  "is the guide's own minus f (see measure.py), so the ELBO is exactly -E[f]",
}
NOISE_Z = 5.0
"""A gradient coordinate more than this many standard errors from the exact value is flagged (a wrong wiring)."""


def cost(x: jax.Array) -> jax.Array:
  """``f(x) = sum((x - 0.5)^2)`` over the last axis: one sample ``(D,)`` to a scalar, or a batch ``(N, D)``."""
  return jnp.sum((x - 0.5) ** 2, axis=-1)


def initial_params(dim: int) -> dict[str, jax.Array]:
  """``{"loc": mu, "scale": sigma}``: ``mu`` evenly spaced in [-0.5, 1.5], ``sigma`` in [0.5, 1.5]."""
  if dim == 1:
    return {"loc": jnp.full((1,), 0.25, jnp.float32), "scale": jnp.full((1,), 0.75, jnp.float32)}
  return {
    "loc": jnp.linspace(-0.5, 1.5, dim, dtype=jnp.float32),
    "scale": jnp.linspace(0.5, 1.5, dim, dtype=jnp.float32),
  }


def exact_gradient(params: dict[str, jax.Array]) -> dict[str, np.ndarray]:
  """``d E[f] / d mu = 2 (mu - 0.5)`` and ``d E[f] / d sigma = 2 sigma`` (float64)."""
  loc, scale = np.asarray(params["loc"], np.float64), np.asarray(params["scale"], np.float64)
  return {"loc": 2.0 * (loc - 0.5), "scale": 2.0 * scale}


def single_sample_variance(estimator: str, params: dict[str, jax.Array]) -> dict[str, np.ndarray]:
  """The variance of each coordinate of a single-sample gradient estimate (module docstring), float64."""
  a = np.asarray(params["loc"], np.float64) - 0.5
  s = np.asarray(params["scale"], np.float64)
  if estimator == "pathwise":
    return {"loc": 4.0 * s**2, "scale": 4.0 * a**2 + 8.0 * s**2}
  if estimator != "score_function":
    raise ValueError(f"unknown estimator {estimator!r}; expected one of {ESTIMATORS}.")
  mean_g, var_g = a**2 + s**2, 4.0 * a**2 * s**2 + 2.0 * s**4
  mean_r = mean_g.sum() - mean_g
  second_r = (var_g.sum() - var_g) + mean_r**2
  loc = (a**4 + 18.0 * a**2 * s**2 + 15.0 * s**4 + 2.0 * mean_r * (a**2 + 3.0 * s**2) + second_r) / s**2
  scale = (
    2.0 * a**4 + 60.0 * a**2 * s**2 + 78.0 * s**4 + 2.0 * mean_r * (2.0 * a**2 + 10.0 * s**2) + 2.0 * second_r
  ) / s**2
  return {"loc": loc - (2.0 * a) ** 2, "scale": scale - (2.0 * s) ** 2}


def gradient_errors(estimator: str, params: dict[str, jax.Array], grads: dict[str, jax.Array], num_samples: int):
  """How far ``grads`` (an estimate from ``num_samples`` samples) is from the exact gradient.

  Returns:
    ``(relative_error, rms_relative_error, max_abs_z)``: ``|g - exact| / |exact|`` over all ``2 D`` coordinates;
    its expected size, ``sqrt(sum Var / N) / |exact|`` (root mean square, from the closed-form variances); and the
    largest ``|g_i - exact_i| / se_i`` with ``se_i = sqrt(Var_i / N)``, which stays below a few units for a
    correct estimator and grows without bound for a wrong one.
  """
  exact = exact_gradient(params)
  variance = single_sample_variance(estimator, params)
  g = np.concatenate([np.asarray(grads[k], np.float64) for k in ("loc", "scale")])
  e = np.concatenate([exact[k] for k in ("loc", "scale")])
  v = np.concatenate([variance[k] for k in ("loc", "scale")])
  norm = float(np.linalg.norm(e))
  relative = float(np.linalg.norm(g - e)) / norm
  rms = math.sqrt(float(v.sum()) / num_samples) / norm
  max_z = float(np.max(np.abs(g - e) / np.sqrt(v / num_samples)))
  return relative, rms, max_z


def missing(peer: str) -> str | None:
  """Why ``peer`` cannot run here (its library does not import), or ``None`` when it can."""
  if peer not in OPTIONAL:
    return None
  module, install = OPTIONAL[peer]
  try:
    importlib.import_module(module)
  except ImportError as e:
    return f"{peer} skipped: {module} is not installed ({e}); {install}."
  return None


@dataclasses.dataclass(frozen=True)
class PeersConfig(suite.SuiteConfig):
  """What the peers benchmark measures.

  Attributes:
    sizes: ``(D, N)`` pairs: the dimension and the number of samples per gradient.
    estimators: a subset of ``ESTIMATORS``.
    peers: a subset of ``PEERS``; ``hand`` (the floor the others are divided by) is always timed.
    repeats: timed runs of each function, at least (the median is reported).
    warmup: untimed runs after compilation.
    min_seconds: more timed runs for fast functions, so that each is timed for about this long in total
      (at most ``max_repeats`` runs).
    max_repeats: the cap on timed runs.
    seed: the PRNG seed.
  """

  sizes: tuple[tuple[int, int], ...] = SIZES
  estimators: tuple[str, ...] = ESTIMATORS
  peers: tuple[str, ...] = PEERS
  repeats: int = 10
  warmup: int = 2
  min_seconds: float = 0.5
  max_repeats: int = 200

  def check(self) -> None:
    super().check()
    self.require_subset("estimators", ESTIMATORS)
    self.require_subset("peers", PEERS)
    self.require_at_least(1, "repeats", "max_repeats")
    self.require_at_least(0, "warmup")
    if not self.sizes or any(len(size) != 2 or min(size) < 1 for size in self.sizes):
      raise ValueError(f"sizes must be (D, N) pairs of positive integers; got {self.sizes!r}.")
    if self.min_seconds < 0:
      raise ValueError(f"min_seconds must be at least 0; got {self.min_seconds}.")


PRESETS = {
  # 1000 x 1e5 is left out of the quick preset: one round of its eight functions takes about 25 s on 2 idle CPU
  # cores (the floor alone 2.5 s for SF, 1.6 s for PW), and one warm-up plus one timed round took 219 s (4.4 GB
  # resident) on 2 shared cores: well over the minute the quick preset allows.
  "quick": PeersConfig(sizes=SIZES[:2], repeats=10, warmup=2, min_seconds=0.5),
  "full": PeersConfig(sizes=SIZES, repeats=20, warmup=3, min_seconds=3.0, max_repeats=500),
}
