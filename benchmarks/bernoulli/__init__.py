r"""Variance and training benchmark: the one-bit Bernoulli toy of ``closed_forms.md``, Section 2.

Problem: the gradient of :math:`F(\phi) = E_{b \sim \mathrm{Bernoulli}(\sigma(\phi))}[(b - p_0)^2]` with respect
to the logit :math:`\phi`. With :math:`p = \sigma(\phi)` and :math:`\Delta = f(1) - f(0) = 1 - 2 p_0` the exact
gradient is :math:`\Delta p (1 - p)`, and :math:`F = p (1 - p_0)^2 + (1 - p) p_0^2`, minimised as
:math:`p \to 0` (:math:`F \to p_0^2`) for :math:`p_0 < 1/2`. The signal is tiny next to :math:`f`'s magnitude
(:math:`\Delta = 0.02` at :math:`p_0 = 0.49`, 0.002 at 0.499), which is what makes the toy hard for REINFORCE.

Variance sweep: one cell per ``(p0, p, estimator)``. Each cell draws ``num_repeats`` independent estimates
(one jitted, vmapped batch, compiled once per estimator: ``phi``, ``p0`` and the key are arguments) and
compares

* the mean with the exact gradient (Gumbel: with the gradient of the *relaxed* objective, computed by
  quadrature, since Gumbel-softmax is biased; its bias against the exact gradient is reported), within
  ``num_se`` standard errors of the mean, and
* the variance of ONE estimate (at the estimator's own cost, below) with its exact value (closed forms of the
  reference for REINFORCE, LOO, ARM, DisARM; quadrature for Gumbel; none for RELAX), within ``num_se``
  standard errors of the variance (fourth-moment formula).

The estimators run in float32, and ``p0`` itself is rounded to float32 (0.499 becomes 0.49900001, which moves
``Delta`` by 1.3e-5 of its value), so both checks add a rounding allowance ``u = eps32 (f(0) + f(1))``: ``u``
for the mean and ``1e-6 |exact| + u^2`` for the variance. It matters only where the standard errors vanish:
DisARM at ``p = 1/2``, where every pair gives the exact gradient and the variance is exactly 0.

Estimators (``evaluations`` = evaluations of ``f`` per estimate, recorded in every record):

* ``REINFORCE``: ``sfe.score_function()``, 1 sample (1 evaluation).
* ``LOO``: ``sfe.score_function(sfe.baselines.leave_one_out())``, 2 samples (2 evaluations).
* ``ARM`` / ``DisARM``: ``sfe.arm()`` / ``sfe.disarm()``, one antithetic pair, ``num_samples=2`` (2 evaluations).
* ``RELAX``: ``sfe.relax(control, RELAX_CONTROL_PARAMS, optax.set_to_zero())``, 2 samples (2 evaluations of
  ``f``, plus 4 of the control), at FIXED control parameters (the state is never updated, so every repeat uses
  the same control). The control is :math:`c(z) = a + \sum_j w_{2j} \tanh(w_{1j} z + b_{1j})` with 10 hidden
  units, ``a = 0.25`` (about ``E[f]`` for ``p0`` near 1/2), ``w1 = w2 = 0.1``, ``b1 = 0``
  (:data:`RELAX_CONTROL_PARAMS`): an untrained, roughly constant control, so RELAX here is close to REINFORCE
  with a constant baseline of 0.25 and its variance depends on that choice. No closed form: mean checked only.
* ``Gumbel``: ``sfe.gumbel_softmax(0.5)``, 1 sample (1 evaluation of ``f`` and its derivative). Biased.

Timing (every timed figure excludes compilation): the cells of one estimator share one executable (``phi``,
``p0`` and the key are arguments), compiled ahead of time, its compilation timed apart (``compile_seconds``,
the same for every cell of the estimator), and run once untimed (the warm-up) before any cell's timed call.
``seconds`` is the wall time of the cell's one call (``block_until_ready``), ``seconds_per_estimate`` that
divided by ``num_repeats``, and ``work_normalised_variance = variance * seconds_per_estimate``.

Training: for each ``p0`` in ``training_p0s`` and each of REINFORCE, REBAR and RELAX, ``phi`` starts at 0 and
takes ``steps`` Adam steps (``learning_rate``) with one sample per step (``num_samples=3`` for REBAR, which
evaluates ``f`` three times per sample); REBAR (``sfe.rebar(0.5, 1.0)``) and
RELAX (the control above, as initial value) train their control with ``optax.adam(control_learning_rate)``
in the same jitted step (the one-call pattern of ``sfe.relax``); the whole run is one ``lax.scan``. The curve
records, every ``log_every`` steps, ``[step, phi, exact loss F(phi), variance estimate]``, the variance
estimate being the mean of ``(g_t - exact gradient(phi_t))^2`` over the steps since the previous point (an
unbiased estimate of the single-step variance for these unbiased estimators, averaged over the window).
The run is compiled (``compile_seconds``) and run once untimed before the timed run (``seconds``) whose
results are recorded.

Seeds: every cell's key is ``fold_in(key(seed), crc32(cell id))``, so a cell gives the same numbers whatever
other cells are run, and re-runs reproduce them.
"""

from __future__ import annotations

from typing import Any

from benchmarks import suite
from benchmarks.bernoulli.measure import (
  build_estimator,
  cells,
  compiled_batch,
  measure_training,
  measure_variance,
  training_cell_id,
  training_estimator,
  variance_cell_id,
)
from benchmarks.bernoulli.problems import (
  ESTIMATORS,
  EVALUATIONS,
  GUMBEL_TEMPERATURE,
  NUM_SAMPLES,
  PRESETS,
  REBAR_TEMPERATURE,
  RELAX_CONTROL_PARAMS,
  RELAX_HIDDEN,
  SUITE,
  TRAINING_ESTIMATORS,
  TRAINING_EVALUATIONS,
  WITH_CLOSED_FORM,
  BernoulliConfig,
  cost,
  cost_values,
  dist_builder,
  exact_gradient,
  exact_loss,
  exact_variance,
  gumbel_moments,
  logit,
  reference_variance,
  relax_control,
  relax_control_params,
)
from benchmarks.bernoulli.render import flagged, plot, to_markdown

SUMMARY = """\
The Bernoulli toy E[(b - p0)^2] (closed_forms.md Section 2): single-estimate variance against p
for REINFORCE, REINFORCE leave-one-out, ARM, DisARM (closed forms beside the measured points),
RELAX with a fixed control and Gumbel-softmax (with its bias), work-normalised variance (timings
exclude compilation), and the REBAR/RELAX training toy (p0 = 0.45 and 0.499, Adam 0.01 from
phi = 0); PNG plots."""
OPTIONS: tuple[suite.Option, ...] = ()

__all__ = [
  "ESTIMATORS",
  "EVALUATIONS",
  "GUMBEL_TEMPERATURE",
  "NUM_SAMPLES",
  "OPTIONS",
  "PRESETS",
  "REBAR_TEMPERATURE",
  "RELAX_CONTROL_PARAMS",
  "RELAX_HIDDEN",
  "SUITE",
  "SUMMARY",
  "TRAINING_ESTIMATORS",
  "TRAINING_EVALUATIONS",
  "WITH_CLOSED_FORM",
  "BernoulliConfig",
  "build_estimator",
  "cells",
  "compiled_batch",
  "cost",
  "cost_values",
  "dist_builder",
  "exact_gradient",
  "exact_loss",
  "exact_variance",
  "flagged",
  "gumbel_moments",
  "logit",
  "measure_training",
  "measure_variance",
  "plot",
  "reference_variance",
  "relax_control",
  "relax_control_params",
  "run",
  "to_markdown",
  "training_cell_id",
  "training_estimator",
  "variance_cell_id",
]


def run(config: BernoulliConfig, out_dir: str | None = None, log: suite.Log = print) -> dict[str, Any]:
  """Runs (or resumes, from ``out_dir/bernoulli.jsonl``) the Bernoulli toy suite and writes its reports.

  Returns:
    ``{"records": [...], "markdown": str, "meta": {...}, "paths": {...}}``; ``meta["outside"]`` counts the
    variance measurements outside their intervals.
  """
  result = suite.run(SUITE, config, cells, to_markdown, plot, out_dir, log)
  result["meta"]["outside"] = sum(flagged(r) for r in result["records"] if r.get("kind") != "training")
  return result
