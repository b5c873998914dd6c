"""The CartPole policy-gradient benchmark (benchmarks/rl/): rollouts, variance measurement, cells end to end."""

from __future__ import annotations

import dataclasses
import json
import math
import os

import jax
import numpy as np
import pytest

import sfe_jax.rl as sfe_rl

pytest.importorskip("gymnax")

from benchmarks import (  # noqa: E402
  report,
  rl,
  store,
)

TINY = dataclasses.replace(
  rl.PRESETS["quick"],
  horizon=20,
  hidden=8,
  reinforce_batch=4,
  critic_steps=2,
  ppo_batch=4,
  ppo_epochs=1,
  ppo_minibatches=2,
  eval_every=2,
  eval_episodes=4,
  max_env_steps=1,
  variance_batch=3,
  num_repeats=3,
  overhead_batch=3,
  overhead_repeats=2,
)


def test_rollout_mask_and_returns():
  env, env_params = rl.make_env()
  assert env_params.max_steps_in_episode == 500

  @jax.jit
  def compute(k0, k1):
    params = rl.init_params(k0, 8)
    batch = rl.rollout(env, env_params, params["policy"], k1, 6, 60)
    returns = rl.episode_returns(batch)
    discounted = sfe_rl.discounted_returns(batch.rewards, batch.mask, 1.0)
    return batch, returns, discounted, rl.bootstrap_value(params["critic"], batch)

  batch, returns, discounted, boot = compute(jax.random.key(0), jax.random.key(1))
  mask = np.asarray(batch.mask)
  rewards = np.asarray(batch.rewards)
  terminated = np.asarray(batch.terminated)
  assert mask.shape == rewards.shape == terminated.shape == (6, 60) and batch.obs.shape == (6, 60, 4)
  assert set(np.unique(mask)) <= {0.0, 1.0} and np.all(np.diff(mask, axis=1) <= 0)  # a valid prefix
  lengths = mask.sum(axis=1).astype(int)
  assert np.all(lengths >= 1)
  # CartPole pays 1 per step: the return is the episode length, and every valid reward is 1.
  np.testing.assert_array_equal(np.asarray(returns), lengths)
  assert np.all(rewards[mask == 1] == 1.0)
  for b, n in enumerate(lengths):
    # The episode terminates at its last valid step (unless the horizon cut it off) and not before.
    assert not terminated[b, : n - 1].any()
    assert terminated[b, n - 1] or n == 60
  # A near-uniform random policy drops the pole in ~20 steps: most episodes end before 60.
  assert (lengths < 60).sum() >= 3
  # The discounted return at t = 0 (the library's) with gamma = 1 is the length too.
  g = np.asarray(discounted)
  np.testing.assert_allclose(g[:, 0], lengths)
  # Bootstrap only for the episodes cut off by the horizon.
  boot = np.asarray(boot)
  assert np.all(boot[lengths < 60] == 0)


def test_variance_measurement_is_reproducible():
  env, env_params = rl.make_env()
  params = rl.init_params(jax.random.key(0), 8)
  moments = jax.jit(lambda p, k: rl.gradient_moments(env, env_params, TINY, p, k))
  a = jax.device_get(moments(params, jax.random.key(5)))
  b = jax.device_get(moments(params, jax.random.key(5)))
  c = jax.device_get(moments(params, jax.random.key(6)))
  np.testing.assert_array_equal(a["total_variance"], b["total_variance"])
  np.testing.assert_array_equal(a["mean_sq_norm"], b["mean_sq_norm"])
  assert not np.array_equal(a["total_variance"], c["total_variance"])
  assert a["total_variance"].shape == (len(rl.ESTIMATORS),)
  assert np.all(a["total_variance"] >= 0) and np.all(np.isfinite(a["mean_sq_norm"]))
  assert 1 <= float(a["env_steps_per_batch"]) <= TINY.variance_batch * TINY.horizon


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  out = tmp_path_factory.mktemp("rl")
  lines = []
  result = rl.run(TINY, str(out), log=lines.append)
  return out, result, lines


def test_records(tiny_run):
  _, result, _ = tiny_run
  records = [r for r in result["records"] if r["kind"] == "training"]
  assert [r["method"] for r in records] == list(rl.METHODS)
  prefix = f"{records[0]['platform']}/{store.config_hash(TINY)}"
  assert [r["cell"] for r in records] == [f"{prefix}/{rl.cell_id(m, 0)}" for m in rl.METHODS]
  for r in records:
    assert r["suite"] == "rl" and r["kind"] == "training" and r["horizon"] == 20
    curve = r["curve"]
    # max_env_steps = 1: the initial evaluation, one segment of eval_every updates, the final evaluation.
    assert len(curve) == 2 and r["updates"] == TINY.eval_every
    assert [c[0] for c in curve] == [0, r["env_steps"]]
    # Each update runs reinforce_batch / ppo_batch episodes of 1 to horizon valid steps.
    assert TINY.eval_every * 4 <= r["env_steps"] <= TINY.eval_every * 4 * TINY.horizon
    assert curve[0][2] == "nan" and 1 <= curve[1][2] <= TINY.horizon  # nan is stored as a string
    for c in curve:
      assert 1 <= c[3] <= c[1] <= TINY.horizon and c[4] >= 0
    assert r["solved"] == any(c[1] >= TINY.horizon for c in curve)
    if r["solved"]:
      assert r["env_steps_to_solve"] in [c[0] for c in curve]
    assert r["wall_seconds"] >= r["seconds"] >= 0
    checkpoints = [v["checkpoint"] for v in r["variance"]]
    assert checkpoints == sorted(set(checkpoints)) and checkpoints[0] == 0
    for v in r["variance"]:
      assert v["env_steps"] == curve[v["checkpoint"]][0]
      assert 1 <= v["env_steps_per_batch"] <= TINY.variance_batch * TINY.horizon
      for name in rl.ESTIMATORS:
        e = v[name]
        assert math.isfinite(e["total_variance"]) and e["total_variance"] >= 0
        assert math.isfinite(e["mean_sq_norm"]) and e["mean_sq_norm"] >= 0
  # The methods of one run start from the same networks: the same initial evaluation (the same key).
  assert len({json.dumps(r["curve"][0]) for r in records}) == 1


def test_outputs_and_resume(tiny_run, monkeypatch):
  out, result, lines = tiny_run
  names = sorted(p.name for p in out.iterdir())
  assert names == ["rl.csv", "rl.json", "rl.jsonl", "rl.md", "rl.png", "rl_variance.png"]
  for name in ("rl.png", "rl_variance.png"):
    assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  md = (out / "rl.md").read_text()
  assert "## Solved?" in md and "## Learning curves" in md and "## Gradient variance" in md
  assert "not run" not in md and "PPO (first step)" in md
  data = json.loads((out / "rl.json").read_text())
  assert data["meta"]["suite"] == "rl" and len(data["records"]) == len(rl.METHODS) + 2
  assert len([line for line in lines if "done" in line]) == len(rl.METHODS) + 1
  assert "## Overhead against hand-written JAX" in md and "compile seconds" in md and "sfe_jax compile s" in md

  def fail(*args, **kwargs):
    raise AssertionError("a finished cell was recomputed")

  monkeypatch.setattr(rl.measure, "measure_training", fail)
  monkeypatch.setattr(rl.measure, "measure_overhead", fail)
  again = rl.run(TINY, str(out), log=lambda line: None)
  assert again["records"] == result["records"]


def test_timed_seconds_exclude_compilation(tiny_run):
  # Compilation is timed apart: one segment of compiled updates on tiny rollouts takes far less time than
  # compiling the cell's programs, so a training time that included a compilation would be at least that.
  _, result, _ = tiny_run
  for r in (r for r in result["records"] if r["kind"] == "training"):
    assert 0 < r["seconds"] < 0.5 * r["compile_seconds"], (r["method"], r["seconds"], r["compile_seconds"])
    assert r["curve"][-1][4] == r["seconds"]  # the curve's seconds are the same training seconds
    assert r["wall_seconds"] >= r["compile_seconds"] + r["seconds"]  # the wall clock includes everything
  for r in (r for r in result["records"] if r["kind"] == "overhead"):
    assert 0 < r["sfe_seconds"] < 0.5 * r["sfe_compile_seconds"]
    assert 0 < r["hand_seconds"] < 0.5 * r["hand_compile_seconds"]


def _as_json(records):
  return [json.loads(json.dumps(report.plain(r))) for r in records]


def test_to_markdown_and_plot_with_missing_cells(tiny_run, tmp_path):
  _, result, _ = tiny_run
  records = _as_json(result["records"])
  partial = [r for r in records if r.get("method") != "PPO" and r.get("loss") != "PPO"]
  md = rl.to_markdown(partial, TINY, None)
  assert md.count("| PPO | not run |") == 1 and md.count("| PPO | 0 | not run |") == 1
  empty = rl.to_markdown([], TINY, None).splitlines()
  assert sum("| not run |" in line for line in empty) == len(rl.METHODS) + 2  # a row per method and loss
  assert rl.plot([], TINY, str(tmp_path / "empty")) == []
  paths = rl.plot(partial, TINY, str(tmp_path))
  assert [os.path.basename(p) for p in paths] == ["rl.png", "rl_variance.png"]


def test_overhead_record(tiny_run):
  _, result, _ = tiny_run
  overhead = [r for r in result["records"] if r["kind"] == "overhead"]
  assert [r["loss"] for r in overhead] == ["REINFORCE + leave-one-out", "PPO"]
  assert all(r["cell"] == f"{r['platform']}/{store.config_hash(TINY)}/rl/overhead" for r in overhead)
  for r in overhead:
    assert r["repeats"] == 2 and r["episodes"] == 3 and r["sfe_seconds"] > 0 and r["hand_seconds"] > 0
    assert r["relative_diff"] < 1e-5  # the hand-written gradient is the library's


def test_hand_written_losses_match_the_library():
  # Not only equal to each other: a change in the maths (gamma) must show, else the agreement check is vacuous.
  env, env_params = rl.make_env()
  functions = rl.overhead_functions(TINY)
  other = rl.overhead_functions(dataclasses.replace(TINY, gamma=0.9))
  names = ("REINFORCE + leave-one-out", "PPO")

  @jax.jit
  def gradients(keys):
    params = rl.init_params(keys[0], 8)
    batch = rl.rollout(env, env_params, params["policy"], keys[1], 5, 40)
    old = rl.log_probs(params["policy"], batch) + 0.3 * jax.random.normal(keys[2], batch.mask.shape)
    inputs = {**params, "batch": batch, "old_log_probs": old}
    return {
      name: tuple(
        jax.tree.leaves(f[n](inputs, keys[3]))
        for f, n in ((functions, name), (functions, f"{name}/hand"), (other, f"{name}/hand"))
      )
      for name in names
    }

  # Compiled as one program: eagerly, each of the many small operations would compile on its own.
  grads = gradients([jax.random.key(i) for i in range(4)])
  for name in names:
    ours, hand, off = grads[name]
    for a, b in zip(ours, hand):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert max(float(np.max(np.abs(a - c))) for a, c in zip(ours, off)) > 1e-4


def test_checkpoint_indices():
  curve = [[0], [100], [200], [300], [400], [600]]
  assert rl.checkpoint_indices(curve, 600, (0.0, 1 / 3, 2 / 3)) == [0, 2, 4]
  assert rl.checkpoint_indices(curve, 0, (0.0, 1 / 3, 2 / 3)) == [0]


@pytest.mark.parametrize(
  "change",
  [
    {"methods": ("A2C",)},
    {"horizon": 501},
    {"horizon": 0},
    {"ppo_minibatches": 3},
    {"num_repeats": 1},
    {"variance_batch": 1},
    {"gamma": 1.5},
    {"variance_points": (1.5,)},
    {"solve_return": 600.0},
    {"eval_every": 0},
    {"overhead_batch": 1},
    {"overhead_repeats": 0},
    {"seed": "0"},
  ],
)
def test_bad_config(change):
  with pytest.raises(ValueError):
    dataclasses.replace(TINY, **change).check()


def test_presets_are_valid():
  for config in rl.PRESETS.values():
    config.check()
    assert len(rl.cells(config)) == len(rl.METHODS) * config.runs + 1
  assert len(rl.cells(dataclasses.replace(TINY, overhead_batch=0))) == len(rl.METHODS)
  assert rl.solve_threshold(rl.PRESETS["quick"]) == 500
