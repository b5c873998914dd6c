"""The peers suite: closed forms, each peer's wiring, a skipped peer, and the suite end to end."""

from __future__ import annotations

import dataclasses
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import peers
from benchmarks.peers import measure

TINY = peers.PeersConfig(sizes=((3, 64),), repeats=2, warmup=1, min_seconds=0.0)


def test_closed_form_variances_match_monte_carlo():
  params = peers.initial_params(3)

  @jax.jit
  def single_sample_draws(params, key):
    z = jax.random.normal(key, (400_000, 3))
    x = params["loc"] + params["scale"] * z
    f = peers.cost(x)[:, None]
    return {
      "score_function": {"loc": f * z / params["scale"], "scale": f * (z**2 - 1) / params["scale"]},
      "pathwise": {"loc": 2 * (x - 0.5), "scale": 2 * (x - 0.5) * z},
    }

  draws = single_sample_draws(params, jax.random.key(0))
  exact = peers.exact_gradient(params)
  for estimator, grads in draws.items():
    variance = peers.single_sample_variance(estimator, params)
    for name in ("loc", "scale"):
      g = np.asarray(grads[name], np.float64)
      # The means: within 5 standard errors; the variances: heavy tails for SF, so a loose 10% (a wrong formula is
      # off by far more).
      np.testing.assert_array_less(np.abs(g.mean(0) - exact[name]), 5 * np.sqrt(variance[name] / g.shape[0]))
      np.testing.assert_allclose(g.var(0), variance[name], rtol=0.1)


def test_gradient_errors_measure_in_standard_errors():
  params = peers.initial_params(3)
  exact = peers.exact_gradient(params)
  assert peers.gradient_errors("pathwise", params, exact, 64) == (0.0, pytest.approx(0.188, abs=1e-3), 0.0)
  se = np.sqrt(peers.single_sample_variance("pathwise", params)["scale"] / 64)
  shifted = {"loc": exact["loc"], "scale": exact["scale"] + 6 * se}
  assert peers.gradient_errors("pathwise", params, shifted, 64)[2] == pytest.approx(6.0)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  out = tmp_path_factory.mktemp("peers")
  return out, peers.run(TINY, str(out), log=lambda line: None)


def test_peers_suite_end_to_end(tiny_run):
  out, result = tiny_run
  records = result["records"]
  timed = {(r["peer"], r["estimator"]): r for r in records if r["kind"] == "timing"}
  installed = [p for p in peers.PEERS if peers.missing(p) is None]
  assert set(timed) == {(p, e) for p in installed for e in peers.ESTIMATORS}
  for (peer, estimator), r in timed.items():
    assert r["dim"] == 3 and r["num_samples"] == 64
    assert r["seconds"] > 0 and r["compile_seconds"] > 0 and r["repeats"] >= TINY.repeats
    assert r["temp_bytes"] is None or r["temp_bytes"] >= 0
    # Every coordinate of every peer's gradient within 5 standard errors (closed-form) of the exact gradient: a
    # peer wired to another estimator or another parameterisation (log sigma, an entropy term) fails here.
    assert r["max_abs_z"] < 5.0, (peer, estimator, r["max_abs_z"])
    assert 0 < r["relative_error"] < 4 * r["rms_relative_error"]
    # E[f] = sum(a^2 + sigma^2) = 5.5, Var f = sum(4 a^2 sigma^2 + 2 sigma^4) = 22.25.
    assert abs(r["value"] - 5.5) < 5 * np.sqrt(22.25 / 64)
  for estimator in peers.ESTIMATORS:
    assert timed[("hand", estimator)]["over_hand"] == 1.0
  assert "## D = 3, N = 64: score_function (SF)" in result["markdown"]
  assert sorted(p.name for p in out.iterdir()) == ["peers.csv", "peers.json", "peers.jsonl", "peers.md", "peers.png"]


# Each peer at N = 2^14 (standard errors 16 times smaller than at N = 64, so that an entropy term, a gradient in
# log sigma or a factor of two fails), and on constant costs, which tell the estimators apart without noise: f = 0
# gives a zero gradient for every estimator of the gradient of E[f] (numpyro: no entropy term left over), and
# f = 10 a zero pathwise gradient but a nonzero score-function one, 10 * mean(d log q) (numpyro's TraceGraph_ELBO
# takes the score-function path). One compilation per estimator: the cost w * f + c takes w and c as arguments.
@pytest.mark.parametrize(
  "peer",
  ["numpyro", "tfp", pytest.param("hand", marks=pytest.mark.slow), pytest.param("sfe_jax", marks=pytest.mark.slow)],
)
def test_each_peer_computes_its_estimator(peer):
  if peers.missing(peer):
    pytest.skip(peers.missing(peer))
  params, key, n = peers.initial_params(3), jax.random.key(1), 2**14
  for estimator in peers.ESTIMATORS:

    @jax.jit
    def run(params, key, w, c):
      return measure.FUNCTIONS[peer](estimator, n, lambda x: w * peers.cost(x) + c)(params, key)

    _, grads = run(params, key, 1.0, 0.0)
    assert peers.gradient_errors(estimator, params, grads, n)[2] < 5.0, (estimator, grads)
    for constant in (0.0, 10.0):
      value, grads = run(params, key, 0.0, constant)
      size = max(float(jnp.max(jnp.abs(g))) for g in grads.values())
      assert float(value) == pytest.approx(constant)
      if constant == 0.0 or estimator == "pathwise":
        assert size < 1e-5, (constant, estimator, grads)
      else:
        assert size > 0.01, (constant, estimator, grads)


def test_a_missing_peer_is_skipped_with_a_note(monkeypatch):
  monkeypatch.setitem(sys.modules, "numpyro", None)  # `import numpyro` raises ImportError
  config = dataclasses.replace(TINY, peers=("hand", "numpyro"), estimators=("pathwise",))
  result = peers.run(config, None, log=lambda line: None)
  records = result["records"]
  assert [(r["kind"], r["peer"]) for r in records] == [("timing", "hand"), ("skipped", "numpyro")]
  assert records[0]["cell"].endswith("peers/D=3/N=64/pathwise/hand")
  assert "numpyro is not installed" in records[1]["note"]
  assert "## Skipped" in result["markdown"] and "pip install numpyro" in result["markdown"]


def test_config_check():
  with pytest.raises(ValueError, match="peers"):
    dataclasses.replace(TINY, peers=("hand", "pyro")).check()
  with pytest.raises(ValueError, match="sizes"):
    dataclasses.replace(TINY, sizes=((3,),)).check()
  for config in peers.PRESETS.values():
    config.check()
