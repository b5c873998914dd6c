"""ARM and DisARM: exact means and variances on the Bernoulli toys of the reference (Section 2), the
stick-breaking extension to categoricals, and what is specific to antithetic pairs."""

import re

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import sfe_jax as sfe
from sfe_jax._src.discrete import antithetic
from tests.helpers import NUM_SE, assert_mean, assert_variance, variance_and_se

KEY = jax.random.key(0)

# ----------------------------------------------------------------------------------------------------------
# The one-bit toy E[(b - p0)^2], gradient with respect to the logit phi (reference Section 2).
# ----------------------------------------------------------------------------------------------------------


def _toy_variances(p0, p):
  """Exact single-estimate variances of the reference's table: (REINFORCE, LOO(2), ARM, DisARM)."""
  f1, f0 = (1 - p0) ** 2, p0**2
  delta, grad = f1 - f0, (f1 - f0) * p * (1 - p)
  m, big_m = min(p, 1 - p), max(p, 1 - p)
  return np.array(
    [
      p * (1 - p) * (f1**2 * (1 - p) + f0**2 * p) - grad**2,
      0.5 * delta**2 * p * (1 - p) * (1 - 2 * p * (1 - p)),
      (2 / 3) * delta**2 * (1 / 8 - (0.5 - m) ** 3) - grad**2,
      0.5 * delta**2 * big_m**2 * m * (1 - 2 * m),
    ]
  )


# (p0, p, the reference table's variances or None): every row of the table, plus p > 1/2, and p = 1/2 with an
# f whose values are exact floats.
TOY_ROWS = [
  (0.49, 0.1, [5.9954e-3, 1.4760e-5, 1.3027e-5, 1.2960e-5]),
  (0.49, 0.3, [1.3559e-2, 2.4360e-5, 1.3560e-5, 1.1760e-5]),
  (0.49, 0.5, [1.5638e-2, 2.5000e-5, 8.3333e-6, 0.0]),
  (0.499, 0.3, [1.3167e-2, 2.4360e-7, 1.3560e-7, 1.1760e-7]),
  (0.45, 0.8, None),
  (0.25, 0.5, None),
]
TOY_ESTIMATORS = [  # (name, estimator, num_samples): equal cost, two evaluations of f, except REINFORCE.
  ("reinforce", sfe.score_function(), 1),
  ("loo", sfe.score_function(sfe.baselines.leave_one_out()), 2),
  ("arm", sfe.arm(), 2),
  ("disarm", sfe.disarm(), 2),
]
R_TOY = 100_000


def test_toy_closed_forms_reproduce_the_reference_table():
  for p0, p, table in TOY_ROWS:
    if table is not None:
      np.testing.assert_allclose(_toy_variances(p0, p), table, rtol=1e-4, atol=1e-12)


@pytest.fixture(scope="module")
def toy_estimates():
  """Gradient estimates for every (row, estimator), shape (rows, R_TOY); one compilation per estimator."""
  p0s = jnp.array([r[0] for r in TOY_ROWS], jnp.float32)
  phis = jnp.array([np.log(r[1] / (1 - r[1])) for r in TOY_ROWS], jnp.float32)
  build = lambda phi: distrax.Bernoulli(logits=phi)
  out = {}
  for name, est, n in TOY_ESTIMATORS:

    def one_row(phi, p0, key, est=est, n=n):
      f = lambda b: (b - p0) ** 2
      return sfe.diagnostics.repeated_estimates(est, f, build, phi, key, num_samples=n, num_repeats=R_TOY)[1]

    keys = jax.random.split(jax.random.key(1), len(TOY_ROWS))
    out[name] = np.asarray(jax.jit(jax.vmap(one_row))(phis, p0s, keys), np.float64)
  return out


def variance_kurtosis_and_se(g):
  """Unbiased variance ``s^2``, kurtosis and the fourth-moment standard error of ``s^2``.

  The standard error is ``sfe.diagnostics.variance_and_std_error``'s, which stays right for a kurtosis near 1
  (a two-point estimate with equal weights, e.g. REINFORCE at p = 1/2), where the difference form
  ``m4 - s^4 (r - 3) / (r - 1)`` cancels and underestimates ``Var(s^2)`` by a factor of about r.
  """
  centred = g - g.mean()
  kurt = np.mean(centred**4) / np.mean(centred**2) ** 2
  var, se = variance_and_se(g)
  return var, kurt, se


def kurtosis_widened_chi2_interval(var_hat, r, kurtosis, num_se=NUM_SE):
  """A two-sided interval for a variance from ``r`` draws, at the confidence of ``num_se`` normal SEs.

  Under normality ``(r - 1) s^2 / sigma^2 ~ chi2(r - 1)``, the plain chi-square interval. For any distribution
  ``Var(s^2) = sigma^4 (2 / (r - 1) + (kurtosis - 3) / r)``; a scaled chi-square with that variance has the
  effective degrees of freedom ``nu = 2 / (2 / (r - 1) + (kurtosis - 3) / r)`` (``r - 1`` at kurtosis 3;
  positive because the kurtosis is at least 1): the interval widened (kurtosis > 3) or narrowed (< 3).
  """
  alpha = 2 * stats.norm.sf(num_se)
  nu = 2.0 / (2.0 / (r - 1) + (kurtosis - 3.0) / r)
  return var_hat * nu / stats.chi2.ppf(1 - alpha / 2, nu), var_hat * nu / stats.chi2.ppf(alpha / 2, nu)


@pytest.mark.parametrize("row", range(len(TOY_ROWS)), ids=[f"p0={r[0]}-p={r[1]}" for r in TOY_ROWS])
def test_toy_means_and_variances_match_closed_forms(toy_estimates, row):
  p0, p, _ = TOY_ROWS[row]
  grad = (1 - 2 * p0) * p * (1 - p)
  exact_vars = _toy_variances(p0, p)
  for (name, _, _), exact_var in zip(TOY_ESTIMATORS, exact_vars):
    g = toy_estimates[name][row]
    what = f"{name} at p0={p0}, p={p}"
    if exact_var == 0.0:
      # DisARM at p = 1/2: b~ = 1 - b always, so every estimate is Delta / 4, up to the rounding of f (XLA may
      # contract f(b~) - f(b) into a fused multiply-add whose rounding depends on which of b, b~ is 1). With
      # p0 = 1/4 every value of f is an exact float and so is every estimate.
      rounding = 8 * np.finfo(np.float32).eps * max(p0, 1 - p0) ** 2  # a few float32 ulps of f
      np.testing.assert_allclose(g, grad, rtol=0, atol=rounding, err_msg=f"{what}: the variance must be zero")
      if p0 == 0.25:
        assert np.all(g == 0.125), f"{what}: every estimate must be exactly Delta / 4 = 0.125"
      continue
    assert_mean(g, grad, what=f"{what}: mean", atol=0.0)
    var_hat, kurt, se = variance_kurtosis_and_se(g)
    assert abs(var_hat - exact_var) <= NUM_SE * se, (
      f"{what}: variance {var_hat} differs from exact {exact_var} by more than {NUM_SE} SE ({se})"
    )
    lo, hi = kurtosis_widened_chi2_interval(var_hat, g.size, kurt)
    assert lo <= exact_var <= hi, f"{what}: exact variance {exact_var} outside the interval [{lo}, {hi}]"


def test_toy_ordering_at_equal_cost(toy_estimates):
  # Two evaluations of f each: DisARM <= ARM < LOO on every row (exact), and the measured variances agree.
  for row, (p0, p, _) in enumerate(TOY_ROWS):
    _, loo, arm, dis = _toy_variances(p0, p)
    assert dis <= arm < loo
    v_arm, se_arm = variance_and_se(toy_estimates["arm"][row])
    v_loo, se_loo = variance_and_se(toy_estimates["loo"][row])
    assert v_arm < v_loo + NUM_SE * np.hypot(se_arm, se_loo)


# ----------------------------------------------------------------------------------------------------------
# The three-bit variant (Kool et al. 2020): three bits share one logit, f(b) = sum_i (b_i - p0_i)^2.
# ----------------------------------------------------------------------------------------------------------

P0_3 = np.array([0.6, 0.51, 0.48])


def _three_bit_exact_variances():
  """Exact (ARM, DisARM) variances at phi = 0, where b~ = 1 - b. With s_i = 1 - 2 b_i, D = f(1 - b) - f(b):
  DisARM = D sum_i s_i / 4; ARM = D sum_i (u_i - 1/2), where given b_i, u_i - 1/2 is uniform on the half
  interval of sign s_i (mean s_i / 4, variance 1/48), so E[ARM^2 | b] = D^2 (3/48 + (sum_i s_i)^2 / 16)."""
  bits = np.array(np.meshgrid(*[[0, 1]] * 3, indexing="ij")).reshape(3, -1).T.astype(np.float64)
  f = lambda b: np.sum((b - P0_3) ** 2, axis=-1)
  d = f(1 - bits) - f(bits)
  s = np.sum(1 - 2 * bits, axis=-1)
  grad = -0.0450
  return np.mean(d**2 * (3 / 48 + s**2 / 16)) - grad**2, np.mean(d**2 * s**2 / 16) - grad**2


def test_three_bit_shared_logit():
  f = lambda b: jnp.sum((b - P0_3.astype(np.float32)) ** 2)
  build = lambda phi: distrax.Bernoulli(logits=jnp.full(3, phi))
  phi = jnp.float32(0.0)
  exact_value, exact_grad, _ = jax.jit(lambda p: sfe.value_and_grad(sfe.enumerate(), f, build, p, KEY))(phi)
  np.testing.assert_allclose(exact_grad, -0.0450, atol=5e-7)
  np.testing.assert_allclose(exact_value, np.sum(0.5 * (1 - 2 * P0_3) + P0_3**2), rtol=1e-6)
  r = 40_000
  run = jax.jit(
    lambda est, k: sfe.diagnostics.repeated_estimates(est, f, build, phi, k, num_samples=2, num_repeats=r),
    static_argnums=0,
  )
  var_arm, var_disarm = _three_bit_exact_variances()
  assert var_disarm < var_arm
  for est, exact_var in [(sfe.arm(), var_arm), (sfe.disarm(), var_disarm)]:
    values, grads = run(est, jax.random.key(2))
    assert_mean(np.asarray(grads), -0.0450, what=f"{est.name} mean on the three-bit toy")
    assert_mean(np.asarray(values), exact_value, what=f"{est.name} value on the three-bit toy")
    assert_variance(np.asarray(grads), exact_var, what=f"{est.name} variance on the three-bit toy")


# ----------------------------------------------------------------------------------------------------------
# Categorical variables through stick-breaking.
# ----------------------------------------------------------------------------------------------------------

_RNG = np.random.default_rng(3)
CAT_LOGITS = jnp.asarray(_RNG.normal(size=(2, 4)), jnp.float32)
CAT_TABLE = jnp.asarray(_RNG.normal(size=(4, 4)), jnp.float32)
CAT_PROBLEMS = {
  "categorical": (lambda p: distrax.Categorical(logits=p), lambda c: CAT_TABLE[c[0], c[1]]),
  "one-hot": (
    lambda p: distrax.OneHotCategorical(logits=p),
    lambda x: jnp.einsum("i,ij,j->", x[0].astype(jnp.float32), CAT_TABLE, x[1].astype(jnp.float32)),
  ),
}
R_CAT = 20_000


@pytest.mark.parametrize("kind", list(CAT_PROBLEMS))
def test_categorical_stick_breaking_unbiased_and_disarm_beats_arm(kind):
  build, f = CAT_PROBLEMS[kind]
  exact_value, exact_grad, _ = jax.jit(lambda p: sfe.value_and_grad(sfe.enumerate(), f, build, p, KEY))(CAT_LOGITS)
  run = jax.jit(
    lambda est: sfe.diagnostics.repeated_estimates(
      est, f, build, CAT_LOGITS, jax.random.key(4), num_samples=2, num_repeats=R_CAT
    ),
    static_argnums=0,
  )
  estimates = {}
  for est in (sfe.arm(), sfe.disarm()):
    values, grads = run(est)
    g = np.asarray(grads, np.float64).reshape(R_CAT, -1)
    assert_mean(g, np.asarray(exact_grad).reshape(-1), what=f"{est.name} on {kind}: gradient")
    assert_mean(np.asarray(values), exact_value, what=f"{est.name} on {kind}: value")
    estimates[est.name] = g
  a, d = estimates["sfe.arm()"], estimates["sfe.disarm()"]
  # The same key gives both the same pairs, and DisARM = E[ARM | b, b~]: per coordinate,
  # Var(ARM) - Var(DisARM) = E[(ARM - DisARM)^2] >= 0. Measured on paired estimates, with standard errors.
  gap_terms = (a - a.mean(0)) ** 2 - (d - d.mean(0)) ** 2
  gap, gap_se = gap_terms.mean(0), gap_terms.std(0, ddof=1) / np.sqrt(R_CAT)
  assert np.all(gap > -NUM_SE * gap_se), f"DisARM variance above ARM's on {kind}: gap {gap} (se {gap_se})"
  assert np.all(gap > 0.0)
  assert_mean(
    gap_terms - (a - d) ** 2, np.zeros(a.shape[1]), what=f"Var(ARM) - Var(DisARM) = E[(ARM - DisARM)^2] on {kind}"
  )


def test_categorical_and_one_hot_see_the_same_pairs():
  # The two encodings of the same variables, the same f and key: identical estimates, and f receives the
  # distribution's own encoding (indices of shape (2,), or one-hot vectors of shape (2, 4)).
  seen = {}
  results = {}
  for kind, (build, f) in CAT_PROBLEMS.items():

    def recording_f(x, f=f, kind=kind):
      seen[kind] = (x.shape, x.dtype)
      return f(x)

    results[kind] = jax.jit(
      lambda p, build=build, recording_f=recording_f: sfe.value_and_grad(
        sfe.disarm(), recording_f, build, p, KEY, num_samples=6
      )[:2]
    )(CAT_LOGITS)
  assert seen["categorical"] == ((2,), jnp.int32)
  assert seen["one-hot"] == ((2, 4), jnp.int32)
  np.testing.assert_allclose(results["categorical"][0], results["one-hot"][0], rtol=1e-6)
  np.testing.assert_allclose(results["categorical"][1], results["one-hot"][1], rtol=1e-5, atol=1e-7)


# ----------------------------------------------------------------------------------------------------------
# Antithetic pairs: sampling, extreme logits, encodings, cost.
# ----------------------------------------------------------------------------------------------------------


def test_uniform_grid_is_symmetric_and_antithetic_bits_are_exact():
  u, logit_u = jax.jit(antithetic._uniform_and_logit, static_argnums=(1, 2))(KEY, (100_000,), jnp.float32)
  u, logit_u = np.asarray(u, np.float64), np.asarray(logit_u)
  k = u * 2**23 - 0.5  # u = (k + 1/2) / 2^23 with integer k in [0, 2^23)
  np.testing.assert_array_equal(k, np.round(k))
  assert k.min() >= 0 and k.max() < 2**23
  # logit(1 - u) = -logit(u) bit for bit, so b~ is distributed exactly as b.
  one_minus = jnp.asarray(1.0 - u, jnp.float32)
  np.testing.assert_array_equal(np.asarray(jnp.log(one_minus) - jnp.log(1.0 - one_minus)), -logit_u)
  assert np.all(np.isfinite(logit_u))
  pair_gradients = jax.jit(antithetic._pair_gradients, static_argnums=(0, 3))
  b, b_tilde, _ = pair_gradients("disarm", jnp.array([-50.0, -1.0, 0.0, 2.0, 50.0]), KEY, 1000)
  b, b_tilde = np.asarray(b), np.asarray(b_tilde)
  np.testing.assert_array_equal(b[:, 2] + b_tilde[:, 2], 1.0)  # p = 1/2: always opposite
  np.testing.assert_array_equal(b[:, [0, 4]], np.broadcast_to([0.0, 1.0], (1000, 2)))
  np.testing.assert_array_equal(b_tilde[:, [0, 4]], np.broadcast_to([0.0, 1.0], (1000, 2)))
  assert np.all(b[:, 1] * b_tilde[:, 1] == 0) and np.all((1 - b[:, 3]) * (1 - b_tilde[:, 3]) == 0)


def test_float64_logits_use_a_float64_grid():
  with jax.enable_x64(True):
    u, logit_u = jax.jit(antithetic._uniform_and_logit, static_argnums=(1, 2))(KEY, (10_000,), jnp.float64)
    k = np.asarray(u) * 2.0**52 - 0.5
    np.testing.assert_array_equal(k, np.round(k))
    assert logit_u.dtype == jnp.float64 and np.all(np.isfinite(logit_u)) and k.max() < 2**52
    logits = jnp.array([0.3, 0.0], jnp.float64)
    value, grads, _ = jax.jit(
      lambda p: sfe.value_and_grad(
        sfe.disarm(), lambda b: 2.0 * b[1], lambda p: distrax.Bernoulli(logits=p), p, KEY, num_samples=2
      )
    )(logits)
    assert grads.dtype == jnp.float64 and value.dtype == jnp.float64
    # p = 1/2 for bit 1: b~ = 1 - b, so the estimate (1/2) * 2 * 1 * sigmoid(0) is exactly the gradient.
    assert grads[1] == 0.5


@pytest.mark.parametrize("estimator", [sfe.arm, sfe.disarm])
def test_extreme_logits_exact(estimator):
  # With logits of +-50 the bits are certain: both samples of every pair agree and the gradient is exactly 0.
  build = lambda p: distrax.Bernoulli(logits=p)
  logits = jnp.array([[50.0, -50.0], [-50.0, 50.0]])
  f = lambda b: jnp.sum(b * jnp.array([[1.0, 2.0], [3.0, 4.0]]))
  run = lambda p: sfe.value_and_grad(estimator(), f, build, p, KEY, num_samples=8)
  value, grads, _ = jax.jit(run)(logits)
  assert value == 5.0
  np.testing.assert_array_equal(grads, np.zeros((2, 2)))
  cat = lambda p: distrax.Categorical(logits=p)
  run = lambda p: sfe.value_and_grad(estimator(), lambda c: jnp.float32(c) ** 2, cat, p, KEY, num_samples=4)
  value, grads, _ = jax.jit(run)(jnp.array([-50.0, 0.0, 50.0, -50.0]))
  assert value == 4.0 and np.all(np.isfinite(grads))


def test_bernoulli_encoding_cost_and_value():
  # f sees Bernoulli's own dtype and shape, is evaluated exactly num_samples times, and the value is the mean
  # of f over both members of every pair.
  calls = []
  logits = jnp.array([[0.3, -0.2, 1.0], [0.0, 2.0, -1.5]])
  for dtype in (jnp.int32, jnp.float32):
    build = lambda p, dtype=dtype: distrax.Independent(distrax.Bernoulli(logits=p, dtype=dtype), 2)

    def f(x):
      calls.append((x.shape, x.dtype))
      return jnp.sum(x * jnp.arange(6.0).reshape(2, 3))

    value, grads, _ = jax.jit(lambda p: sfe.value_and_grad(sfe.disarm(), f, build, p, KEY, num_samples=6))(logits)
    assert calls[-1] == ((2, 3), dtype) and grads.shape == (2, 3)
  counted = []
  f_host = lambda x: jax.pure_callback(
    lambda y: (counted.append(1), np.float32(y.sum()))[1],
    jax.ShapeDtypeStruct((), jnp.float32),
    x,
    vmap_method="sequential",
  )
  jax.block_until_ready(
    jax.jit(
      lambda p: sfe.value_and_grad(sfe.arm(), f_host, lambda p: distrax.Bernoulli(logits=p), p, KEY, num_samples=10)
    )(logits)
  )
  assert len(counted) == 10


def test_pairs_average_and_what_f_closes_over():
  # With 2P evaluations the estimate is the average of P one-pair estimates made on the same pairs, and the
  # gradient with respect to what f closes over is that of the Monte Carlo mean of f.
  build = lambda p: distrax.Bernoulli(logits=p)
  logits = jnp.array([0.4, -0.7, 1.2])
  w_true = jnp.float32(1.5)
  f_of = lambda w: lambda b: w * jnp.sin(jnp.sum(b * jnp.array([1.0, 2.0, 0.5])))
  surrogate = lambda p, w: sfe.expectation(sfe.disarm(), f_of(w), build, p, KEY, num_samples=8)[0]
  value, (g_p, g_w) = jax.jit(jax.value_and_grad(surrogate, argnums=(0, 1)))(logits, w_true)
  np.testing.assert_allclose(g_w, value / w_true, rtol=1e-5)
  assert g_p.shape == (3,) and np.all(np.isfinite(g_p))


# ----------------------------------------------------------------------------------------------------------
# Errors.
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("estimator", [sfe.arm, sfe.disarm])
def test_errors(estimator):
  build = lambda p: distrax.Bernoulli(logits=p)
  f = lambda b: jnp.sum(b)
  who = re.escape(f"sfe.{estimator.__name__}()")
  with pytest.raises(TypeError, match=rf"{who} needs Bernoulli.*got distrax\.Normal.*not discrete"):
    sfe.value_and_grad(estimator(), f, lambda p: distrax.Normal(p, 1.0), jnp.zeros(2), KEY, num_samples=2)
  with pytest.raises(ValueError, match=r"`num_samples` must be a multiple of 2 .*antithetic pair.*got 3"):
    sfe.value_and_grad(estimator(), f, build, jnp.zeros(2), KEY, num_samples=3)
  for n in (1, 0):
    with pytest.raises(ValueError, match=rf"`num_samples` must be at least 2 .*antithetic pair.*got {n}"):
      sfe.value_and_grad(estimator(), f, build, jnp.zeros(2), KEY, num_samples=n)
