"""The Bayesian logistic-regression benchmark (benchmarks/logistic/): model, cells end to end, timing, report, plots."""

from __future__ import annotations

import dataclasses
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sfe_jax as sfe

pytest.importorskip("sklearn")

from benchmarks import logistic  # noqa: E402
from tests.benchmarks.helpers import measure_cells  # noqa: E402

TINY = dataclasses.replace(
  logistic.PRESETS["quick"],
  estimators=("pathwise", "score function + MA", "measure-valued"),
  steps=8,
  num_samples=16,
  measure_valued_samples=1,
  log_every=4,
  eval_samples=16,
  variance_every=8,
  num_repeats=8,
)


def test_data_and_model():
  x, y = logistic.load_data()
  assert x.shape == (569, 31) and y.shape == (569,)
  np.testing.assert_allclose(x[:, :30].mean(axis=0), 0, atol=1e-5)
  np.testing.assert_allclose(x[:, :30].std(axis=0), 1, atol=1e-4)
  assert np.all(x[:, 30] == 1) and set(np.unique(y)) == {0.0, 1.0}

  @jax.jit
  def compute(x, y, key):
    params = logistic.initial_params(31)
    p = {"mean": jnp.full((31,), 0.5), "log_scale": jnp.full((31,), -1.0)}
    f = logistic.make_cost(x[:32], y[:32], 569.0)
    elbo, acc = logistic.evaluate(params, key, x, y, 64)
    return logistic.kl_to_prior(params), logistic.kl_to_prior(p), f(jnp.zeros(31)), elbo, acc

  kl_prior, kl_p, f_zero, elbo, acc = (float(v) for v in compute(jnp.asarray(x), jnp.asarray(y), jax.random.key(0)))
  # KL: zero at the prior, and the closed form 0.5 (s^2 + m^2 - 1 - log s^2) per dimension.
  assert kl_prior == 0.0
  assert kl_p == pytest.approx(31 * 0.5 * (math.exp(-2) + 0.25 - 1 + 2), rel=1e-5)
  # f at w = 0: every point has log-likelihood log(1/2).
  assert f_zero == pytest.approx(569 * math.log(0.5), rel=1e-6)
  # ELBO at the initial q: E[loglik] - 0 < 569 log(1/2) (Jensen), accuracy in [0, 1].
  assert elbo < 569 * math.log(0.5) and 0 <= acc <= 1


def test_estimators_unbiased_against_each_other():
  # Pathwise (low variance) as the reference for the mean of the others, on one batch at the initial q.
  x, y = logistic.load_data()
  f = logistic.make_cost(jnp.asarray(x[:32]), jnp.asarray(y[:32]), 569.0)
  params = {"mean": jnp.full((31,), 0.05), "log_scale": jnp.full((31,), -2.0)}
  ref = sfe.diagnostics.gradient_moments(
    logistic.build_estimator("pathwise"),
    f,
    logistic.dist_builder,
    params,
    jax.random.key(1),
    num_samples=1,
    num_repeats=1000,
  )
  for label in ("measure-valued",):
    m = sfe.diagnostics.gradient_moments(
      logistic.build_estimator(label),
      f,
      logistic.dist_builder,
      params,
      jax.random.key(2),
      num_samples=124,  # 4 D
      num_repeats=1000,
    )
    for name in logistic.PARAM_NAMES:
      se = np.sqrt(np.asarray(m.std_error[name]) ** 2 + np.asarray(ref.std_error[name]) ** 2)
      z = np.abs(np.asarray(m.mean[name]) - np.asarray(ref.mean[name])) / np.maximum(se, 1e-6)
      assert z.max() < 5.5, (label, name, z.max())


@pytest.fixture(scope="module")
def tiny_records():
  cells = logistic.cells(TINY)
  ids = [cid for cid, _ in cells]
  assert ids == [
    "logistic/training/pathwise",
    "logistic/training/score_function_ma",
    "logistic/training/measure_valued",
  ]
  assert ids == [cid for cid, _ in logistic.cells(TINY)]
  assert len(logistic.cells(logistic.PRESETS["full"])) == len(logistic.ESTIMATORS) == 7
  return measure_cells(cells)


@pytest.fixture(scope="module")
def pathwise_again(tiny_records):
  """The pathwise cell measured a second time in the same process (after ``tiny_records``)."""
  return dict(logistic.cells(TINY))["logistic/training/pathwise"]()[0]


def test_records(tiny_records):
  for r in tiny_records.values():
    assert r["suite"] == "logistic" and r["kind"] == "training" and r["steps"] == 8
    assert [c[0] for c in r["curve"]] == [0, 4, 8]
    assert all(math.isfinite(c[1]) and 0 <= c[2] <= 1 for c in r["curve"])
    assert r["final_elbo"] == r["curve"][-1][1] and r["final_accuracy"] == r["curve"][-1][2]
    assert [c["step"] for c in r["variance"]] == [0, 8]
    for c in r["variance"]:
      for name in logistic.PARAM_NAMES:
        assert 0 < c[f"var_{name}_avg"] <= c[f"var_{name}_max"]
        assert c[f"work_normalised_variance_{name}"] == pytest.approx(c[f"var_{name}_avg"] * c["seconds_per_estimate"])
      assert c["seconds_per_estimate"] > 0
  pw = tiny_records["logistic/training/pathwise"]
  assert pw["evaluations"] == 16 and pw["single_sample_evaluations"] == 1
  mv = tiny_records["logistic/training/measure_valued"]
  assert mv["samples_per_step"] == 1 and mv["evaluations_per_sample"] == 124 and mv["evaluations"] == 124
  assert logistic.coefficient_evaluations("measure-valued + delta", 31) == 10 * 124
  assert logistic.coefficient_evaluations("pathwise + delta", 31) == 10
  assert logistic.coefficient_evaluations("pathwise", 31) == 0
  # 8 pathwise SGD steps from the prior already improve the ELBO a lot (about -1100 -> -350).
  assert pw["curve"][-1][1] > pw["curve"][0][1] + 200 and pw["final_accuracy"] > 0.85
  # Pathwise beats the plain-baseline score function by orders of magnitude on the mean's variance.
  sf = tiny_records["logistic/training/score_function_ma"]
  assert pw["variance"][0]["var_mean_avg"] * 10 < sf["variance"][0]["var_mean_avg"]
  # Step 0 is the same initial q for every estimator: the same ELBO key gives the same ELBO.
  assert pw["curve"][0][1] == sf["curve"][0][1]


def test_cells_are_reproducible(tiny_records, pathwise_again):
  first = tiny_records["logistic/training/pathwise"]
  assert pathwise_again["curve"] == first["curve"]
  assert pathwise_again["variance"][-1]["var_mean_avg"] == first["variance"][-1]["var_mean_avg"]


def test_timed_figures_exclude_compilation(tiny_records, pathwise_again):
  first = tiny_records["logistic/training/pathwise"]
  for r in tiny_records.values():
    # Compilation is timed apart; the timed figures (8 tiny SGD steps, batches of 8 estimates) are far shorter.
    assert 0 < r["seconds"] < 0.5 * r["compile_seconds"], r
    for c in r["variance"]:
      assert 0 < c["seconds_per_estimate"] * r["num_repeats"] < 0.5 * r["compile_seconds"], (r["estimator"], c)
  # The same cell twice in one process (every cell compiles its own programs): the first timed figures are not
  # much slower than the second (they would be by the compile time if they included it); the absolute slack
  # absorbs the noise of millisecond timings on a loaded machine.
  assert first["seconds"] <= 5 * pathwise_again["seconds"] + 0.05, (first["seconds"], pathwise_again["seconds"])
  for c1, c2 in zip(first["variance"], pathwise_again["variance"]):
    assert c1["seconds_per_estimate"] <= 5 * c2["seconds_per_estimate"] + 0.05 / TINY.num_repeats, (c1, c2)


def _as_json(records):
  from benchmarks import report

  return [json.loads(json.dumps(report.plain(r))) for r in records]


def test_to_markdown(tiny_records):
  records = _as_json(tiny_records.values())
  md = logistic.to_markdown(records, TINY, None)
  assert "## Final ELBO and accuracy" in md and "## Variance of single-sample" in md
  assert "compile seconds" in md
  assert "not run" not in md
  partial = [dict(r) for r in records if r["estimator"] != "pathwise"]
  partial[0]["final_elbo"] = "nan"
  partial[0]["curve"] = [[0, "nan", "nan"]]
  md2 = logistic.to_markdown(partial, TINY, None)
  assert "not run" in md2 and "nan" in md2
  assert logistic.to_markdown([], TINY, None).count("not run") > 0


def test_plot(tiny_records, tmp_path):
  paths = logistic.plot(_as_json(tiny_records.values()), TINY, str(tmp_path))
  assert [os.path.basename(p) for p in paths] == ["logistic_elbo.png", "logistic_variance.png"]
  for path in paths:
    with open(path, "rb") as fh:
      assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
  assert logistic.plot([], TINY, str(tmp_path / "empty")) == []


def test_bad_config():
  with pytest.raises(ValueError):
    logistic.cells(dataclasses.replace(TINY, estimators=("nope",)))
  with pytest.raises(ValueError):
    logistic.cells(dataclasses.replace(TINY, log_every=3))
  with pytest.raises(ValueError, match="variance_every"):
    dataclasses.replace(TINY, variance_every=0).check()
  with pytest.raises(ValueError, match="batch_size"):
    dataclasses.replace(TINY, batch_size=570).check()
