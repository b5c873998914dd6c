"""The command line and the result store."""

import dataclasses

import pytest

from benchmarks import __main__ as cli
from benchmarks import bernoulli, gaussian, logistic, peers, rl, scale, throughput, vae
from benchmarks import suite as suite_lib
from tests.benchmarks.test_throughput_benchmark import TINY_THROUGHPUT
from tests.benchmarks.test_variance_benchmark import TINY_VARIANCE


def test_cli_help_names_every_suite(capsys):
  with pytest.raises(SystemExit) as exit_info:
    cli.main(["--help"])
  assert exit_info.value.code == 0
  text = capsys.readouterr().out
  for word in ("variance", "bernoulli", "logistic", "vae", "rl", "throughput", "scale", "all", "--quick", "--full"):
    assert word in text


def test_every_registered_suite_follows_the_protocol():
  assert list(suite_lib.REGISTRY)[:2] == ["variance", "throughput"]
  for name in suite_lib.REGISTRY:
    module = suite_lib.load(name)
    assert module.SUITE == name, name
    assert isinstance(module.SUMMARY, str) and len(module.SUMMARY) > 40, name
    assert set(module.PRESETS) == {"quick", "full"}, name
    for preset in module.PRESETS.values():
      assert isinstance(preset, suite_lib.SuiteConfig), name
      assert dataclasses.is_dataclass(preset) and preset.__dataclass_params__.frozen, name
      preset.check()
    for attribute in ("cells", "to_markdown", "plot", "run"):
      assert callable(getattr(module, attribute)), (name, attribute)
    assert all(isinstance(o, suite_lib.Option) for o in module.OPTIONS), name
  with pytest.raises(ValueError, match="unknown suite 'nope'"):
    suite_lib.load("nope")


def test_a_bad_setting_is_refused_before_any_cell_runs(tmp_path):
  config = dataclasses.replace(TINY_VARIANCE, seed=1.5)
  with pytest.raises(ValueError, match="seed must be an integer"):
    gaussian.run(config, str(tmp_path))
  assert not list(tmp_path.iterdir())


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

  suites = {name: suite_lib.load(name) for name in suite_lib.REGISTRY}
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
  from tests.benchmarks import test_peers_benchmark, test_scale_benchmark  # noqa: PLC0415

  monkeypatch.setitem(scale.PRESETS, "quick", test_scale_benchmark.TINY)
  monkeypatch.setitem(peers.PRESETS, "quick", test_peers_benchmark.TINY)
  assert cli.main(["all", "--quick", "--out", str(tmp_path / "out")]) == 0
  names = {p.name for p in (tmp_path / "out").iterdir()}
  for suite in suite_lib.REGISTRY:
    assert {f"{suite}.{ext}" for ext in ("md", "csv", "json", "jsonl")} <= names
    assert any(n.startswith(suite) and n.endswith(".png") for n in names), suite
  assert "total" in capsys.readouterr().out


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


def test_the_gpu_script_parses_and_runs_the_registered_suites():
  import pathlib  # noqa: PLC0415
  import subprocess  # noqa: PLC0415

  script = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "gpu.sh"
  subprocess.run(["bash", "-n", str(script)], check=True)
  text = script.read_text()
  for name in ("throughput", "scale"):
    assert name in suite_lib.REGISTRY and f"-m benchmarks {name} " in text
