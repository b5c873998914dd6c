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
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import distrax
import jax
import jax.numpy as jnp
import numpy as np

import sfe_jax as sfe
from benchmarks import report, store

ESTIMATORS = ("SF", "SF*", "PW", "MVD", "SF+DM")
# Estimators whose single-sample variance the reference gives in closed form (the others: mean checked only).
WITH_EXACT_VARIANCE = ("SF", "SF*", "PW", "MVD")
PARAMS = ("mu", "sigma")
_LEAF = {"mu": "loc", "sigma": "scale"}


class Problem(NamedTuple):
  """One cost function of the reference: ``family`` is ``(x-k)^2``, ``exp(-kx^2)`` or ``cos(kx)``."""

  family: str
  k: float

  @property
  def name(self) -> str:
    return f"{self.family}, k={self.k:g}"


PROBLEMS = (
  Problem("(x-k)^2", -3.0),
  Problem("(x-k)^2", 0.0),
  Problem("(x-k)^2", 3.0),
  Problem("exp(-kx^2)", 0.1),
  Problem("exp(-kx^2)", 1.0),
  Problem("exp(-kx^2)", 10.0),
  Problem("cos(kx)", 0.5),
  Problem("cos(kx)", 2.0),
)


def cost(problem: Problem, xp: Any = jnp) -> Callable:
  """``f(x; k)`` for one sample, with array module ``xp`` (``jax.numpy`` for the estimators, numpy for quadrature)."""
  k = problem.k
  if problem.family == "(x-k)^2":
    return lambda x: (x - k) ** 2
  if problem.family == "exp(-kx^2)":
    return lambda x: xp.exp(-k * x**2)
  if problem.family == "cos(kx)":
    return lambda x: xp.cos(k * x)
  raise ValueError(f"unknown cost family {problem.family!r}; expected one of (x-k)^2, exp(-kx^2), cos(kx).")


# ----------------------------------------------------------------------------------------------------------
# Exact values (closed_forms.md, Section 1).
# ----------------------------------------------------------------------------------------------------------


class Exact(NamedTuple):
  """Exact ``F``, gradient ``(dF/dmu, dF/dsigma)`` and single-sample variances ``{estimator: (mu, sigma)}``."""

  value: float
  grad: tuple[float, float]
  variance: dict[str, tuple[float, float]]


def _tilt(c: float, mu: float, sigma: float) -> tuple[float, float, float, float]:
  """``E_{N(mu, sigma^2)}[p(x) exp(-c x^2)] = Z E_{N(m, v)}[p(x)]``: returns ``(Z, m, v, d = m - mu)``."""
  r = 1 + 2 * c * sigma**2
  z = r**-0.5 * math.exp(-c * mu**2 / r)
  m, v = mu / r, sigma**2 / r
  return z, m, v, m - mu


def _sf_second_moments_exp(z, v, d, sigma):
  """``E[g(x) s_mu^2]`` and ``E[g(x) s_sigma^2]`` for ``g = exp(-c x^2)``, from the tilt ``(Z, v, d)``."""
  e_mu = z * (d**2 + v) / sigma**4
  e_sigma = z * (d**4 + 6 * d**2 * v + 3 * v**2 - 2 * sigma**2 * (d**2 + v) + sigma**4) / sigma**6
  return e_mu, e_sigma


def mvd_variance_by_quadrature(
  problem: Problem, mu: float, sigma: float, grad: tuple[float, float]
) -> tuple[float, float]:
  r"""Single-sample variances of the coupled measure-valued estimator, by numerical quadrature.

  ``mu``: :math:`E[g^2] = \int_0^\infty w e^{-w^2/2} (f(\mu + \sigma w) - f(\mu - \sigma w))^2 dw / (2\pi\sigma^2)`;
  ``sigma``: :math:`E[g^2] = \int m^2 e^{-m^2/2} / \sqrt{2\pi} \int_0^1 (f(\mu + \sigma m) - f(\mu + \sigma m u))^2
  du\, dm / \sigma^2`; the variance is :math:`E[g^2]` minus the squared gradient.
  """
  from scipy import integrate  # noqa: PLC0415 (only needed here)

  f = cost(problem, np)
  # The Weibull and Maxwell densities are below 1e-30 beyond 12: integrate over [0, 12] and [-12, 12].
  opts = dict(epsabs=1e-13, epsrel=1e-10, limit=200)
  e_mu = integrate.quad(
    lambda w: w * math.exp(-w * w / 2) * (f(mu + sigma * w) - f(mu - sigma * w)) ** 2, 0, 12, **opts
  )[0] / (2 * math.pi * sigma**2)

  def inner(m):
    top = f(mu + sigma * m)
    return integrate.quad(lambda u: (top - f(mu + sigma * m * u)) ** 2, 0, 1, **opts)[0]

  e_sigma = (
    integrate.quad(lambda m: m * m * math.exp(-m * m / 2) / math.sqrt(2 * math.pi) * inner(m), -12, 12, **opts)[0]
    / sigma**2
  )
  return e_mu - grad[0] ** 2, e_sigma - grad[1] ** 2


def exact(problem: Problem, mu: float = 1.0, sigma: float = 1.0) -> Exact:
  """Exact ``F``, gradient and single-sample variances of SF, SF*, PW and MVD (``closed_forms.md`` Sec. 1)."""
  k = problem.k
  e_s2 = (1 / sigma**2, 2 / sigma**2)  # E[s_mu^2], E[s_sigma^2]
  mvd = None
  if problem.family == "(x-k)^2":
    a = mu - k
    value, grad = a**2 + sigma**2, (2 * a, 2 * sigma)
    var_pw = (4 * sigma**2, 4 * a**2 + 8 * sigma**2)
    var_sf = (a**4 / sigma**2 + 14 * a**2 + 15 * sigma**2, 2 * a**4 / sigma**2 + 60 * a**2 + 74 * sigma**2)
    e_fs2 = ((a**2 + 3 * sigma**2) / sigma**2, (2 * a**2 + 10 * sigma**2) / sigma**2)
    mvd = (a**2 * (16 / math.pi - 4), 4 * a**2 + 4 * sigma**2)
  elif problem.family == "exp(-kx^2)":
    r = 1 + 2 * k * sigma**2
    value = r**-0.5 * math.exp(-k * mu**2 / r)
    grad = (-2 * k * mu * value / r, 2 * k * sigma * (2 * k * mu**2 - r) * value / r**2)
    z, m, v, d = _tilt(2 * k, mu, sigma)  # f^2 = exp(-2k x^2)
    var_pw = (
      4 * k**2 * z * (m**2 + v) - grad[0] ** 2,
      4 * k**2 / sigma**2 * z * (m**2 * d**2 + v * (m**2 + 4 * m * d + d**2) + 3 * v**2) - grad[1] ** 2,
    )
    f2s2 = _sf_second_moments_exp(z, v, d, sigma)
    var_sf = (f2s2[0] - grad[0] ** 2, f2s2[1] - grad[1] ** 2)
    z1, _, v1, d1 = _tilt(k, mu, sigma)
    e_fs2 = _sf_second_moments_exp(z1, v1, d1, sigma)
  elif problem.family == "cos(kx)":
    damp = math.exp(-(k**2) * sigma**2 / 2)
    value = math.cos(k * mu) * damp
    grad = (-k * math.sin(k * mu) * damp, -(k**2) * sigma * value)
    c2, e2 = math.cos(2 * k * mu), math.exp(-2 * k**2 * sigma**2)
    t = 2 * k * sigma
    var_pw = (
      k**2 / 2 * (1 - c2 * e2) - grad[0] ** 2,
      k**2 / 2 * (1 - (1 - 4 * k**2 * sigma**2) * c2 * e2) - grad[1] ** 2,
    )
    var_sf = (
      (1 + (1 - 4 * k**2 * sigma**2) * c2 * e2) / (2 * sigma**2) - grad[0] ** 2,
      (2 + c2 * e2 * (2 - 4 * t**2 + t**4)) / (2 * sigma**2) - grad[1] ** 2,
    )
    e_fs2 = (value * (1 - k**2 * sigma**2) / sigma**2, value * (2 - 4 * k**2 * sigma**2 + k**4 * sigma**4) / sigma**2)
  else:
    raise ValueError(f"unknown cost family {problem.family!r}.")
  var_sf_opt = tuple(var_sf[i] - e_fs2[i] ** 2 / e_s2[i] for i in range(2))
  if mvd is None:
    mvd = mvd_variance_by_quadrature(problem, mu, sigma, grad)
  variance = {"SF": tuple(var_sf), "SF*": var_sf_opt, "PW": tuple(var_pw), "MVD": tuple(mvd)}
  return Exact(value=value, grad=tuple(grad), variance={k_: tuple(map(float, v_)) for k_, v_ in variance.items()})


def optimal_baseline_excess(
  problem: Problem, num_samples: int, mu: float = 1.0, sigma: float = 1.0
) -> tuple[float, float]:
  """First-order excess of ``N * Var`` over ``Var SF*`` for the leave-one-out optimal baseline (module doc)."""
  eps, weights = np.polynomial.hermite_e.hermegauss(160)
  weights = weights / weights.sum()
  expect = lambda v: float(np.sum(weights * v))  # noqa: E731
  f = cost(problem, np)(mu + sigma * eps)
  excess = []
  for s in (eps / sigma, (eps**2 - 1) / sigma):  # the scores of mu and sigma
    e_s2 = expect(s**2)
    centred = f - expect(f * s**2) / e_s2
    excess.append((expect(centred**2 * s**4) * e_s2 + expect(centred * s**3) ** 2) / ((num_samples - 1) * e_s2**2))
  return excess[0], excess[1]


# ----------------------------------------------------------------------------------------------------------
# Configuration and estimators.
# ----------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class VarianceConfig:
  """What the variance benchmark measures.

  Attributes:
    num_repeats: independent single-sample estimates per problem and estimator (SF, PW, MVD).
    optimal_baseline_samples: ``N`` for SF* (its baseline is estimated from the other ``N - 1`` samples).
    optimal_baseline_repeats: independent ``N``-sample SF* estimates.
    chunk_samples: samples evaluated at once (bounds memory: repeats are run in chunks of
      ``chunk_samples // num_samples``); ``None`` for all at once.
    problems: the cost functions.
    estimators: a subset of ``ESTIMATORS``.
    mu, sigma: where the gradient is taken.
    num_se: the half-width of the intervals, in standard errors.
    seed: the PRNG seed (``jax.random.key(seed)``).
  """

  num_repeats: int
  optimal_baseline_samples: int = 1_000
  optimal_baseline_repeats: int = 4_000
  chunk_samples: int | None = 2_000_000
  problems: tuple[Problem, ...] = PROBLEMS
  estimators: tuple[str, ...] = ESTIMATORS
  mu: float = 1.0
  sigma: float = 1.0
  num_se: float = 5.0
  seed: int = 0


# The reference rows plus a few more values of k, so that the plots show measured points along the curves.
CURVE_PROBLEMS = PROBLEMS + (
  Problem("(x-k)^2", -1.5),
  Problem("(x-k)^2", 1.5),
  Problem("exp(-kx^2)", 0.3),
  Problem("exp(-kx^2)", 3.0),
  Problem("cos(kx)", 1.0),
  Problem("cos(kx)", 3.0),
)

PRESETS = {
  "quick": VarianceConfig(
    num_repeats=20_000, problems=CURVE_PROBLEMS, optimal_baseline_samples=1_000, optimal_baseline_repeats=4_000
  ),
  "full": VarianceConfig(
    num_repeats=200_000, problems=CURVE_PROBLEMS, optimal_baseline_samples=1_000, optimal_baseline_repeats=50_000
  ),
}


def build_estimator(label: str) -> sfe.Estimator:
  if label == "SF":
    return sfe.score_function()
  if label == "SF*":
    return sfe.score_function(sfe.baselines.optimal())
  if label == "PW":
    return sfe.pathwise()
  if label == "MVD":
    return sfe.measure_valued(coupling=True)
  if label == "SF+DM":
    return sfe.with_control_variate(sfe.score_function(), sfe.control_variates.delta_method())
  raise ValueError(f"unknown estimator {label!r}; expected one of {ESTIMATORS}.")


def dist_builder(params):
  return distrax.Normal(params["loc"], params["scale"])


# ----------------------------------------------------------------------------------------------------------
# Running.
# ----------------------------------------------------------------------------------------------------------


def measure(problem: Problem, label: str, config: VarianceConfig, key: jax.Array) -> list[dict[str, Any]]:
  """Measures one estimator on one problem: one record per parameter (mu, sigma)."""
  ref = exact(problem, config.mu, config.sigma)
  estimator = build_estimator(label)
  if label == "SF*":
    n, repeats = config.optimal_baseline_samples, config.optimal_baseline_repeats
    excess = optimal_baseline_excess(problem, n, config.mu, config.sigma)
  else:
    # One sample per estimate; one base sample for MVD, whose num_samples counts its 4 evaluations of f.
    n, repeats, excess = (4 if label == "MVD" else 1), config.num_repeats, (0.0, 0.0)
  batch_size = None if config.chunk_samples is None else max(1, config.chunk_samples // n)
  params = {"loc": jnp.asarray(config.mu, jnp.float32), "scale": jnp.asarray(config.sigma, jnp.float32)}
  start = time.perf_counter()
  moments = sfe.diagnostics.gradient_moments(
    estimator, cost(problem), dist_builder, params, key, num_samples=n, num_repeats=repeats, batch_size=batch_size
  )
  gradient_bias = sfe.diagnostics.bias(moments, {"loc": ref.grad[0], "scale": ref.grad[1]})
  jax.block_until_ready(gradient_bias)
  seconds = time.perf_counter() - start
  records = []
  for i, param in enumerate(PARAMS):
    leaf = _LEAF[param]
    mean, mean_se = float(moments.mean[leaf]), float(moments.std_error[leaf])
    # Single-sample equivalents: an N-sample average has 1/N of the single-sample variance (MVD: N base samples
    # of 4 evaluations each).
    samples = n // 4 if label == "MVD" else n
    variance = samples * float(moments.variance[leaf])
    variance_se = samples * float(moments.variance_std_error[leaf])
    exact_grad = ref.grad[i]
    mean_ok = abs(mean - exact_grad) <= config.num_se * mean_se
    if label in ref.variance:
      exact_var = ref.variance[label][i]
      # What N * Var should be at this N (exact_var itself except for SF*), and the model error allowed for.
      expected_var = exact_var + excess[i]
      allowance = 2 * excess[i] ** 2 / abs(exact_var) if excess[i] else 0.0
      tolerance = config.num_se * variance_se + allowance
      variance_ok = abs(variance - expected_var) <= tolerance
      variance_z = (variance - expected_var) / variance_se if variance_se > 0 else 0.0
    else:  # No exact value to compare with.
      exact_var = expected_var = tolerance = variance_z = None
      allowance, variance_ok = 0.0, True
    records.append(
      {
        "f": problem.family,
        "k": problem.k,
        "estimator": label,
        "param": param,
        "num_samples": n,
        "num_repeats": repeats,
        "exact_grad": exact_grad,
        "mean": mean,
        "mean_se": mean_se,
        "mean_z": float(gradient_bias.z_score[leaf]),
        "exact_variance": exact_var,
        "expected_variance": expected_var,
        "variance": variance,
        "variance_se": variance_se,
        "variance_z": variance_z,
        "variance_tolerance": tolerance,
        "model_allowance": allowance,
        "mean_ok": bool(mean_ok),
        "variance_ok": bool(variance_ok),
        "seconds": seconds,
        # Variance per unit of compute: what an estimator costs to reach a given precision (first call
        # included, so it is an upper bound for cheap estimators).
        "seconds_per_estimate": seconds / repeats,
        "work_normalised_variance": float(moments.variance[leaf]) * seconds / repeats,
      }
    )
  return records


def _flag(record: dict[str, Any]) -> str:
  bad = [what for what, ok in (("mean", record["mean_ok"]), ("variance", record["variance_ok"])) if not ok]
  return "OUTSIDE: " + ", ".join(bad) if bad else "ok"


def to_markdown(records: list[dict[str, Any]], config: VarianceConfig, env: dict[str, Any]) -> str:
  """The report: a summary table of single-sample variances, then every measurement with its interval."""
  labels = [e for e in ESTIMATORS if e in config.estimators]
  by_key = {(r["f"], r["k"], r["estimator"], r["param"]): r for r in records}
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
      "cost (SF* uses N samples, MVD 4 evaluations of f per sample) compare fairly. Seconds are the wall time "
      "of the whole jitted batch of repeats divided by the repeats, on the device named above.",
      report.markdown_table(work_columns, work_rows),
      "## Every measurement",
      "Mean against the exact gradient and single-sample variance against the exact variance; `z` is "
      "(measured - expected) / se, the variance's se from the fourth central moment. A value is flagged OUTSIDE "
      f"when it is more than {config.num_se:g} se from the expected value. The expected value is the exact one, "
      "except for SF*: N x Var of N samples exceeds Var SF* by the O(1/N) cost of estimating the baseline "
      "leave-one-out, computed to first order (benchmarks/gaussian.py), with the next order allowed for as a "
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


def cells(config: VarianceConfig) -> list[tuple[str, Callable[[], list[dict[str, Any]]]]]:
  """One cell per (problem, estimator): its id and the function that measures it (two records, mu and sigma)."""
  report.check_subset(config.estimators, ESTIMATORS, "estimators")
  key = jax.random.key(config.seed)
  out = []
  for problem in config.problems:
    # Keys from the problem and estimator themselves, so a cell measures the same numbers in any selection.
    problem_key = jax.random.fold_in(key, _stable_int(problem.name))
    for label in config.estimators:
      cell_key = jax.random.fold_in(problem_key, _stable_int(label))
      cell = (
        f"variance/{problem.family}/k={problem.k:g}/{label}/repeats={config.num_repeats}"
        f"/sf*={config.optimal_baseline_repeats}x{config.optimal_baseline_samples}"
      )
      out.append((cell, functools.partial(measure, problem, label, config, cell_key)))
  return out


def _stable_int(text: str) -> int:
  """A hash of ``text`` that is the same in every process (Python's ``hash`` of a str is salted)."""
  return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


def plot(records: list[dict[str, Any]], config: VarianceConfig, out_dir: str) -> list[str]:
  """``variance.png``: single-sample variance against k, measured points (± 2 se) beside the exact curves."""
  plt = report.pyplot(out_dir)
  families = [f for f in ("(x-k)^2", "exp(-kx^2)", "cos(kx)") if any(p.family == f for p in config.problems)]
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


def run(config: VarianceConfig, out_dir: str | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
  """Runs (or resumes, from ``out_dir/variance.jsonl``) the variance benchmark and writes its reports.

  Returns:
    ``{"records": [...], "markdown": str, "meta": {...}, "paths": {...}}``; ``meta["outside"]`` counts the
    measurements outside their intervals.
  """
  result = store.run_suite("variance", config, cells(config), to_markdown, plot, out_dir, log)
  result["meta"]["outside"] = sum(not (r["mean_ok"] and r["variance_ok"]) for r in result["records"])
  return result
