"""The Bernoulli-toy benchmark (benchmarks/bernoulli/): exact values, cells end to end, timing, report and plots."""

from __future__ import annotations

import dataclasses
import json
import math
import os

import pytest

from benchmarks import bernoulli
from tests.benchmarks.helpers import measure_cells

# closed_forms.md, Section 2: (p0, p, true grad, Var REINFORCE, Var LOO (2), Var ARM (1 pair), Var DisARM).
REFERENCE_TABLE = (
  (0.49, 0.1, "1.8e-3", "5.9954e-3", "1.4760e-5", "1.3027e-5", "1.2960e-5"),
  (0.49, 0.3, "4.2e-3", "1.3559e-2", "2.4360e-5", "1.3560e-5", "1.1760e-5"),
  (0.49, 0.5, "5.0e-3", "1.5638e-2", "2.5000e-5", "8.3333e-6", "0"),
  (0.499, 0.3, "4.2e-4", "1.3167e-2", "2.4360e-7", "1.3560e-7", "1.1760e-7"),
)


def _matches_printed(value: float, printed: str) -> bool:
  """``value`` rounds to ``printed`` at the printed number of significant digits."""
  if printed == "0":
    return abs(value) < 1e-15
  mantissa = printed.split("e")[0]
  digits = len(mantissa.replace(".", "").lstrip("0").lstrip("-")) or 1
  return f"{value:.{digits - 1}e}" == f"{float(printed):.{digits - 1}e}"


@pytest.mark.parametrize("row", REFERENCE_TABLE, ids=lambda r: f"p0={r[0]},p={r[1]}")
def test_exact_values_reproduce_reference_table(row):
  p0, p, grad, *variances = row
  assert _matches_printed(bernoulli.exact_gradient(p0, p), grad)
  for label, printed in zip(("REINFORCE", "LOO", "ARM", "DisARM"), variances):
    value = bernoulli.exact_variance(label, p0, p)
    assert _matches_printed(value, printed), (label, p0, p, value, printed)
  assert bernoulli.exact_variance("RELAX", p0, p) is None
  assert bernoulli.exact_variance("Gumbel", p0, p) is None


def test_exact_orderings_and_limits():
  # DisARM is ARM Rao-Blackwellised: never worse; both beat LOO at equal cost on this toy.
  for p in (0.05, 0.2, 0.5, 0.8, 0.95):
    assert bernoulli.exact_variance("DisARM", 0.49, p) <= bernoulli.exact_variance("ARM", 0.49, p) + 1e-18
    assert bernoulli.exact_variance("ARM", 0.49, p) <= bernoulli.exact_variance("LOO", 0.49, p)
  assert math.isclose(bernoulli.exact_variance("ARM", 0.49, 0.5), 0.02**2 / 48)
  assert bernoulli.exact_loss(0.45, 0.0) == pytest.approx(0.45**2)


def test_gumbel_quadrature_mean_is_relaxed_gradient():
  # d/dphi E[f(sigmoid((phi + L)/t))] by a central difference of the relaxed objective, also by quadrature.
  from scipy import integrate

  p0, p, t = 0.49, 0.3, bernoulli.GUMBEL_TEMPERATURE

  def relaxed_objective(phi):
    def integrand(x):
      s = 0.5 * (1 + math.tanh((phi + x) / (2 * t)))
      e = math.exp(-abs(x))
      return (s - p0) ** 2 * e / (1 + e) ** 2

    return integrate.quad(integrand, -60, 60, epsabs=1e-14, epsrel=1e-12, limit=400)[0]

  phi, h = bernoulli.logit(p), 1e-4
  finite_difference = (relaxed_objective(phi + h) - relaxed_objective(phi - h)) / (2 * h)
  mean, variance = bernoulli.gumbel_moments(p0, p)
  assert mean == pytest.approx(finite_difference, rel=1e-5, abs=1e-9)
  assert variance > 0


TINY = dataclasses.replace(
  bernoulli.PRESETS["quick"],
  p0_values=(0.49,),
  p_values=(0.3, 0.5),
  num_repeats=400,
  training_p0s=(0.45,),
  steps=20,
  log_every=5,
)

VARIANCE_FIELDS = (
  "suite",
  "problem",
  "p0",
  "p",
  "estimator",
  "num_samples",
  "evaluations",
  "num_repeats",
  "exact_grad",
  "mean",
  "mean_se",
  "bias",
  "variance",
  "variance_se",
  "exact_variance",
  "variance_ok",
  "mean_ok",
  "seconds_per_estimate",
  "work_normalised_variance",
)


@pytest.fixture(scope="module")
def tiny_records():
  cells = bernoulli.cells(TINY)
  ids = [cid for cid, _ in cells]
  assert len(ids) == 2 * len(bernoulli.ESTIMATORS) + len(bernoulli.TRAINING_ESTIMATORS)
  assert "bernoulli/variance/p0=0.49/p=0.3/ARM" in ids
  assert "bernoulli/training/p0=0.45/REBAR" in ids
  assert ids == [cid for cid, _ in bernoulli.cells(TINY)]  # stable
  return measure_cells(cells)


def test_cells_records_and_intervals(tiny_records):
  variance = [r for r in tiny_records.values() if r.get("kind") != "training"]
  assert len(variance) == 2 * len(bernoulli.ESTIMATORS)
  for r in variance:
    for field in VARIANCE_FIELDS:
      assert field in r, field
    assert r["suite"] == "bernoulli" and r["problem"] == "p0=0.49"
    assert r["num_repeats"] == TINY.num_repeats
    assert r["evaluations"] == (1 if r["estimator"] in ("REINFORCE", "Gumbel") else 2)
    assert r["mean_ok"], r  # Gumbel: against the relaxed gradient (quadrature); the others: the exact gradient.
    assert r["variance_ok"], r
    assert r["seconds_per_estimate"] > 0 and r["compile_seconds"] > 0
    assert r["work_normalised_variance"] == pytest.approx(r["variance"] * r["seconds_per_estimate"])
    if r["estimator"] in bernoulli.WITH_CLOSED_FORM:
      assert r["exact_variance"] == pytest.approx(bernoulli.exact_variance(r["estimator"], r["p0"], r["p"]))
      assert abs(r["mean"] - r["exact_grad"]) <= TINY.num_se * r["mean_se"] + 1e-7  # float32 rounding
  gumbel = tiny_records["bernoulli/variance/p0=0.49/p=0.3/Gumbel"]
  assert gumbel["bias"] == pytest.approx(gumbel["mean"] - bernoulli.exact_gradient(0.49, 0.3))
  # At p = 1/2 every DisARM pair gives the exact gradient.
  disarm = tiny_records["bernoulli/variance/p0=0.49/p=0.5/DisARM"]
  assert disarm["variance"] < 1e-12 and disarm["mean"] == pytest.approx(0.005, rel=1e-4)


def test_cells_are_reproducible(tiny_records):
  cid = "bernoulli/variance/p0=0.49/p=0.3/LOO"
  again = dict(bernoulli.cells(TINY))[cid]()[0]
  assert again["mean"] == tiny_records[cid]["mean"] and again["variance"] == tiny_records[cid]["variance"]


def test_training_records(tiny_records):
  training = [r for r in tiny_records.values() if r.get("kind") == "training"]
  assert sorted(r["estimator"] for r in training) == sorted(bernoulli.TRAINING_ESTIMATORS)
  for r in training:
    assert r["steps"] == 20 and r["p0"] == 0.45
    steps = [c[0] for c in r["curve"]]
    assert steps == [0, 5, 10, 15, 20]
    assert r["curve"][0][1] == 0.0 and r["curve"][0][2] == pytest.approx(bernoulli.exact_loss(0.45, 0.5))
    assert r["curve"][-1][1] == pytest.approx(r["final_phi"])
    assert all(c[3] is None or c[3] >= 0 for c in r["curve"])
    # 20 Adam steps of size <= ~lr: phi moved, but by at most about 20 * 0.01.
    assert abs(r["final_phi"]) <= 20 * TINY.learning_rate * 1.5
    assert r["optimum_loss"] == pytest.approx(0.45**2)
    if r["estimator"] != "REINFORCE":
      assert r["final_control"] is not None
    assert r["seconds"] > 0 and r["compile_seconds"] > 0


def test_timed_figures_exclude_compilation(tiny_records):
  # num_repeats=300: an executable no other test compiles, so the first call below compiles it.
  config = dataclasses.replace(TINY, p_values=(0.3,), estimators=("LOO",), num_repeats=300, training_p0s=())
  (cid, measure_loo), *_ = bernoulli.cells(config)
  assert cid == "bernoulli/variance/p0=0.49/p=0.3/LOO"
  first, second = measure_loo()[0], measure_loo()[0]
  assert first["mean"] == second["mean"]  # the same measurement twice
  # Compilation is timed apart, once per estimator: the second call ran the executable the first one compiled.
  assert first["compile_seconds"] == second["compile_seconds"] > 0
  # The first timed call is not much slower than the second (it would be by the compile time if it compiled);
  # the absolute slack absorbs the noise of a millisecond timing on a loaded machine.
  assert first["seconds"] <= 5 * second["seconds"] + 0.05, (first["seconds"], second["seconds"])
  assert first["seconds"] < 0.5 * first["compile_seconds"], first
  # Each training run compiles its own scan (20 steps here); its timed run excludes that.
  for r in tiny_records.values():
    if r["kind"] == "training":
      assert 0 < r["seconds"] < 0.5 * r["compile_seconds"], r


def _as_json(records):
  # What a JSON-lines file gives back: non-finite floats as strings (benchmarks.report.plain).
  from benchmarks import report

  return [json.loads(json.dumps(report.plain(r))) for r in records]


def test_to_markdown(tiny_records):
  records = _as_json(tiny_records.values())
  env = {
    "jax_version": "x",
    "jaxlib_version": "x",
    "distrax_version": "x",
    "sfe_jax_version": "x",
    "platform": "cpu",
    "device_kind": "cpu",
    "device_count": 1,
    "cpu_count": 2,
    "python": "3",
    "load_average_1min": 0.0,
  }
  md = bernoulli.to_markdown(records, TINY, env)
  assert "## Variance of one estimate, p0 = 0.49" in md
  assert "Gumbel-softmax" in md and "Work-normalised" in md and "## Training" in md
  assert "Seconds per estimate exclude compilation" in md and "compile seconds" in md
  assert "None: all 12 variance measurements" in md
  assert "not run" not in md
  # Missing cells and string floats.
  partial = [r for r in records if r["estimator"] != "ARM" and r.get("kind") != "training"]
  partial[0] = {**partial[0], "variance": "nan"}
  md2 = bernoulli.to_markdown(partial, dataclasses.replace(TINY, p_values=(0.3, 0.5, 0.7)), None)
  assert "not run" in md2 and "nan" in md2
  assert bernoulli.to_markdown([], TINY, None).count("not run") > 0


def test_plot(tiny_records, tmp_path):
  paths = bernoulli.plot(_as_json(tiny_records.values()), TINY, str(tmp_path))
  assert len(paths) == 2
  for path in paths:
    assert os.path.exists(path)
    with open(path, "rb") as fh:
      assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
