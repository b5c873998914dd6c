r"""Training benchmark: Bayesian logistic regression (``closed_forms.md``, Section 3; Mohamed et al. 2020, Sec. 8).

Data: scikit-learn's ``load_breast_cancer()`` (569 x 30), each feature standardized with the full-data mean and
standard deviation, plus a constant-1 column (``D = 31``); labels ``y`` in {0, 1}. Model:
``y ~ Bernoulli(sigmoid(x . w))``, prior ``w ~ N(0, I)``. Posterior ``q = N(mean, diag(exp(log_scale))^2)``,
a ``distrax.MultivariateNormalDiag``, from ``mean = 0``, ``log_scale = 0``.

Objective: ``ELBO = 569 * (mean over a batch of log p(y | x, w)) - KL(q || p)``. The KL term is analytic, its
gradient exact; only the likelihood goes through the estimator. The cost function of ONE weight sample is

    f(w) = 569 * mean_{i in batch} [y_i (x_i . w) - softplus(x_i . w)]

(closing over the batch), so ``grad E_q[f] - grad KL`` is an unbiased estimate of the ELBO's gradient.

Training (one cell per estimator): plain SGD ascent, ``params += lr_t * (g - grad KL)`` with
``lr_t = learning_rate * cos(pi/2 * t / steps)``, a batch of ``batch_size`` points drawn without replacement
each step, and ``num_samples`` posterior samples per step (``measure_valued_samples`` base samples for the
measure-valued estimator, each costing ``4 D = 124`` evaluations of ``f``). Every ``log_every`` steps the curve
records ``[step, ELBO, accuracy]`` on the full data set with ``eval_samples`` posterior samples: the ELBO is
the Monte Carlo mean of the full-data log-likelihood minus the exact KL; the accuracy is that of the
posterior predictive (the mean over samples of ``sigmoid(x . w)``, thresholded at 1/2).

Variance (every ``variance_every`` steps, step 0 included): at the current parameters (and, for the
moving-average baseline, the current baseline state), ``sfe.diagnostics.gradient_moments`` draws
``num_repeats`` independent SINGLE-SAMPLE estimates (``num_samples=1``: one posterior sample, or one base
sample of the measure-valued estimator) of the likelihood gradient on one fixed batch (drawn from the cell's
key at that step), i.e. the Monte Carlo variance given the batch. Recorded per parameter (``mean``,
``log_scale``): the per-dimension variance averaged over the 31 dimensions and its maximum over them;
``seconds_per_estimate`` (wall time of the compiled batch of repeats divided by ``num_repeats``) and
``work_normalised_variance = average variance * seconds_per_estimate``.

Timing (every timed figure excludes compilation): each cell compiles its three programs once, ahead of time
(a training segment of ``log_every`` steps, the variance batch, the full-data evaluation; the sum recorded as
``compile_seconds``), and runs each once untimed (the warm-up, its result discarded) before any timed call;
a timed call waits for its result (``block_until_ready``). ``seconds`` is the sum of the timed training
segments (the evaluations of the curve and the variance checkpoints excluded).

Estimators (``evaluations`` = evaluations of ``f`` per single-sample estimate; the training step costs
``num_samples`` times the per-sample part):

* ``pathwise``: ``sfe.pathwise()``; 1 evaluation (and its gradient).
* ``score function``: ``sfe.score_function()``; 1.
* ``score function + MA``: ``sfe.score_function(sfe.baselines.moving_average(0.9))``; 1.
* ``measure-valued``: ``sfe.measure_valued()`` (coupled); ``4 D = 124`` per base sample.
* ``... + delta``: ``sfe.with_control_variate(<estimator>, sfe.control_variates.delta_method())``: the
  coefficient is estimated from 10 extra single-sample pairs (10 more per-sample costs of ``f``, plus 10 of the
  Taylor polynomial ``h``), and one Hessian of ``f`` at the mean per call. Recorded as
  ``coefficient_evaluations``.

Seeds: every cell's key is ``fold_in(key(seed), crc32(cell id))``, so a cell gives the same numbers whatever
other cells are run, and re-runs reproduce them. The curve's evaluation samples use one key shared by all
cells (``crc32("logistic/evaluation")``), so equal parameters give equal ELBOs (step 0, for instance).
"""

from __future__ import annotations

from typing import Any

from benchmarks import suite
from benchmarks.logistic.measure import (
  build_estimator,
  cell_id,
  cells,
  coefficient_evaluations,
  evaluations_per_sample,
  is_measure_valued,
  measure_training,
  samples_per_step,
)
from benchmarks.logistic.problems import (
  DIM,
  ESTIMATORS,
  MA_DECAY,
  NUM_COEFFICIENT_SAMPLES,
  NUM_DATA,
  PARAM_NAMES,
  PRESETS,
  SLUGS,
  SUITE,
  LogisticConfig,
  dist_builder,
  evaluate,
  initial_params,
  kl_to_prior,
  load_data,
  log_likelihood,
  make_cost,
)
from benchmarks.logistic.render import plot, to_markdown

SUMMARY = """\
Bayesian logistic regression on scikit-learn's breast-cancer data (closed_forms.md Section 3):
ELBO and accuracy over training, and per-dimension gradient variance of mean and log_scale at
checkpoints, for pathwise, score function and measure-valued, each with and without the
delta-method control variate, and the score function with a moving-average baseline; training and
per-estimate seconds exclude compilation (recorded apart)."""
OPTIONS: tuple[suite.Option, ...] = ()

__all__ = [
  "DIM",
  "ESTIMATORS",
  "MA_DECAY",
  "NUM_COEFFICIENT_SAMPLES",
  "NUM_DATA",
  "OPTIONS",
  "PARAM_NAMES",
  "PRESETS",
  "SLUGS",
  "SUITE",
  "SUMMARY",
  "LogisticConfig",
  "build_estimator",
  "cell_id",
  "cells",
  "coefficient_evaluations",
  "dist_builder",
  "evaluate",
  "evaluations_per_sample",
  "initial_params",
  "is_measure_valued",
  "kl_to_prior",
  "load_data",
  "log_likelihood",
  "make_cost",
  "measure_training",
  "plot",
  "run",
  "samples_per_step",
  "to_markdown",
]


def run(config: LogisticConfig, out_dir: str | None = None, log: suite.Log = print) -> dict[str, Any]:
  """Runs (or resumes, from ``out_dir/logistic.jsonl``) the logistic-regression suite and writes its reports.

  Returns:
    ``{"records": [...], "markdown": str, "meta": {...}, "paths": {...}}``.
  """
  return suite.run(SUITE, config, cells, to_markdown, plot, out_dir, log)
