"""What the variance suite measures: the Gaussian cost functions, their exact values and the configuration.

The exact gradients and single-sample variances are the closed forms of ``closed_forms.md``, Section 1; the
coupled measure-valued variances of ``exp(-k x^2)`` and ``cos(k x)`` are computed by numerical quadrature, and
the excess of the leave-one-out optimal baseline over ``Var SF*`` to first order in ``1/N`` (see the package
docstring). For the sampler study, :func:`antithetic_ratio` gives the exact effect of antithetic pairs on the
variance per evaluation, from the even part of the per-sample gradient term about the location.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

from benchmarks import suite

SUITE = "variance"

ESTIMATORS = ("SF", "SF*", "PW", "MVD", "SF+DM")
# Estimators whose single-sample variance the reference gives in closed form (the others: mean checked only).
WITH_EXACT_VARIANCE = ("SF", "SF*", "PW", "MVD")
PARAMS = ("mu", "sigma")
LEAVES = {"mu": "loc", "sigma": "scale"}  # the leaf of params of each parameter

SAMPLERS = ("iid", "antithetic", "stratified", "rqmc")  # the values of sfe.value_and_grad's `sampler=`
# Estimators that average independent per-sample terms: the only ones the samplers apply to (SF* and SF+DM
# estimate a baseline or a coefficient from their samples, which stays unbiased only for independent samples).
SAMPLER_ESTIMATORS = ("SF", "PW", "MVD")
SAMPLER_SIZES = (2**6, 2**8, 2**10, 2**12, 2**14)


class Problem(NamedTuple):
  """One cost function of the reference: ``family`` is ``(x-k)^2``, ``exp(-kx^2)`` or ``cos(kx)``."""

  family: str
  k: float

  @property
  def name(self) -> str:
    return f"{self.family}, k={self.k:g}"


FAMILIES = ("(x-k)^2", "exp(-kx^2)", "cos(kx)")

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


# The sampler study: one problem of each kind of integrand, a polynomial (the pathwise mu term is linear) and an
# oscillating one.
SAMPLER_PROBLEMS = (Problem("(x-k)^2", 3.0), Problem("cos(kx)", 2.0))


def cost(problem: Problem, xp: Any = jnp) -> Callable:
  """``f(x; k)`` for one sample, with array module ``xp`` (``jax.numpy`` for the estimators, numpy for quadrature)."""
  k = problem.k
  if problem.family == "(x-k)^2":
    return lambda x: (x - k) ** 2
  if problem.family == "exp(-kx^2)":
    return lambda x: xp.exp(-k * x**2)
  if problem.family == "cos(kx)":
    return lambda x: xp.cos(k * x)
  raise ValueError(f"unknown cost family {problem.family!r}; expected one of {FAMILIES}.")


def cost_derivative(problem: Problem, xp: Any = np) -> Callable:
  """``f'(x; k)``, with array module ``xp``: the pathwise estimator's per-sample term is ``f'(x) dx/dtheta``."""
  k = problem.k
  if problem.family == "(x-k)^2":
    return lambda x: 2 * (x - k)
  if problem.family == "exp(-kx^2)":
    return lambda x: -2 * k * x * xp.exp(-k * x**2)
  if problem.family == "cos(kx)":
    return lambda x: -k * xp.sin(k * x)
  raise ValueError(f"unknown cost family {problem.family!r}; expected one of {FAMILIES}.")


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


def antithetic_ratio(problem: Problem, label: str, mu: float = 1.0, sigma: float = 1.0) -> tuple[float, float] | None:
  r"""Exact variance of antithetic pairs over i.i.d. sampling at the same number of evaluations, per parameter.

  With :math:`x = \mu + \sigma z`, the per-sample gradient term :math:`g(z)` (``PW``: :math:`f'(x)` and
  :math:`f'(x) z`; ``SF``: :math:`f(x) z / \sigma` and :math:`f(x)(z^2 - 1)/\sigma`) splits into its even and
  odd parts about the location, :math:`g_\pm(z) = (g(z) \pm g(-z))/2`, uncorrelated under :math:`N(0, 1)`. A
  pair's average is :math:`g_+(z)`, so ``N`` evaluations (``N/2`` pairs) have variance
  :math:`2\,\mathrm{Var}[g_+]/N` against :math:`(\mathrm{Var}[g_+] + \mathrm{Var}[g_-])/N`: the ratio is
  :math:`2\,\mathrm{Var}[g_+]/\mathrm{Var}[g]`, twice the even share of the variance: 0 for an odd term (the
  pairs are exact), 2 for an even one. The expectations are by 160-point Gauss-Hermite quadrature; an even
  share below ``1e-12`` is reported as exactly 0.

  Returns:
    ``(mu ratio, sigma ratio)``, or ``None`` for an estimator without a per-sample term here (MVD).
  """
  if label not in ("SF", "PW"):
    return None
  eps, weights = np.polynomial.hermite_e.hermegauss(160)
  weights = weights / weights.sum()
  expect = lambda v: float(np.sum(weights * v))  # noqa: E731

  def terms(z):
    x = mu + sigma * z
    if label == "PW":
      d = cost_derivative(problem, np)(x)
      return d, d * z
    f = cost(problem, np)(x)
    return f * z / sigma, f * (z**2 - 1) / sigma

  ratios = []
  for g, g_reflected in zip(terms(eps), terms(-eps), strict=True):
    even = (g + g_reflected) / 2
    var, var_even = expect(g**2) - expect(g) ** 2, expect(even**2) - expect(even) ** 2
    ratios.append(0.0 if var_even <= 1e-12 * var else 2 * var_even / var)
  return ratios[0], ratios[1]


# ----------------------------------------------------------------------------------------------------------
# Configuration.
# ----------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class VarianceConfig(suite.SuiteConfig):
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
    samplers: the sampler study's samplers, a subset of ``SAMPLERS`` holding ``"iid"`` (the reference of the
      ratios); the study runs when this, ``sampler_problems`` and ``sampler_estimators`` are all non-empty.
    sampler_problems: the cost functions of the sampler study.
    sampler_estimators: its estimators, a subset of ``SAMPLER_ESTIMATORS``.
    sampler_sizes: the numbers of samples ``N`` per estimate (evaluations of ``f``; MVD's are 4 per base
      sample); at least 2 sizes, each even (a multiple of 8 with MVD: antithetic pairs of base samples).
    sampler_repeats: independent ``N``-sample estimates per (problem, estimator, sampler, ``N``).
    sampler_reference_size: the ``N`` of the ratios to i.i.d. in the report (one of ``sampler_sizes``).
    seed: (keyword-only, from :class:`benchmarks.suite.SuiteConfig`) the PRNG seed; a cell's key is
      ``jax.random.key(seed)`` folded with hashes of its problem and its estimator (and, in the sampler
      study, of its size and sampler).
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
  samplers: tuple[str, ...] = SAMPLERS
  sampler_problems: tuple[Problem, ...] = SAMPLER_PROBLEMS
  sampler_estimators: tuple[str, ...] = ("PW", "SF")
  sampler_sizes: tuple[int, ...] = SAMPLER_SIZES
  sampler_repeats: int = 200
  sampler_reference_size: int = 2**10

  @property
  def runs_sampler_study(self) -> bool:
    """Whether the sampler study has anything to measure."""
    return bool(self.samplers and self.sampler_problems and self.sampler_estimators)

  def check(self) -> None:
    """Raises a ``ValueError`` naming the first setting that is out of range."""
    super().check()
    self.require_subset("estimators", ESTIMATORS)
    # Variances need 2 repeats; the leave-one-out optimal baseline needs 2 samples.
    self.require_at_least(2, "num_repeats", "optimal_baseline_repeats", "optimal_baseline_samples")
    if self.chunk_samples is not None:
      self.require_at_least(1, "chunk_samples")
    unknown = [p for p in self.problems if p.family not in FAMILIES or not math.isfinite(p.k)]
    if unknown:
      raise ValueError(f"unknown problems {unknown}; the families are {FAMILIES}, with a finite k.")
    if not (self.sigma > 0 and self.num_se > 0):
      raise ValueError(f"sigma and num_se must be positive; got sigma={self.sigma}, num_se={self.num_se}.")
    self._check_sampler_study()

  def _check_sampler_study(self) -> None:
    self.require_subset("samplers", SAMPLERS)
    self.require_subset("sampler_estimators", SAMPLER_ESTIMATORS)
    unknown = [p for p in self.sampler_problems if p.family not in FAMILIES or not math.isfinite(p.k)]
    if unknown:
      raise ValueError(f"unknown sampler problems {unknown}; the families are {FAMILIES}, with a finite k.")
    if not self.runs_sampler_study:
      return
    if "iid" not in self.samplers:
      raise ValueError(f"samplers must include 'iid', the reference of the ratios; got {self.samplers}.")
    self.require_at_least(2, "sampler_repeats")
    multiple = 8 if "MVD" in self.sampler_estimators else 2
    sizes = self.sampler_sizes
    if len(set(sizes)) < 2 or any(not isinstance(n, int) or n < multiple or n % multiple for n in sizes):
      raise ValueError(
        f"sampler_sizes must hold at least 2 different sizes, each a positive multiple of {multiple} (antithetic "
        f"pairs{' of MVD base samples, 4 evaluations each' if multiple == 8 else ''}); got {sizes}."
      )
    if self.sampler_reference_size not in sizes:
      raise ValueError(f"sampler_reference_size ({self.sampler_reference_size}) must be one of sampler_sizes {sizes}.")


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
    num_repeats=20_000,
    problems=CURVE_PROBLEMS,
    optimal_baseline_samples=1_000,
    optimal_baseline_repeats=4_000,
    # Each sampler cell compiles one function per sampler (about a second each on a CPU): 4 sizes, not 5.
    sampler_sizes=(2**6, 2**8, 2**10, 2**12),
    sampler_repeats=200,
  ),
  "full": VarianceConfig(
    num_repeats=200_000,
    problems=CURVE_PROBLEMS,
    optimal_baseline_samples=1_000,
    optimal_baseline_repeats=50_000,
    sampler_repeats=1_000,
  ),
}
