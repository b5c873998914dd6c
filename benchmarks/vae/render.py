"""The VAE suite's report and plots, built from records alone (missing cells show as "not run")."""

from __future__ import annotations

import math
import os
from typing import Any

from benchmarks import report, suite
from benchmarks.vae.problems import ESTIMATORS, EVALUATIONS, GUMBEL_TEMPERATURE, MODELS, SUITE, VAEConfig


def _index(records: list[dict[str, Any]]) -> dict[tuple[Any, Any], dict[str, Any]]:
  return suite.index(records, SUITE, key=lambda r: (r.get("model"), r.get("estimator")), kind="training")


def _fmt(value: Any) -> str:
  v = report.number(value)
  return report.format_number(v) if v is not None else ("—" if value is None else str(value))


def _ordering(table, model, labels, field):
  vals = []
  for e in labels:
    r = table.get((model, e))
    v = None if r is None else report.number(r.get(field))
    if v is not None and not math.isnan(v):
      vals.append((v, e))
  vals.sort(reverse=True)
  return " > ".join(f"{e} ({report.format_number(v)})" for v, e in vals) or "no runs"


def to_markdown(records: list[dict[str, Any]], config: VAEConfig, env: dict[str, Any] | None) -> str:
  """The report: final values, orderings and checkpoints per model and estimator.

  Args:
    records: the suite's records (others are ignored).
    config: the configuration that selects the rows.
    env: the environment of the run (device, versions), or ``None``.

  Returns:
    The Markdown text.
  """
  table = _index(records)
  labels = [e for e in ESTIMATORS if e in config.estimators]
  models = [m for m in MODELS if m in config.models]
  data_name = "sklearn digits 8x8 (64 pixels)" if config.data_path is None else os.path.basename(config.data_path)
  parts = [
    "# Discrete VAE with Bernoulli latents (closed_forms.md, Section 4)",
    f"Data: {data_name}. {config.latent} latents; linear and nonlinear (2 x {config.hidden} LeakyReLU(0.3)) "
    f"models; Adam {config.learning_rate:g}, batch {config.batch_size}, {config.steps} steps. Evaluations of f "
    "per example and step: " + ", ".join(f"{e} {EVALUATIONS[e]}" for e in labels) + " (RELAX also evaluates "
    f"its small control 4 times; Gumbel-softmax at t = {GUMBEL_TEMPERATURE:g} is biased). Test bounds on the "
    f"first {config.num_test} test images, IW bound with {config.iw_samples} samples. Gradient variance: of the "
    f"encoder-logit gradient on a fixed batch, {config.variance_repeats} repeats, mean over examples and latents.",
  ]
  if env:
    try:
      parts.append(report.environment_markdown(env))
    except KeyError:
      pass
  rows = []
  for m in models:
    for e in labels:
      r = table.get((m, e))
      if r is None:
        rows.append([m, e] + ["not run"] * 9)
        continue
      var, sq = report.number(r.get("final_grad_variance")), report.number(r.get("final_grad_mean_sq"))
      snr = None if var is None or sq is None or var <= 0 else sq / var
      seconds, steps = report.number(r.get("seconds")), report.number(r.get("steps", config.steps))
      # Work-normalised variance: the variance times the seconds of one training step (which estimates the
      # gradient of the whole batch), so estimators of different cost compare fairly.
      wnv = None if var is None or seconds is None or not steps else var * seconds / steps
      rows.append(
        [
          m,
          e,
          _fmt(r.get("evaluations")),
          _fmt(r.get("final_train_elbo")),
          _fmt(r.get("final_test_elbo")),
          _fmt(r.get("final_test_iw")),
          _fmt(var),
          _fmt(snr),
          _fmt(r.get("seconds")),
          _fmt(r.get("compile_seconds")),
          _fmt(wnv),
        ]
      )
  parts += [
    "## Final values",
    report.markdown_table(
      [
        "model",
        "estimator",
        "f evals",
        "train ELBO (last window)",
        "test ELBO",
        f"test IW-{config.iw_samples}",
        "grad variance",
        "mean^2 / variance",
        "training seconds",
        "compile seconds",
        "variance x seconds / step",
      ],
      rows,
    ),
    "Training seconds: the compiled training steps only, each segment of "
    f"{config.log_every} steps timed to completion after compilation and one untimed warm-up segment "
    "(the steady state); compile seconds: compiling the training and evaluation programs, apart; neither "
    "includes the checkpoint evaluations (the records' wall_seconds is the whole cell).",
  ]
  parts.append("## Ordering at equal steps (higher is better)")
  for m in models:
    parts.append(f"* {m}, training ELBO: " + _ordering(table, m, labels, "final_train_elbo"))
    parts.append(f"* {m}, test IW bound: " + _ordering(table, m, labels, "final_test_iw"))
  parts.append("## Checkpoints")
  for m in models:
    rows = []
    for e in labels:
      r = table.get((m, e))
      if r is None:
        rows.append([e, "not run", "not run", "not run", "not run"])
        continue
      for c in r.get("checkpoints") or []:
        rows.append([e] + [_fmt(v) for v in c[:4]])
    parts += [
      f"### {m}",
      report.markdown_table(["estimator", "step", f"test IW-{config.iw_samples}", "test ELBO", "grad variance"], rows),
    ]
  return "\n\n".join(parts) + "\n"


def plot(records: list[dict[str, Any]], config: VAEConfig, out_dir: str) -> list[str]:
  """Training ELBO vs step and gradient variance vs step, one panel per model.

  Args:
    records: the suite's records.
    config: the configuration that selects the panels and lines.
    out_dir: the folder of the PNGs.

  Returns:
    The paths of ``vae_elbo.png`` and ``vae_variance.png``.
  """
  plt = report.pyplot(out_dir)
  table = _index(records)
  models = [m for m in MODELS if m in config.models]
  colours = {e: f"C{i}" for i, e in enumerate(ESTIMATORS)}
  paths = []
  for what, title in (("elbo", "training ELBO"), ("variance", "encoder-logit gradient variance")):
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4.5), squeeze=False)
    for ax, m in zip(axes[0], models):
      for e in (x for x in ESTIMATORS if x in config.estimators):
        r = table.get((m, e))
        if r is None:
          continue
        if what == "elbo":
          pts = [(report.number(c[0]), report.number(c[1])) for c in r.get("curve") or []]
        else:
          pts = [(report.number(c[0]), report.number(c[3])) for c in r.get("checkpoints") or []]
        pts = [
          (s, v) for s, v in pts if s is not None and v is not None and math.isfinite(v) and (what == "elbo" or v > 0)
        ]
        if pts:
          xs, ys = zip(*pts)
          ax.plot(xs, ys, "-" if what == "elbo" else "o-", color=colours[e], label=e)
      if what == "variance":
        ax.set_yscale("log")
      ax.set_xlabel("step")
      ax.set_ylabel(title)
      ax.set_title(f"{m} model")
      ax.grid(True, alpha=0.3)
      ax.legend(fontsize=8)
    paths += report.save_figure(fig, out_dir, f"vae_{what}.png")
  return paths
