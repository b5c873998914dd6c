"""The RL suite's report and plots, built from records alone (missing cells show as "not run")."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from benchmarks import report, suite, throughput
from benchmarks.rl.problems import (
  ENV_NAME,
  ESTIMATORS,
  METHODS,
  OVERHEAD_WARMUP,
  SUITE,
  RLConfig,
  selected_methods,
  solve_threshold,
)

# ----------------------------------------------------------------------------------------------------------
# Report.
# ----------------------------------------------------------------------------------------------------------


def _index(records: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
  """The training records by ``(method, run)``."""
  known = (r for r in records if r.get("method") in METHODS)
  return suite.index(known, SUITE, key=lambda r: (r["method"], int(r.get("run", 0))), kind="training")


def _each_run(config: RLConfig, runs: dict[tuple[str, int], dict[str, Any]], skip_missing: bool = False):
  """``(method, run, record or None)`` for every cell of ``config``, in report order."""
  for method in selected_methods(config):
    for run in range(config.runs):
      r = runs.get((method, run))
      if r is not None or not skip_missing:
        yield method, run, r


def _checkpoint_label(i: int, checkpoint: dict[str, Any]) -> str:
  return f"{'initial' if i == 0 else f'checkpoint {i}'} ({checkpoint.get('env_steps')} steps)"


def to_markdown(records: list[dict[str, Any]], config: RLConfig, env: dict[str, Any] | None) -> str:
  """The report: solved or not, the overhead, the learning curves and the gradient variance.

  Args:
    records: the suite's records (others are ignored).
    config: the configuration that selects the rows.
    env: the environment of the run (device, versions), or ``None``.

  Returns:
    The Markdown text.
  """
  runs = _index(records)
  threshold = solve_threshold(config)
  parts = [
    f"# Policy gradients on gymnax {ENV_NAME}",
    f"Policy and critic: MLPs 4 -> {config.hidden} -> {config.hidden} -> (2 | 1), tanh, Adam. gamma "
    f"{config.gamma:g}; rollouts of {config.horizon} steps (episodes masked after they end). REINFORCE: "
    f"{config.reinforce_batch} episodes per update, lr {config.reinforce_lr:g}; PPO: {config.ppo_batch} "
    f"episodes per rollout, {config.ppo_epochs} epochs x {config.ppo_minibatches} minibatches, lr "
    f"{config.ppo_lr:g}, GAE lambda {config.lam:g}, clip {config.clip_eps:g}. Evaluation every "
    f"{config.eval_every} updates on {config.eval_episodes} fresh episodes with sampled actions. **Solved** = "
    f"mean evaluation return >= {threshold:g}"
    + (" (every evaluation episode reaches the cap)" if threshold == config.horizon else "")
    + f"; budget {config.max_env_steps:,} environment steps (valid steps only) per run.",
  ]
  if env:
    try:
      parts.append(report.environment_markdown(env))
    except KeyError:
      pass
  rows = []
  for method, run, r in _each_run(config, runs):
    if r is None:
      rows.append([method, run] + ["not run"] * 9)
      continue
    rows.append(
      [
        method,
        run,
        "yes" if r.get("solved") else "no",
        r.get("env_steps_to_solve"),
        report.number(r.get("seconds_to_solve")),
        r.get("updates"),
        r.get("env_steps"),
        report.number(r.get("best_eval_return")),
        report.number(r.get("final_eval_return")),
        report.number(r.get("compile_seconds")),
        report.number(r.get("wall_seconds")),
      ]
    )
  parts += [
    "## Solved?",
    report.markdown_table(
      [
        "method",
        "run",
        "solved",
        "env steps to solve",
        "training seconds to solve",
        "updates",
        "env steps (total)",
        "best eval return",
        "final eval return",
        "compile seconds",
        "cell wall seconds",
      ],
      rows,
    ),
    "Training seconds: the compiled updates only, each segment of updates timed to completion after "
    "compilation and one untimed warm-up segment (the steady state; evaluations excluded); compile seconds: "
    "compiling the cell's training, evaluation and variance programs, apart; cell wall seconds: by design "
    "the wall clock of the whole cell (compilation, warm-up, evaluations and the variance measurement "
    "included). Training stops "
    f"{config.after_solve} evaluation(s) after the first solved one.",
  ]
  if config.overhead_batch:
    overhead = suite.index(records, SUITE, key=lambda r: r.get("loss"), kind="overhead")
    rows = []
    for name in ("REINFORCE + leave-one-out", "PPO"):
      r = overhead.get(name)
      if r is None:
        rows.append([name] + ["not run"] * 8)
        continue
      ratio = report.number(r.get("sfe_over_hand_paired"))
      rows.append(
        [
          name,
          report.milliseconds(r.get("sfe_seconds")),
          report.milliseconds(r.get("hand_seconds")),
          ratio,
          throughput.verdict(ratio, throughput.OVERHEAD_TARGET),
          report.number(r.get("hand_copy_over_hand_paired")),
          report.number(r.get("relative_diff")),
          report.number(r.get("sfe_compile_seconds")),
          report.number(r.get("hand_compile_seconds")),
        ]
      )
    parts += [
      "## Overhead against hand-written JAX",
      f"The gradient of one update's loss on a batch of {config.overhead_batch} episodes x "
      f"{config.horizon} steps, jitted: `sfe_jax.rl` (policy log-probabilities through "
      "`distrax.Categorical`) against the same maths written by hand (`log_softmax`, own scans), timed "
      f"in random interleaved order ({config.overhead_repeats} calls each, median) after compilation and "
      f"{OVERHEAD_WARMUP} untimed warm-up rounds, each call to completion; compilation is timed apart "
      "(compile s). Ratio: the median of the paired per-round ratios (target <= "
      f"{throughput.OVERHEAD_TARGET}); A/A: two copies of the hand-written program, the measurement noise; "
      "difference: max |g_sfe - g_hand| / max |g_hand|.",
      report.markdown_table(
        [
          "loss",
          "sfe_jax ms",
          "hand-written ms",
          "sfe / hand",
          "target",
          "A/A",
          "difference",
          "sfe_jax compile s",
          "hand-written compile s",
        ],
        rows,
      ),
    ]
  rows = []
  for method, run, r in _each_run(config, runs, skip_missing=True):
    curve = r.get("curve") or []
    pts = [(report.number(c[0]), report.number(c[1])) for c in curve]
    pts = [(s, v) for s, v in pts if s is not None and v is not None]
    firsts = [next((s for s, v in pts if v >= level), None) for level in (100, 200, 300, 400, threshold)]
    rows.append([method, run, len(curve)] + firsts)
  parts += [
    "## Learning curves",
    "Environment steps at the first evaluation whose mean return reaches each level (— : never); the "
    "full curves are in rl.json / rl.png.",
    report.markdown_table(["method", "run", "points", "return 100", "200", "300", "400", f"{threshold:g}"], rows),
  ]
  rows = []
  for method, run, r in _each_run(config, runs, skip_missing=True):
    checkpoints = r.get("variance") or []
    for i, c in enumerate(checkpoints):
      for name in ESTIMATORS:
        e = c.get(name) or {}
        rows.append(
          [
            method,
            run,
            _checkpoint_label(i, c),
            report.number(c.get("eval_return")),
            name,
            report.number(e.get("total_variance")),
            report.number(e.get("mean_sq_norm")),
            report.number(e.get("relative_variance")),
          ]
        )
  parts += [
    "## Gradient variance at fixed parameters",
    f"{config.num_repeats} independent batches of {config.variance_batch} episodes at the parameters of "
    "each checkpoint (the initial policy, then the checkpoints nearest to "
    + ", ".join(f"{p:.2g}" for p in config.variance_points if p > 0)
    + " of the way to solved); per estimator: tr Cov = sum over the policy parameters of the variance of "
    "the gradient estimate of one batch, |E g|^2 = squared norm of the mean over the batches, and their "
    "ratio (scale-free). The REINFORCE rows (reward-to-go, time_discount=False) share one expectation; "
    "actor-critic (GAE lambda, bootstrapped) and "
    "PPO are biased unless the critic is exact; PPO's first-step gradient is the actor-critic one times "
    "B / (valid steps).",
    report.markdown_table(
      ["method", "run", "checkpoint", "eval return", "estimator", "tr Cov", "|E g|^2", "tr Cov / |E g|^2"], rows
    ),
  ]
  return "\n\n".join(parts) + "\n"


# ----------------------------------------------------------------------------------------------------------
# Plots.
# ----------------------------------------------------------------------------------------------------------


def plot(records: list[dict[str, Any]], config: RLConfig, out_dir: str) -> list[str]:
  """The learning curves and the relative gradient variance per estimator.

  Args:
    records: the suite's records.
    config: the configuration that selects the curves.
    out_dir: the folder of the PNGs.

  Returns:
    The paths of ``rl.png`` (learning curves) and ``rl_variance.png`` (tr Cov / |E g|^2 per estimator), each
    when it has something to show.
  """
  plt = report.pyplot(out_dir)
  runs = _index(records)
  colours = {m: f"C{i}" for i, m in enumerate(METHODS)}
  paths = []

  fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
  any_curve = False
  for (method, run), r in sorted(runs.items()):
    if method not in config.methods:
      continue
    pts = [tuple(report.number(v) for v in c[:3]) for c in r.get("curve") or []]
    pts = [p for p in pts if p[0] is not None and p[1] is not None]
    if not pts:
      continue
    any_curve = True
    s, ev, tr = zip(*pts)
    label = method if run == 0 else None
    axes[0].plot(s, ev, color=colours[method], marker=".", label=label, alpha=1.0 if run == 0 else 0.6)
    tr = [np.nan if v is None else v for v in tr]
    axes[1].plot(s, tr, color=colours[method], label=label, alpha=1.0 if run == 0 else 0.6)
  for ax, what in zip(axes, ("evaluation", "training")):
    ax.axhline(solve_threshold(config), color="k", lw=0.8, ls=":")
    ax.set_xlabel("environment steps")
    ax.set_ylabel(f"mean {what} return")
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize=8)
  fig.suptitle(f"{ENV_NAME}: learning curves")
  paths += report.save_figure(fig, out_dir, "rl.png", keep=any_curve)

  shown = [(m, r) for (m, run), r in sorted(runs.items()) if run == 0 and m in config.methods and r.get("variance")]
  if shown:
    fig, axes = plt.subplots(1, len(shown), figsize=(5 * len(shown), 4.2), squeeze=False)
    for ax, (method, r) in zip(axes[0], shown):
      checkpoints = r["variance"]
      width = 0.8 / len(checkpoints)
      for i, c in enumerate(checkpoints):
        vals = [report.number((c.get(name) or {}).get("relative_variance")) for name in ESTIMATORS]
        vals = [np.nan if v is None or not 0 < v < math.inf else v for v in vals]
        eval_return = report.number(c.get("eval_return"))
        ax.bar(
          np.arange(len(ESTIMATORS)) + (i - (len(checkpoints) - 1) / 2) * width,
          vals,
          width,
          label=_checkpoint_label(i, c) + ("" if eval_return is None else f", return {eval_return:.0f}"),
        )
      ax.set_yscale("log")
      ax.set_xticks(np.arange(len(ESTIMATORS)))
      ax.set_xticklabels(ESTIMATORS, rotation=35, ha="right", fontsize=7)
      ax.set_ylabel("tr Cov / |E g|^2 (scale-free)")
      ax.set_title(f"along {method} training", fontsize=9)
      ax.grid(True, axis="y", which="both", alpha=0.3)
      ax.legend(fontsize=7)
    fig.suptitle(f"Policy-gradient variance at fixed parameters ({config.variance_batch} episodes per batch)")
    paths += report.save_figure(fig, out_dir, "rl_variance.png")
  return paths
