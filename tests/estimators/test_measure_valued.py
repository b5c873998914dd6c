"""Measure-valued derivatives against exact values: reference Section 1 (Gaussian), enumeration (discrete)."""

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sfe_jax as sfe
from tests.gaussian_reference import IDS, PARAMS, ROWS, dist_builder, loc_scale_columns
from tests.helpers import (
  NUM_SE,
  assert_mean,
  assert_variance,
  bernoulli_support,
  categorical_support,
  enumerate_expectation,
  flat,
  flat1,
  repeated_estimates,
  smallest_num_samples,
  variance_and_se,
)

KEY = jax.random.key(0)
R = 40_000  # single-sample repeats for the Gaussian reference problems
R_SMALL = 20_000

SQUARE_ROWS = [r for r in ROWS if r.name == "(x-k)^2"]
SQUARE_IDS = [f"k={r.k}" for r in SQUARE_ROWS]


# ----------------------------------------------------------------------------------------------------------
# Gaussian: reference Section 1 at mu = 1, sigma = 1.
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_coupled_mean_and_variance(row):
  values, grads = repeated_estimates(
    sfe.measure_valued(), row.f, dist_builder, PARAMS, KEY, num_samples=4, num_repeats=R
  )  # one base sample: 4 evaluations of f
  g = loc_scale_columns(grads)
  assert_mean(g, row.grad, what=f"MVD mean on {row.name}, k={row.k}")
  assert_variance(g, row.var_mvd, what=f"MVD variance on {row.name}, k={row.k}")


def _uncoupled_square_variance(k, mu=1.0, sigma=1.0):
  """Exact single-sample variances of the uncoupled estimator on f = (x - k)^2, a = mu - k.

  mu:    [(a + sigma W)^2 - (a - sigma W')^2] / (sqrt(2 pi) sigma)
         = [2 a (W + W') + sigma (W^2 - W'^2)] / sqrt(2 pi), with Var W = 2 - pi/2 and W^2 ~ 2 Exp(1)
         (variance 4), the two parts uncorrelated: Var = (8 a^2 (2 - pi/2) + 8 sigma^2) / (2 pi).
  sigma: 2 a (M - Z) + sigma (M^2 - Z^2), E M^2 = 3, E M^4 = 15, Z ~ N(0, 1): Var = 16 a^2 + 8 sigma^2.
  """
  a = mu - k
  return np.array([(8 * a**2 * (2 - np.pi / 2) + 8 * sigma**2) / (2 * np.pi), 16 * a**2 + 8 * sigma**2])


@pytest.mark.parametrize("row", SQUARE_ROWS, ids=SQUARE_IDS)
def test_uncoupled_unbiased_with_exact_variance(row):
  values, grads = repeated_estimates(
    sfe.measure_valued(coupling=False), row.f, dist_builder, PARAMS, KEY, num_samples=4, num_repeats=R
  )
  g = loc_scale_columns(grads)
  assert_mean(g, row.grad, what=f"uncoupled MVD mean on k={row.k}")
  exact = _uncoupled_square_variance(row.k)
  assert_variance(g, exact, what=f"uncoupled MVD variance on k={row.k}")
  assert_mean(np.asarray(values), (1.0 - row.k) ** 2 + 1.0, what=f"uncoupled MVD value on k={row.k}")
  # Coupling always helps sigma. For mu the shared W cancels the even part of f but doubles the odd part
  # (f(mu + W) and f(mu - W) move in opposite directions), so it helps only when |a| < 1.53: at k = 0
  # (a = 1), not at k = +-3. The measured variances must order as the exact ones do.
  var, se = variance_and_se(g)
  coupled = np.asarray(row.var_mvd)
  assert var[1] - NUM_SE * se[1] > coupled[1]
  if exact[0] > coupled[0]:
    assert row.k == 0.0 and var[0] - NUM_SE * se[0] > coupled[0]
  else:
    assert var[0] + NUM_SE * se[0] < coupled[0]


@pytest.mark.parametrize("family, coupling", [("mvn-diag", True), ("normal-2x2-log-scale", False)])
def test_multivariate_gaussian_quadratic(family, coupling):
  # E[sum w (x - k)^2] = sum w ((mu - k)^2 + sigma^2): d/dmu = 2 w (mu - k), d/dsigma = 2 w sigma.
  if family == "mvn-diag":
    k, w = jnp.array([0.3, -0.5, 1.0]), jnp.array([1.0, 2.0, 0.5])
    params = {"loc": jnp.array([0.2, -0.4, 1.0]), "scale": jnp.array([1.0, 0.6, 1.5])}
    build = lambda p: distrax.MultivariateNormalDiag(p["loc"], p["scale"])
    closed = lambda p: jnp.sum(w * ((p["loc"] - k) ** 2 + p["scale"] ** 2))
  else:  # A (2, 2) batch; the estimator works on (loc, scale) and autodiff maps scale to log_scale.
    k, w = jnp.array([[0.3, -0.5], [1.0, 0.0]]), jnp.array([[1.0, 2.0], [0.5, 3.0]])
    params = {"loc": jnp.array([[0.2, -0.4], [1.0, 0.0]]), "log_scale": jnp.array([[0.0, -0.5], [0.4, 0.1]])}
    build = lambda p: distrax.Normal(p["loc"], jnp.exp(p["log_scale"]))
    closed = lambda p: jnp.sum(w * ((p["loc"] - k) ** 2 + jnp.exp(2 * p["log_scale"])))
  f = lambda x: jnp.sum(w * (x - k) ** 2)
  # The Gaussian path broadcasts explicitly (distrax.Bernoulli's sampler does not, so only here).
  with jax.numpy_rank_promotion("raise"):
    est = sfe.measure_valued(coupling=coupling)
    values, grads = repeated_estimates(
      est, f, build, params, KEY, num_samples=smallest_num_samples(est, build, params), num_repeats=R_SMALL
    )
  for g, p in zip(jax.tree.leaves(grads), jax.tree.leaves(params)):
    assert g.shape == (R_SMALL,) + p.shape and g.dtype == p.dtype
  exact_value, exact_grad = jax.jit(jax.value_and_grad(closed))(params)
  assert_mean(flat(grads), flat1(exact_grad), what=f"{family} gradient")
  assert_mean(np.asarray(values), exact_value, what=f"{family} value")


# ----------------------------------------------------------------------------------------------------------
# Discrete: exact gradients by enumerating the support, differentiated by autodiff.
# ----------------------------------------------------------------------------------------------------------

P0 = jnp.array([0.6, 0.51, 0.48])
TABLE_3 = jax.random.normal(jax.random.key(11), (8,))
TABLE_4 = jax.random.normal(jax.random.key(12), (16,))
TABLE_C = jax.random.normal(jax.random.key(13), (3, 3))


def _bits(b):
  return jnp.sum(b.reshape(-1).astype(jnp.int32) * 2 ** jnp.arange(b.size)[::-1])


DISCRETE = {
  # Separable f: each coordinate's difference is deterministic, so the estimate has zero variance.
  "bernoulli-separable": (
    lambda p: distrax.Bernoulli(logits=p["logits"]),
    {"logits": jnp.array([0.5, -1.0, 2.0])},
    lambda b: jnp.sum((b - P0) ** 2),
    bernoulli_support((3,)),
  ),
  "bernoulli-table": (
    lambda p: distrax.Bernoulli(logits=p["logits"]),
    {"logits": jnp.array([0.5, -1.0, 2.0])},
    lambda b: TABLE_3[_bits(b)],
    bernoulli_support((3,)),
  ),
  "bernoulli-2x2": (
    lambda p: distrax.Bernoulli(logits=p["logits"]),
    {"logits": jnp.array([[0.3, -0.7], [1.2, 0.0]])},
    lambda b: TABLE_4[_bits(b)] * jnp.sum(b),
    bernoulli_support((2, 2)),
  ),
  "bernoulli-probs": (
    lambda p: distrax.Bernoulli(probs=p["probs"]),
    {"probs": jnp.array([0.2, 0.5, 0.9])},
    lambda b: TABLE_3[_bits(b)],
    bernoulli_support((3,)),
  ),
  "categorical-2x3": (
    lambda p: distrax.Categorical(logits=p["logits"]),
    {"logits": jnp.array([[0.5, -1.0, 0.2], [0.0, 1.0, -0.3]])},
    lambda c: TABLE_C[c[0], c[1]],
    categorical_support((2,), 3),
  ),
  "categorical-probs": (
    lambda p: distrax.Categorical(probs=p["probs"]),
    {"probs": jnp.array([[0.2, 0.3, 0.5], [0.6, 0.1, 0.3]])},
    lambda c: TABLE_C[c[0], c[1]],
    categorical_support((2,), 3),
  ),
}


@pytest.mark.parametrize("name", list(DISCRETE))
def test_discrete_unbiased(name):
  build, params, f, support = DISCRETE[name]
  exact = jax.jit(jax.value_and_grad(lambda p: enumerate_expectation(f, build, p, support)))
  exact_value, exact_grad = exact(params)
  values, grads = repeated_estimates(
    sfe.measure_valued(),
    f,
    build,
    params,
    KEY,
    num_samples=smallest_num_samples(sfe.measure_valued(), build, params),
    num_repeats=R_SMALL,
  )
  assert_mean(flat(grads), flat1(exact_grad), what=f"{name} gradient")
  assert_mean(np.asarray(values), exact_value, what=f"{name} value")
  if name == "bernoulli-separable":
    g = flat(grads)  # Zero variance up to float32 rounding.
    assert np.all(np.std(g.astype(np.float64), axis=0) <= 1e-6)


def test_bernoulli_shared_logit_reference():
  # Reference Section 2, multi-dimensional variant: three bits share one logit; at phi = 0 the gradient is
  # -0.045, and f is separable, so every single-sample estimate is exact.
  build = lambda p: distrax.Bernoulli(logits=jnp.broadcast_to(p["phi"], (3,)))
  _, grads = repeated_estimates(
    sfe.measure_valued(),
    lambda b: jnp.sum((b - P0) ** 2),
    build,
    {"phi": jnp.asarray(0.0)},
    KEY,
    num_samples=6,
    num_repeats=100,
  )  # 2 D = 6
  np.testing.assert_allclose(np.asarray(grads["phi"]), -0.045, rtol=1e-5)


# ----------------------------------------------------------------------------------------------------------
# Contract: value, surrogate, jit, vmap, gradient of what f closes over, cost, errors.
# ----------------------------------------------------------------------------------------------------------

CONTRACT = {
  "mvn-diag": (
    lambda p: distrax.MultivariateNormalDiag(p["loc"], p["scale"]),
    {"loc": jnp.array([0.2, -0.4]), "scale": jnp.array([1.0, 0.6])},
    lambda x, w: w * jnp.sum(jnp.sin(x) * x),
  ),
  "bernoulli": DISCRETE["bernoulli-2x2"][:2] + (lambda b, w: w * TABLE_4[_bits(b)],),
  "categorical": DISCRETE["categorical-2x3"][:2] + (lambda c, w: w * TABLE_C[c[0], c[1]],),
}


@pytest.mark.parametrize(
  "name, coupling",
  [(name, True) for name in CONTRACT] + [("mvn-diag", False)],
  ids=[f"{name}-coupled" for name in CONTRACT] + ["mvn-diag-uncoupled"],
)
def test_transformations_agree(name, coupling):
  build, params, fw = CONTRACT[name]
  est, base_samples = sfe.measure_valued(coupling=coupling), 3
  n = base_samples * smallest_num_samples(est, build, params)  # evaluations of f
  f = lambda x: fw(x, 1.0)
  vg = lambda p, k: sfe.value_and_grad(est, f, build, p, k, num_samples=n)[:2]
  surrogate = lambda p: sfe.expectation(est, f, build, p, KEY, num_samples=n)[0]
  keys = jax.random.split(KEY, 2)
  batched = jax.tree.map(lambda x: jnp.stack([x, x + 0.1]), params)
  unstack = lambda tree, i: jax.tree.map(lambda x: x[i], tree)

  @jax.jit  # Every transformation in one compilation: compiling is what makes these tests slow.
  def run(params, batched, keys):
    out = {
      "vg": vg(params, KEY),
      # The surrogate of `expectation` has the value and, under jax.grad, the gradient of value_and_grad.
      "surrogate": jax.value_and_grad(surrogate)(params),
      # f closes over w linearly, so d surrogate / dw at w = 1 is the Monte Carlo value itself.
      "dw": jax.grad(lambda w: sfe.expectation(est, lambda x: fw(x, w), build, params, KEY, num_samples=n)[0])(1.0),
      # vmap over keys and over params equals one call per (params, key).
      "vmap": jax.vmap(vg)(batched, keys),
      "loop": [vg(unstack(batched, i), keys[i]) for i in range(2)],
    }
    if name in ("bernoulli", "categorical"):  # The value is the plain mean of f over the base samples.
      out["mc_mean"] = jnp.mean(jax.vmap(f)(build(params).sample(seed=KEY, sample_shape=(base_samples,))))
    return out

  out = run(params, batched, keys)
  value, grads = out["vg"]
  close = lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
  close(out["surrogate"][0], value)
  close(flat1(out["surrogate"][1]), flat1(grads))
  close(out["dw"], value)
  for i in range(2):
    close(out["vmap"][0][i], out["loop"][i][0])
    close(flat1(unstack(out["vmap"][1], i)), flat1(out["loop"][i][1]))
  if "mc_mean" in out:
    close(out["mc_mean"], value)
  if name == "mvn-diag" and coupling:  # jit gives the numbers of eager execution (slow to run: once).
    evalue, egrads = vg(params, KEY)
    close(evalue, value)
    close(flat1(egrads), flat1(grads))


@pytest.mark.parametrize(
  "name, build, params, per_sample",
  [
    ("normal", lambda p: distrax.Normal(p["loc"], 1.0), {"loc": jnp.zeros((2, 3))}, 4 * 6),
    ("bernoulli", lambda p: distrax.Bernoulli(logits=p["l"]), {"l": jnp.zeros(5)}, 2 * 5),
    ("categorical", lambda p: distrax.Categorical(logits=p["l"]), {"l": jnp.zeros((2, 4))}, 2 * 4),
  ],
)
def test_cost_and_f_never_differentiated(name, build, params, per_sample):
  # f is a host callback: it has no derivative (jax.grad through it would raise), and it sees every batch of
  # evaluations, so the documented cost per base sample can be counted.
  batch_sizes = []

  def host_f(x):
    batch_sizes.append(x.shape[0])
    return np.sum(np.asarray(x, np.float32).reshape(x.shape[0], -1) ** 2, axis=1)

  f = lambda x: jax.pure_callback(host_f, jax.ShapeDtypeStruct((), jnp.float32), x, vmap_method="expand_dims")
  n = 3  # base samples
  vg = jax.jit(lambda p: sfe.value_and_grad(sfe.measure_valued(), f, build, p, KEY, num_samples=n * per_sample))
  _, grads, _ = vg(params)
  assert batch_sizes == [n * per_sample]
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


@pytest.mark.parametrize(
  "build, params",
  [
    (lambda p: distrax.Gamma(p["a"], 1.0), {"a": jnp.ones(2)}),
    (lambda p: distrax.Laplace(p["loc"], 1.0), {"loc": jnp.zeros(2)}),
    (lambda p: distrax.MultivariateNormalTri(p["loc"], jnp.eye(2)), {"loc": jnp.zeros(2)}),
  ],
  ids=["gamma", "laplace", "mvn-tri"],
)
def test_unsupported_distribution(build, params):
  dist_name = type(build(params)).__name__
  with pytest.raises(
    TypeError,
    match=rf"measure_valued.*Normal.*Categorical.*got distrax\.{dist_name}.*"
    r"score_function",
  ):
    sfe.value_and_grad(sfe.measure_valued(), jnp.sum, build, params, KEY, num_samples=2)


def test_coupling_must_be_bool():
  with pytest.raises(TypeError, match="coupling"):
    sfe.measure_valued(coupling="yes")
