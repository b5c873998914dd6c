"""sfe.diagnostics against exact values (reference Section 1), its pytree structure, jit and errors."""

import math
from typing import Any

import distrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sfe_jax as sfe
from sfe_jax._src.diagnostics import cache as cache_lib
from sfe_jax._src.diagnostics import moments as moments_lib
from tests.gaussian_reference import PARAMS, ROWS, dist_builder
from tests.helpers import NUM_SE, mean_and_se, repeated_estimates, variance_and_se

KEY = jax.random.key(0)
R = 40_000
SQUARE_ROWS = [row for row in ROWS if row.name == "(x-k)^2"]


def _square(k):
  return lambda x: (x - k) ** 2


def _square_exact(mu, sigma, k):
  """f = (x - k)^2 under N(mu, sigma^2): exact gradient and single-sample pathwise variances (reference)."""
  a = mu - k
  return {"loc": 2 * a, "scale": 2 * sigma}, {"loc": 4 * sigma**2, "scale": 4 * a**2 + 8 * sigma**2}


def _assert_within(measured, exact, se, what):
  measured, exact, se = (np.asarray(v, np.float64) for v in (measured, exact, se))
  assert np.all(np.abs(measured - exact) <= NUM_SE * se + 1e-6), (
    f"{what}: measured {measured}, exact {exact}, {NUM_SE} standard errors = {NUM_SE * se}"
  )


# ---------------------------------------------------------------------------------------------------------
# Values against the exact ones.
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mu, sigma, k", [(1.0, 1.0, 3.0), (0.5, 1.5, -1.0)])
def test_pathwise_moments_match_exact(mu, sigma, k):
  params = {"loc": jnp.asarray(mu), "scale": jnp.asarray(sigma)}
  grad, var = _square_exact(mu, sigma, k)
  m = sfe.diagnostics.gradient_moments(
    sfe.pathwise(), _square(k), dist_builder, params, KEY, num_samples=1, num_repeats=R
  )
  for leaf in ("loc", "scale"):
    _assert_within(m.mean[leaf], grad[leaf], m.std_error[leaf], f"pathwise mean d/d{leaf}")
    _assert_within(m.variance[leaf], var[leaf], m.variance_std_error[leaf], f"pathwise variance d/d{leaf}")
    # SNR against its exact value, with a delta-method standard error.
    exact_snr = abs(grad[leaf]) / math.sqrt(var[leaf])
    rel_se = math.sqrt((m.std_error[leaf] / grad[leaf]) ** 2 + (m.variance_std_error[leaf] / (2 * var[leaf])) ** 2)
    _assert_within(m.snr[leaf], exact_snr, exact_snr * rel_se, f"pathwise SNR d/d{leaf}")
  # E[f] = a^2 + sigma^2.
  assert abs(float(m.value_mean) - ((mu - k) ** 2 + sigma**2)) < 0.05 * ((mu - k) ** 2 + sigma**2)


@pytest.mark.parametrize("row", SQUARE_ROWS, ids=[f"k={r.k}" for r in SQUARE_ROWS])
@pytest.mark.parametrize("name", ["score_function", "pathwise"])
def test_single_sample_variances_of_the_reference_table(row, name):
  estimator = sfe.score_function() if name == "score_function" else sfe.pathwise()
  exact_var = row.var_sf if name == "score_function" else row.var_pw
  m = sfe.diagnostics.gradient_moments(estimator, row.f, dist_builder, PARAMS, KEY, num_samples=1, num_repeats=R)
  for i, leaf in enumerate(("loc", "scale")):
    _assert_within(m.mean[leaf], row.grad[i], m.std_error[leaf], f"{name} mean d/d{leaf}, k={row.k}")
    _assert_within(m.variance[leaf], exact_var[i], m.variance_std_error[leaf], f"{name} variance d/d{leaf}, k={row.k}")
  b = sfe.diagnostics.bias(m, {"loc": row.grad[0], "scale": row.grad[1]})
  assert float(b.max_abs_z) < NUM_SE


def test_variance_scales_with_num_samples():
  # The variance of an N-sample average is the single-sample variance / N.
  row = SQUARE_ROWS[1]
  n = 10
  m = sfe.diagnostics.gradient_moments(
    sfe.score_function(), row.f, dist_builder, PARAMS, KEY, num_samples=n, num_repeats=R // n
  )
  assert m.num_samples == n and m.num_repeats == R // n
  for i, leaf in enumerate(("loc", "scale")):
    _assert_within(m.variance[leaf], row.var_sf[i] / n, m.variance_std_error[leaf], f"variance d/d{leaf}")


def test_statistics_equal_those_of_the_raw_estimates():
  # The same keys as the raw estimates: every field is the textbook formula applied to them.
  row = SQUARE_ROWS[0]
  r = 5_000
  m = sfe.diagnostics.gradient_moments(
    sfe.score_function(), row.f, dist_builder, PARAMS, KEY, num_samples=3, num_repeats=r
  )
  values, grads = repeated_estimates(
    sfe.score_function(), row.f, dist_builder, PARAMS, KEY, num_samples=3, num_repeats=r
  )
  for leaf in ("loc", "scale"):
    g = np.asarray(grads[leaf], np.float64)
    mean, se = mean_and_se(g)
    var, var_se = variance_and_se(g)
    np.testing.assert_allclose(m.mean[leaf], mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(m.variance[leaf], var, rtol=1e-4)
    np.testing.assert_allclose(m.std_error[leaf], se, rtol=1e-4)
    np.testing.assert_allclose(m.std_error[leaf], np.sqrt(var / r), rtol=1e-4)
    np.testing.assert_allclose(m.variance_std_error[leaf], var_se, rtol=1e-3)
    np.testing.assert_allclose(m.snr[leaf], abs(mean) / np.sqrt(var), rtol=1e-4)
  np.testing.assert_allclose(m.value_mean, np.mean(np.asarray(values, np.float64)), rtol=1e-5)


def test_bias_detects_a_wrong_gradient():
  row = SQUARE_ROWS[1]
  m = sfe.diagnostics.gradient_moments(sfe.pathwise(), row.f, dist_builder, PARAMS, KEY, num_samples=1, num_repeats=R)
  good = sfe.diagnostics.bias(m, {"loc": row.grad[0], "scale": row.grad[1]})
  wrong = sfe.diagnostics.bias(m, {"loc": row.grad[0] + 0.5, "scale": row.grad[1]})
  assert float(good.max_abs_z) < NUM_SE
  _assert_within(wrong.bias["loc"], -0.5, m.std_error["loc"], "bias")
  np.testing.assert_allclose(wrong.z_score["loc"], wrong.bias["loc"] / m.std_error["loc"], rtol=1e-5)
  assert float(wrong.max_abs_z) > 20 and float(wrong.max_abs_z) == pytest.approx(abs(float(wrong.z_score["loc"])))


# ---------------------------------------------------------------------------------------------------------
# Structure, jit, state, memory-bounded mode.
# ---------------------------------------------------------------------------------------------------------

NESTED = {"mean": {"loc": jnp.zeros(3)}, "scale": jnp.ones((3,))}


def nested_builder(p):
  return distrax.Normal(p["mean"]["loc"], p["scale"])


def nested_f(x):
  return jnp.sum((x - 0.5) ** 2)


def test_pytree_structure_and_shapes():
  m = sfe.diagnostics.gradient_moments(
    sfe.score_function(), nested_f, nested_builder, NESTED, KEY, num_samples=4, num_repeats=100
  )
  for field in ("mean", "variance", "snr", "std_error", "variance_std_error"):
    tree = getattr(m, field)
    assert jax.tree.structure(tree) == jax.tree.structure(NESTED), field
    assert jax.tree.map(jnp.shape, tree) == jax.tree.map(jnp.shape, NESTED), field
  assert m.value_mean.shape == ()
  b = sfe.diagnostics.bias(m, {"mean": {"loc": -1.0 * jnp.ones(3)}, "scale": 2.0})  # a scalar broadcasts
  assert jax.tree.map(jnp.shape, b.bias) == jax.tree.map(jnp.shape, NESTED)
  assert jax.tree.map(jnp.shape, b.z_score) == jax.tree.map(jnp.shape, NESTED)
  assert b.max_abs_z.shape == ()


def test_jit_gives_the_same_moments():
  def moments(params, key):
    return sfe.diagnostics.gradient_moments(
      sfe.pathwise(), nested_f, nested_builder, params, key, num_samples=2, num_repeats=50
    )

  eager = moments(NESTED, KEY)
  jitted = jax.jit(moments)(NESTED, KEY)
  for field in ("mean", "variance", "snr", "std_error", "variance_std_error"):
    jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), getattr(eager, field), getattr(jitted, field)
    )
  assert int(jitted.num_repeats) == 50 and int(jitted.num_samples) == 2


def test_batch_size_bounds_memory_and_gives_the_same_numbers():
  full = sfe.diagnostics.gradient_moments(
    sfe.pathwise(), nested_f, nested_builder, NESTED, KEY, num_samples=2, num_repeats=60
  )
  chunked = sfe.diagnostics.gradient_moments(
    sfe.pathwise(), nested_f, nested_builder, NESTED, KEY, num_samples=2, num_repeats=60, batch_size=16
  )
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), full.variance, chunked.variance)


def _counting(f):
  """``f``, with the number of times it has been traced (each trace calls it in Python)."""
  traces = []

  def counted(x):
    traces.append(None)
    return f(x)

  return counted, traces


def _assert_same_moments(a, b, exact=True):
  check = (
    np.testing.assert_array_equal if exact else lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
  )
  for field in ("mean", "variance", "snr", "std_error", "variance_std_error", "value_mean"):
    jax.tree.map(check, getattr(a, field), getattr(b, field))
  assert (a.num_repeats, a.num_samples) == (b.num_repeats, b.num_samples)


def test_a_second_call_does_not_compile_again():
  # The computation is cached on the estimator, f, dist_builder, the sizes and the static leaves of params: a
  # second eager call with new values of the same shapes runs it without tracing f again.
  f, traces = _counting(nested_f)
  estimator = sfe.score_function(sfe.baselines.leave_one_out())
  call = lambda params, key, **kw: sfe.diagnostics.gradient_moments(  # noqa: E731
    estimator, f, nested_builder, params, key, num_samples=4, num_repeats=50, **kw
  )
  first = call(NESTED, KEY)
  traced = len(traces)
  assert traced > 0
  _assert_same_moments(call(NESTED, KEY), first)  # the same numbers, and no trace
  moved = jax.tree.map(lambda p: p + 0.5, NESTED)
  other = call(moved, jax.random.key(1))
  assert len(traces) == traced

  # The new values are used (not baked-in constants): the same numbers as an uncached computation.
  @jax.jit
  def uncached(params, key):
    values, grads = moments_lib.repeated_estimates(
      estimator, nested_f, nested_builder, params, key, num_samples=4, num_repeats=50
    )
    return moments_lib.moments_from_estimates(values, grads, num_samples=4)._replace(num_repeats=50)

  _assert_same_moments(other, uncached(moved, jax.random.key(1)), exact=False)
  call(NESTED, KEY, batch_size=10)  # a different static size compiles again
  assert len(traces) > traced


def test_the_cache_of_compiled_computations_is_bounded(monkeypatch):
  # The least recently used computation is dropped (with what its f closes over): it compiles again.
  monkeypatch.setattr(cache_lib, "CACHE_SIZE", 1)
  f, traces = _counting(nested_f)
  g = lambda x: nested_f(x) + 1.0  # noqa: E731
  estimator = sfe.pathwise()
  call = lambda h: sfe.diagnostics.gradient_moments(  # noqa: E731
    estimator, h, nested_builder, NESTED, KEY, num_samples=1, num_repeats=10
  )
  call(f)
  traced = len(traces)
  call(f)
  assert len(traces) == traced
  call(g)  # evicts f's computation
  assert len(cache_lib._cache) == 1
  call(f)
  assert len(traces) > traced


class _Shifted(eqx.Module):
  """Equinox-style params: a differentiated array, an integer array, a Python int and a function as leaves."""

  loc: jax.Array
  shift: jax.Array
  scale_power: int
  link: Any

  def dist(self):
    return distrax.Normal(self.loc + self.shift, self.link(jnp.ones(3)) ** self.scale_power)


def test_cached_computation_keeps_the_static_leaves_of_equinox_params():
  f, traces = _counting(nested_f)
  estimator = sfe.pathwise()
  call = lambda params: sfe.diagnostics.gradient_moments(  # noqa: E731
    estimator, f, _Shifted.dist, params, KEY, num_samples=1, num_repeats=200
  )
  model = _Shifted(jnp.zeros(3), jnp.arange(3), 1, jnp.exp)
  first = call(model)
  traced = len(traces)
  _assert_same_moments(call(_Shifted(jnp.zeros(3), jnp.arange(3), 1, jnp.exp)), first)  # equal leaves: cached
  assert len(traces) == traced
  assert first.mean.loc.shape == (3,) and first.mean.shift is None and first.mean.link is None  # as eqx.filter_grad
  # A different integer array, Python int or function changes the computation: it must not reuse the cache.
  for changed in (
    _Shifted(jnp.zeros(3), jnp.arange(3) + 1, 1, jnp.exp),
    _Shifted(jnp.zeros(3), jnp.arange(3), 2, jnp.exp),
    _Shifted(jnp.zeros(3), jnp.arange(3), 1, jnp.cosh),
  ):
    got = call(changed)
    loc, scale = changed.loc + changed.shift, changed.link(jnp.ones(3)) ** changed.scale_power
    # Pathwise on sum((x - 0.5)^2): mean gradient 2 (loc - 0.5) in loc, exact up to Monte Carlo error.
    _assert_within(got.mean.loc, 2 * (loc - 0.5), got.std_error.loc, "pathwise mean with new static leaves")
    np.testing.assert_allclose(got.value_mean, jnp.sum((loc - 0.5) ** 2 + scale**2), rtol=0.2)
  # Under an outer (filtered) jit the integer array is a tracer: still correct, and the same numbers.
  jitted = eqx.filter_jit(call)(model)
  _assert_same_moments(jitted, first, exact=False)


def test_enumeration_with_num_samples_none_counts_the_support():
  # sfe.enumerate() is called with num_samples=None (its documented form): the diagnostics resolve it to the
  # support's size as the entry points do, and the exact gradient has zero variance.
  bernoulli = lambda p: distrax.Bernoulli(logits=p, dtype=jnp.float32)
  f = lambda b: jnp.sum(b * jnp.array([1.0, 2.0, 3.0]))
  report = sfe.diagnostics.evaluate(
    sfe.enumerate(), f, bernoulli, jnp.zeros(3), jax.random.key(0), num_samples=None, num_repeats=2
  )
  assert report.moments.num_samples == 8
  np.testing.assert_allclose(report.moments.mean, 0.25 * jnp.array([1.0, 2.0, 3.0]), rtol=1e-6)
  np.testing.assert_array_equal(report.moments.variance, 0.0)
  with pytest.raises(TypeError, match="`num_samples` is required for sfe.score_function"):
    sfe.diagnostics.gradient_moments(
      sfe.score_function(), f, bernoulli, jnp.zeros(3), jax.random.key(0), num_samples=None, num_repeats=2
    )


def test_state_is_used():
  # A frozen moving-average state acts as a constant baseline b: Var = Var_SF - 2 b E[f s^2] + b^2 E[s^2].
  row = SQUARE_ROWS[2]  # k = 3, E[f] = 5
  est = sfe.score_function(sfe.baselines.moving_average(decay=0.5))
  state = sfe.baselines.MovingAverageState(average=jnp.asarray(2.5), count=jnp.asarray(1, jnp.int32))  # b = 5
  m = sfe.diagnostics.gradient_moments(est, row.f, dist_builder, PARAMS, KEY, num_samples=1, num_repeats=R, state=state)
  a, b = 1.0 - row.k, 5.0
  e_fs2 = np.array([a**2 + 3, 2 * a**2 + 10])
  e_s2 = np.array([1.0, 2.0])
  exact = np.asarray(row.var_sf) - 2 * b * e_fs2 + b**2 * e_s2
  for i, leaf in enumerate(("loc", "scale")):
    _assert_within(m.variance[leaf], exact[i], m.variance_std_error[leaf], f"baseline variance d/d{leaf}")


def test_snr_is_never_nan():
  # d/dloc of E[x] is exactly 1 (variance 0: SNR inf); f = 0 gives 0 / 0 (SNR 0).
  params = {"loc": jnp.zeros(2)}
  build = lambda p: distrax.Normal(p["loc"], 1.0)
  m = sfe.diagnostics.gradient_moments(sfe.pathwise(), jnp.sum, build, params, KEY, num_samples=1, num_repeats=10)
  np.testing.assert_array_equal(m.variance["loc"], 0.0)
  assert np.all(np.isinf(m.snr["loc"]))
  zero = sfe.diagnostics.gradient_moments(
    sfe.pathwise(), lambda x: 0.0 * jnp.sum(x), build, params, KEY, num_samples=1, num_repeats=10
  )
  np.testing.assert_array_equal(zero.snr["loc"], 0.0)
  b = sfe.diagnostics.bias(zero, {"loc": jnp.zeros(2)})
  np.testing.assert_array_equal(b.z_score["loc"], 0.0)
  assert not np.isnan(float(b.max_abs_z))


# ---------------------------------------------------------------------------------------------------------
# Timing and the combined report (no assertion on speed).
# ---------------------------------------------------------------------------------------------------------


def test_time_per_estimate_is_positive_and_finite():
  t = sfe.diagnostics.time_per_estimate(
    sfe.score_function(), nested_f, nested_builder, NESTED, KEY, num_samples=100, repeats=5, warmup=1
  )
  assert isinstance(t, sfe.diagnostics.Timing)
  for seconds in t:
    assert isinstance(seconds, float) and math.isfinite(seconds) and seconds > 0
  assert t.min_seconds <= t.median_seconds


def test_evaluate_combines_everything():
  row = SQUARE_ROWS[1]
  exact = {"loc": row.grad[0], "scale": row.grad[1]}
  report = sfe.diagnostics.evaluate(
    sfe.pathwise(),
    row.f,
    dist_builder,
    PARAMS,
    KEY,
    num_samples=4,
    num_repeats=2_000,
    exact_grad=exact,
    timing_repeats=3,
  )
  assert report.estimator_name == "sfe.pathwise()"
  assert report.moments.num_repeats == 2_000 and report.moments.num_samples == 4
  assert float(report.bias.max_abs_z) < NUM_SE
  assert report.timing.median_seconds > 0
  for leaf in ("loc", "scale"):
    np.testing.assert_allclose(
      report.work_normalized_variance[leaf], report.moments.variance[leaf] * report.timing.median_seconds, rtol=1e-6
    )
  without = sfe.diagnostics.evaluate(
    sfe.pathwise(), row.f, dist_builder, PARAMS, KEY, num_samples=4, num_repeats=10, timing_repeats=1
  )
  assert without.bias is None


# ---------------------------------------------------------------------------------------------------------
# Errors.
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_repeats", [1, 0, -2])
def test_too_few_repeats(num_repeats):
  with pytest.raises(ValueError, match=f"`num_repeats` must be at least 2.*got {num_repeats}"):
    sfe.diagnostics.gradient_moments(
      sfe.pathwise(), nested_f, nested_builder, NESTED, KEY, num_samples=1, num_repeats=num_repeats
    )
  with pytest.raises(ValueError, match="`num_repeats` must be at least 2"):
    sfe.diagnostics.evaluate(
      sfe.pathwise(), nested_f, nested_builder, NESTED, KEY, num_samples=1, num_repeats=num_repeats
    )


def test_non_integer_repeats():
  with pytest.raises(TypeError, match="`num_repeats` must be a Python int.*float"):
    sfe.diagnostics.gradient_moments(
      sfe.pathwise(), nested_f, nested_builder, NESTED, KEY, num_samples=1, num_repeats=100.0
    )


def test_integer_key():
  with pytest.raises(TypeError, match="`key` must be a JAX PRNG key"):
    sfe.diagnostics.gradient_moments(sfe.pathwise(), nested_f, nested_builder, NESTED, 0, num_samples=1, num_repeats=10)


def test_estimator_errors_pass_through():
  with pytest.raises(ValueError, match="`num_samples` must be at least 2"):
    sfe.diagnostics.gradient_moments(
      sfe.score_function(sfe.baselines.leave_one_out()),
      nested_f,
      nested_builder,
      NESTED,
      KEY,
      num_samples=1,
      num_repeats=10,
    )
  with pytest.raises(TypeError, match="`estimator` must be an sfe_jax Estimator"):
    sfe.diagnostics.time_per_estimate("pathwise", nested_f, nested_builder, NESTED, KEY, num_samples=1)
  with pytest.raises(ValueError, match="`repeats` must be at least 1"):
    sfe.diagnostics.time_per_estimate(sfe.pathwise(), nested_f, nested_builder, NESTED, KEY, num_samples=1, repeats=0)


@pytest.fixture(scope="module")
def nested_moments():
  return sfe.diagnostics.gradient_moments(
    sfe.pathwise(), nested_f, nested_builder, NESTED, KEY, num_samples=1, num_repeats=10
  )


@pytest.mark.parametrize(
  "exact",
  [
    {"mean": {"loc": jnp.zeros(3)}},  # a missing leaf
    {"mean": jnp.zeros(3), "scale": jnp.zeros(3)},  # a leaf instead of a dict
    (jnp.zeros(3), jnp.zeros(3)),  # a tuple instead of a dict
    {"mean": {"loc": jnp.zeros(3)}, "scale": jnp.zeros(3), "extra": 1.0},  # an extra leaf
  ],
)
def test_bias_structure_mismatch(nested_moments, exact):
  with pytest.raises(ValueError, match="`exact_grad` must have the structure of params"):
    sfe.diagnostics.bias(nested_moments, exact)


def test_bias_shape_mismatch(nested_moments):
  with pytest.raises(ValueError, match=r"`exact_grad`\['mean'\]\['loc'\] must have the shape.*\(3,\).*\(4,\)"):
    sfe.diagnostics.bias(nested_moments, {"mean": {"loc": jnp.zeros(4)}, "scale": jnp.zeros(3)})


def test_bias_needs_moments():
  with pytest.raises(TypeError, match="`moments` must be the GradientMoments"):
    sfe.diagnostics.bias({"loc": 1.0}, {"loc": 1.0})


def test_chunked_estimates_in_the_diagnostics():
  # chunk_size bounds each estimate's memory: with RQMC the chunks are blocks of one sequence, so the moments
  # equal the unchunked ones; with i.i.d. chunks the variance is that of the unchunked estimate (within its se).
  import distrax  # noqa: PLC0415

  params = {"loc": jnp.asarray(1.0), "scale": jnp.asarray(1.0)}
  builder = lambda p: distrax.Normal(p["loc"], p["scale"])  # noqa: E731
  f = lambda x: jnp.cos(2.0 * x)  # noqa: E731
  kwargs = dict(num_samples=256, num_repeats=400)
  plain, chunked = (
    sfe.diagnostics.gradient_moments(
      sfe.pathwise(), f, builder, params, jax.random.key(0), sampler="rqmc", chunk_size=c, **kwargs
    )
    for c in (None, 64)
  )
  np.testing.assert_allclose(chunked.variance["loc"], plain.variance["loc"], rtol=1e-3)
  iid = sfe.diagnostics.gradient_moments(sfe.pathwise(), f, builder, params, jax.random.key(0), chunk_size=64, **kwargs)
  iid_plain = sfe.diagnostics.gradient_moments(sfe.pathwise(), f, builder, params, jax.random.key(1), **kwargs)
  diff = float(iid.variance["loc"] - iid_plain.variance["loc"])
  se = float(np.hypot(iid.variance_std_error["loc"], iid_plain.variance_std_error["loc"]))
  assert abs(diff) < 5 * se
  report = sfe.diagnostics.evaluate(
    sfe.pathwise(), f, builder, params, jax.random.key(0), chunk_size=64, timing_repeats=2, **kwargs
  )
  assert float(report.work_normalized_variance["loc"]) > 0
