r"""Throughput benchmark: the cost of sfe_jax's estimators against hand-written JAX and the forward pass.

Problem: ``params = {"loc": zeros(D), "scale": ones(D)}``, ``distrax.Normal(loc, scale)`` (a diagonal Gaussian
over ``D = 100`` variables) and ``f(x) = sum((x - 0.5)^2)``, at ``num_samples`` in 1e3, 1e4, 1e5 (and D
independent Bernoulli bits for the discrete estimators).

Variants, all ``jax.jit``-compiled functions of ``(params, key)`` returning arrays:

* ``sfe``: ``sfe.value_and_grad(estimator, f, dist_builder, params, key, num_samples=N)`` for
  ``sfe.score_function()``, ``sfe.pathwise()`` and the other estimators;
* ``sfe`` chunked and sharded (score function and pathwise): the same call with ``chunk_size=`` (the chunk size
  of the configuration, where it is below N) and with ``sample_sharding=`` a
  ``NamedSharding(Mesh(devices, ("samples",)), P("samples"))`` over every device of the default platform (where
  their number divides N), each a row of its own beside the plain call, with its XLA temporary bytes;
* ``hand``: the same estimator written directly: ``jax.random.normal``, the Gaussian log-density formula, a
  stop-gradient surrogate and ``jax.value_and_grad`` (no sfe_jax, no distrax);
* ``forward``: the forward Monte Carlo estimate alone, ``mean(f(loc + scale * eps))`` (no gradient);
* ``hand (copy)``: a second, separately compiled copy of ``hand``, an A/A control: its ratio to ``hand`` is pure
  measurement noise, the yardstick for judging ``sfe / hand``.

Each function is compiled first (ahead of time, the compile seconds recorded apart), run ``warmup`` times,
then timed at least ``repeats`` times (more for fast calls: about ``min_seconds`` of runs each) with
``jax.block_until_ready``; the runs of all variants of one ``num_samples`` are interleaved (in a new random
order each round) so that drifts of the machine affect them alike and no function always runs after the same
other one. JAX's compilation events during the timed runs are counted (``compilations_while_timed``, 0), so no
timed figure holds a compilation. The report gives the median seconds, the ratio ``sfe / hand`` (overhead of
the library; target: within 5%) and ``sfe / forward`` (cost of the gradient; target: under 2x), the same
ratios paired by round, the XLA cost analysis (flops, bytes accessed, number of HLO instructions, temporary
bytes) of each compiled function, and checks that ``sfe`` and ``hand`` compute the same numbers (distrax draws
``loc + scale * jax.random.normal(key, (N, D))``, as ``hand`` does).
"""

from __future__ import annotations

from typing import Any

from benchmarks import suite
from benchmarks.throughput.measure import (
  cells,
  forward_function,
  hand_function,
  measure_size,
  sample_sharding,
  sfe_function,
  sharding_devices,
)
from benchmarks.throughput.problems import (
  ESTIMATORS,
  EVALUATIONS_PER_SAMPLE,
  FAMILY,
  GRADIENT_TARGET,
  GUMBEL_TEMPERATURE,
  HAND_WRITTEN,
  MODE_ESTIMATORS,
  MODES,
  OVERHEAD_TARGET,
  PRESETS,
  SUITE,
  ThroughputConfig,
  bernoulli_builder,
  build_estimator,
  dist_builder,
  elements,
  evaluations_per_sample,
  f,
  f_bits,
  initial_params,
)
from benchmarks.throughput.render import plot, row_label, to_markdown, verdict

SUMMARY = """\
Median time of jitted sfe.value_and_grad (score function, pathwise, ...) on a 100-dimensional
diagonal Gaussian at num_samples 1e3, 1e4, 1e5, against a hand-written JAX version of the same
estimator (target: within 5%) and against the forward Monte Carlo estimate (target: under 2x),
with XLA's temporary bytes per cell; the score function and pathwise also with chunk_size 1e4 and
with sample_sharding over every device, as rows of their own. Compile time is reported apart."""
OPTIONS: tuple[suite.Option, ...] = ()

__all__ = [
  "ESTIMATORS",
  "EVALUATIONS_PER_SAMPLE",
  "FAMILY",
  "GRADIENT_TARGET",
  "GUMBEL_TEMPERATURE",
  "HAND_WRITTEN",
  "MODES",
  "MODE_ESTIMATORS",
  "OPTIONS",
  "OVERHEAD_TARGET",
  "PRESETS",
  "SUITE",
  "SUMMARY",
  "ThroughputConfig",
  "bernoulli_builder",
  "build_estimator",
  "cells",
  "dist_builder",
  "elements",
  "evaluations_per_sample",
  "f",
  "f_bits",
  "forward_function",
  "hand_function",
  "initial_params",
  "measure_size",
  "plot",
  "row_label",
  "run",
  "sample_sharding",
  "sfe_function",
  "sharding_devices",
  "to_markdown",
  "verdict",
]


def run(config: ThroughputConfig, out_dir: str | None = None, log: suite.Log = print) -> dict[str, Any]:
  """Runs (or resumes, from ``out_dir/throughput.jsonl``) the throughput benchmark and writes its reports.

  Returns:
    ``{"records": [...], "markdown": str, "meta": {...}, "paths": {...}}``.
  """
  meta = {"targets": {"sfe_over_hand": OVERHEAD_TARGET, "sfe_over_forward": GRADIENT_TARGET}}
  return suite.run(SUITE, config, cells, to_markdown, plot, out_dir, log, meta=meta)
