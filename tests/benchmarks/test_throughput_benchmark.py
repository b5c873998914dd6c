"""The throughput suite: the hand-written baselines, and the suite end to end."""

import dataclasses
import json
import math

import numpy as np
import pytest

from benchmarks import throughput, timing

# N = 16 with chunks of 8, and sharded over every device JAX sees (one CPU device in the test process).
TINY_THROUGHPUT = throughput.ThroughputConfig(
  dims=(4,), sample_sizes=(16,), repeats=3, warmup=1, min_seconds=0.0, chunk_size=8
)


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
  exact = jax.jit(
    lambda p, k: sfe.value_and_grad(sfe.enumerate(), throughput.f_bits, throughput.bernoulli_builder, p, k)[1]
  )(params, jax.random.key(0))["logits"]
  hand = jax.jit(jax.vmap(throughput.hand_function(name, 2), in_axes=(None, 0)))
  grads = np.asarray(hand(params, jax.random.split(jax.random.key(1), 20_000))[1]["logits"])
  se = grads.std(axis=0) / np.sqrt(grads.shape[0])
  assert np.all(np.abs(grads.mean(axis=0) - np.asarray(exact)) <= 5 * se + 1e-6)


# By default a subset with every kind of row (hand-written baselines, measure-valued, an objective, a discrete
# estimator); `make test-full` runs every estimator.
_THROUGHPUT_SUBSET = ("score_function", "pathwise", "measure_valued", "iwae", "disarm")


def _expected_rows(config):
  """``(estimator, N, mode)`` of every record, in order: the chunked and sharded rows after their plain one."""
  devices = len(throughput.sharding_devices())
  rows = []
  for n in config.sample_sizes:
    for e in (e for e in throughput.ESTIMATORS if e in config.estimators):
      rows.append((e, n, "unchunked"))
      if e in throughput.MODE_ESTIMATORS and config.chunk_size is not None and config.chunk_size < n:
        rows.append((e, n, "chunked"))
      if e in throughput.MODE_ESTIMATORS and config.sharded and n % devices == 0:
        rows.append((e, n, "sharded"))
  return rows


@pytest.fixture(scope="module")
def subset_run(tmp_path_factory):
  """One run of the default subset, shared by the end-to-end test and the test of the chunked and sharded rows."""
  out = tmp_path_factory.mktemp("throughput")
  config = dataclasses.replace(TINY_THROUGHPUT, estimators=_THROUGHPUT_SUBSET)
  return out, config, throughput.run(config, str(out), log=lambda line: None)


def test_throughput_suite_end_to_end(subset_run):
  _check_end_to_end(*subset_run)


@pytest.mark.slow
def test_throughput_suite_end_to_end_every_estimator(tmp_path):
  config = dataclasses.replace(TINY_THROUGHPUT, estimators=throughput.ESTIMATORS)
  _check_end_to_end(tmp_path, config, throughput.run(config, str(tmp_path), log=lambda line: None))


def _check_end_to_end(tmp_path, config, result):
  records = result["records"]
  assert [(r["estimator"], r["num_samples"], r["mode"]) for r in records] == _expected_rows(config)
  assert {r["dim"] for r in records} == {4}
  for r in records:
    fields = ("sfe_seconds", "forward_seconds", "sfe_over_forward", "sfe_compile_seconds", "forward_compile_seconds")
    if r["estimator"] in throughput.HAND_WRITTEN:
      fields += ("hand_seconds", "sfe_over_hand")
    else:
      assert r["hand_seconds"] is None and r["sfe_over_hand"] is None
    for field in fields:
      assert math.isfinite(r[field]) and r[field] > 0, field
    assert r["sfe_temp_bytes"] >= 0 and r["forward_temp_bytes"] >= 0
    assert r["compilations_while_timed"] == 0
    if r["estimator"] in throughput.HAND_WRITTEN and r["estimator"] not in ("arm", "disarm") and r["mode"] != "chunked":
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


def test_chunked_and_sharded_rows(subset_run):
  # The rows of the plain call's estimator with chunk_size= and sample_sharding=, in the same interleaved run.
  tmp_path, config, result = subset_run
  records = [r for r in result["records"] if r["estimator"] in throughput.MODE_ESTIMATORS]
  devices = throughput.sharding_devices()
  by_mode = {(r["estimator"], r["mode"]): r for r in records}
  assert set(by_mode) == {(e, m) for e in throughput.MODE_ESTIMATORS for m in throughput.MODES}
  markdown = (tmp_path / "throughput.md").read_text()
  for name in throughput.MODE_ESTIMATORS:
    plain, chunked, sharded = (by_mode[name, m] for m in throughput.MODES)
    assert plain["chunk_size"] is None and plain["sharding_devices"] is None and plain["sfe_over_unchunked"] is None
    assert chunked["chunk_size"] == 8 and chunked["sharding_devices"] is None
    assert sharded["chunk_size"] is None and sharded["sharding_devices"] == len(devices)
    assert sharded["sharding_platform"] == devices[0].platform
    for r in (chunked, sharded):
      # Seconds, the ratio to the unchunked hand-written function of the same run, and XLA's temporary bytes.
      assert r["hand_seconds"] == plain["hand_seconds"] and r["forward_seconds"] == plain["forward_seconds"]
      assert r["sfe_over_hand"] == pytest.approx(r["sfe_seconds"] / plain["hand_seconds"])
      assert r["sfe_over_unchunked"] == pytest.approx(r["sfe_seconds"] / plain["sfe_seconds"])
      assert r["sfe_over_unchunked_paired"] > 0 and r["sfe_temp_bytes"] >= 0
    # Chunks draw from their own keys (no comparison); sharded samples are the one-device samples.
    assert chunked["relative_diff_sfe_hand"] is None and sharded["relative_diff_sfe_hand"] < 1e-5
    assert f"| {name} [chunk 8] | 4 | 16 |" in markdown
    assert f"| {name} [sharded over {len(devices)} {devices[0].platform} device(s)] | 4 | 16 |" in markdown
  ((cell_id, _),) = throughput.cells(config)
  assert cell_id.endswith(f"/N=16/{'+'.join(_THROUGHPUT_SUBSET)}/repeats=3/chunk=8/sharded={len(devices)}")


def test_modes_skip_sizes_they_do_not_apply_to():
  config = dataclasses.replace(TINY_THROUGHPUT, sample_sizes=(8, 17))
  assert [throughput.measure.chunked(config, n) for n in (8, 17)] == [False, True]  # a chunk of N is unchunked
  devices = len(throughput.sharding_devices())
  assert throughput.measure.sharded_devices(config, 17 * devices) == devices
  assert throughput.measure.sharded_devices(dataclasses.replace(config, sharded=False), 16) is None
  if devices > 1:
    assert throughput.measure.sharded_devices(config, devices + 1) is None
  assert [
    cid.split("/")[-2:] for cid, _ in throughput.cells(dataclasses.replace(config, chunk_size=None, sharded=False))
  ] == [["chunk=None", "sharded=none"]] * 2
  with pytest.raises(ValueError, match="chunk_size"):
    dataclasses.replace(config, chunk_size=0).check()


def test_timed_figures_exclude_compilation():
  # Two identical measurements in one process: the first compiles from scratch, the second may reuse JAX's
  # caches. Were compilation inside a timed figure, the first would be much slower; it is recorded apart.
  import jax

  params, key = throughput.initial_params("normal", 4), jax.random.key(0)
  functions = {
    "sfe": throughput.sfe_function("pathwise", 16, 4, chunk_size=8),
    "forward": throughput.forward_function(16),
  }
  first, second = (timing.time_interleaved(functions, params, key, repeats=5, warmup=1) for _ in range(2))
  for timings in (first, second):
    for r in timings.values():
      assert r["compilations_while_timed"] == 0 and r["compile_seconds"] > 0 and len(r["times"]) == 5
  for name in functions:
    # The first timed run (where a lazy compilation would land) is far below the compilation itself...
    assert first[name]["times"][0] < 0.5 * first[name]["compile_seconds"]
    # ...and the first measurement is not much slower than the second.
    assert first[name]["median_seconds"] < 3 * second[name]["median_seconds"] + 0.01  # 10 ms of noise allowed
  # The counter sees a compilation when there is one (so 0 above means none happened).
  with timing.count_compilations() as events:
    jax.jit(lambda x: x + 1.0)(1.0)
  assert events
