"""The variance suite's report and plots, built from its records alone."""

from __future__ import annotations

from typing import Any

import numpy as np

from benchmarks import report, suite
from benchmarks.gaussian.problems import (
  ESTIMATORS,
  FAMILIES,
  PARAMS,
  SUITE,
  WITH_EXACT_VARIANCE,
  Problem,
  VarianceConfig,
  exact,
)


def _seconds(record: dict[str, Any]) -> str:
  """``steady-state seconds (compile seconds)`` of a cell."""
  return f"{report.format_number(record.get('seconds'))} ({report.format_number(record.get('compile_seconds'))})"


def _flag(record: dict[str, Any]) -> str:
  bad = [what for what, ok in (("mean", record["mean_ok"]), ("variance", record["variance_ok"])) if not ok]
  return "OUTSIDE: " + ", ".join(bad) if bad else "ok"


def to_markdown(records: list[dict[str, Any]], config: VarianceConfig, env: dict[str, Any]) -> str:
  """The report: a summary table of single-sample variances, then every measurement with its interval."""
  labels = [e for e in ESTIMATORS if e in config.estimators]
  by_key = suite.index(records, SUITE, key=lambda r: (r["f"], r["k"], r["estimator"], r["param"]))
  summary_columns = ["f", "k"] + [f"Var {e}_{p}" for e in labels for p in PARAMS]
  summary_rows = []
  for problem in config.problems:
    row = [problem.family, problem.k]
    for e in labels:
      for p in PARAMS:
        r = by_key.get((problem.family, problem.k, e, p))
        row.append(
          "not run"
          if r is None
          else (
            f"{report.format_number(r['variance'])} "
            f"({report.format_number(r['exact_variance'])})" + ("" if r["variance_ok"] else " **!**")
          )
        )
    summary_rows.append(row)
  detail_columns = [
    "f",
    "k",
    "estimator",
    "param",
    "N",
    "repeats",
    "exact dF",
    "mean",
    "± se",
    "z",
    "exact Var",
    "expected N x Var at N",
    "measured",
    "± se",
    "z",
    "flag",
  ]
  detail_rows = [
    [
      r["f"],
      r["k"],
      r["estimator"],
      r["param"],
      r["num_samples"],
      r["num_repeats"],
      r["exact_grad"],
      r["mean"],
      r["mean_se"],
      round(r["mean_z"], 2),
      r["exact_variance"],
      r["expected_variance"],
      r["variance"],
      r["variance_se"],
      None if r["variance_z"] is None else round(r["variance_z"], 2),
      _flag(r),
    ]
    for r in records
  ]
  work_columns = ["f", "k"] + [f"{e}_{p}" for e in labels for p in PARAMS]
  work_rows = []
  for problem in config.problems:
    row = [problem.family, problem.k]
    for e in labels:
      for p in PARAMS:
        r = by_key.get((problem.family, problem.k, e, p))
        row.append("not run" if r is None else r.get("work_normalised_variance"))
    work_rows.append(row)
  time_columns = ["f", "k"] + [f"{e}: s (compile s)" for e in labels]
  time_rows = []
  for problem in config.problems:
    row = [problem.family, problem.k]
    for e in labels:
      r = by_key.get((problem.family, problem.k, e, PARAMS[0]))
      row.append("not run" if r is None else _seconds(r))
    time_rows.append(row)
  outside = [r for r in records if not (r["mean_ok"] and r["variance_ok"])]
  verdict = (
    f"All {len(records)} measurements are inside their {config.num_se:g}-standard-error intervals."
    if not outside
    else f"**{len(outside)} of {len(records)} measurements are outside their {config.num_se:g}-standard-error "
    "intervals** (flagged below)."
  )
  return "\n\n".join(
    [
      "# Variance benchmark: Gaussian cost functions (Mohamed et al. 2020, Section 3)",
      f"Gradients of E_{{x ~ N(mu, sigma^2)}}[f(x; k)] at mu = {config.mu:g}, sigma = {config.sigma:g}. "
      f"{config.num_repeats} single-sample repeats per cell (SF*: {config.optimal_baseline_repeats} repeats of "
      f"N = {config.optimal_baseline_samples} samples, reported as N x Var). " + verdict,
      report.environment_markdown(env),
      "## Single-sample variance, measured (exact)",
      report.markdown_table(summary_columns, summary_rows),
      "## Work-normalised variance: variance of one estimate x seconds per estimate",
      "Lower is better: the compute an estimator needs to reach a given precision, so estimators of different "
      "cost (SF* uses N samples, MVD 4 evaluations of f per sample) compare fairly. Seconds are the steady-state "
      "wall time of the compiled batch of repeats (compiled ahead of time, then the median of 3 to 10 timed "
      "calls; no compilation while timed) divided by the repeats, on the device named above.",
      report.markdown_table(work_columns, work_rows),
      "## Seconds per batch of repeats: steady state (compilation)",
      "The timed seconds of one cell's batch of repeats, and in brackets the seconds spent tracing and "
      "compiling it, which are not part of any figure above.",
      report.markdown_table(time_columns, time_rows),
      "## Every measurement",
      "Mean against the exact gradient and single-sample variance against the exact variance; `z` is "
      "(measured - expected) / se, the variance's se from the fourth central moment. A value is flagged OUTSIDE "
      f"when it is more than {config.num_se:g} se from the expected value. The expected value is the exact one, "
      "except for SF*: N x Var of N samples exceeds Var SF* by the O(1/N) cost of estimating the baseline "
      "leave-one-out, computed to first order (benchmarks/gaussian/problems.py), with the next order allowed for as a "
      "model error.",
      report.markdown_table(detail_columns, detail_rows),
      "Estimators: SF = `sfe.score_function()`; SF* = `sfe.score_function(sfe.baselines.optimal())`, measured "
      "with N samples per estimate, N x Var reported; PW = `sfe.pathwise()`; MVD = "
      "`sfe.measure_valued(coupling=True)`, one base sample per estimate (4 evaluations of f); SF+DM = "
      "`sfe.with_control_variate(sfe.score_function(), sfe.control_variates.delta_method())`, one sample per "
      "estimate plus 10 pairs of single-sample estimates for its coefficient, no exact variance (— : only its mean "
      "is checked). Exact values: closed forms of closed_forms.md Section 1; MVD for exp and cos by numerical "
      "quadrature.",
    ]
  )


def plot(records: list[dict[str, Any]], config: VarianceConfig, out_dir: str) -> list[str]:
  """``variance.png``: single-sample variance against k, measured points (± 2 se) beside the exact curves."""
  plt = report.pyplot(out_dir)
  families = [f for f in FAMILIES if any(p.family == f for p in config.problems)]
  labels = [e for e in ESTIMATORS if e in config.estimators]
  colours = dict(zip(ESTIMATORS, ("C0", "C1", "C2", "C3", "C4")))
  fig, axes = plt.subplots(len(PARAMS), len(families), figsize=(4.5 * len(families), 7), squeeze=False)
  for col, family in enumerate(families):
    ks = [p.k for p in config.problems if p.family == family]
    lo, hi = min(ks), max(ks)
    if family == "exp(-kx^2)":
      grid = np.geomspace(max(lo, 1e-2) / 1.5, hi * 1.5, 40)
    else:
      pad = 0.1 * max(hi - lo, 1.0)
      grid = np.linspace(lo - pad, hi + pad, 40)
    curves = [exact(Problem(family, float(k)), config.mu, config.sigma).variance for k in grid]
    for row, param in enumerate(PARAMS):
      ax = axes[row][col]
      for label in labels:
        if label in WITH_EXACT_VARIANCE:
          ax.plot(grid, [max(c[label][row], 1e-12) for c in curves], color=colours[label], lw=1, alpha=0.8)
        points = [r for r in records if r["f"] == family and r["estimator"] == label and r["param"] == param]
        if points:
          ax.errorbar(
            [r["k"] for r in points],
            [float(r["variance"]) for r in points],
            yerr=[2 * float(r["variance_se"]) for r in points],
            fmt="o",
            ms=4,
            color=colours[label],
            label=label,
            capsize=2,
          )
      ax.set_yscale("log")
      if family == "exp(-kx^2)":
        ax.set_xscale("log")
      ax.set_title(f"f = {family}, d/d{param}")
      ax.set_xlabel("k")
      ax.set_ylabel("single-sample variance")
  axes[0][0].legend(fontsize=8)
  fig.suptitle(
    f"Gaussian cost functions at mu = {config.mu:g}, sigma = {config.sigma:g}: "
    "measured (points, ± 2 se) and exact (lines)"
  )
  fig.tight_layout()
  return report.save_figure(fig, out_dir, "variance.png", dpi=110)
