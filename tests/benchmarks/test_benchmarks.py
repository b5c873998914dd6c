"""The benchmarks package: exact values against the reference, and each suite end to end in a tiny configuration."""

import csv
import dataclasses
import json
import math

import numpy as np
import pytest

from benchmarks import __main__ as cli
from benchmarks import bernoulli, gaussian, logistic, rl, scale, store, throughput, vae
from tests.gaussian_reference import ROWS

TINY_VARIANCE = gaussian.VarianceConfig(
  num_repeats=2_000,
  optimal_baseline_samples=50,
  optimal_baseline_repeats=200,
  problems=(gaussian.Problem("cos(kx)", 2.0),),
)
TINY_THROUGHPUT = throughput.ThroughputConfig(dims=(4,), sample_sizes=(16,), repeats=3, warmup=1, min_seconds=0.0)


def _reference(problem):
  (row,) = [r for r in ROWS if r.name == problem.family and r.k == problem.k]
  return {"grad": row.grad, "SF": row.var_sf, "SF*": row.var_sf_opt, "PW": row.var_pw, "MVD": row.var_mvd}


def _assert_table_value(computed, tabulated, what):
  # The reference table prints 6 significant digits (and integers exactly).
  assert computed == pytest.approx(tabulated, rel=5e-5, abs=5e-7), f"{what}: {computed} vs table {tabulated}"


def test_problems_are_the_eight_rows_of_the_reference():
  assert [(p.family, p.k) for p in gaussian.PROBLEMS] == [(r.name, r.k) for r in ROWS]


@pytest.mark.parametrize("problem", gaussian.PROBLEMS, ids=lambda p: p.name)
def test_exact_values_equal_the_reference_table(problem):
  ref = _reference(problem)
  exact = gaussian.exact(problem)
  for i, param in enumerate(gaussian.PARAMS):
    _assert_table_value(exact.grad[i], ref["grad"][i], f"dF/d{param}")
    for label in gaussian.WITH_EXACT_VARIANCE:
      _assert_table_value(exact.variance[label][i], ref[label][i], f"Var {label}_{param}")


@pytest.mark.parametrize("problem", gaussian.PROBLEMS[:3], ids=lambda p: p.name)
def test_quadrature_reproduces_the_closed_form_mvd_variance(problem):
  exact = gaussian.exact(problem)
  quadrature = gaussian.mvd_variance_by_quadrature(problem, 1.0, 1.0, exact.grad)
  np.testing.assert_allclose(quadrature, exact.variance["MVD"], rtol=1e-8)


def test_optimal_baseline_excess_shrinks_as_one_over_n():
  problem = gaussian.PROBLEMS[1]
  small, large = gaussian.optimal_baseline_excess(problem, 11), gaussian.optimal_baseline_excess(problem, 101)
  np.testing.assert_allclose(np.array(small) / np.array(large), 10.0, rtol=1e-12)
  assert all(e > 0 for e in small)


@pytest.fixture(scope="module")
def tiny_variance_run(tmp_path_factory):
  """One run of the variance suite, shared by the end-to-end test and the resume test."""
  out, lines = tmp_path_factory.mktemp("variance"), []
  return out, gaussian.run(TINY_VARIANCE, str(out), log=lines.append), lines


def test_variance_suite_end_to_end(tiny_variance_run):
  tmp_path, result, lines = tiny_variance_run
  records = result["records"]
  assert len(records) == len(TINY_VARIANCE.problems) * len(gaussian.ESTIMATORS) * 2
  assert len([line for line in lines if "done" in line]) == len(TINY_VARIANCE.problems) * len(gaussian.ESTIMATORS)
  # The exact column is the reference table's.
  for r in records:
    ref = _reference(gaussian.Problem(r["f"], r["k"]))
    i = gaussian.PARAMS.index(r["param"])
    _assert_table_value(r["exact_grad"], ref["grad"][i], "exact gradient column")
    if r["estimator"] in gaussian.WITH_EXACT_VARIANCE:
      _assert_table_value(r["exact_variance"], ref[r["estimator"]][i], "exact variance column")
    else:
      assert r["exact_variance"] is None and r["variance_ok"]
    expected = {"SF*": TINY_VARIANCE.optimal_baseline_samples, "MVD": 4}.get(r["estimator"], 1)
    assert r["num_samples"] == expected  # evaluations of f: one base sample of MVD costs 4
    assert math.isfinite(r["variance"]) and r["variance_se"] > 0 and r["mean_se"] > 0
    assert isinstance(r["mean_ok"], bool) and isinstance(r["variance_ok"], bool)
    if r["estimator"] == "SF*":
      assert r["expected_variance"] > r["exact_variance"]
    else:
      assert r["expected_variance"] == r["exact_variance"]
  # Files: Markdown with both tables, CSV with one line per record, JSON with meta and records.
  assert sorted(p.name for p in tmp_path.iterdir()) == [
    "variance.csv",
    "variance.json",
    "variance.jsonl",
    "variance.md",
    "variance.png",
  ]
  assert all(r["work_normalised_variance"] > 0 for r in records)
  markdown = (tmp_path / "variance.md").read_text()
  assert "Single-sample variance, measured (exact)" in markdown and "| cos(kx) | 2 | SF | mu |" in markdown
  assert "(0.4411)" in markdown and "(0.2241)" in markdown  # exact SF_mu and MVD_mu of cos(kx), k = 2
  with open(tmp_path / "variance.csv") as fh:
    rows = list(csv.DictReader(fh))
  assert len(rows) == len(records)
  assert float(rows[0]["exact_variance"]) == pytest.approx(records[0]["exact_variance"])
  data = json.loads((tmp_path / "variance.json").read_text())
  assert data["meta"]["suite"] == "variance" and len(data["records"]) == len(records)
  assert data["meta"]["environment"]["platform"] in ("cpu", "gpu", "tpu", "cuda", "rocm")


def test_hand_written_functions_compute_what_sfe_computes():
  import jax
  import jax.numpy as jnp

  params = {"loc": jnp.linspace(-1.0, 1.0, 5), "scale": jnp.linspace(0.5, 2.0, 5)}
  key = jax.random.key(3)
  for name in ("score_function", "pathwise", "gumbel_softmax", "straight_through"):
    p = params if throughput.FAMILY[name] == "normal" else throughput.initial_params("bernoulli", 5)
    ours = jax.jit(throughput.sfe_function(name, 32, 5))(p, key)
    hand = jax.jit(throughput.hand_function(name, 32))(p, key)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), ours, hand)
  value = jax.jit(throughput.forward_function(32))(params, key)
  np.testing.assert_allclose(value, jax.jit(throughput.sfe_function("pathwise", 32, 5))(params, key)[0], rtol=1e-5)


@pytest.mark.parametrize("name", ["arm", "disarm"])
def test_hand_written_antithetic_estimators_are_unbiased(name):
  # Different uniform draws from sfe_jax's (a symmetric bit grid), so compare means with the exact gradient.
  import jax

  import sfe_jax as sfe

  params = throughput.initial_params("bernoulli", 3)
  exact = sfe.value_and_grad(
    sfe.enumerate(), throughput.f_bits, throughput.bernoulli_builder, params, jax.random.key(0)
  )[1]["logits"]
  hand = jax.jit(jax.vmap(throughput.hand_function(name, 2), in_axes=(None, 0)))
  grads = np.asarray(hand(params, jax.random.split(jax.random.key(1), 20_000))[1]["logits"])
  se = grads.std(axis=0) / np.sqrt(grads.shape[0])
  assert np.all(np.abs(grads.mean(axis=0) - np.asarray(exact)) <= 5 * se + 1e-6)


# By default a subset with every kind of row (hand-written baselines, measure-valued, an objective, a discrete
# estimator); `make test-full` runs every estimator.
_THROUGHPUT_SUBSET = ("score_function", "pathwise", "measure_valued", "iwae", "disarm")


@pytest.mark.parametrize(
  "estimators", [_THROUGHPUT_SUBSET, pytest.param(throughput.ESTIMATORS, marks=pytest.mark.slow)]
)
def test_throughput_suite_end_to_end(tmp_path, estimators):
  config = dataclasses.replace(TINY_THROUGHPUT, estimators=estimators)
  result = throughput.run(config, str(tmp_path), log=lambda line: None)
  records = result["records"]
  assert [(r["estimator"], r["num_samples"]) for r in records] == [
    (e, n) for n in config.sample_sizes for e in throughput.ESTIMATORS if e in estimators
  ]
  assert {r["dim"] for r in records} == {4}
  for r in records:
    fields = ("sfe_seconds", "forward_seconds", "sfe_over_forward", "sfe_compile_seconds")
    if r["estimator"] in throughput.HAND_WRITTEN:
      fields += ("hand_seconds", "sfe_over_hand")
    else:
      assert r["hand_seconds"] is None and r["sfe_over_hand"] is None
    for field in fields:
      assert math.isfinite(r[field]) and r[field] > 0, field
    assert r["sfe_temp_bytes"] >= 0 and r["forward_temp_bytes"] >= 0
    if r["estimator"] in throughput.HAND_WRITTEN and r["estimator"] not in ("arm", "disarm"):
      assert r["relative_diff_sfe_hand"] < 1e-5
  assert sorted(p.name for p in tmp_path.iterdir()) == [
    "throughput.csv",
    "throughput.json",
    "throughput.jsonl",
    "throughput.md",
    "throughput.png",
  ]
  assert all(r["samples_per_second"] == pytest.approx(r["num_samples"] / r["sfe_seconds"]) for r in records)
  markdown = (tmp_path / "throughput.md").read_text()
  assert "sfe / hand" in markdown and "score_function" in markdown and "pathwise" in markdown
  data = json.loads((tmp_path / "throughput.json").read_text())
  env = data["meta"]["environment"]
  assert {"jax_version", "platform", "device_kind"} <= set(env)


def test_cli_help_names_every_suite(capsys):
  with pytest.raises(SystemExit) as exit_info:
    cli.main(["--help"])
  assert exit_info.value.code == 0
  text = capsys.readouterr().out
  for word in ("variance", "bernoulli", "logistic", "vae", "rl", "throughput", "scale", "all", "--quick", "--full"):
    assert word in text


def test_cli_rejects_quick_and_full_together(capsys):
  with pytest.raises(SystemExit) as exit_info:
    cli.main(["all", "--quick", "--full"])
  assert exit_info.value.code == 2
  assert "not allowed with" in capsys.readouterr().err


def test_cli_all_runs_every_suite_with_its_preset(tmp_path, monkeypatch, capsys):
  # Each suite's own end-to-end test writes its reports; this checks what `all` adds: every suite, in order,
  # with the preset of the mode and the output directory, and the variance warning summed over suites.
  calls = []

  def fake(module, name, outside):
    def run(config, out, log):
      calls.append((name, config, out))
      log(f"{name} ran")
      meta = {"seconds": 0.0, "outside": outside}
      return {"meta": meta, "markdown": f"# {name}", "paths": {"md": f"{out}/{name}.md"}}

    monkeypatch.setattr(module, "run", run)

  suites = {"variance": gaussian, "bernoulli": bernoulli, "logistic": logistic, "vae": vae, "rl": rl}
  suites["throughput"] = throughput
  suites["scale"] = scale
  for name, module in suites.items():
    fake(module, name, outside=1 if name == "variance" else 0)
  out = str(tmp_path / "out")
  assert cli.main(["all", "--full", "--out", out]) == 0
  assert [c[0] for c in calls] == list(suites)
  assert all(config is suites[name].PRESETS["full"] and o == out for name, config, o in calls)
  text = capsys.readouterr().out
  assert "# rl" in text and "[throughput] done" in text and "total" in text
  assert "WARNING: 1 variance measurements are outside" in text


@pytest.mark.slow
def test_cli_all_writes_every_report(tmp_path, monkeypatch, capsys):
  monkeypatch.setitem(
    gaussian.PRESETS,
    "quick",
    dataclasses.replace(TINY_VARIANCE, problems=TINY_VARIANCE.problems[:1], estimators=("SF", "PW")),
  )
  monkeypatch.setitem(
    throughput.PRESETS, "quick", dataclasses.replace(TINY_THROUGHPUT, sample_sizes=(16,), estimators=("pathwise",))
  )
  monkeypatch.setitem(
    bernoulli.PRESETS,
    "quick",
    dataclasses.replace(
      bernoulli.PRESETS["quick"],
      p0_values=(0.49,),
      p_values=(0.3,),
      num_repeats=200,
      estimators=("ARM",),
      training_p0s=(0.45,),
      training_estimators=("REINFORCE",),
      steps=4,
      log_every=2,
    ),
  )
  # The tiny configurations of the other suites' tests.
  from tests.benchmarks import test_logistic_benchmark, test_rl_benchmark, test_vae_benchmark  # noqa: PLC0415

  monkeypatch.setitem(
    logistic.PRESETS, "quick", dataclasses.replace(test_logistic_benchmark.TINY, estimators=("pathwise",))
  )
  monkeypatch.setitem(
    vae.PRESETS, "quick", dataclasses.replace(test_vae_benchmark.TINY, models=("linear",), estimators=("DisARM",))
  )
  monkeypatch.setitem(rl.PRESETS, "quick", dataclasses.replace(test_rl_benchmark.TINY, methods=("PPO",)))
  from tests.benchmarks import test_scale_benchmark  # noqa: PLC0415

  monkeypatch.setitem(scale.PRESETS, "quick", test_scale_benchmark.TINY)
  assert cli.main(["all", "--quick", "--out", str(tmp_path / "out")]) == 0
  names = {p.name for p in (tmp_path / "out").iterdir()}
  for suite in ("variance", "throughput", "bernoulli", "logistic", "vae", "rl", "scale"):
    assert {f"{suite}.{ext}" for ext in ("md", "csv", "json", "jsonl")} <= names
    assert any(n.startswith(suite) and n.endswith(".png") for n in names), suite
  assert "total" in capsys.readouterr().out


# ----------------------------------------------------------------------------------------------------------
# Results as JSON lines: resume and damaged files.
# ----------------------------------------------------------------------------------------------------------


def _cells(calls):
  def cell(i):
    def measure():
      calls.append(i)
      return [{"estimator": f"e{i}", "value": float(i)}]

    return (f"toy/{i}", measure)

  return [cell(i) for i in range(4)]


def test_store_resumes_after_an_interruption(tmp_path):
  path = str(tmp_path / "toy.jsonl")
  calls = []
  common = store.common_fields(seed=3)
  records = store.run_cells(store.Store(path), _cells(calls)[:2], common, "toy", log=lambda line: None)
  assert calls == [0, 1] and [r["value"] for r in records] == [0.0, 1.0]
  assert all(r["seed"] == 3 and r["jax_version"] and r["device"] for r in records)
  # Simulate an interruption in the middle of writing the third cell: a last line without its newline.
  with open(path, "a") as fh:
    fh.write('{"cell": "cpu/toy/2", "estim')
  notes = []
  resumed = store.Store(path, log=notes.append)
  assert len(resumed.records) == 2 and "incomplete last line" in notes[0]
  calls.clear()
  records = store.run_cells(resumed, _cells(calls), common, "toy", log=lambda line: None)
  assert calls == [2, 3], "finished cells must not be recomputed"
  assert [r["value"] for r in records] == [0.0, 1.0, 2.0, 3.0]
  with open(path) as fh:
    assert [json.loads(line)["value"] for line in fh] == [0.0, 1.0, 2.0, 3.0]


def test_store_refuses_a_corrupt_line(tmp_path):
  path = tmp_path / "toy.jsonl"
  path.write_text('{"cell": "a", "x": 1}\nnot json at all\n{"cell": "b", "x": 2}\n')
  with pytest.raises(ValueError, match=r"toy.jsonl, line 2: not a JSON record"):
    store.Store(str(path))
  path.write_text('{"cell": "a", "x": 1}\n[1, 2]\n')
  with pytest.raises(ValueError, match=r"line 2: expected a JSON object with a 'cell' field"):
    store.Store(str(path))


def test_suites_rebuild_their_reports_from_the_json_lines(tiny_variance_run):
  tmp_path, result, _ = tiny_variance_run
  again = gaussian.run(TINY_VARIANCE, str(tmp_path), log=lambda line: None)
  assert again["records"] == result["records"], "a complete re-run must reuse every cell"
  without_env = lambda md: [line for line in md.splitlines() if "load average" not in line]  # noqa: E731
  assert without_env(again["markdown"]) == without_env(result["markdown"])
  with open(result["paths"]["png0"], "rb") as fh:
    assert fh.read(8) == b"\x89PNG\r\n\x1a\n"


def test_device_flag_reports_a_missing_backend():
  with pytest.raises(SystemExit, match="no GPU backend"):
    cli.select_device("gpu")


def test_cli_passes_data_to_the_vae_suite(monkeypatch, tmp_path):
  seen = {}

  def fake_run(config, out_dir, log):
    seen["config"] = config
    return {"markdown": "", "meta": {"seconds": 0.0}, "paths": {}}

  monkeypatch.setattr(vae, "run", fake_run)
  assert cli.main(["vae", "--data", "/some/mnist.npz", "--out", str(tmp_path)]) == 0
  assert seen["config"].data_path == "/some/mnist.npz"
  assert cli.main(["vae", "--out", str(tmp_path)]) == 0
  assert seen["config"].data_path is None
