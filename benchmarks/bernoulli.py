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

``seconds_per_estimate`` is the wall time of the compiled batch divided by ``num_repeats`` (compilation
excluded), and ``work_normalised_variance = variance * seconds_per_estimate``.

Training: for each ``p0`` in ``training_p0s`` and each of REINFORCE, REBAR and RELAX, ``phi`` starts at 0 and
takes ``steps`` Adam steps (``learning_rate``) with one sample per step (``num_samples=3`` for REBAR, which
evaluates ``f`` three times per sample); REBAR (``sfe.rebar(0.5, 1.0)``) and
RELAX (the control above, as initial value) train their control with ``optax.adam(control_learning_rate)``
in the same jitted step (the one-call pattern of ``sfe.relax``); the whole run is one ``lax.scan``. The curve
records, every ``log_every`` steps, ``[step, phi, exact loss F(phi), variance estimate]``, the variance
estimate being the mean of ``(g_t - exact gradient(phi_t))^2`` over the steps since the previous point (an
unbiased estimate of the single-step variance for these unbiased estimators, averaged over the window).

Seeds: every cell's key is ``fold_in(key(seed), crc32(cell id))``, so a cell gives the same numbers whatever
other cells are run, and re-runs reproduce them.
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
import optax

import sfe_jax as sfe
from benchmarks import report, store

SUITE = "bernoulli"
ESTIMATORS = ("REINFORCE", "LOO", "ARM", "DisARM", "RELAX", "Gumbel")
WITH_CLOSED_FORM = ("REINFORCE", "LOO", "ARM", "DisARM")
TRAINING_ESTIMATORS = ("REINFORCE", "REBAR", "RELAX")
TRAINING_EVALUATIONS = {"REINFORCE": 1, "REBAR": 3, "RELAX": 1}  # one sample per step; REBAR evaluates f 3 times
NUM_SAMPLES = {"REINFORCE": 1, "LOO": 2, "ARM": 2, "DisARM": 2, "RELAX": 2, "Gumbel": 1}
EVALUATIONS = dict(NUM_SAMPLES)  # evaluations of f per estimate
GUMBEL_TEMPERATURE = 0.5
REBAR_TEMPERATURE = 0.5

RELAX_HIDDEN = 10
RELAX_CONTROL_PARAMS = {
  "a": 0.25,
  "w1": (0.1,) * RELAX_HIDDEN,
  "b1": (0.0,) * RELAX_HIDDEN,
  "w2": (0.1,) * RELAX_HIDDEN,
}


def relax_control(cp: dict[str, jax.Array], z: jax.Array) -> jax.Array:
  """The RELAX control ``a + w2 . tanh(w1 z + b1)`` for one noisy logit ``z`` (shape ``()``)."""
  return cp["a"] + jnp.sum(jnp.tanh(z * cp["w1"] + cp["b1"]) * cp["w2"])


def relax_control_params() -> dict[str, jax.Array]:
  return {k: jnp.asarray(v, jnp.float32) for k, v in RELAX_CONTROL_PARAMS.items()}


# ----------------------------------------------------------------------------------------------------------
# Exact values (closed_forms.md, Section 2).
# ----------------------------------------------------------------------------------------------------------


def cost_values(p0: float) -> tuple[float, float]:
  """``(f(0), f(1))``."""
  return p0**2, (1 - p0) ** 2


def exact_gradient(p0: float, p: float) -> float:
  """``dF/dphi = (1 - 2 p0) p (1 - p)``."""
  return (1 - 2 * p0) * p * (1 - p)


def exact_loss(p0: float, p: float) -> float:
  """``F = E[(b - p0)^2] = p (1 - p0)^2 + (1 - p) p0^2``."""
  f0, f1 = cost_values(p0)
  return p * f1 + (1 - p) * f0


def exact_variance(label: str, p0: float, p: float) -> float | None:
  """Variance of ONE estimate (at the estimator's cost) from the reference's closed forms; None if none."""
  f0, f1 = cost_values(p0)
  delta = f1 - f0
  q = p * (1 - p)
  m = min(p, 1 - p)
  big = 1 - m
  if label == "REINFORCE":
    return q * (f1**2 * (1 - p) + f0**2 * p) - delta**2 * q**2
  if label == "LOO":
    return 0.5 * delta**2 * q * (1 - 2 * q)
  if label == "ARM":
    return (2 / 3) * delta**2 * (1 / 8 - (0.5 - m) ** 3) - delta**2 * q**2
  if label == "DisARM":
    return 0.5 * delta**2 * big**2 * m * (1 - 2 * m)
  return None


def gumbel_moments(p0: float, p: float, temperature: float = GUMBEL_TEMPERATURE) -> tuple[float, float]:
  """Mean and variance of the single-sample Gumbel-softmax (binary Concrete) estimate, by quadrature.

  With logistic noise ``L`` and ``s = sigmoid((phi + L) / t)``, the estimate is
  ``g = 2 (s - p0) s (1 - s) / t``; its moments are integrals over ``L`` against the logistic density.
  """
  from scipy import integrate  # noqa: PLC0415 (only needed here)

  phi = math.log(p) - math.log1p(-p)

  def g(noise):
    s = 0.5 * (1 + math.tanh((phi + noise) / (2 * temperature)))
    return 2 * (s - p0) * s * (1 - s) / temperature

  def density(noise):
    e = math.exp(-abs(noise))
    return e / (1 + e) ** 2

  opts = dict(epsabs=1e-14, epsrel=1e-11, limit=400, points=(-phi,))
  lo, hi = -60.0, 60.0
  mean = integrate.quad(lambda x: g(x) * density(x), lo, hi, **opts)[0]
  second = integrate.quad(lambda x: g(x) ** 2 * density(x), lo, hi, **opts)[0]
  return mean, second - mean**2


def reference_variance(label: str, p0: float, p: float) -> tuple[float | None, str | None]:
  """The value a measured variance is compared with, and where it comes from."""
  value = exact_variance(label, p0, p)
  if value is not None:
    return value, "closed form"
  if label == "Gumbel":
    return gumbel_moments(p0, p)[1], "quadrature"
  return None, None


def logit(p: float) -> float:
  return math.log(p) - math.log1p(-p)


# ----------------------------------------------------------------------------------------------------------
# Configuration.
# ----------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class BernoulliConfig:
  """What the Bernoulli benchmark measures.

  Attributes:
    p0_values: the targets ``p0`` of the variance sweep.
    p_values: the probabilities ``p = sigmoid(phi)`` at which the gradient is estimated, in (0, 1).
    num_repeats: independent estimates per variance cell.
    estimators: a subset of ``ESTIMATORS`` for the variance sweep.
    batch_size: repeats evaluated at once (``jax.lax.map``); ``None`` for all at once.
    training_p0s: the targets of the training runs.
    training_estimators: a subset of ``TRAINING_ESTIMATORS``.
    steps: Adam steps per training run.
    learning_rate: Adam's learning rate for ``phi``.
    control_learning_rate: Adam's learning rate for the REBAR / RELAX control.
    log_every: steps between the points of a training curve.
    num_se: the half-width of the intervals, in standard errors.
    seed: the PRNG seed.
  """

  p0_values: tuple[float, ...] = (0.49, 0.499)
  p_values: tuple[float, ...] = (0.05, 0.1, 0.3, 0.5, 0.7, 0.9, 0.95)
  num_repeats: int = 20_000
  estimators: tuple[str, ...] = ESTIMATORS
  batch_size: int | None = None
  training_p0s: tuple[float, ...] = (0.45, 0.499)
  training_estimators: tuple[str, ...] = TRAINING_ESTIMATORS
  steps: int = 1_000
  learning_rate: float = 0.01
  control_learning_rate: float = 0.01
  log_every: int = 50
  num_se: float = 5.0
  seed: int = 0


PRESETS = {
  "quick": BernoulliConfig(num_repeats=100_000, steps=2_000, log_every=50),
  "full": BernoulliConfig(
    p_values=tuple(round(0.05 * i, 2) for i in range(1, 20)),
    num_repeats=1_000_000,
    batch_size=250_000,
    steps=5_000,
    log_every=100,
  ),
}


def _check(config: BernoulliConfig) -> None:
  report.check_subset(config.estimators, ESTIMATORS, "estimators")
  report.check_subset(config.training_estimators, TRAINING_ESTIMATORS, "training estimators")
  for p in config.p_values:
    if not 0 < p < 1:
      raise ValueError(f"p_values must lie in (0, 1); got {p}.")
  if config.num_repeats < 2:
    raise ValueError(f"num_repeats must be at least 2; got {config.num_repeats}.")


# ----------------------------------------------------------------------------------------------------------
# Estimators and the compiled batch.
# ----------------------------------------------------------------------------------------------------------


def dist_builder(params):
  # Float bits: the relaxation-based estimators (Gumbel, REBAR) need the samples' own dtype to hold relaxed values.
  return distrax.Bernoulli(logits=params["logits"], dtype=jnp.float32)


def _cost(p0):
  return lambda b: (b - p0) ** 2


def build_estimator(label: str) -> sfe.Estimator:
  if label == "REINFORCE":
    return sfe.score_function()
  if label == "LOO":
    return sfe.score_function(sfe.baselines.leave_one_out())
  if label == "ARM":
    return sfe.arm()
  if label == "DisARM":
    return sfe.disarm()
  if label == "RELAX":
    return sfe.relax(relax_control, relax_control_params(), optimizer=optax.set_to_zero())
  if label == "Gumbel":
    return sfe.gumbel_softmax(GUMBEL_TEMPERATURE)
  raise ValueError(f"unknown estimator {label!r}; expected one of {ESTIMATORS}.")


_COMPILED: dict[tuple[str, int, int | None], Any] = {}


def _compiled_batch(label: str, num_repeats: int, batch_size: int | None):
  """``run(phi, p0, key) -> grads (R,)``, compiled once per (estimator, repeats, batch size)."""
  cache_key = (label, num_repeats, batch_size)
  if cache_key not in _COMPILED:
    estimator = build_estimator(label)
    n = NUM_SAMPLES[label]

    def run(phi, p0, key):
      params = {"logits": phi}
      state = estimator.init(params)
      _, grads = sfe.diagnostics.repeated_estimates(
        estimator,
        _cost(p0),
        dist_builder,
        params,
        key,
        num_samples=n,
        num_repeats=num_repeats,
        state=state,
        batch_size=batch_size,
      )
      return grads["logits"]

    scalar = jax.ShapeDtypeStruct((), jnp.float32)
    _COMPILED[cache_key] = jax.jit(run).lower(scalar, scalar, jax.random.key(0)).compile()
  return _COMPILED[cache_key]


def cell_key(config: BernoulliConfig, cell_id: str) -> jax.Array:
  return report.cell_key(config.seed, cell_id)


def measure_variance(config: BernoulliConfig, p0: float, p: float, label: str, key: jax.Array) -> dict[str, Any]:
  """One variance cell: ``num_repeats`` estimates of one estimator at one ``(p0, p)``."""
  run = _compiled_batch(label, config.num_repeats, config.batch_size)
  phi = jnp.asarray(logit(p), jnp.float32)
  start = time.perf_counter()
  grads = jax.block_until_ready(run(phi, jnp.asarray(p0, jnp.float32), key))
  seconds = time.perf_counter() - start
  g = np.asarray(grads, dtype=np.float64)
  r = g.shape[0]
  mean = float(g.mean())
  mean_se = float(g.std(ddof=1) / math.sqrt(r))
  variance, variance_se = (float(v) for v in sfe.diagnostics.variance_and_std_error(np.asarray(g, np.float64)))
  exact_grad = exact_gradient(p0, p)
  if label == "Gumbel":
    expected_mean, expected_variance = gumbel_moments(p0, p)
    variance_source = "quadrature"
  else:
    expected_mean = exact_grad
    expected_variance, variance_source = reference_variance(label, p0, p)
  rounding = float(np.finfo(np.float32).eps) * sum(cost_values(p0))  # float32 allowance (module doc)
  mean_ok = abs(mean - expected_mean) <= config.num_se * mean_se + rounding
  if expected_variance is None:
    variance_ok, variance_z = True, None
  else:
    allowance = 1e-6 * abs(expected_variance) + rounding**2
    variance_ok = abs(variance - expected_variance) <= config.num_se * variance_se + allowance
    variance_z = (variance - expected_variance) / variance_se if variance_se > 0 else 0.0
  per_estimate = seconds / r
  return {
    "suite": SUITE,
    "kind": "variance",
    "problem": f"p0={p0}",
    "p0": p0,
    "p": p,
    "phi": logit(p),
    "estimator": label,
    "num_samples": NUM_SAMPLES[label],
    "evaluations": EVALUATIONS[label],
    "num_repeats": r,
    "exact_grad": exact_grad,
    "expected_mean": expected_mean,
    "mean": mean,
    "mean_se": mean_se,
    "mean_z": (mean - expected_mean) / mean_se if mean_se > 0 else 0.0,
    "bias": mean - exact_grad,
    "variance": variance,
    "variance_se": variance_se,
    "exact_variance": expected_variance,
    "exact_variance_source": variance_source,
    "variance_z": variance_z,
    "variance_ok": bool(variance_ok),
    "mean_ok": bool(mean_ok),
    "seconds": seconds,
    "seconds_per_estimate": per_estimate,
    "work_normalised_variance": variance * per_estimate,
  }


# ----------------------------------------------------------------------------------------------------------
# Training.
# ----------------------------------------------------------------------------------------------------------


def _training_estimator(label: str, config: BernoulliConfig) -> sfe.Estimator:
  if label == "REINFORCE":
    return sfe.score_function()
  if label == "REBAR":
    return sfe.rebar(temperature=REBAR_TEMPERATURE, scale=1.0, optimizer=optax.adam(config.control_learning_rate))
  if label == "RELAX":
    return sfe.relax(relax_control, relax_control_params(), optimizer=optax.adam(config.control_learning_rate))
  raise ValueError(f"unknown training estimator {label!r}; expected one of {TRAINING_ESTIMATORS}.")


def measure_training(config: BernoulliConfig, p0: float, label: str, key: jax.Array) -> dict[str, Any]:
  """Trains ``phi`` from 0 with Adam, one sample per step; returns one record with the curve."""
  estimator = _training_estimator(label, config)
  opt = optax.adam(config.learning_rate)
  f = _cost(p0)
  params = {"logits": jnp.zeros((), jnp.float32)}

  def step(carry, k):
    params, opt_state, est_state = carry
    value, grads, est_state = sfe.value_and_grad(
      estimator, f, dist_builder, params, k, num_samples=TRAINING_EVALUATIONS[label], state=est_state
    )
    updates, opt_state = opt.update(grads, opt_state)
    new_params = optax.apply_updates(params, updates)
    return (new_params, opt_state, est_state), (params["logits"], grads["logits"], value)

  @jax.jit
  def train(params, k):
    carry = (params, opt.init(params), estimator.init(params))
    carry, (phis, grads, values) = jax.lax.scan(step, carry, jax.random.split(k, config.steps))
    return carry[0]["logits"], phis, grads, values, carry[2]

  start = time.perf_counter()
  final_phi, phis, grads, _, est_state = jax.block_until_ready(train(params, key))
  seconds = time.perf_counter() - start
  phis, grads = np.asarray(phis, np.float64), np.asarray(grads, np.float64)
  probs = 1 / (1 + np.exp(-phis))
  errors_sq = (grads - (1 - 2 * p0) * probs * (1 - probs)) ** 2
  curve = []
  every = max(1, config.log_every)
  last = 0
  for s in list(range(0, config.steps, every)) + [config.steps]:
    if s == 0:
      var_est = None
    else:
      var_est = float(errors_sq[last:s].mean())
      last = s
    phi_s = float(final_phi) if s == config.steps else float(phis[s])
    curve.append([s, phi_s, exact_loss(p0, 1 / (1 + math.exp(-phi_s))), var_est])
    if s == config.steps:
      break
  if curve[-1][0] != config.steps:  # pragma: no cover (the loop always ends at `steps`)
    raise AssertionError("training curve does not end at the last step")
  final_phi = float(final_phi)
  final_p = 1 / (1 + math.exp(-final_phi))
  control = None
  if label in ("REBAR", "RELAX"):
    control = {k: np.asarray(v).tolist() for k, v in est_state.control_params.items()}
  return {
    "suite": SUITE,
    "kind": "training",
    "problem": f"p0={p0}",
    "p0": p0,
    "estimator": label,
    "num_samples": TRAINING_EVALUATIONS[label],
    "steps": config.steps,
    "learning_rate": config.learning_rate,
    "control_learning_rate": config.control_learning_rate if label != "REINFORCE" else None,
    "final_phi": final_phi,
    "final_p": final_p,
    "final_loss": exact_loss(p0, final_p),
    "initial_loss": exact_loss(p0, 0.5),
    "optimum_loss": p0**2 if p0 <= 0.5 else (1 - p0) ** 2,
    "mean_gradient_variance": float(errors_sq.mean()),
    "curve": curve,
    "final_control": control,
    "seconds": seconds,
  }


# ----------------------------------------------------------------------------------------------------------
# Cells.
# ----------------------------------------------------------------------------------------------------------


def variance_cell_id(p0: float, p: float, label: str) -> str:
  return f"{SUITE}/variance/p0={p0}/p={p}/{label}"


def training_cell_id(p0: float, label: str) -> str:
  return f"{SUITE}/training/p0={p0}/{label}"


def cells(config: BernoulliConfig) -> list[tuple[str, Callable[[], list[dict[str, Any]]]]]:
  """``(cell id, measure)`` pairs: the variance sweep, then the training runs. ``measure()`` -> [record]."""
  _check(config)
  out = []
  for p0 in config.p0_values:
    for p in config.p_values:
      for label in (e for e in ESTIMATORS if e in config.estimators):
        cid = variance_cell_id(p0, p, label)
        out.append(
          (
            cid,
            lambda p0=p0, p=p, label=label, cid=cid: [measure_variance(config, p0, p, label, cell_key(config, cid))],
          )
        )
  for p0 in config.training_p0s:
    for label in (e for e in TRAINING_ESTIMATORS if e in config.training_estimators):
      cid = training_cell_id(p0, label)
      out.append(
        (cid, lambda p0=p0, label=label, cid=cid: [measure_training(config, p0, label, cell_key(config, cid))])
      )
  return out


# ----------------------------------------------------------------------------------------------------------
# Report.
# ----------------------------------------------------------------------------------------------------------


def _truthy(value: Any) -> bool:
  if isinstance(value, str):
    return value.strip().lower() in ("true", "1", "yes")
  return bool(value)


def _close(a: Any, b: float) -> bool:
  a = report.number(a)
  return a is not None and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def _index(records: list[dict[str, Any]]):
  variance, training = {}, {}
  for r in records:
    if r.get("suite", SUITE) != SUITE:
      continue
    if r.get("kind") == "training":
      training[(report.number(r.get("p0")), r.get("estimator"))] = r
    elif r.get("kind", "variance") == "variance" and "variance" in r:
      variance[(report.number(r.get("p0")), report.number(r.get("p")), r.get("estimator"))] = r
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


def _flagged(r: dict[str, Any]) -> bool:
  return not (_truthy(r.get("mean_ok", True)) and _truthy(r.get("variance_ok", True)))


def to_markdown(records: list[dict[str, Any]], config: BernoulliConfig, env: dict[str, Any] | None) -> str:
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
        row.append(cell + (" **!**" if _flagged(r) else ""))
      rows.append(row)
    parts += [
      f"## Variance of one estimate, p0 = {p0}: measured (exact)",
      report.markdown_table(["p", "exact grad"] + [f"Var {e}" for e in labels], rows),
    ]
  parts.append(
    "Exact: closed forms of the reference for REINFORCE, LOO, ARM, DisARM; Gumbel: the variance of the "
    "relaxed estimate by quadrature; RELAX (fixed, untrained control; see benchmarks/bernoulli.py): "
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
  flagged = [r for r in variance.values() if _flagged(r)]
  parts.append("## Measurements outside their intervals")
  if not variance:
    parts.append("No variance cells in the records.")
  elif not flagged:
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
          for r in flagged
        ],
      )
    )
  rows = []
  for p0 in config.training_p0s:
    for e in (x for x in TRAINING_ESTIMATORS if x in config.training_estimators):
      r = _lookup(training, p0, label=e)
      if r is None:
        rows.append([p0, e] + ["not run"] * 6)
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
      ],
      rows,
    ),
    "REBAR and RELAX train their controls with Adam (lr "
    f"{config.control_learning_rate:g}) in the same jitted step. Loss values are exact (F(phi)); the "
    "gradient variance is the mean of (g_t - exact gradient)^2 over all steps.",
  ]
  return "\n\n".join(parts) + "\n"


# ----------------------------------------------------------------------------------------------------------
# Plots.
# ----------------------------------------------------------------------------------------------------------


def plot(records: list[dict[str, Any]], config: BernoulliConfig, out_dir: str) -> list[str]:
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


def run(config: BernoulliConfig, out_dir: str | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
  """Runs (or resumes, from ``out_dir/bernoulli.jsonl``) the Bernoulli toy suite and writes its reports.

  Returns:
    ``{"records": [...], "markdown": str, "meta": {...}, "paths": {...}}``; ``meta["outside"]`` counts the
    variance measurements outside their intervals.
  """
  result = store.run_suite("bernoulli", config, cells(config), to_markdown, plot, out_dir, log)
  result["meta"]["outside"] = sum(_flagged(r) for r in result["records"] if r.get("kind") != "training")
  return result
