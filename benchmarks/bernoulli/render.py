"""The Bernoulli suite's report and plots, built from records alone (a resumed run reports every cell; missing
cells show as "not run")."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from benchmarks import report, suite
from benchmarks.bernoulli.problems import (
  ESTIMATORS,
  EVALUATIONS,
  GUMBEL_TEMPERATURE,
  SUITE,
  TRAINING_ESTIMATORS,
  WITH_CLOSED_FORM,
  BernoulliConfig,
  exact_gradient,
  exact_variance,
)


def _truthy(value: Any) -> bool:
  if isinstance(value, str):
    return value.strip().lower() in ("true", "1", "yes")
  return bool(value)


def _close(a: Any, b: float) -> bool:
  a = report.number(a)
  return a is not None and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def _index(records: list[suite.Record]) -> tuple[dict[Any, suite.Record], dict[Any, suite.Record]]:
  """``(variance, training)``: variance records by ``(p0, p, estimator)``, training ones by ``(p0, estimator)``."""
  variance = suite.index(
    (r for r in records if "variance" in r),
    SUITE,
    key=lambda r: (report.number(r.get("p0")), report.number(r.get("p")), r.get("estimator")),
    kind="variance",
  )
  training = suite.index(
    records, SUITE, key=lambda r: (report.number(r.get("p0")), r.get("estimator")), kind="training"
  )
  return variance, training


def _lookup(table, p0, p=None, label=None):
  for key, r in table.items():
    if p is None:
      if _close(key[0], p0) and key[1] == label:
        return r
    elif _close(key[0], p0) and _close(key[1], p) and key[2] == label:
      return r
  return None


def _fmt(value: Any) -> str:
  return report.format_number(
    report.number(value) if not isinstance(value, str) or report.number(value) is not None else value
  )


def flagged(r: suite.Record) -> bool:
  """Whether a variance record's mean or variance lies outside its interval."""
  return not (_truthy(r.get("mean_ok", True)) and _truthy(r.get("variance_ok", True)))


def to_markdown(records: list[suite.Record], config: BernoulliConfig, env: dict[str, Any] | None) -> str:
  """The report, built from records alone (missing cells show as "not run")."""
  variance, training = _index(records)
  labels = [e for e in ESTIMATORS if e in config.estimators]
  parts = [
    "# Bernoulli toy: E_{b ~ Bernoulli(sigmoid(phi))}[(b - p0)^2] (closed_forms.md, Section 2)",
    f"Gradient with respect to the logit phi; exact gradient (1 - 2 p0) p (1 - p). {config.num_repeats} "
    f"independent estimates per variance cell; intervals of {config.num_se:g} standard errors. Cost per "
    "estimate (evaluations of f): " + ", ".join(f"{e} {EVALUATIONS[e]}" for e in labels) + ".",
  ]
  if env:
    try:
      parts.append(report.environment_markdown(env))
    except KeyError:
      pass
  for p0 in config.p0_values:
    rows = []
    for p in config.p_values:
      row = [p, exact_gradient(p0, p)]
      for e in labels:
        r = _lookup(variance, p0, p, e)
        if r is None:
          row.append("not run")
          continue
        ref = r.get("exact_variance")
        cell = _fmt(r.get("variance")) + (f" ({_fmt(ref)})" if report.number(ref) is not None else " (—)")
        row.append(cell + (" **!**" if flagged(r) else ""))
      rows.append(row)
    parts += [
      f"## Variance of one estimate, p0 = {p0}: measured (exact)",
      report.markdown_table(["p", "exact grad"] + [f"Var {e}" for e in labels], rows),
    ]
  parts.append(
    "Exact: closed forms of the reference for REINFORCE, LOO, ARM, DisARM; Gumbel: the variance of the "
    "relaxed estimate by quadrature; RELAX (fixed, untrained control; see benchmarks/bernoulli/): "
    "no exact value (—). **!** marks a mean or variance outside its interval."
  )
  if "Gumbel" in labels:
    rows = []
    for p0 in config.p0_values:
      for p in config.p_values:
        r = _lookup(variance, p0, p, "Gumbel")
        g = exact_gradient(p0, p)
        if r is None:
          rows.append([p0, p, g, "not run", "not run", "not run", "not run"])
          continue
        bias = report.number(r.get("bias"))
        rel = None if bias is None or g == 0 else bias / abs(g)
        rows.append([p0, p, g, report.number(r.get("expected_mean")), report.number(r.get("mean")), bias, rel])
    parts += [
      f"## Gumbel-softmax (t = {GUMBEL_TEMPERATURE:g}) bias against the exact gradient",
      report.markdown_table(
        ["p0", "p", "exact grad", "relaxed grad (quadrature)", "measured mean", "bias", "bias / abs(grad)"], rows
      ),
    ]
  for p0 in config.p0_values:
    rows = []
    for p in config.p_values:
      row = [p]
      for e in labels:
        r = _lookup(variance, p0, p, e)
        row.append("not run" if r is None else report.number(r.get("work_normalised_variance")))
      row_t = []
      for e in labels:
        r = _lookup(variance, p0, p, e)
        spe = None if r is None else report.number(r.get("seconds_per_estimate"))
        row_t.append("not run" if r is None else (None if spe is None else spe * 1e9))
      rows.append(row + row_t)
    parts += [
      f"## Work-normalised variance (variance x seconds per estimate), p0 = {p0}",
      report.markdown_table(["p"] + [f"{e}" for e in labels] + [f"ns/est {e}" for e in labels], rows),
    ]
  if labels:
    compile_times = []
    for e in labels:
      times = [report.number(r.get("compile_seconds")) for key, r in variance.items() if key[2] == e]
      times = [t for t in times if t is not None]
      compile_times.append(f"{e} {report.format_number(max(times))} s" if times else f"{e} not recorded")
    parts.append(
      "Seconds per estimate exclude compilation: the cells of one estimator share one executable (phi, p0 "
      "and the key are arguments), compiled ahead of time and run once untimed before the timed calls. "
      "Compile time: " + ", ".join(compile_times) + "."
    )
  outside = [r for r in variance.values() if flagged(r)]
  parts.append("## Measurements outside their intervals")
  if not variance:
    parts.append("No variance cells in the records.")
  elif not outside:
    parts.append(
      f"None: all {len(variance)} variance measurements are inside their {config.num_se:g}-standard-error intervals."
    )
  else:
    parts.append(
      report.markdown_table(
        ["p0", "p", "estimator", "mean", "expected mean", "mean z", "variance", "expected", "variance z"],
        [
          [
            report.number(r.get("p0")),
            report.number(r.get("p")),
            r.get("estimator"),
            report.number(r.get("mean")),
            report.number(r.get("expected_mean")),
            report.number(r.get("mean_z")),
            report.number(r.get("variance")),
            report.number(r.get("exact_variance")),
            report.number(r.get("variance_z")),
          ]
          for r in outside
        ],
      )
    )
  rows = []
  for p0 in config.training_p0s:
    for e in (x for x in TRAINING_ESTIMATORS if x in config.training_estimators):
      r = _lookup(training, p0, label=e)
      if r is None:
        rows.append([p0, e] + ["not run"] * 8)
      else:
        rows.append(
          [
            p0,
            e,
            report.number(r.get("steps")),
            report.number(r.get("final_phi")),
            report.number(r.get("final_p")),
            report.number(r.get("final_loss")),
            report.number(r.get("optimum_loss")),
            report.number(r.get("mean_gradient_variance")),
            report.number(r.get("seconds")),
            report.number(r.get("compile_seconds")),
          ]
        )
  parts += [
    f"## Training: phi from 0, Adam (lr {config.learning_rate:g}), one sample per step",
    report.markdown_table(
      [
        "p0",
        "estimator",
        "steps",
        "final phi",
        "final p",
        "final loss E[f]",
        "optimum (inf, p -> 0)",
        "mean Var(g) over steps",
        "seconds",
        "compile seconds",
      ],
      rows,
    ),
    "REBAR and RELAX train their controls with Adam (lr "
    f"{config.control_learning_rate:g}) in the same jitted step. Loss values are exact (F(phi)); the "
    "gradient variance is the mean of (g_t - exact gradient)^2 over all steps. Each run is one compiled "
    "lax.scan: seconds time it after its compilation (compile seconds) and one untimed run.",
  ]
  return "\n\n".join(parts) + "\n"


# ----------------------------------------------------------------------------------------------------------
# Plots.
# ----------------------------------------------------------------------------------------------------------


def plot(records: list[suite.Record], config: BernoulliConfig, out_dir: str) -> list[str]:
  """Variance vs p (log scale) per p0, and training curves; returns the PNG paths written."""
  plt = report.pyplot(out_dir)
  variance, training = _index(records)
  labels = [e for e in ESTIMATORS if e in config.estimators]
  colours = {e: f"C{i}" for i, e in enumerate(ESTIMATORS)}
  paths = []
  fine = np.linspace(0.005, 0.995, 397)
  for p0 in config.p0_values:
    fig, ax = plt.subplots(figsize=(7, 5))
    measured = [report.number(r.get("variance")) for (q0, _, _), r in variance.items() if _close(q0, p0)]
    measured = [v for v in measured if v is not None and v > 0]
    # Values at float32 rounding level (DisARM at p = 1/2, exactly 0 in exact arithmetic) are left below the axis.
    floor = 0.2 * min((v for v in measured if v > 1e-9 * max(measured)), default=0.0) if measured else 0.0
    for e in labels:
      if e in WITH_CLOSED_FORM:
        ys = np.array([exact_variance(e, p0, float(p)) for p in fine])
        ys = np.where(ys > 0, ys, np.nan)
        ax.plot(fine, ys, color=colours[e], lw=1, alpha=0.8)
      pts = [
        (report.number(r.get("p")), report.number(r.get("variance")), report.number(r.get("variance_se")))
        for r in (_lookup(variance, p0, p, e) for p in config.p_values)
        if r is not None
      ]
      pts = [(p, v, s or 0.0) for p, v, s in pts if p is not None and v is not None and v > 0]
      if pts:
        xs, vs, ss = map(np.array, zip(*pts))
        ax.errorbar(xs, vs, yerr=np.minimum(ss, 0.999 * vs), fmt="o", ms=4, color=colours[e], label=e, capsize=2)
    ax.set_yscale("log")
    if floor > 0:
      ax.set_ylim(bottom=floor)
      if any(v < floor for v in measured):
        ax.text(
          0.5,
          0.02,
          "values at float32 rounding level (exactly 0 in exact arithmetic) lie below the axis",
          transform=ax.transAxes,
          ha="center",
          fontsize=7,
        )
    ax.set_xlabel("p = sigmoid(phi)")
    ax.set_ylabel("variance of one estimate")
    ax.set_title(f"Bernoulli toy, p0 = {p0}: measured (points) and exact (lines)")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    paths += report.save_figure(fig, out_dir, f"bernoulli_variance_p0={p0}.png")
  if config.training_p0s:
    fig, axes = plt.subplots(1, len(config.training_p0s), figsize=(6 * len(config.training_p0s), 4.5), squeeze=False)
    any_curve = False
    for ax, p0 in zip(axes[0], config.training_p0s):
      for e in (x for x in TRAINING_ESTIMATORS if x in config.training_estimators):
        r = _lookup(training, p0, label=e)
        if r is None or not r.get("curve"):
          continue
        curve = [(report.number(c[0]), report.number(c[2])) for c in r["curve"]]
        curve = [(s, l) for s, l in curve if s is not None and l is not None]
        if curve:
          any_curve = True
          ax.plot(*zip(*curve), label=e)
      ax.axhline(p0**2, color="k", ls="--", lw=0.8, label="optimum (p -> 0)")
      ax.set_xlabel("step")
      ax.set_ylabel("exact loss E[(b - p0)^2]")
      ax.set_title(f"training, p0 = {p0}")
      ax.legend(fontsize=8)
    paths += report.save_figure(fig, out_dir, "bernoulli_training.png", keep=any_curve)
  return paths
