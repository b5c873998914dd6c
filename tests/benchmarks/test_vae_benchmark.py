"""The discrete-VAE benchmark (benchmarks/vae/): model pieces, cells end to end, honest timing, report and plots."""

from __future__ import annotations

import dataclasses
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import report, vae
from tests.benchmarks.helpers import measure_cells

MNIST = "/work/shared/data/binarized_mnist/binarized_mnist.npz"

TINY = dataclasses.replace(
  vae.PRESETS["quick"],
  models=("nonlinear",),
  estimators=("DisARM", "RELAX"),
  latent=6,
  hidden=12,
  steps=8,
  batch_size=10,
  log_every=4,
  checkpoint_every=8,
  num_test=20,
  iw_samples=10,
  variance_repeats=4,
  learning_rate=1e-3,
)


# The 8 configurations of 3 latent bits, and a 5-pixel image, for the exact (enumerated) checks.
BITS3 = np.array([[(i >> j) & 1 for j in range(3)] for i in range(8)], np.float32)
X5 = np.array([1.0, 0.0, 1.0, 1.0, 0.0], np.float32)


def _tiny_model_enumerated(model_key):
  """A nonlinear 5-pixel, 3-latent model at X5: params, encoder logits, log p(X5, b) and q(b) over BITS3."""
  params = vae.init_model(model_key, "nonlinear", 5, 3, 4, np.full(5, 0.3))
  logits = vae.encode(params, X5)
  log_joint = jax.vmap(lambda b: vae.log_joint(params, X5, b))(BITS3)
  q = jnp.exp(jax.vmap(lambda b: vae.log_q(logits, b))(BITS3))
  return params, logits, log_joint, q


def test_default_data_is_deterministic_binary_digits():
  data = vae.load_data(None)
  assert [data[k].shape for k in ("train", "valid", "test")] == [(1200, 64), (297, 64), (300, 64)]
  assert set(np.unique(data["train"])) == {0.0, 1.0}
  from sklearn.datasets import load_digits

  raw = (load_digits().data >= 8).astype(np.float32)
  assert sorted(map(tuple, np.concatenate([data["train"], data["valid"], data["test"]]))) == sorted(map(tuple, raw))


def test_log_joint_entropy_and_iw_bound():
  # Exact log p(x) by enumerating the 8 latent configurations.
  @jax.jit
  def compute(model_key, bound_key):
    params, logits, log_joint, q = _tiny_model_enumerated(model_key)
    iw, _ = vae.bounds(params, X5, bound_key, 4000)
    out = {"log_px": jax.nn.logsumexp(log_joint), "sum_q": jnp.sum(q), "entropy": vae.entropy(logits)}
    return {**out, "q_entropy": -jnp.sum(q * jnp.log(q)), "q_log_joint": jnp.sum(q * log_joint), "iw": iw}

  out = {k: float(v) for k, v in compute(jax.random.key(0), jax.random.key(1)).items()}
  log_px = out["log_px"]
  assert out["sum_q"] == pytest.approx(1.0, abs=1e-5)
  assert out["entropy"] == pytest.approx(out["q_entropy"], abs=1e-5)
  elbo = out["q_log_joint"] + out["entropy"]
  assert elbo <= log_px + 1e-5
  # One draw of the IW bound is random (a lower bound only in expectation); with 4000 samples it is near log p(x).
  assert out["iw"] == pytest.approx(log_px, abs=0.02)


def test_relax_control_starts_at_the_mean_of_f():
  # f(b) = -log p(x, b), without the entropy (a control offset by H(q) adds (H p(1-p))^2 per coordinate).
  @jax.jit
  def compute(model_key, key):
    params, _, log_joint, q = _tiny_model_enumerated(model_key)
    mean_f = -jnp.sum(q * log_joint)
    offsets = jax.vmap(lambda k: vae.control_offset(params, X5[None], k))(jax.random.split(key, 20_000))
    return mean_f, jnp.mean(offsets), jnp.std(offsets)

  mean_f, mean, std = (float(v) for v in compute(jax.random.key(0), jax.random.key(1)))
  assert mean == pytest.approx(mean_f, abs=5 * std / math.sqrt(20_000))


def test_estimators_are_unbiased_for_the_encoder_logits():
  # The per-example loss's logit gradient, averaged over keys, matches the exact gradient of -ELBO (enumeration).
  x = jnp.array([1.0, 0.0, 0.0, 1.0])

  @jax.jit
  def model_and_exact(key):
    params = vae.init_model(key, "linear", 4, 3, 4, np.full(4, 0.4))
    logits = vae.encode(params, x) + jnp.array([0.5, -1.0, 0.3])

    def neg_elbo(l):
      q = jnp.exp(jax.vmap(lambda b: vae.log_q(l, b))(BITS3))
      return -(jnp.sum(q * jax.vmap(lambda b: vae.log_joint(params, x, b))(BITS3)) + vae.entropy(l))

    return params, logits, jax.grad(neg_elbo)(logits)

  params, logits, exact = model_and_exact(jax.random.key(2))
  exact = np.asarray(exact)
  for label in ("LOO", "DisARM", "RELAX"):
    state = None
    if label == "RELAX":
      cp = vae.init_control(jax.random.key(3), 3, 4, 5.0)
      cp["w2"] = jnp.full(vae.RELAX_HIDDEN, 0.3)
      state = vae.make_estimator(label, TINY, x, cp).init({"logits": logits})
    g = jax.jit(
      jax.vmap(jax.grad(lambda l, k: vae.per_example_loss(label, TINY, params, state, x, l, k)[0]), (None, 0))
    )(logits, jax.random.split(jax.random.key(4), 6_000))
    g = np.asarray(g, np.float64)
    se = g.std(0, ddof=1) / math.sqrt(g.shape[0])
    assert np.all(np.abs(g.mean(0) - exact) <= 5 * se + 1e-4), (label, g.mean(0), exact, se)


@pytest.fixture(scope="module")
def tiny_records():
  cells = vae.cells(TINY)
  ids = [cid for cid, _ in cells]
  assert ids == ["vae/nonlinear/DisARM", "vae/nonlinear/RELAX"]
  assert ids == [cid for cid, _ in vae.cells(TINY)]  # stable
  return measure_cells(cells)


@pytest.fixture(scope="module")
def repeated_record():
  """A second measurement of the DisARM cell in the same process (the reproducibility and timing tests)."""
  return dict(vae.cells(TINY))["vae/nonlinear/DisARM"]()[0]


def test_records(tiny_records):
  for cid, r in tiny_records.items():
    assert r["suite"] == "vae" and r["kind"] == "training" and cid == f"vae/{r['model']}/{r['estimator']}"
    assert r["evaluations"] == 2 and r["latent"] == 6 and r["pixels"] == 64
    assert [c[0] for c in r["curve"]] == [4, 8]
    assert [c[0] for c in r["checkpoints"]] == [0, 8]
    for c in r["checkpoints"]:
      assert all(math.isfinite(v) for v in c)
      assert c[1] >= c[2] - 5.0  # IW bound is not far below the one-sample ELBO (noisy on 20 images)
      assert c[1] < 0 and c[3] > 0
    assert r["final_test_iw"] == r["checkpoints"][-1][1]
    assert r["final_train_elbo"] == r["curve"][-1][1] < 0
    assert r["seconds"] > 0 and r["seconds_per_step"] == r["seconds"] / r["steps"]


def test_cells_are_reproducible(tiny_records, repeated_record):
  cid = "vae/nonlinear/DisARM"
  assert repeated_record["curve"] == tiny_records[cid]["curve"]
  assert repeated_record["checkpoints"] == tiny_records[cid]["checkpoints"]


def test_training_seconds_exclude_compilation(tiny_records, repeated_record):
  # Compilation is timed apart: 8 compiled steps of a tiny model take far less time than compiling them, so a
  # training time that included the compilation would be at least the compile time.
  first, second = tiny_records["vae/nonlinear/DisARM"], repeated_record
  for r in [*tiny_records.values(), second]:
    assert 0 < r["seconds"] < 0.5 * r["compile_seconds"], (r["seconds"], r["compile_seconds"])
    assert r["wall_seconds"] >= r["compile_seconds"] + r["seconds"]
  # Two identical measurements in one process (each compiles its own programs): the second is not much faster
  # than the first, as it would be (by about compile / training time, ~1000 here) if the first alone had paid a
  # compilation or a first call's costs. The margin absorbs the scheduling noise of millisecond timings.
  assert second["seconds"] > first["seconds"] / 50, (first["seconds"], second["seconds"])


@pytest.mark.skipif(not os.path.exists(MNIST), reason="binarized MNIST not present")
def test_mnist_data_path():
  config = dataclasses.replace(TINY, data_path=MNIST, models=("linear",), estimators=("LOO",), max_train=200)
  ((cid, measure),) = vae.cells(config)
  r = measure()[0]
  assert r["pixels"] == 784 and r["num_train"] == 200 and r["dataset"] == "binarized_mnist.npz"
  assert all(math.isfinite(v) for c in r["checkpoints"] for v in c)


def _as_json(records):
  return [json.loads(json.dumps(report.plain(r))) for r in records]


def test_to_markdown(tiny_records):
  records = _as_json(tiny_records.values())
  md = vae.to_markdown(records, TINY, None)
  assert "## Final values" in md and "## Ordering at equal steps" in md and "not run" not in md
  assert "compile seconds" in md and "Training seconds: the compiled training steps only" in md
  assert md.count("* nonlinear, training ELBO: ") == 1 and "DisARM (" in md
  partial = [r for r in records if r["estimator"] != "RELAX"]
  partial[0] = {**partial[0], "final_test_iw": "nan", "final_grad_variance": "nan"}
  md2 = vae.to_markdown(partial, TINY, None)
  assert "not run" in md2 and "nan" in md2
  assert vae.to_markdown([], TINY, None).count("not run") > 0


def test_plot(tiny_records, tmp_path):
  paths = vae.plot(_as_json(tiny_records.values()), TINY, str(tmp_path))
  assert len(paths) == 2
  for path in paths:
    with open(path, "rb") as fh:
      assert fh.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
  "change",
  [
    {"models": ("deep",)},
    {"estimators": ("VIMCO",)},
    {"steps": 10},
    {"checkpoint_every": 6},
    {"checkpoint_every": 0},
    {"variance_repeats": 1},
    {"seed": 1.5},
  ],
)
def test_bad_config(change):
  with pytest.raises(ValueError):
    dataclasses.replace(TINY, **change).check()


def test_presets_and_option():
  for config in vae.PRESETS.values():
    config.check()
  assert len(vae.cells(vae.PRESETS["quick"])) == len(vae.MODELS) * len(vae.ESTIMATORS)
  (option,) = vae.OPTIONS
  assert option.flag == "--data" and option.field == "data_path" and option.metavar == "PATH"
  assert option.field in {f.name for f in dataclasses.fields(vae.VAEConfig)}
