"""Samplers (sampler=): unbiased for every supported estimator, faster variance decay for RQMC, blocks under
chunking, every supported distribution, and clear refusals."""

import functools

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as nd
import pytest
from tensorflow_probability.substrates import jax as tfp

import sfe_jax as sfe
from sfe_jax._src.core import samplers

SAMPLERS = ("iid", "antithetic", "stratified", "rqmc")
MU, SIGMA, K = 1.0, 1.0, 2.0
PARAMS = {"loc": jnp.asarray(MU), "scale": jnp.asarray(SIGMA)}


def normal(p):
  return distrax.Normal(p["loc"], p["scale"])


def cos_k(x):
  return jnp.cos(K * x)


# d/dmu and d/dsigma of E[cos(kx)] = cos(k mu) exp(-k^2 sigma^2 / 2).
EXACT = {
  "loc": -K * np.sin(K * MU) * np.exp(-(K**2) * SIGMA**2 / 2),
  "scale": -(K**2) * SIGMA * np.cos(K * MU) * np.exp(-(K**2) * SIGMA**2 / 2),
}


def estimates(estimator, sampler, num_samples, repeats, f=cos_k, builder=normal, params=PARAMS, **kwargs):
  keys = jax.random.split(jax.random.key(3), repeats)
  run = (
    lambda k: sfe.value_and_grad(  # noqa: E731
      estimator, f, builder, params, k, num_samples=num_samples, sampler=sampler, **kwargs
    )[:2]
  )
  return jax.jit(jax.vmap(run))(keys)


@pytest.mark.parametrize(
  "name, estimator",
  [
    ("pathwise", sfe.pathwise()),
    ("score_function", sfe.score_function()),
    ("measure_valued", sfe.measure_valued()),
    ("constant_baseline", sfe.score_function(sfe.baselines.constant(0.5))),
  ],
)
def test_every_sampler_is_unbiased(name, estimator):
  for sampler in SAMPLERS:
    _, grads = estimates(estimator, sampler, num_samples=16, repeats=400)
    for leaf, exact in EXACT.items():
      g = np.asarray(grads[leaf], np.float64)
      se = g.std(ddof=1) / np.sqrt(g.size)
      assert abs(g.mean() - exact) < 5 * se + 1e-6, (name, sampler, leaf, g.mean(), exact, se)


def test_rqmc_and_stratified_variance_decay_faster_than_one_over_n():
  slopes = {}
  for sampler in ("iid", "stratified", "rqmc"):
    variances = [float(jnp.var(estimates(sfe.pathwise(), sampler, n, 200)[1]["loc"])) for n in (64, 1024)]
    slopes[sampler] = np.log(variances[1] / variances[0]) / np.log(16)
  assert slopes["rqmc"] < -1.5 and slopes["stratified"] < -1.5, slopes
  assert -1.3 < slopes["iid"] < -0.7, slopes


def test_antithetic_pairs_reflect_the_sample_about_the_location():
  # An integrand odd about the location is exact under antithetic pairs; an even one gets no reduction.
  odd = lambda x: x - MU  # noqa: E731
  values, _ = estimates(sfe.score_function(), "antithetic", 2, 8, f=odd)
  assert np.allclose(values, 0.0, atol=1e-6)
  even = lambda x: (x - MU) ** 2  # noqa: E731
  v_iid = float(jnp.var(estimates(sfe.pathwise(), "iid", 2, 2000, f=even)[0]))
  v_anti = float(jnp.var(estimates(sfe.pathwise(), "antithetic", 2, 2000, f=even)[0]))
  assert v_anti > 1.5 * v_iid  # the pair is one sample twice: twice the variance of two independent ones


def test_rqmc_chunks_are_blocks_of_one_scrambled_sequence():
  key = jax.random.key(7)
  run = lambda chunk: sfe.value_and_grad(  # noqa: E731
    sfe.pathwise(), cos_k, normal, PARAMS, key, num_samples=1024, sampler="rqmc", chunk_size=chunk
  )
  whole, chunked, uneven = (jax.jit(lambda c=c: run(c)[:2])() for c in (None, 256, 384))
  for a in (chunked, uneven):
    np.testing.assert_allclose(a[0], whole[0], rtol=1e-5)
    for leaf in EXACT:
      np.testing.assert_allclose(a[1][leaf], whole[1][leaf], rtol=1e-4, atol=1e-6)
  # The expectation entry point too, and with a one-device sample sharding.
  mesh = jax.sharding.Mesh(jax.devices()[:1], ("samples",))
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("samples"))
  value, _ = jax.jit(
    lambda: sfe.expectation(
      sfe.pathwise(), cos_k, normal, PARAMS, key, num_samples=1024, sampler="rqmc", sample_sharding=sharding
    )
  )()
  np.testing.assert_allclose(value, whole[0], rtol=1e-6)


def _uniforms(sampler, drawing_key, num, dim, dtype):
  """``samplers.uniforms(jax.random.key(0), num, dim, dtype)`` drawn under ``sampler``, compiled as one program."""

  @jax.jit
  def run(drawing_key, key):
    with samplers.drawing(sampler, drawing_key, "test"):
      return samplers.uniforms(key, num, dim, dtype)

  return np.asarray(run(drawing_key, jax.random.key(0)))


def test_points_are_uniform_and_keyed():
  u = _uniforms("rqmc", jax.random.key(0), 1024, 3, jnp.float32)
  assert u.shape == (1024, 3) and np.all((u > 0) & (u < 1))
  # A (0, m, s)-net: each of the 1024 strata of width 1/1024 in every coordinate holds one point.
  for j in range(3):
    assert len(np.unique(np.floor(u[:, j] * 1024))) == 1024
  other = _uniforms("rqmc", jax.random.key(1), 1024, 3, jnp.float32)
  assert not np.allclose(u, other)
  s = _uniforms("stratified", jax.random.key(0), 100, 2, jnp.float32)
  for j in range(2):
    assert sorted(np.floor(s[:, j] * 100).astype(int)) == list(range(100))


@pytest.mark.parametrize("sampler", ["rqmc", "stratified"])
def test_float64(sampler):
  with jax.enable_x64(True):
    params = {"loc": jnp.asarray(MU, jnp.float64), "scale": jnp.asarray(SIGMA, jnp.float64)}
    value, grads, _ = jax.jit(
      lambda p, k: sfe.value_and_grad(sfe.pathwise(), cos_k, normal, p, k, num_samples=4096, sampler=sampler)
    )(params, jax.random.key(0))
    assert value.dtype == jnp.float64 and grads["loc"].dtype == jnp.float64
    assert abs(float(grads["loc"]) - EXACT["loc"]) < 1e-3


MEAN_AND_VARIANCE = [
  ("laplace", lambda p: distrax.Laplace(p, 2.0), 1.0, 8.0),
  ("logistic", lambda p: distrax.Logistic(p, 0.5), 1.0, np.pi**2 / 12),
  ("gumbel", lambda p: distrax.Gumbel(p, 1.0), 1.0 + np.euler_gamma, np.pi**2 / 6),
  ("uniform", lambda p: distrax.Uniform(p - 1.0, p + 1.0), 1.0, 1.0 / 3),
  ("tfp-normal", lambda p: tfp.distributions.Normal(p, 3.0), 1.0, 9.0),
  ("numpyro-normal", lambda p: nd.Normal(p, 3.0), 1.0, 9.0),
  (
    "mvn-tri",
    lambda p: distrax.MultivariateNormalTri(jnp.stack([p, p]), jnp.array([[1.0, 0.0], [0.5, 2.0]])),
    1.0,
    None,
  ),
]


@pytest.mark.parametrize("name, builder, mean, variance", MEAN_AND_VARIANCE, ids=[m[0] for m in MEAN_AND_VARIANCE])
def test_quantile_maps_give_the_distribution(name, builder, mean, variance):
  p = jnp.asarray(1.0)
  n = 4096

  @functools.partial(jax.jit, static_argnums=(0, 1))
  def rqmc(estimator, f, key):
    return sfe.value_and_grad(estimator, f, builder, p, key, num_samples=n, sampler="rqmc")[:2]

  value, grad = rqmc(sfe.pathwise(), jnp.sum, jax.random.key(0))
  dims = 2 if name == "mvn-tri" else 1
  assert abs(float(value) - dims * mean) < 0.02 and abs(float(grad) - dims) < 1e-4  # d/dp E[sum x] = dims
  if variance is not None:
    v, _ = rqmc(sfe.score_function(), lambda x: (x - mean) ** 2, jax.random.key(1))
    assert abs(float(v) - variance) < 0.03 * variance + 0.01, (name, float(v), variance)
  else:  # the covariance L L^T = [[1, 0.5], [0.5, 4.25]]
    v, _ = rqmc(sfe.pathwise(), lambda x: (x[0] - 1.0) * (x[1] - 1.0), jax.random.key(1))
    assert abs(float(v) - 0.5) < 0.03


@pytest.mark.parametrize("sampler", ["stratified", "rqmc"])
def test_discrete_score_function_by_the_inverse_cdf(sampler):
  logits = jnp.array([0.3, -jnp.inf, 1.0, -0.5])
  builder = lambda p: distrax.Categorical(logits=p)  # noqa: E731
  f = lambda a: (a - 1.5) ** 2  # noqa: E731
  values, g = map(np.asarray, estimates(sfe.score_function(), sampler, 64, 200, f=f, builder=builder, params=logits))
  probs = np.asarray(jax.jit(jax.nn.softmax)(logits))
  support = np.arange(4.0)
  exact_value = float(np.sum(probs * f(support)))
  exact_grad = probs * (f(support) - exact_value)
  assert abs(float(values.mean()) - exact_value) < 5 * float(values.std()) / np.sqrt(200) + 1e-6
  assert np.all(g[:, 1] == 0.0) and np.all(np.isfinite(g))
  se = g.std(axis=0, ddof=1) / np.sqrt(g.shape[0])
  assert np.all(np.abs(g.mean(axis=0) - exact_grad) < 5 * se + 1e-6), (g.mean(axis=0), exact_grad, se)
  bern = lambda p: distrax.Bernoulli(logits=p)  # noqa: E731
  _, grads = estimates(sfe.score_function(), sampler, 64, 200, f=lambda b: b, builder=bern, params=jnp.asarray(0.4))
  p = 1.0 / (1.0 + np.exp(-0.4))
  g = np.asarray(grads)
  assert abs(g.mean() - p * (1 - p)) < 5 * g.std(ddof=1) / np.sqrt(g.size) + 1e-6


def test_gradient_moments_and_evaluate_take_the_sampler():
  kwargs = dict(num_samples=256, num_repeats=100)
  iid = sfe.diagnostics.gradient_moments(sfe.pathwise(), cos_k, normal, PARAMS, jax.random.key(0), **kwargs)
  rqmc = sfe.diagnostics.gradient_moments(
    sfe.pathwise(), cos_k, normal, PARAMS, jax.random.key(0), sampler="rqmc", **kwargs
  )
  assert float(rqmc.variance["loc"]) < 0.05 * float(iid.variance["loc"])
  report = sfe.diagnostics.evaluate(
    sfe.pathwise(), cos_k, normal, PARAMS, jax.random.key(0), sampler="stratified", timing_repeats=2, **kwargs
  )
  assert float(report.work_normalized_variance["loc"]) > 0


def test_refusals_are_clear():
  # Traced only (the refusals are raised while tracing): running eagerly would compile every operation.
  call = lambda est, sampler, n=8, builder=normal, params=PARAMS, **kw: jax.eval_shape(  # noqa: E731
    lambda: sfe.value_and_grad(est, cos_k, builder, params, jax.random.key(0), num_samples=n, sampler=sampler, **kw)
  )
  with pytest.raises(ValueError, match=r"`sampler` must be one of .*got 'sobol'"):
    call(sfe.pathwise(), "sobol")
  with pytest.raises(ValueError, match="couples its samples"):
    call(sfe.score_function(sfe.baselines.leave_one_out()), "rqmc")
  with pytest.raises(ValueError, match="couples its samples"):
    call(sfe.score_function(sfe.baselines.optimal()), "stratified")
  with pytest.raises(TypeError, match="quantile function.*Gamma"):
    call(sfe.pathwise(), "rqmc", builder=lambda p: distrax.Gamma(p["loc"], p["scale"]))
  with pytest.raises(ValueError, match="without sfe_jax's samplers"):
    bits = lambda p: distrax.Bernoulli(logits=p, dtype=jnp.float32)  # noqa: E731
    call(sfe.gumbel_softmax(0.5), "rqmc", builder=bits, params=jnp.asarray(0.0))
  with pytest.raises(ValueError, match="even number of samples"):
    call(sfe.pathwise(), "antithetic", n=7)
  big = lambda p: distrax.MultivariateNormalDiag(jnp.zeros(21202) + p["loc"], jnp.ones(21202))  # noqa: E731
  with pytest.raises(ValueError, match="up to 21201 coordinates"):
    call(sfe.pathwise(), "rqmc", n=2, builder=big)


def test_points_never_round_to_0_or_1():
  # float32 rounds (2^24 - 1/2) 2^-24 and 1 - 2^-30 to exactly 1.0, where ndtri is infinite: a NaN gradient once
  # in about 3e6 points before the grid kept 23 bits and every sampler clipped into the open interval.
  @jax.jit
  def points(extremes, near_ends):
    u = samplers._to_unit(extremes, jnp.float32)
    return u, jax.scipy.special.ndtri(u), samplers._inside(near_ends)

  u, quantiles, clipped = map(
    np.asarray, points(jnp.array([0, 2**32 - 1], jnp.uint32), jnp.array([0.0, 1.0 - 2.0**-30, 1.0], jnp.float32))
  )
  assert np.all((u > 0) & (u < 1)) and np.all(np.isfinite(quantiles))
  assert np.all((clipped > 0) & (clipped < 1))


def test_a_nested_call_draws_with_its_own_sampler_and_key():
  # f itself calls sfe (here with the default i.i.d. sampler): its estimate must depend on its own key, not come
  # from the outer call's RQMC points.
  def outer(inner_key):
    def f(x):
      inner = sfe.expectation(sfe.pathwise(), jnp.sum, normal, PARAMS, inner_key, num_samples=4)[0]
      return x * inner

    return sfe.expectation(sfe.pathwise(), f, normal, PARAMS, jax.random.key(0), num_samples=64, sampler="rqmc")[0]

  compiled = jax.jit(outer)
  values = {float(compiled(jax.random.key(k))) for k in range(3)}
  assert len(values) == 3, values
  # And an estimator that draws its own noise is still refused when f nests an sfe call (while tracing).
  bits = lambda p: distrax.Bernoulli(logits=p, dtype=jnp.float32)  # noqa: E731
  nested = lambda b: b * sfe.expectation(sfe.pathwise(), jnp.sum, normal, PARAMS, jax.random.key(1), num_samples=4)[0]  # noqa: E731
  with pytest.raises(ValueError, match="without sfe_jax's samplers"):
    jax.eval_shape(
      lambda: sfe.value_and_grad(
        sfe.gumbel_softmax(0.5), nested, bits, jnp.asarray(0.0), jax.random.key(0), num_samples=8, sampler="rqmc"
      )
    )


def test_tails_and_grids():
  laplace = jax.jit(lambda u: samplers._location_scale(distrax.Laplace(0.0, 1.0))[2](u))
  u = jnp.array([1e-30, 1e-10, 0.25, 0.5, 1.0 - 2.0**-24], jnp.float32)
  quantiles = np.asarray(laplace(u))
  np.testing.assert_allclose(quantiles[:3], np.log(2.0 * np.asarray(u[:3], np.float64)), rtol=1e-6)
  assert np.all(np.isfinite(quantiles))
  # Antithetic and stratified draw grid midpoints: 1 - u is on the grid, and nothing sits at the smallest float.
  v = jax.jit(lambda k: samplers._open_uniform(k, (100_000,), jnp.float32))(jax.random.key(0))
  v = np.asarray(v, np.float64)
  assert v.min() >= 2.0**-24 and np.all(np.mod(v * 2**23 - 0.5, 1.0) == 0.0)
  with jax.enable_x64(True):
    w = _uniforms("rqmc", jax.random.key(0), 2**14, 8, jnp.float64)
    # 64 bits from two scrambled sequences: the points are not on the 32-bit Sobol grid's midpoints.
    assert w.dtype == np.float64 and np.mean(np.mod(w * 2.0**32, 1.0) == 0.5) < 0.01


def test_tfp_diagonal_gaussian_without_loc():
  builder = lambda p: tfp.distributions.MultivariateNormalDiag(scale_diag=p)  # noqa: E731
  value, grads, _ = jax.jit(
    lambda p, k: sfe.value_and_grad(sfe.score_function(), jnp.sum, builder, p, k, num_samples=16)
  )(jnp.ones(3), jax.random.key(0))
  assert np.isfinite(value) and grads.shape == (3,)


def test_wrapped_and_squashed_distributions():
  # Independent(Categorical) by the inverse CDF; a tanh-squashed Normal through its base (pathwise).
  logits = jnp.array([[0.2, -0.4, 1.0], [0.0, 0.3, -jnp.inf]])
  wrapped = lambda p: distrax.Independent(distrax.Categorical(logits=p), 1)  # noqa: E731
  f = lambda a: jnp.sum((a - 1.0) ** 2)  # noqa: E731

  def run(est, f, builder, params, **kw):  # compiled: eagerly, each of the library's operations compiles alone
    return jax.jit(lambda p, k: sfe.value_and_grad(est, f, builder, p, k, **kw)[:2])(params, jax.random.key(0))

  value, grads = run(sfe.score_function(), f, wrapped, logits, num_samples=4096, sampler="rqmc")
  probs = np.asarray(jax.jit(jax.nn.softmax)(logits))
  exact = float(np.sum(probs * (np.arange(3.0) - 1.0) ** 2))
  assert abs(float(value) - exact) < 0.01 and float(grads[1, 2]) == 0.0
  squashed = lambda p: distrax.Transformed(distrax.Normal(p["loc"], p["scale"]), distrax.Tanh())  # noqa: E731
  value, grads = run(sfe.pathwise(), lambda y: y, squashed, PARAMS, num_samples=4096, sampler="rqmc")
  iid = run(sfe.pathwise(), lambda y: y, squashed, PARAMS, num_samples=2**18)
  assert abs(float(value) - float(iid[0])) < 5e-3 and abs(float(grads["loc"]) - float(iid[1]["loc"])) < 5e-3
  with pytest.raises(ValueError, match="at most 2\\*\\*32"):
    jax.eval_shape(
      lambda: sfe.expectation(
        sfe.pathwise(), cos_k, normal, PARAMS, jax.random.key(0), num_samples=2**33, sampler="rqmc", chunk_size=2**20
      )
    )
