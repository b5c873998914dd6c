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
``seconds_per_estimate`` (wall time of the compiled batch of repeats divided by ``num_repeats``, compilation
excluded) and ``work_normalised_variance = average variance * seconds_per_estimate``.

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

import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any

import distrax
import jax
import jax.numpy as jnp
import numpy as np

import sfe_jax as sfe
from benchmarks import report, store

SUITE = "logistic"
ESTIMATORS = (
  "pathwise",
  "pathwise + delta",
  "score function",
  "score function + delta",
  "score function + MA",
  "measure-valued",
  "measure-valued + delta",
)
SLUGS = {
  "pathwise": "pathwise",
  "pathwise + delta": "pathwise_delta",
  "score function": "score_function",
  "score function + delta": "score_function_delta",
  "score function + MA": "score_function_ma",
  "measure-valued": "measure_valued",
  "measure-valued + delta": "measure_valued_delta",
}
MA_DECAY = 0.9
NUM_COEFFICIENT_SAMPLES = 10  # sfe.with_control_variate's default
PARAM_NAMES = ("mean", "log_scale")


# ----------------------------------------------------------------------------------------------------------
# Data and model.
# ----------------------------------------------------------------------------------------------------------


_DATA: dict[str, tuple[np.ndarray, np.ndarray]] = {}


def load_data() -> tuple[np.ndarray, np.ndarray]:
  """``(x, y)``: standardized breast-cancer features plus a constant column (569 x 31, float32), labels."""
  if "data" not in _DATA:
    from sklearn.datasets import load_breast_cancer  # noqa: PLC0415 (bench extra)

    data = load_breast_cancer()
    x = np.asarray(data.data, np.float64)
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    x = np.concatenate([x, np.ones((x.shape[0], 1))], axis=1)
    _DATA["data"] = (x.astype(np.float32), np.asarray(data.target, np.float32))
  return _DATA["data"]


def dist_builder(params):
  return distrax.MultivariateNormalDiag(params["mean"], jnp.exp(params["log_scale"]))


def log_likelihood(w: jax.Array, x: jax.Array, y: jax.Array, scale: float) -> jax.Array:
  """``scale * mean_i log p(y_i | x_i, w)`` for one weight vector ``w`` (shape ``(D,)``)."""
  logits = x @ w
  return scale * jnp.mean(y * logits - jax.nn.softplus(logits))


def make_cost(x: jax.Array, y: jax.Array, scale: float) -> Callable[[jax.Array], jax.Array]:
  """``f(w)``: the (rescaled) batch log-likelihood of ONE weight sample, closing over the batch."""
  return lambda w: log_likelihood(w, x, y, scale)


def kl_to_prior(params) -> jax.Array:
  """``KL(N(mean, diag(s^2)) || N(0, I))``, ``s = exp(log_scale)``."""
  m, ls = params["mean"], params["log_scale"]
  return 0.5 * jnp.sum(jnp.exp(2 * ls) + m**2 - 1 - 2 * ls)


def initial_params(dim: int) -> dict[str, jax.Array]:
  return {"mean": jnp.zeros((dim,), jnp.float32), "log_scale": jnp.zeros((dim,), jnp.float32)}


def evaluate(params, key, x, y, num_samples: int) -> tuple[jax.Array, jax.Array]:
  """``(ELBO, accuracy)`` on the full data with ``num_samples`` posterior samples (jittable)."""
  ws = dist_builder(params).sample(seed=key, sample_shape=(num_samples,))  # (S, D)
  logits = ws @ x.T  # (S, N)
  loglik = jnp.sum(y * logits - jax.nn.softplus(logits), axis=1)  # full-data log-likelihood per sample
  elbo = jnp.mean(loglik) - kl_to_prior(params)
  predictive = jnp.mean(jax.nn.sigmoid(logits), axis=0)
  accuracy = jnp.mean((predictive > 0.5) == (y > 0.5))
  return elbo, accuracy


# ----------------------------------------------------------------------------------------------------------
# Configuration.
# ----------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LogisticConfig:
  """What the logistic-regression benchmark measures.

  Attributes:
    estimators: a subset of ``ESTIMATORS``.
    steps: SGD steps per training run.
    learning_rate: the initial SGD learning rate (cosine-decayed to 0 at ``steps``).
    batch_size: data points per step.
    num_samples: posterior samples per step (pathwise, score function).
    measure_valued_samples: base samples per step of the measure-valued estimators (each ``4 D`` evaluations).
    log_every: steps between the points of a curve (must divide ``steps``).
    eval_samples: posterior samples for the full-data ELBO and accuracy of a curve point.
    variance_every: steps between variance checkpoints (a multiple of ``log_every`` dividing ``steps``).
    num_repeats: single-sample estimates per variance checkpoint.
    seed: the PRNG seed.
  """

  estimators: tuple[str, ...] = ESTIMATORS
  steps: int = 5_000
  learning_rate: float = 1e-3
  batch_size: int = 32
  num_samples: int = 50
  measure_valued_samples: int = 50
  log_every: int = 100
  eval_samples: int = 1_000
  variance_every: int = 1_000
  num_repeats: int = 1_000
  seed: int = 0


PRESETS = {
  "quick": LogisticConfig(
    steps=1_000, measure_valued_samples=10, log_every=50, eval_samples=200, variance_every=250, num_repeats=300
  ),
  "full": LogisticConfig(),
}


def _check(config: LogisticConfig) -> None:
  report.check_subset(config.estimators, ESTIMATORS, "estimators")
  if config.steps < 1 or config.log_every < 1 or config.steps % config.log_every:
    raise ValueError(f"log_every ({config.log_every}) must divide steps ({config.steps}).")
  if config.variance_every % config.log_every or config.steps % config.variance_every:
    raise ValueError(
      f"variance_every ({config.variance_every}) must be a multiple of log_every "
      f"({config.log_every}) and divide steps ({config.steps})."
    )
  if config.num_repeats < 2:
    raise ValueError(f"num_repeats must be at least 2; got {config.num_repeats}.")
  if not 1 <= config.batch_size <= 569:
    raise ValueError(f"batch_size must be in [1, 569]; got {config.batch_size}.")


# ----------------------------------------------------------------------------------------------------------
# Estimators.
# ----------------------------------------------------------------------------------------------------------


def build_estimator(label: str) -> sfe.Estimator:
  base_label = label.replace(" + delta", "")
  if base_label == "pathwise":
    est = sfe.pathwise()
  elif base_label == "score function":
    est = sfe.score_function()
  elif base_label == "score function + MA":
    est = sfe.score_function(sfe.baselines.moving_average(MA_DECAY))
  elif base_label == "measure-valued":
    est = sfe.measure_valued()
  else:
    raise ValueError(f"unknown estimator {label!r}; expected one of {ESTIMATORS}.")
  if label.endswith(" + delta"):
    est = sfe.with_control_variate(
      est, sfe.control_variates.delta_method(), num_coefficient_samples=NUM_COEFFICIENT_SAMPLES
    )
  return est


def is_measure_valued(label: str) -> bool:
  return label.startswith("measure-valued")


def evaluations_per_sample(label: str, dim: int) -> int:
  """Evaluations of ``f`` per sample (per base sample for measure-valued)."""
  return 4 * dim if is_measure_valued(label) else 1


def samples_per_step(label: str, config: LogisticConfig) -> int:
  return config.measure_valued_samples if is_measure_valued(label) else config.num_samples


def coefficient_evaluations(label: str, dim: int) -> int:
  """Extra evaluations of ``f`` per estimate for the delta-method coefficient (0 without a control variate)."""
  return NUM_COEFFICIENT_SAMPLES * evaluations_per_sample(label, dim) if label.endswith(" + delta") else 0


def cell_key(config: LogisticConfig, cell_id: str) -> jax.Array:
  return report.cell_key(config.seed, cell_id)


def cell_id(label: str) -> str:
  return f"{SUITE}/training/{SLUGS[label]}"


# ----------------------------------------------------------------------------------------------------------
# One training run.
# ----------------------------------------------------------------------------------------------------------


def _summaries(variance: dict[str, np.ndarray]) -> dict[str, float]:
  out = {}
  for name in PARAM_NAMES:
    v = np.asarray(variance[name], np.float64)
    out[f"var_{name}_avg"] = float(v.mean())
    out[f"var_{name}_max"] = float(v.max())
  return out


def measure_training(config: LogisticConfig, label: str, key: jax.Array) -> dict[str, Any]:
  """Trains ``q`` by SGD with one estimator; returns one record with the curve and the variance checkpoints."""
  x_np, y_np = load_data()
  x, y = jnp.asarray(x_np), jnp.asarray(y_np)
  n, dim = x_np.shape
  estimator = build_estimator(label)
  num_samples = samples_per_step(label, config)
  per_sample = evaluations_per_sample(label, dim)  # sfe's num_samples counts evaluations of f
  steps, bs = config.steps, config.batch_size
  key_train, key_var = jax.random.split(key)
  key_eval = cell_key(config, f"{SUITE}/evaluation")  # shared by all cells: the same q gives the same ELBO

  def step(carry, inputs):
    params, est_state = carry
    t, k = inputs
    k_batch, k_est = jax.random.split(k)
    idx = jax.random.choice(k_batch, n, (bs,), replace=False)
    f = make_cost(x[idx], y[idx], float(n))
    _, grads, est_state = sfe.value_and_grad(
      estimator, f, dist_builder, params, k_est, num_samples=num_samples * per_sample, state=est_state
    )
    kl_grads = jax.grad(kl_to_prior)(params)
    lr = config.learning_rate * jnp.cos(0.5 * jnp.pi * t.astype(jnp.float32) / steps)
    params = jax.tree.map(lambda p, g, gk: p + lr * (g - gk), params, grads, kl_grads)
    return (params, est_state), None

  def segment(params, est_state, k, start):
    ts = start + jnp.arange(config.log_every)
    (params, est_state), _ = jax.lax.scan(step, (params, est_state), (ts, jax.random.split(k, config.log_every)))
    return params, est_state

  eval_fn = jax.jit(lambda p, k: evaluate(p, k, x, y, config.eval_samples))

  def moments(params, est_state, k, xb, yb):
    m = sfe.diagnostics.gradient_moments(
      estimator,
      make_cost(xb, yb, float(n)),
      dist_builder,
      params,
      k,
      num_samples=per_sample,
      num_repeats=config.num_repeats,
      state=est_state,
    )
    return m.variance, m.mean

  params = initial_params(dim)
  est_state = estimator.init(params)
  xb0, yb0 = x[:bs], y[:bs]
  compiled_moments = jax.jit(moments).lower(params, est_state, key_var, xb0, yb0).compile()
  compiled_segment = jax.jit(segment).lower(params, est_state, key_train, jnp.asarray(0, jnp.int32)).compile()
  jax.block_until_ready(compiled_moments(params, est_state, key_var, xb0, yb0))  # warm-up, untimed

  def measure_variance(s, params, est_state):
    k_batch, k_rep = jax.random.split(jax.random.fold_in(key_var, s))
    idx = jax.random.choice(k_batch, n, (bs,), replace=False)
    args = (params, est_state, k_rep, x[idx], y[idx])
    start = time.perf_counter()
    variance, _ = jax.block_until_ready(compiled_moments(*args))
    seconds = time.perf_counter() - start
    spe = seconds / config.num_repeats
    entry = {"step": s, **_summaries(jax.device_get(variance)), "seconds_per_estimate": spe}
    for name in PARAM_NAMES:
      entry[f"work_normalised_variance_{name}"] = entry[f"var_{name}_avg"] * spe
    return entry

  curve, checkpoints = [], []
  train_seconds = 0.0
  for s in range(0, steps + 1, config.log_every):
    elbo, acc = jax.device_get(eval_fn(params, jax.random.fold_in(key_eval, s)))
    curve.append([s, float(elbo), float(acc)])
    if s % config.variance_every == 0:
      checkpoints.append(measure_variance(s, params, est_state))
    if s == steps:
      break
    start = time.perf_counter()
    params, est_state = jax.block_until_ready(
      compiled_segment(params, est_state, jax.random.fold_in(key_train, s), jnp.asarray(s, jnp.int32))
    )
    train_seconds += time.perf_counter() - start
  coeff = coefficient_evaluations(label, dim)
  params_np = jax.device_get(params)
  return {
    "suite": SUITE,
    "kind": "training",
    "problem": "breast_cancer",
    "estimator": label,
    "estimator_name": estimator.name,
    "dim": dim,
    "num_data": n,
    "steps": steps,
    "learning_rate": config.learning_rate,
    "batch_size": bs,
    "samples_per_step": num_samples,
    "evaluations": num_samples * per_sample + coeff,  # evaluations of f per training step
    "evaluations_per_sample": per_sample,
    "coefficient_evaluations": coeff,
    "single_sample_evaluations": per_sample + coeff,  # per estimate of the variance checkpoints
    "eval_samples": config.eval_samples,
    "num_repeats": config.num_repeats,
    "final_elbo": curve[-1][1],
    "final_accuracy": curve[-1][2],
    "curve": curve,
    "variance": checkpoints,
    "final_mean_norm": float(np.linalg.norm(params_np["mean"])),
    "final_scale_mean": float(np.exp(params_np["log_scale"]).mean()),
    "seconds": train_seconds,  # training steps only (compilation and evaluation excluded)
  }


# ----------------------------------------------------------------------------------------------------------
# Cells.
# ----------------------------------------------------------------------------------------------------------


def cells(config: LogisticConfig) -> list[tuple[str, Callable[[], list[dict[str, Any]]]]]:
  """``(cell id, measure)`` pairs, one training run per estimator. ``measure()`` -> [record]."""
  _check(config)
  out = []
  for label in (e for e in ESTIMATORS if e in config.estimators):
    cid = cell_id(label)
    out.append((cid, lambda label=label, cid=cid: [measure_training(config, label, cell_key(config, cid))]))
  return out


# ----------------------------------------------------------------------------------------------------------
# Report.
# ----------------------------------------------------------------------------------------------------------


def _index(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
  out = {}
  for r in records:
    if r.get("suite", SUITE) == SUITE and r.get("kind") == "training" and r.get("estimator") in ESTIMATORS:
      out[r["estimator"]] = r
  return out


def _labels(config: LogisticConfig) -> list[str]:
  return [e for e in ESTIMATORS if e in config.estimators]


def to_markdown(records: list[dict[str, Any]], config: LogisticConfig, env: dict[str, Any] | None) -> str:
  """The report, built from records alone (missing cells show as "not run")."""
  runs = _index(records)
  labels = _labels(config)
  dim = 31
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
      rows.append([e] + ["not run"] * 7)
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
      ],
      rows,
    ),
    "Evaluations per step include, for the delta-method rows, the 10 extra single-sample estimates of the "
    "coefficient (the Hessian of f at the mean, once per step, is not counted).",
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
    "batch; avg / max over the 31 dimensions. Work-normalised variance = avg variance x seconds per "
    "estimate.",
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


def plot(records: list[dict[str, Any]], config: LogisticConfig, out_dir: str) -> list[str]:
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


def run(config: LogisticConfig, out_dir: str | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
  """Runs (or resumes, from ``out_dir/logistic.jsonl``) the logistic-regression suite and writes its reports.

  Returns:
    ``{"records": [...], "markdown": str, "meta": {...}, "paths": {...}}``.
  """
  return store.run_suite(SUITE, config, cells(config), to_markdown, plot, out_dir, log)
