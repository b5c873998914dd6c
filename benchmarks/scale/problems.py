"""What the scale suite measures: a diagonal Gaussian with ``f(x) = sum((x - 0.5)^2)``, the estimators, and the
configuration with its presets (the problem itself is built inside each cell's process, see ``measure``)."""

from __future__ import annotations

import dataclasses

from benchmarks import suite

SUITE = "scale"
ESTIMATORS = ("score_function", "pathwise")
WORKING_SET_FACTOR = 8  # sfe_jax's own estimate of an unchunked call's working set, in bytes per sample byte


@dataclasses.dataclass(frozen=True)
class ScaleConfig(suite.SuiteConfig):
  """What the scale benchmark measures.

  Attributes:
    dim: ``D``, the number of Gaussian variables.
    sample_sizes: the values of ``num_samples``.
    chunk_sizes: the values of ``chunk_size``; ``None`` is the unchunked call. A chunk size at or above N is
      skipped (it is the unchunked call).
    max_unchunked_bytes: an unchunked cell is skipped when ``8 N D 4`` bytes exceed this.
    repeats: timed calls per cell (the median is reported).
    estimators: a subset of ``ESTIMATORS``.
    timeout: seconds a cell's process may run before it is recorded as timed out.
    seed: the PRNG seed.
  """

  dim: int = 100
  sample_sizes: tuple[int, ...] = (100_000, 1_000_000)
  chunk_sizes: tuple[int | None, ...] = (None, 10_000, 100_000)
  max_unchunked_bytes: int = 8 * 2**30
  repeats: int = 3
  estimators: tuple[str, ...] = ESTIMATORS
  timeout: float = 1800.0

  def check(self) -> None:
    """Raises a ``ValueError`` naming the first setting that is out of range."""
    super().check()
    self.require_subset("estimators", ESTIMATORS)
    self.require_at_least(1, "dim", "repeats")


PRESETS = {
  "quick": ScaleConfig(),
  "full": ScaleConfig(
    sample_sizes=(100_000, 1_000_000, 10_000_000, 100_000_000),
    chunk_sizes=(None, 10_000, 100_000, 1_000_000),
    repeats=3,
  ),
}


def unchunked_fits(config: ScaleConfig, n: int) -> bool:
  """Whether the unchunked call's working set (``8 N D 4`` bytes) is within ``max_unchunked_bytes``."""
  return WORKING_SET_FACTOR * n * config.dim * 4 <= config.max_unchunked_bytes
