r"""Scale benchmark: peak memory and time per gradient against ``num_samples``, chunked and unchunked.

Problem: ``params = {"loc": zeros(D), "scale": ones(D)}``, ``distrax.Normal(loc, scale)`` with ``D = 100`` and
``f(x) = sum((x - 0.5)^2)``; ``sfe.value_and_grad`` of the score function and the pathwise estimator, jitted,
at ``num_samples`` N from 1e5 to 1e8, unchunked (where its working set fits the machine) and with
``chunk_size`` in 1e4, 1e5, 1e6.

Each cell runs in a fresh Python process (peak resident memory is a per-process high-water mark): it imports
JAX, compiles the gradient (compile seconds reported apart), runs it once untimed and ``repeats`` times timed
(the median is reported; JAX's compilation events during the timed runs are counted, 0), and reports

* ``peak_rss_bytes``: the process's peak resident memory (``VmHWM`` on Linux), and ``baseline_rss_bytes``, the
  resident memory after JAX is imported and before anything is compiled, so that the difference is the
  estimate's own;
* ``xla_temp_bytes``: XLA's temporary buffers of the compiled gradient (``memory_analysis()``), the figure
  that does not depend on the allocator;
* ``device_peak_bytes`` on an accelerator (its allocator's ``peak_bytes_in_use``);
* seconds per call and nanoseconds per sample.

The report gives, per (estimator, N), every chunk size side by side and the fastest one, and skips an
unchunked cell whose working set (8 x the samples, the library's own estimate) exceeds ``max_unchunked_bytes``.
"""

from __future__ import annotations

from typing import Any

from benchmarks import suite
from benchmarks.scale.measure import ROOT, WORKER, cells, measure_cell, measure_in_process
from benchmarks.scale.problems import ESTIMATORS, PRESETS, SUITE, WORKING_SET_FACTOR, ScaleConfig, unchunked_fits
from benchmarks.scale.render import best_chunk_sizes, plot, to_markdown

SUMMARY = """\
Peak resident memory and seconds per gradient of jitted sfe.value_and_grad (score function,
pathwise) on a 100-dimensional diagonal Gaussian against num_samples (1e5, 1e6; the full preset
up to 1e8), unchunked and with chunk_size 1e4, 1e5 (1e6), each cell in a fresh process; the
fastest chunk size per num_samples. Compile time is reported apart."""
OPTIONS: tuple[suite.Option, ...] = ()

__all__ = [
  "ESTIMATORS",
  "OPTIONS",
  "PRESETS",
  "ROOT",
  "SUITE",
  "SUMMARY",
  "WORKER",
  "WORKING_SET_FACTOR",
  "ScaleConfig",
  "best_chunk_sizes",
  "cells",
  "measure_cell",
  "measure_in_process",
  "plot",
  "run",
  "to_markdown",
  "unchunked_fits",
]


def run(config: ScaleConfig, out_dir: str | None = None, log: suite.Log = print) -> dict[str, Any]:
  """Runs (or resumes, from ``out_dir/scale.jsonl``) the scale benchmark and writes its reports."""
  return suite.run(SUITE, config, cells, to_markdown, plot, out_dir, log)
