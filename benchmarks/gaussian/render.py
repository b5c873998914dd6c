"""The variance suite's report and plots, built from its records alone."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from benchmarks import report, suite
from benchmarks.gaussian.problems import (
  ESTIMATORS,
  FAMILIES,
  PARAMS,
  SAMPLERS,
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


def _of_kind(records: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
  """The records of the variance suite of ``kind`` (``"single"`` or ``"sampler"``)."""
  return [r for r in records if r.get("suite", SUITE) == SUITE and r.get("kind", "single") == kind]


def to_markdown(records: list[dict[str, Any]], config: VarianceConfig, env: dict[str, Any]) -> str:
  """The report: single-sample variances against their exact values, then the sampler study."""
  sampler_records = _of_kind(records, "sampler")
  records = _of_kind(records, "single")
  title = "# Variance benchmark: Gaussian cost functions (Mohamed et al. 2020, Section 3)"
  if not (config.problems and config.estimators):  # the sampler study alone
    return "\n\n".join([title, report.environment_markdown(env), *_sampler_sections(sampler_records, config)])
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
      title,
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
      *_sampler_sections(sampler_records, config),
    ]
  )


# ----------------------------------------------------------------------------------------------------------
# The sampler study.
# ----------------------------------------------------------------------------------------------------------


def log_slope(sizes: Sequence[float], variances: Sequence[float], std_errors: Sequence[float]) -> tuple[float, float]:
  r"""The least-squares slope of :math:`\log \mathrm{Var}` against :math:`\log N`, and its standard error.

  The slope is :math:`\sum_i c_i \log v_i` with :math:`c_i = (\log N_i - \overline{\log N}) / S_{xx}`; its
  standard error propagates each variance's, :math:`\sqrt{\sum_i c_i^2 (\mathrm{se}_i / v_i)^2}` (the
  variances at different sizes are independent). ``(nan, nan)`` with fewer than 2 sizes or a variance that is
  not positive.
  """
  x = np.log(np.asarray(sizes, np.float64))
  v, se = np.asarray(variances, np.float64), np.asarray(std_errors, np.float64)
  if len(x) < 2 or np.any(v <= 0) or np.ptp(x) == 0:
    return math.nan, math.nan
  c = (x - x.mean()) / np.sum((x - x.mean()) ** 2)
  return float(np.sum(c * np.log(v))), float(np.sqrt(np.sum(c**2 * (se / v) ** 2)))


def _ratio(numerator: dict[str, Any], denominator: dict[str, Any]) -> tuple[float, float]:
  """``Var a / Var b`` and its standard error (first order, the two variances independent)."""
  a, b = numerator["variance"], denominator["variance"]
  if b <= 0:
    return math.nan, math.nan
  r = a / b
  relative = math.hypot(numerator["variance_se"] / a if a > 0 else 0.0, denominator["variance_se"] / b)
  return r, abs(r) * relative


def _exact_zero(record: dict[str, Any]) -> bool:
  """Antithetic pairs of a term odd about the location: the estimate is exact, its variance rounding noise."""
  return record["sampler"] == "antithetic" and record.get("exact_antithetic_ratio") == 0.0


def sampler_rows(records: list[dict[str, Any]], config: VarianceConfig) -> list[dict[str, Any]]:
  """One row per (problem, estimator, parameter, sampler) of the sampler study, from its records.

  Each row: ``f``, ``k``, ``estimator``, ``param``, ``sampler``, ``sizes`` (measured, ascending), ``slope`` and
  ``slope_se`` (:func:`log_slope`; ``nan`` where the variance is exactly zero up to rounding), ``ratio`` and
  ``ratio_se`` (variance over i.i.d.'s at ``config.sampler_reference_size``, ``None`` if either is missing),
  ``seconds_ratio`` (paired, to i.i.d., at that size), ``work_ratio`` (``ratio x seconds_ratio``),
  ``exact_antithetic_ratio``, ``exact_zero`` and ``flags`` (what was outside its interval, and at which ``N``).
  """
  records = _of_kind(records, "sampler")
  by_key = {(r["f"], r["k"], r["estimator"], r["param"], r["sampler"], r["num_samples"]): r for r in records}
  samplers = [s for s in SAMPLERS if s in config.samplers]
  labels = [e for e in ESTIMATORS if e in config.sampler_estimators]
  ref_n = config.sampler_reference_size
  rows = []
  for problem in config.sampler_problems:
    for label in labels:
      for param in PARAMS:
        for s in samplers:
          points = [
            by_key[key]
            for n in sorted(config.sampler_sizes)
            if (key := (problem.family, problem.k, label, param, s, n)) in by_key
          ]
          if not points:
            continue
          zero = _exact_zero(points[0])
          slope, slope_se = (
            (math.nan, math.nan)
            if zero
            else log_slope(
              [r["num_samples"] for r in points], [r["variance"] for r in points], [r["variance_se"] for r in points]
            )
          )
          at_ref = by_key.get((problem.family, problem.k, label, param, s, ref_n))
          iid_ref = by_key.get((problem.family, problem.k, label, param, "iid", ref_n))
          ratio = ratio_se = seconds_ratio = work_ratio = None
          if at_ref is not None and iid_ref is not None:
            ratio, ratio_se = (1.0, 0.0) if s == "iid" else _ratio(at_ref, iid_ref)
            seconds_ratio = at_ref["seconds_ratio_to_iid"]
            work_ratio = ratio * seconds_ratio
          flags = [
            f"{what} OUTSIDE at N={r['num_samples']}"
            for r in points
            for what, ok in (("mean", r["mean_ok"]), ("variance", r["variance_ok"]))
            if not ok
          ]
          rows.append(
            {
              "f": problem.family,
              "k": problem.k,
              "estimator": label,
              "param": param,
              "sampler": s,
              "sizes": [r["num_samples"] for r in points],
              "slope": slope,
              "slope_se": slope_se,
              "ratio": ratio,
              "ratio_se": ratio_se,
              "seconds_ratio": seconds_ratio,
              "work_ratio": work_ratio,
              "exact_antithetic_ratio": points[0].get("exact_antithetic_ratio") if s == "antithetic" else None,
              "exact_zero": zero,
              "flags": flags,
            }
          )
  return rows


def _pm(value: float | None, se: float | None) -> str:
  """A slope: 2 decimals, ± its standard error."""
  if value is None or math.isnan(value):
    return "—"
  return f"{value:.2f} ± {se:.2f}" if se is not None and math.isfinite(se) else f"{value:.2f}"


def _pm_ratio(value: float | None, se: float | None) -> str:
  """A ratio: 3 significant digits, ± its standard error to 2."""
  if value is None or math.isnan(value):
    return "—"
  return f"{value:.3g} ± {se:.2g}" if se is not None and math.isfinite(se) and se > 0 else f"{value:.3g}"


def _cost_text(rows: list[dict[str, Any]], config: VarianceConfig) -> str:
  """The measured seconds of each sampler over iid's at the reference size: what the work-normalised ratio adds."""
  parts = []
  for s in [s for s in SAMPLERS if s in config.samplers and s != "iid"]:
    ratios = [r["seconds_ratio"] for r in rows if r["sampler"] == s and r["seconds_ratio"] is not None]
    if ratios:
      parts.append(f"{s} {min(ratios):.2g} to {max(ratios):.2g}")
  if not parts:
    return ""
  return (
    f"Seconds per estimate over iid's at N = {config.sampler_reference_size} (paired, on the device above): "
    + ", ".join(parts)
    + ". The Latin hypercube sorts N uniforms per coordinate; the Sobol points take 32 bit-steps each but no "
    "random draw per point; the work-normalised ratio charges the difference."
  )


def _row_name(row: dict[str, Any]) -> str:
  return f"{row['f']} (k={row['k']:g}) {row['estimator']} d/d{row['param']}"


def _verdicts(rows: list[dict[str, Any]], config: VarianceConfig) -> list[str]:
  """Per sampler, where it measurably helps or hurts at the reference size (ratio 2 se from 1), in words."""
  lines = []
  for s in [s for s in SAMPLERS if s in config.samplers and s != "iid"]:
    mine = [r for r in rows if r["sampler"] == s and r["ratio"] is not None]
    if not mine:
      continue
    helps = [r for r in mine if r["exact_zero"] or r["ratio"] + 2 * r["ratio_se"] < 1]
    hurts = [r for r in mine if r["ratio"] - 2 * r["ratio_se"] > 1]
    same = [r for r in mine if r not in helps and r not in hurts]

    def listing(chosen: list[dict[str, Any]], with_work: bool = True) -> str:
      parts = []
      for r in chosen:
        if r["exact_zero"]:
          parts.append(f"{_row_name(r)}: exact (odd term; variance {r['ratio']:.1e} of iid's, rounding)")
          continue
        text = f"{_row_name(r)}: {r['ratio']:.3g} ± {r['ratio_se']:.2g}"
        if r["exact_antithetic_ratio"] is not None:
          text += f" (exact {r['exact_antithetic_ratio']:.3g})"
        if with_work and r["work_ratio"] is not None:
          text += f", work-normalised {r['work_ratio']:.3g}"
        parts.append(text)
      return "; ".join(parts) if parts else "none"

    n = config.sampler_reference_size
    lines.append(
      f"* **{s}**, variance over iid's at N = {n}: helps on {listing(helps)}. Hurts on {listing(hurts)}. "
      f"No difference measured (within 2 se) on {listing(same, with_work=False)}."
    )
  return lines


def _antithetic_text(rows: list[dict[str, Any]]) -> str:
  """What antithetic pairs do, with the rows of this run whose per-sample term is mostly even or odd."""
  anti = [r for r in rows if r["sampler"] == "antithetic" and r["exact_antithetic_ratio"] is not None]

  def measured(r: dict[str, Any]) -> str:
    got = "not run" if r["ratio"] is None else f"{r['ratio']:.3g} ± {r['ratio_se']:.2g}"
    return f"{_row_name(r)} (exact {r['exact_antithetic_ratio']:.3g}, {got} measured)"

  even = [measured(r) for r in anti if r["exact_antithetic_ratio"] > 1]
  odd = [measured(r) for r in anti if 0 < r["exact_antithetic_ratio"] < 1]
  return (
    "* **Antithetic** pairs (u, 1 - u) evaluate x and its reflection 2 mu - x. A pair's average keeps only the "
    "part of the per-sample term that is even about the location mu, so per evaluation the variance is 2 x the "
    "even share of iid's (the exact antithetic ratio column, by quadrature): 0 for an odd term (exact: the "
    "pathwise d/dmu term 2(x - k) of (x-k)^2 is linear in x, and its measured variance is rounding noise), 2 "
    "for an even one, i.e. twice iid's variance for the same evaluations (as for f = (x - mu)^2, whose sigma "
    "terms are even). It changes the constant, not the rate: its slope stays -1. Here the mostly even terms "
    "(exact ratio above 1: it hurts) are "
    + ("; ".join(even) if even else "none")
    + "; the mostly odd ones (exact ratio below 1: it helps) are "
    + ("; ".join(odd) if odd else "none")
    + ". Which it is depends on the point, not only on f: with z = x - mu, cos(kx) = cos(k mu) cos(kz) - "
    "sin(k mu) sin(kz), so k mu sets the even and odd shares of each term."
  )


def _rate_text(rows: list[dict[str, Any]]) -> str:
  """The measured slopes of stratified and RQMC, and their variance ratios to iid, per estimator."""
  slopes, ratios = [], []
  for label in ESTIMATORS:
    mine = [r for r in rows if r["estimator"] == label and r["sampler"] in ("stratified", "rqmc")]
    values = [r["slope"] for r in mine if math.isfinite(r["slope"])]
    if values:
      slopes.append(f"{label} {min(values):.2f} to {max(values):.2f}")
    values = [r["ratio"] for r in mine if r["ratio"] is not None]
    if values:
      ratios.append(f"{label} {min(values):.2g} to {max(values):.2g}")
  text = ("Measured slopes of stratified and RQMC: " + ", ".join(slopes) + ".") if slopes else ""
  if ratios:
    text += " Their variance over iid's at the reference size: " + ", ".join(ratios) + "."
  return text


def _sampler_sections(records: list[dict[str, Any]], config: VarianceConfig) -> list[str]:
  """The sampler study's sections of the report (none when it has no records)."""
  if not records:
    return []
  rows = sampler_rows(records, config)
  n_ref = config.sampler_reference_size
  sizes = ", ".join(f"2^{int(math.log2(n))}" if n & (n - 1) == 0 else str(n) for n in sorted(config.sampler_sizes))
  summary_columns = [
    "f",
    "k",
    "estimator",
    "param",
    "sampler",
    "slope of log Var vs log N (± se)",
    f"Var / Var iid at N={n_ref} (± se)",
    "seconds / iid's",
    "work-normalised ratio",
    "exact antithetic ratio",
    "flag",
  ]
  summary_rows = [
    [
      r["f"],
      r["k"],
      r["estimator"],
      r["param"],
      r["sampler"],
      "exact (odd term)" if r["exact_zero"] else _pm(r["slope"], r["slope_se"]),
      (f"{r['ratio']:.1e} (rounding)" if r["exact_zero"] else _pm_ratio(r["ratio"], r["ratio_se"]))
      if r["ratio"] is not None
      else "not run",
      r["seconds_ratio"],
      r["work_ratio"],
      r["exact_antithetic_ratio"],
      "; ".join(r["flags"]) or "ok",
    ]
    for r in rows
  ]
  detail_columns = [
    "f",
    "k",
    "estimator",
    "sampler",
    "param",
    "N",
    "mean",
    "± se",
    "z",
    "Var",
    "± se",
    "N x Var",
    "exact N x Var (iid)",
    "s per estimate (compile s)",
    "work-normalised",
    "flag",
  ]
  detail_rows = [
    [
      r["f"],
      r["k"],
      r["estimator"],
      r["sampler"],
      r["param"],
      r["num_samples"],
      r["mean"],
      r["mean_se"],
      round(r["mean_z"], 2),
      r["variance"],
      r["variance_se"],
      r["n_times_variance"],
      None if r["exact_variance"] is None else r["exact_variance"] * r["num_samples"],
      f"{report.format_number(r['seconds_per_estimate'])} ({report.format_number(r['compile_seconds'])})",
      r["work_normalised_variance"],
      _flag(r),
    ]
    for r in sorted(
      records,
      key=lambda r: (r["f"], r["k"], r["estimator"], SAMPLERS.index(r["sampler"]), r["param"], r["num_samples"]),
    )
  ]
  flagged = sum(bool(r["flags"]) for r in rows)
  verdict = (
    f"Every mean is within {config.num_se:g} standard errors (plus a float32 rounding allowance) of the exact "
    "gradient, and every iid variance within its interval of the exact one: the samplers are unbiased here."
    if not flagged
    else f"**{flagged} of {len(rows)} rows have a measurement outside its interval** (flag column)."
  )
  return [
    "## Samplers: i.i.d., antithetic, stratified (Latin hypercube) and randomized QMC",
    f"`sfe.value_and_grad(..., num_samples=N, sampler=s)` for N = {sizes}, {config.sampler_repeats} independent "
    f"N-sample estimates (independent keys) per (problem, estimator, sampler, N), at mu = {config.mu:g}, "
    f"sigma = {config.sigma:g}. The variance is that of one N-sample estimate, with its standard error from the "
    "fourth central moment (`sfe.diagnostics.variance_and_std_error`). The slope is the least-squares slope of "
    "log Var against log N over the sizes (iid: -1), its se propagated from the variances'. The seconds ratio "
    "is the median over interleaved rounds of a sampler's steady-state seconds over iid's at the same N "
    "(compiled ahead of time, warmed up, no compilation while timed); the work-normalised ratio is the variance "
    "ratio times it: below 1, the sampler reaches a given precision in less time. The exact antithetic ratio "
    "is 2 x the even share of the per-sample term's variance about the location (by quadrature; "
    "benchmarks/gaussian/problems.py `antithetic_ratio`). " + verdict,
    report.markdown_table(summary_columns, summary_rows),
    "### When each sampler helps, and when it hurts",
    _antithetic_text(rows),
    "* **Stratified** (a Latin hypercube: one point in each stratum [i/N, (i+1)/N)) and **RQMC** (scrambled "
    "Sobol points) behave alike in one dimension, where N = 2^m Sobol points also hold one point per stratum. "
    "For a smooth, bounded integrand of u both would reach N^-3, but the Gaussian quantile stretches the strata "
    "near 0 and 1 over ever wider ranges of x, where the per-sample term keeps varying: what is left decays "
    "about like N^-2 for pathwise terms, and a little slower for score-function terms, which grow in the tails "
    "(z f(x), (z^2 - 1) f(x)). The gain grows with N, at about one power of N over iid's rate. A Latin "
    "hypercube is never worse than N / (N - 1) x iid (Owen 1997). " + _rate_text(rows) + " " + _cost_text(rows, config),
    "Measured, per sampler:",
    "\n".join(_verdicts(rows, config)),
    "### Every measurement of the sampler study",
    "Mean against the exact gradient (flagged when more than "
    f"{config.num_se:g} se plus a float32 rounding allowance away), variance of one N-sample estimate (iid: "
    "against the exact single-sample variance / N), seconds per estimate (steady state; compilation apart) and "
    "the work-normalised variance, Var x seconds per estimate.",
    report.markdown_table(detail_columns, detail_rows),
  ]


def plot(records: list[dict[str, Any]], config: VarianceConfig, out_dir: str) -> list[str]:
  """``variance.png`` (single-sample variances against k) and ``variance_samplers.png`` (the sampler study)."""
  paths = []
  single = _of_kind(records, "single")
  if single and config.problems and config.estimators:
    paths += _plot_single(single, config, out_dir)
  sampler = _of_kind(records, "sampler")
  if sampler:
    paths += plot_samplers(sampler, config, out_dir)
  return paths


def plot_samplers(records: list[dict[str, Any]], config: VarianceConfig, out_dir: str) -> list[str]:
  """``variance_samplers.png``: variance of the d/dmu estimate against N (log-log), one line per sampler.

  One panel per (problem, estimator), points ± 2 se, with the exact iid variance (single-sample variance / N)
  dashed. An antithetic series that is exact (an odd term: its variance is rounding noise) is left out and
  named in the panel.
  """
  plt = report.pyplot(out_dir)
  records = _of_kind(records, "sampler")
  problems = [p for p in config.sampler_problems if any(r["f"] == p.family and r["k"] == p.k for r in records)]
  labels = [e for e in ESTIMATORS if e in config.sampler_estimators and any(r["estimator"] == e for r in records)]
  samplers = [s for s in SAMPLERS if s in config.samplers]
  colours = dict(zip(SAMPLERS, ("C0", "C1", "C2", "C3")))
  markers = dict(zip(SAMPLERS, ("o", "s", "^", "D")))
  fig, axes = plt.subplots(len(problems), len(labels), figsize=(4.8 * len(labels), 3.8 * len(problems)), squeeze=False)
  param = PARAMS[0]
  for row, problem in enumerate(problems):
    ref = exact(problem, config.mu, config.sigma)
    for col, label in enumerate(labels):
      ax = axes[row][col]
      notes = []
      for s in samplers:
        points = sorted(
          (
            r
            for r in records
            if (r["f"], r["k"], r["estimator"], r["sampler"], r["param"])
            == (problem.family, problem.k, label, s, param)
          ),
          key=lambda r: r["num_samples"],
        )
        if not points:
          continue
        if _exact_zero(points[0]):
          notes.append(f"{s}: exact (odd term), not shown")
          continue
        # Values read back from JSON may be "nan"/"inf" strings; a point without a finite variance is not drawn.
        figures = [(r["num_samples"], report.number(r["variance"]), report.number(r["variance_se"])) for r in points]
        figures = [
          (n, v, se) for n, v, se in figures if v is not None and se is not None and v > 0 and math.isfinite(v)
        ]
        figures = [(n, v, se if math.isfinite(se) else 0.0) for n, v, se in figures]
        if len(figures) < 2:
          notes.append(f"{s}: fewer than 2 finite variances, not shown")
          continue
        slope, _ = log_slope([n for n, _, _ in figures], [v for _, v, _ in figures], [se for _, _, se in figures])
        ax.errorbar(
          [n for n, _, _ in figures],
          [v for _, v, _ in figures],
          yerr=[2 * se for _, _, se in figures],
          fmt=markers[s] + "-",
          ms=4,
          lw=1,
          color=colours[s],
          capsize=2,
          label=f"{s} (slope {slope:.2f})",
        )
      if label in ref.variance:
        sizes = np.array(sorted(config.sampler_sizes), np.float64)
        per = sizes / 4 if label == "MVD" else sizes
        ax.plot(sizes, ref.variance[label][0] / per, "k--", lw=0.8, label="exact iid (N^-1)")
      if notes:
        ax.text(0.03, 0.03, "\n".join(notes), transform=ax.transAxes, fontsize=7, va="bottom")
      ax.set_xscale("log", base=2)
      ax.set_yscale("log")
      ax.set_title(f"f = {problem.name}, {label}, d/d{param}", fontsize=10)
      ax.set_xlabel("N (samples per estimate)")
      ax.set_ylabel("variance of the estimate")
      ax.legend(fontsize=7)
  fig.suptitle(
    f"Samplers: variance of the N-sample d/dmu estimate at mu = {config.mu:g}, sigma = {config.sigma:g} "
    f"({config.sampler_repeats} repeats, ± 2 se)"
  )
  fig.tight_layout()
  return report.save_figure(fig, out_dir, "variance_samplers.png", dpi=110)


def _plot_single(records: list[dict[str, Any]], config: VarianceConfig, out_dir: str) -> list[str]:
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
