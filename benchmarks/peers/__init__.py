"""Peers benchmark: the same gradient through sfe_jax and through the JAX libraries a user would pick instead.

Problem: the gradient of ``E[f(x)]``, ``x ~ N(mu, diag sigma^2)`` in ``D`` dimensions, ``f(x) = sum((x - 0.5)^2)``,
with respect to ``mu`` and ``sigma``, by the score function and the pathwise estimator from ``N`` samples, at
``D x N`` in 10 x 1e3, 100 x 1e4 and 1000 x 1e5 (the quick preset: the first two). Peers, each jitted and timed
only where its library is installed (a note in the report otherwise):

* ``hand``: hand-written JAX, the floor every other time is divided by;
* ``sfe_jax``: ``sfe.value_and_grad`` with ``sfe.score_function()`` / ``sfe.pathwise()``;
* ``tfp``: ``tfp.monte_carlo.expectation`` (TFP's JAX substrate), ``use_reparameterization=False`` / ``True``;
* ``numpyro``: ``TraceGraph_ELBO`` with a non-reparameterizable guide / ``Trace_ELBO``, ``num_particles=N``,
  ``vectorize_particles=True``, on a model whose ELBO is exactly ``-E[f]`` (see :mod:`benchmarks.peers.measure`).

Reported per ``(D, N)`` and estimator: median seconds per gradient (compile time apart), the ratio to the floor
in the same run, XLA's temporary memory of the compiled function, and the error against the exact gradient
``(2 (mu - 0.5), 2 sigma)``, beside its expected size and the largest coordinate error in standard errors (both
from closed-form single-sample variances, :mod:`benchmarks.peers.problems`), so a peer wired to compute something
else shows.
"""

from __future__ import annotations

from typing import Any

from benchmarks import suite
from benchmarks.peers.measure import FUNCTIONS, cells, measure_cell
from benchmarks.peers.problems import (
  ESTIMATORS,
  OPTIONAL,
  PEERS,
  PRESETS,
  SIZES,
  SUITE,
  PeersConfig,
  cost,
  exact_gradient,
  gradient_errors,
  initial_params,
  missing,
  single_sample_variance,
)
from benchmarks.peers.render import plot, to_markdown

SUMMARY = """\
Seconds per gradient of the same problem through sfe_jax and the JAX-ecosystem alternatives
(TFP's monte_carlo.expectation, numpyro's TraceGraph_ELBO / Trace_ELBO), each only if installed,
against hand-written JAX: score function and pathwise on a D-dimensional diagonal Gaussian with
f = sum((x - 0.5)^2), D x N in 10 x 1e3, 100 x 1e4 (full: also 1000 x 1e5); the ratio to the
hand-written floor, XLA temp memory and the error against the exact gradient; peers.png."""
OPTIONS: tuple[suite.Option, ...] = ()

__all__ = [
  "ESTIMATORS",
  "FUNCTIONS",
  "OPTIONAL",
  "OPTIONS",
  "PEERS",
  "PRESETS",
  "SIZES",
  "SUITE",
  "SUMMARY",
  "PeersConfig",
  "cells",
  "cost",
  "exact_gradient",
  "gradient_errors",
  "initial_params",
  "measure_cell",
  "missing",
  "plot",
  "run",
  "single_sample_variance",
  "to_markdown",
]


def run(config: PeersConfig, out_dir: str | None = None, log: suite.Log = print) -> dict[str, Any]:
  """Runs (or resumes, from ``out_dir/peers.jsonl``) the peers benchmark and writes its reports.

  Returns:
    ``{"records": [...], "markdown": str, "meta": {...}, "paths": {...}}``.
  """
  return suite.run(SUITE, config, cells, to_markdown, plot, out_dir, log)
