r"""Variance benchmark: the Gaussian cost functions of Mohamed, Rosca, Figurnov and Mnih (2020), Section 3.

Problem: the gradient of :math:`F(\mu, \sigma) = E_{x \sim N(\mu, \sigma^2)}[f(x; k)]` with respect to
:math:`\mu` and :math:`\sigma` for :math:`f = (x - k)^2`, :math:`\exp(-k x^2)` and :math:`\cos(k x)`
(``closed_forms.md``, Section 1). For each problem and estimator the benchmark draws many independent
estimates with :func:`sfe_jax.diagnostics.gradient_moments` and compares

* the mean with the exact gradient, within ``num_se`` standard errors of the mean, and
* the single-sample variance with its exact value, within ``num_se`` standard errors of the variance (the
  fourth-moment formula, valid for heavy-tailed estimates),

and flags every measured value outside its interval.

Estimators (single-sample variance = the variance of an estimate made from ONE sample):

* ``SF``: ``sfe.score_function()``, ``num_samples=1``.
* ``SF*``: ``sfe.score_function(sfe.baselines.optimal())``. The optimal baseline is estimated leave-one-out
  from the other samples of the batch, so it needs ``num_samples >= 2``: it is measured with
  ``num_samples = N`` (``optimal_baseline_samples``) and ``N * Var`` is reported as the single-sample
  equivalent. It tends to the exact ``Var SF*`` (the variance with the exact optimal constant ``b*``) with an
  ``O(1/N)`` excess, the price of estimating the baseline: linearising the leave-one-out ratio
  ``b_i = sum_{j != i} f_j s_j^2 / sum_{j != i} s_j^2`` around ``b*`` gives, per coordinate,

  .. math::
     N\,\mathrm{Var} = \mathrm{Var}_{SF^*} + \frac{E[(f - b^*)^2 s^4]\,E[s^2] + E[(f - b^*) s^3]^2}{(N - 1)\,E[s^2]^2}
       + O(1/N^2)

  (the cross term with the plain estimate vanishes because ``E[(f - b*) s^2] = 0`` defines ``b*``). The
  measured value is compared with this expectation at ``N`` (its expectations over ``N(0, 1)`` computed by
  Gauss-Hermite quadrature), with the next term of the expansion allowed for as a model error of
  ``2 excess^2 / Var SF*``. With ``N = 1000`` the excess is 0.1 to 4.3% of ``Var SF*`` on these problems.
* ``PW``: ``sfe.pathwise()``, ``num_samples=1``.
* ``MVD``: ``sfe.measure_valued(coupling=True)``, one base sample, which costs 4 evaluations of ``f`` here (2
  for ``mu``, 2 for ``sigma``; ``num_samples=4``, as ``num_samples`` counts evaluations); the variance is per
  base sample, as in the paper.
* ``SF+DM``: ``sfe.with_control_variate(sfe.score_function(), sfe.control_variates.delta_method())``,
  ``num_samples=1``, its coefficient estimated from 10 independent pairs of extra single-sample estimates. The
  reference has no closed form for its variance: only its mean is checked (it must stay unbiased), and its
  variance is reported beside the plain score function's. For ``(x - k)^2`` the delta method's Taylor
  expansion is ``f`` itself, so what remains is the error of the estimated coefficient.

Exact values come from the closed forms of ``closed_forms.md``; the coupled measure-valued variances of
``exp(-k x^2)`` and ``cos(k x)``, for which the reference only tabulates numbers, are computed here by numerical
quadrature of the estimator's second moment (``scipy.integrate.quad``, relative error below 1e-9).

Timing: each cell's batch of repeats is one ``jax.jit``-compiled function, compiled ahead of time (its seconds
recorded apart as ``compile_seconds``), then timed (``seconds``: the median of at least 3 calls, up to 10 for
fast cells until they add up to 0.2 s, each ended by ``jax.block_until_ready``); the work-normalised variance,
the variance of one estimate times ``seconds / repeats``, uses these steady-state seconds.

Sampler study (records of ``kind="sampler"``; the records above have ``kind="single"``): how the base randomness
is drawn, ``sfe.value_and_grad(..., sampler=s)`` with ``s`` in ``"iid"``, ``"antithetic"`` (pairs ``u, 1 - u``),
``"stratified"`` (Latin hypercube) and ``"rqmc"`` (scrambled Sobol points), for PW and SF (``sampler_estimators``;
MVD too, optionally) on ``(x - k)^2, k = 3`` and ``cos(k x), k = 2`` (``sampler_problems``), at ``N`` from
``2^6`` to ``2^14`` samples per estimate (``sampler_sizes``; the quick preset stops at ``2^12``: a cell compiles
one function per sampler, about a second each on a CPU). A cell is one (problem, estimator, ``N``): per
sampler, ``sampler_repeats`` independent ``N``-sample estimates (a jitted ``vmap`` over keys, in batches of
``chunk_samples // N`` repeats), their variance and its standard error
(:func:`sfe_jax.diagnostics.variance_and_std_error`), their mean against the exact gradient (flagged beyond
``num_se`` standard errors plus a float32 rounding allowance), and the i.i.d. variance against the exact
single-sample variance over ``N``. The samplers' compiled functions are timed interleaved
(:func:`benchmarks.timing.time_interleaved`): seconds per estimate, and the paired ratio of a sampler's seconds
to i.i.d.'s, so that the report's work-normalised ratio (variance ratio x seconds ratio) compares equal compute.
The report gives per (problem, estimator, sampler, parameter) the least-squares slope of log variance against
log ``N`` (with its standard error), the variance ratio to i.i.d. at ``sampler_reference_size`` (``2^10``), the
work-normalised ratio and, for antithetic pairs, the exact ratio (twice the even share of the per-sample term's
variance about the location, by quadrature: 0 for an odd term, 2 for an even one); ``variance_samplers.png``
plots the ``mu`` gradient's variance against ``N``. In one dimension stratified and RQMC points both hold one
point per stratum of width ``1/N``, and the Gaussian tails beyond the end strata hold them near ``N^-2``
(pathwise) rather than the ``N^-3`` of a smooth bounded integrand; score-function terms, which grow in the tails,
decay a little slower.

Layout: :mod:`~benchmarks.gaussian.problems` (the cost functions, their exact values, the configuration),
:mod:`~benchmarks.gaussian.measure` (the estimators, the timed measurement, the cells; ``gaussian.measure`` is
that module) and
:mod:`~benchmarks.gaussian.render` (the report and the plot).
"""

from __future__ import annotations

from typing import Any

from benchmarks import suite
from benchmarks.gaussian.measure import (
  build_estimator,
  cell_id,
  cells,
  dist_builder,
  measure_samplers,
  problem_key,
  sampler_cell_id,
  sampler_estimates_fn,
  sampler_key,
  timed_moments,
)
from benchmarks.gaussian.problems import (
  CURVE_PROBLEMS,
  ESTIMATORS,
  FAMILIES,
  LEAVES,
  PARAMS,
  PRESETS,
  PROBLEMS,
  SAMPLER_ESTIMATORS,
  SAMPLER_PROBLEMS,
  SAMPLER_SIZES,
  SAMPLERS,
  SUITE,
  WITH_EXACT_VARIANCE,
  Exact,
  Problem,
  VarianceConfig,
  antithetic_ratio,
  cost,
  cost_derivative,
  exact,
  mvd_variance_by_quadrature,
  optimal_baseline_excess,
)
from benchmarks.gaussian.render import log_slope, plot, plot_samplers, sampler_rows, to_markdown

SUMMARY = """\
Single-sample variance and mean of the gradient of E_{x~N(mu,sigma^2)}[f(x;k)] at mu=sigma=1 for
the 8 cost functions of closed_forms.md Section 1 ((x-k)^2, exp(-kx^2), cos(kx)) and 6 more values
of k, for the score function (SF), SF with the optimal baseline (SF*, measured with N samples,
N x Var reported), pathwise (PW), coupled measure-valued (MVD) and SF with the delta-method control
variate, each beside its exact value, with a flag when a measured value is more than 5 standard
errors from it; work-normalised variance (variance x steady-state seconds per estimate; compile time
reported apart); variance.png plots the measured points on the exact curves against k. Sampler
study: PW and SF with sampler= iid, antithetic, stratified, rqmc on (x-k)^2 and cos(kx) for N from
2^6 up: slope of log Var against log N, variance and work-normalised ratios to iid at N=2^10, the
exact antithetic ratio, means checked against the exact gradient; variance_samplers.png."""
OPTIONS: tuple[suite.Option, ...] = ()

__all__ = [
  "CURVE_PROBLEMS",
  "ESTIMATORS",
  "FAMILIES",
  "LEAVES",
  "OPTIONS",
  "PARAMS",
  "PRESETS",
  "PROBLEMS",
  "SAMPLERS",
  "SAMPLER_ESTIMATORS",
  "SAMPLER_PROBLEMS",
  "SAMPLER_SIZES",
  "SUITE",
  "SUMMARY",
  "WITH_EXACT_VARIANCE",
  "Exact",
  "Problem",
  "VarianceConfig",
  "antithetic_ratio",
  "build_estimator",
  "cell_id",
  "cells",
  "cost",
  "cost_derivative",
  "dist_builder",
  "exact",
  "log_slope",
  "measure_samplers",
  "mvd_variance_by_quadrature",
  "optimal_baseline_excess",
  "plot",
  "plot_samplers",
  "problem_key",
  "run",
  "sampler_cell_id",
  "sampler_estimates_fn",
  "sampler_key",
  "sampler_rows",
  "timed_moments",
  "to_markdown",
]


def run(config: VarianceConfig, out_dir: str | None = None, log: suite.Log = print) -> dict[str, Any]:
  """Runs (or resumes, from ``out_dir/variance.jsonl``) the variance benchmark and writes its reports.

  Returns:
    ``{"records": [...], "markdown": str, "meta": {...}, "paths": {...}}``; ``meta["outside"]`` counts the
    measurements outside their intervals (of both kinds: single-sample and sampler study).
  """
  result = suite.run(SUITE, config, cells, to_markdown, plot, out_dir, log)
  result["meta"]["outside"] = sum(not (r["mean_ok"] and r["variance_ok"]) for r in result["records"])
  return result
