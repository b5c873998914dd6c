"""What the throughput suite measures: the problems (a diagonal Gaussian, independent Bernoulli bits), the
estimators timed on them, and the configuration with its presets."""

from __future__ import annotations

import dataclasses

import distrax
import jax
import jax.numpy as jnp

import sfe_jax as sfe
from benchmarks import suite

SUITE = "throughput"
ESTIMATORS = (
  "score_function",
  "score_function_loo",
  "pathwise",
  "measure_valued",
  "iwae",
  "dreg",
  "vimco",
  "arm",
  "disarm",
  "gumbel_softmax",
  "straight_through",
  "rebar",
  "relax",
)
# Not timed: sfe.enumerate() is exact, not Monte Carlo (its cost is the support size), and sfe.unordered_set()
# draws at most 16 distinct values from a support of at most 2**16, outside this sweep's sizes.
# The problem each estimator is timed on: a diagonal Gaussian, or D independent Bernoulli bits.
FAMILY = {
  "score_function": "normal",
  "score_function_loo": "normal",
  "pathwise": "normal",
  "measure_valued": "normal",
  "iwae": "normal",
  "dreg": "normal",
  "vimco": "normal",
  "arm": "bernoulli",
  "disarm": "bernoulli",
  "gumbel_softmax": "bernoulli",
  "straight_through": "bernoulli",
  "rebar": "bernoulli",
  "relax": "bernoulli",
}
# Estimators with a hand-written JAX version in this suite (the others are compared with the forward pass only).
HAND_WRITTEN = ("score_function", "pathwise", "arm", "disarm", "gumbel_softmax", "straight_through")
# Estimators also timed with `chunk_size=` and with `sample_sharding=` (extra rows beside their plain call).
MODE_ESTIMATORS = ("score_function", "pathwise")
MODES = ("unchunked", "chunked", "sharded")
SAMPLE_AXIS = "samples"  # the mesh axis name of the sharded rows
# Evaluations of f per sample (num_samples counts samples; measure-valued: 2 per parameter coordinate).
EVALUATIONS_PER_SAMPLE = {"rebar": 3, "measure_valued": "4D"}
GUMBEL_TEMPERATURE = 0.5
OVERHEAD_TARGET = 1.05
GRADIENT_TARGET = 2.0


@dataclasses.dataclass(frozen=True)
class ThroughputConfig(suite.SuiteConfig):
  """What the throughput benchmark measures.

  Attributes:
    dims: the values of ``D``, the number of variables (Gaussian or Bernoulli).
    sample_sizes: the ``num_samples`` values.
    max_elements: an estimator is skipped at a (D, N) pair where it would materialise more array elements
      than this (``N * D``, times ``4 D`` for measure-valued; see :func:`elements`).
    repeats: timed runs of each function, at least (the median is reported).
    warmup: untimed runs after compilation.
    min_seconds: more timed runs for fast functions, so that each is timed for about this long in total
      (at most ``max_repeats`` runs): medians of sub-millisecond calls need many runs.
    max_repeats: the cap on timed runs.
    estimators: a subset of ``ESTIMATORS``.
    chunk_size: the ``chunk_size=`` of the chunked rows (the estimators of ``MODE_ESTIMATORS``), at the sizes N
      above it (a chunk of N or more is the unchunked call); ``None``: no chunked rows.
    sharded: whether to add the sharded rows: ``sample_sharding=`` over every device of the default platform,
      at the sizes N that the number of devices divides.
    seed: the PRNG seed.
  """

  dims: tuple[int, ...] = (100,)
  sample_sizes: tuple[int, ...] = (1_000, 10_000, 100_000)
  max_elements: int = 20_000_000
  repeats: int = 30
  warmup: int = 3
  min_seconds: float = 1.0
  max_repeats: int = 1_000
  estimators: tuple[str, ...] = ESTIMATORS
  chunk_size: int | None = 10_000
  sharded: bool = True

  def check(self) -> None:
    """Raises a ``ValueError`` naming the first setting that is out of range."""
    super().check()
    self.require_subset("estimators", ESTIMATORS)
    self.require_at_least(1, "repeats", "max_repeats")
    self.require_at_least(0, "warmup")
    if self.chunk_size is not None:
      self.require_at_least(1, "chunk_size")


PRESETS = {
  "quick": ThroughputConfig(
    dims=(100,), sample_sizes=(1_000, 10_000, 100_000), repeats=20, warmup=3, min_seconds=0.5, max_elements=50_000_000
  ),
  "full": ThroughputConfig(
    dims=(1, 10, 100, 1_000, 10_000),
    sample_sizes=(100, 1_000, 10_000, 100_000, 1_000_000),
    repeats=200,
    warmup=10,
    min_seconds=5.0,
    max_elements=100_000_000,
  ),
}


def f(x):
  """The Gaussian problem's cost, ``sum((x - 0.5)^2)``."""
  return jnp.sum((x - 0.5) ** 2)


def f_bits(b):
  """The Bernoulli problem's cost, ``sum((b - 0.3)^2)``."""
  return jnp.sum((b.astype(jnp.float32) - 0.3) ** 2)


def dist_builder(params):
  return distrax.Normal(params["loc"], params["scale"])


def bernoulli_builder(params):
  # Float bits: the relaxation-based estimators need the samples' own dtype to hold relaxed values.
  return distrax.Bernoulli(logits=params["logits"], dtype=jnp.float32)


def initial_params(family: str, dim: int) -> dict[str, jax.Array]:
  """``loc = 0, scale = 1`` (Gaussian) or logits evenly spaced in [-1, 1] (Bernoulli), of dimension ``dim``."""
  if family == "normal":
    return {"loc": jnp.zeros(dim, jnp.float32), "scale": jnp.ones(dim, jnp.float32)}
  return {"logits": jnp.linspace(-1.0, 1.0, dim, dtype=jnp.float32)}


def _relax_control(cp, z):
  return jnp.sum(jnp.tanh(cp["w"] * z + cp["b"]))


def build_estimator(name: str) -> sfe.Estimator:
  """The estimator ``name`` of ``ESTIMATORS``, as this suite configures it."""
  builders = {
    "score_function": sfe.score_function,
    "score_function_loo": lambda: sfe.score_function(sfe.baselines.leave_one_out()),
    "pathwise": sfe.pathwise,
    "iwae": sfe.objectives.iwae,
    "dreg": sfe.objectives.dreg,
    "vimco": sfe.objectives.vimco,
    "measure_valued": sfe.measure_valued,
    "arm": sfe.arm,
    "disarm": sfe.disarm,
    "gumbel_softmax": lambda: sfe.gumbel_softmax(GUMBEL_TEMPERATURE),
    "straight_through": sfe.straight_through,
    "rebar": sfe.rebar,
    "relax": lambda: sfe.relax(_relax_control, {"w": jnp.float32(0.1), "b": jnp.float32(0.0)}),
  }
  if name not in builders:
    raise ValueError(f"unknown estimator {name!r}; expected one of {ESTIMATORS}.")
  return builders[name]()


def evaluations_per_sample(name: str, dim: int) -> int:
  """Evaluations of ``f`` per sample: sfe's ``num_samples`` counts evaluations, this suite counts samples."""
  per_sample = EVALUATIONS_PER_SAMPLE.get(name, 1)
  return 4 * dim if per_sample == "4D" else per_sample


def elements(name: str, dim: int, n: int) -> int:
  """Array elements one call materialises, roughly: ``N * D`` per evaluation of f per sample."""
  return n * dim * (4 * dim if name == "measure_valued" else 1)
