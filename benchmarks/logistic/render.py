"""The logistic-regression suite's report and plots, built from records alone (a resumed run reports every
cell; missing cells show as "not run")."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from benchmarks import report, suite
from benchmarks.logistic.problems import DIM, ESTIMATORS, PARAM_NAMES, SUITE, LogisticConfig


def _index(records: list[suite.Record]) -> dict[str, suite.Record]:
  """The training records by estimator."""
  runs = suite.index(records, SUITE, key=lambda r: r.get("estimator"), kind="training")
  return {e: r for e, r in runs.items() if e in ESTIMATORS}


def _labels(config: LogisticConfig) -> list[str]:
  """The configured estimators, in the order of ``ESTIMATORS``."""
  return [e for e in ESTIMATORS if e in config.estimators]


def to_markdown(records: list[suite.Record], config: LogisticConfig, env: dict[str, Any] | None) -> str:
  """The report, built from records alone (missing cells show as "not run")."""
  runs = _index(records)
  labels = _labels(config)
  dim = DIM
  parts = [
    "# Bayesian logistic regression, breast cancer (closed_forms.md, Section 3)",
    f"q = N(mean, diag(exp(log_scale))^2) from 0; ELBO = 569 * mean batch log-likelihood - KL (KL exact). "
    f"Plain SGD, lr {config.learning_rate:g} * cos(pi/2 * t / {config.steps}), {config.steps} steps, batch "
    f"{config.batch_size}, {config.num_samples} posterior samples per step ({config.measure_valued_samples} "
    f"base samples for measure-valued, each costing 4 D = {4 * dim} evaluations of f). ELBO and accuracy on "
    f"the full data with {config.eval_samples} posterior samples.",
  ]
  if env:
    try:
      parts.append(report.environment_markdown(env))
    except KeyError:
      pass
  rows = []
  for e in labels:
    r = runs.get(e)
    if r is None:
      rows.append([e] + ["not run"] * 8)
      continue
    curve = r.get("curve") or []
    best = [
      report.number(c[1]) for c in curve if report.number(c[1]) is not None and math.isfinite(report.number(c[1]))
    ]
    rows.append(
      [
        e,
        report.number(r.get("steps")),
        report.number(r.get("samples_per_step")),
        report.number(r.get("evaluations")),
        report.number(r.get("final_elbo")),
        max(best) if best else None,
        report.number(r.get("final_accuracy")),
        report.number(r.get("seconds")),
        report.number(r.get("compile_seconds")),
      ]
    )
  parts += [
    "## Final ELBO and accuracy",
    report.markdown_table(
      [
        "estimator",
        "steps",
        "samples / step",
        "evaluations of f / step",
        "final ELBO",
        "best ELBO on the curve",
        "final accuracy",
        "training seconds",
        "compile seconds",
      ],
      rows,
    ),
    "Evaluations per step include, for the delta-method rows, the 10 extra single-sample estimates of the "
    "coefficient (the Hessian of f at the mean, once per step, is not counted). Training seconds time the "
    "training steps alone (not the evaluation of the curve), after compilation (compile seconds: the "
    "training segment, the variance batch and the evaluation, each compiled once per run and run once "
    "untimed first).",
  ]
  steps = list(range(0, config.steps + 1, config.variance_every))
  rows = []
  for e in labels:
    r = runs.get(e)
    by_step = {}
    if r is not None:
      for c in r.get("variance") or []:
        by_step[report.number(c.get("step"))] = c
    for s in steps:
      c = by_step.get(float(s))
      if c is None:
        rows.append([e, s] + ["not run"] * 8)
        continue
      spe = report.number(c.get("seconds_per_estimate"))
      rows.append(
        [
          e,
          s,
          report.number(c.get("var_mean_avg")),
          report.number(c.get("var_mean_max")),
          report.number(c.get("var_log_scale_avg")),
          report.number(c.get("var_log_scale_max")),
          None if spe is None else spe * 1e6,
          report.number(c.get("work_normalised_variance_mean")),
          report.number(c.get("work_normalised_variance_log_scale")),
          None if r is None else report.number(r.get("single_sample_evaluations")),
        ]
      )
  parts += [
    "## Variance of single-sample gradient estimates (per dimension)",
    f"{config.num_repeats} independent single-sample estimates (one posterior sample; one base sample for "
    "measure-valued) of the likelihood gradient at the training parameters of that step, on one fixed "
    f"batch; avg / max over the {DIM} dimensions. Work-normalised variance = avg variance x seconds per "
    "estimate (the wall time of the compiled, warmed-up batch of estimates over their number).",
    report.markdown_table(
      [
        "estimator",
        "step",
        "Var mean (avg)",
        "Var mean (max)",
        "Var log_scale (avg)",
        "Var log_scale (max)",
        "us / estimate",
        "WNV mean",
        "WNV log_scale",
        "evaluations of f / estimate",
      ],
      rows,
    ),
  ]
  return "\n\n".join(parts) + "\n"


# ----------------------------------------------------------------------------------------------------------
# Plots.
# ----------------------------------------------------------------------------------------------------------


def plot(records: list[suite.Record], config: LogisticConfig, out_dir: str) -> list[str]:
  """ELBO vs step, and average single-sample variance vs step (mean, log_scale); returns the PNG paths."""
  plt = report.pyplot(out_dir)
  runs = _index(records)
  labels = _labels(config)
  colours = {e: f"C{i}" for i, e in enumerate(ESTIMATORS)}
  styles = {e: ("--" if "delta" in e else ":" if "MA" in e else "-") for e in ESTIMATORS}
  paths = []

  fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
  any_curve = False
  for e in labels:
    r = runs.get(e)
    if r is None:
      continue
    pts = [(report.number(c[0]), report.number(c[1]), report.number(c[2])) for c in r.get("curve") or []]
    pts = [p for p in pts if p[0] is not None and p[1] is not None and math.isfinite(p[1])]
    if pts:
      any_curve = True
      s, elbo, acc = zip(*pts)
      axes[0].plot(s, elbo, color=colours[e], ls=styles[e], label=e)
      axes[1].plot(s, [a if a is not None else np.nan for a in acc], color=colours[e], ls=styles[e], label=e)
  axes[0].set_yscale("symlog", linthresh=100)
  axes[0].set_ylabel("ELBO (full data)")
  axes[1].set_ylabel("accuracy (posterior predictive)")
  for ax in axes:
    ax.set_xlabel("step")
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize=7)
  fig.suptitle("Bayesian logistic regression (breast cancer)")
  paths += report.save_figure(fig, out_dir, "logistic_elbo.png", keep=any_curve)

  fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
  any_point = False
  for ax, name in zip(axes, PARAM_NAMES):
    for e in labels:
      r = runs.get(e)
      if r is None:
        continue
      pts = [(report.number(c.get("step")), report.number(c.get(f"var_{name}_avg"))) for c in r.get("variance") or []]
      pts = [(s, v) for s, v in pts if s is not None and v is not None and math.isfinite(v) and v > 0]
      if pts:
        any_point = True
        ax.plot(*zip(*pts), marker="o", color=colours[e], ls=styles[e], label=e)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(f"single-sample variance, {name} (avg over dims)")
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize=7)
  fig.suptitle("Variance of single-sample gradient estimates of the likelihood term")
  paths += report.save_figure(fig, out_dir, "logistic_variance.png", keep=any_point)
  return paths
