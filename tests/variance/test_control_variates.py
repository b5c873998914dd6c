"""Control variates: the delta method with every estimator, against exact gradients (reference Sections 1, 3).

Every statistical check compares a Monte Carlo mean with an exact value within 5 standard errors, or compares
variances with margins of 5 standard errors of the variance estimates.
"""

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sfe_jax as sfe
from tests.gaussian_reference import PARAMS, ROWS, dist_builder
from tests.helpers import assert_mean, flat, flat1, repeated_estimates, smallest_num_samples, variance_and_se

KEY = jax.random.key(0)
DELTA = sfe.control_variates.delta_method()
FLOAT32_RTOL = 1e-5  # float32 rounding of values computed in two ways (a few ulps of the magnitude)
# The statistical tests vmap over ~10^4 keys. XLA:CPU compiles a vmapped coefficient axis of 10 keys (the
# default) about twice as slowly as one of 16 (it fully unrolls the small threefry loops), so they use 16; the
# default is exercised by the single-key tests at the end.
NUM_COEFFICIENT_SAMPLES = 16


def _controlled(estimator, **kwargs):
  kwargs.setdefault("num_coefficient_samples", NUM_COEFFICIENT_SAMPLES)
  return sfe.with_control_variate(estimator, DELTA, **kwargs)


def _default(estimator):
  return sfe.with_control_variate(estimator, DELTA)


# ----------------------------------------------------------------------------------------------------------
# Reference Section 1: N(1, 1), gradients in (mu, sigma). The parameter k is traced and vmapped, so each cost
# family compiles once per estimator.
# ----------------------------------------------------------------------------------------------------------

# The cost families; a row is (family index, k). The index and k are traced and vmapped (lax.switch on a
# batched index evaluates every branch and selects), so each estimator compiles once for all rows.
FAMILIES = (
  lambda x, k: jnp.sum((x - k) ** 2),
  lambda x, k: jnp.sum(jnp.exp(-k * x**2)),
  lambda x, k: jnp.sum(jnp.cos(k * x)),
)
FAMILY_NAMES = ("(x-k)^2", "exp(-kx^2)", "cos(kx)")
SECTION1 = ((0, 0.0), (0, 3.0), (1, 0.1), (1, 1.0), (2, 0.5), (2, 2.0))  # k >= 0: every branch stays finite
# (constructor, repeats, attribute of the reference row with the base estimator's single-sample variance)
ESTIMATORS = {
  "score_function": (sfe.score_function, 10_000, "var_sf"),
  "pathwise": (sfe.pathwise, 10_000, "var_pw"),
  "measure_valued": (sfe.measure_valued, 4_000, "var_mvd"),
}


def _reference_row(name, k):
  (row,) = [r for r in ROWS if r.name == name and r.k == k]
  return row


def _section1_estimates(estimator, num_repeats):
  """Single-sample estimates for every row of SECTION1: grads of shape (len(SECTION1), num_repeats, 2)."""

  @jax.jit
  def run(families, ks, keys):
    def one(family, k, key):
      f = lambda x: jax.lax.switch(family, FAMILIES, x, k)
      # One sample (one base sample of 4 evaluations of f for the measure-valued estimator).
      n = smallest_num_samples(estimator, dist_builder, PARAMS)
      _, grads, _ = sfe.value_and_grad(estimator, f, dist_builder, PARAMS, key, num_samples=n)
      return jnp.stack([grads["loc"], grads["scale"]])

    return jax.vmap(lambda i, k: jax.vmap(lambda key: one(i, k, key))(keys))(families, ks)

  families, ks = zip(*SECTION1)
  return np.asarray(run(jnp.asarray(families), jnp.asarray(ks), jax.random.split(KEY, num_repeats)))


@pytest.mark.parametrize("estimator_name", list(ESTIMATORS))
def test_delta_method_unbiased_on_reference_problems(estimator_name):
  make, num_repeats, var_attr = ESTIMATORS[estimator_name]
  grads = _section1_estimates(_controlled(make()), num_repeats)
  for g, (family, k) in zip(grads, SECTION1):
    row = _reference_row(FAMILY_NAMES[family], k)
    what = f"{estimator_name} + delta method on {row.name}, k={k}"
    assert_mean(g, row.grad, what=what, atol=FLOAT32_RTOL * np.max(np.abs(row.grad)))
    if family == 0:
      # The delta method is exact on a quadratic (h = f): only the coefficient's distance from 1 is left,
      # about 1e-3 / Var(c_hat), so the variance collapses from the base estimator's to nearly zero.
      var, _ = variance_and_se(g)
      base_var = np.asarray(getattr(row, var_attr))
      assert np.all(var <= 1e-4 * base_var), f"{what}: variance {var} did not collapse (base {base_var})"


# ----------------------------------------------------------------------------------------------------------
# A D = 5 diagonal Gaussian and a non-quadratic cost: f = w sum(cos x) + (sum x)^2 / 10, w = 1 unless said.
# E[cos x_d] = cos(mu_d) exp(-sigma_d^2 / 2); E[(sum x)^2] = (sum mu)^2 + sum sigma^2.
# ----------------------------------------------------------------------------------------------------------

LOC = jnp.array([0.5, -0.3, 1.0, 0.0, -1.2])
SCALE = jnp.array([1.0, 0.5, 0.8, 1.2, 0.7])
PARAMS5 = {"loc": LOC, "scale": SCALE}
BUILDERS5 = {
  "Normal": lambda p: distrax.Normal(p["loc"], p["scale"]),
  "MultivariateNormalDiag": lambda p: distrax.MultivariateNormalDiag(p["loc"], p["scale"]),
}
R5 = 20_000


def f5(x, w=1.0):
  return w * jnp.sum(jnp.cos(x)) + jnp.sum(x) ** 2 / 10


def _exact5(w=1.0):
  """Exact E[f5], its gradient flattened in tree order (loc, scale), and its derivative in w."""
  loc, scale = np.asarray(LOC), np.asarray(SCALE)
  damp = np.exp(-(scale**2) / 2)
  value = w * np.sum(np.cos(loc) * damp) + (np.sum(loc) ** 2 + np.sum(scale**2)) / 10
  grad_loc = -w * np.sin(loc) * damp + 2 * np.sum(loc) / 10
  grad_scale = -w * scale * np.cos(loc) * damp + 2 * scale / 10
  return value, np.concatenate([grad_loc, grad_scale]), np.sum(np.cos(loc) * damp)


_COMPILED5 = {}


def _estimates5(estimator_name, builder_name, w=1.0, controlled=True):
  """R5 single-sample estimates on the D = 5 problem: (values, params grads (R5, 10), d/dw (R5,), keys).

  The loss is ``sfe.expectation`` of f5 with ``w`` closed over, differentiated in ``(params, w)`` under
  jit and vmap; one compiled program per (estimator, distribution, controlled), whatever ``w``.
  """
  cache_key = (estimator_name, builder_name, controlled)
  if cache_key not in _COMPILED5:
    estimator = ESTIMATORS[estimator_name][0]()
    estimator = _controlled(estimator) if controlled else estimator
    build = BUILDERS5[builder_name]

    @jax.jit
    def run(keys, w):
      def one(key):
        loss = lambda p, w: sfe.expectation(estimator, lambda x: f5(x, w), build, p, key, num_samples=1)[0]
        return jax.value_and_grad(loss, argnums=(0, 1))(PARAMS5, w)

      return jax.vmap(one)(keys)

    _COMPILED5[cache_key] = run
  keys = jax.random.split(KEY, R5)
  values, (grads, dw) = _COMPILED5[cache_key](keys, jnp.asarray(w))
  return np.asarray(values), flat(grads), np.asarray(dw), keys


@pytest.mark.parametrize("builder_name", list(BUILDERS5))
def test_delta_method_reduces_score_function_variance(builder_name):
  exact_value, exact_grad, _ = _exact5()
  _, plain, _, _ = _estimates5("score_function", builder_name, controlled=False)
  values, controlled, _, _ = _estimates5("score_function", builder_name)

  assert_mean(controlled, exact_grad, what=f"controlled score function on {builder_name}")
  assert_mean(values, exact_value, what=f"controlled value on {builder_name}")

  # Total variance over the 10 coordinates; the se of a sum is at most the sum of the se's.
  var_plain, se_plain = (x.sum() for x in variance_and_se(plain))
  var_cv, se_cv = (x.sum() for x in variance_and_se(controlled))
  # At least a halving, beyond 5 standard errors of both variance estimates (measured: about 4x).
  assert var_cv + 5 * se_cv < 0.5 * (var_plain - 5 * se_plain), (
    f"{builder_name}: total variance {var_cv} +- {se_cv} with the delta method, {var_plain} +- {se_plain} "
    "without: not a halving"
  )


def test_delta_method_measure_valued_in_five_dimensions():
  _, exact_grad, _ = _exact5()
  _, grads = repeated_estimates(
    _controlled(sfe.measure_valued()),
    f5,
    BUILDERS5["Normal"],
    PARAMS5,
    KEY,
    num_samples=20,
    num_repeats=ESTIMATORS["measure_valued"][1],
  )  # 4 D = 20
  assert_mean(flat(grads), exact_grad, what="controlled measure-valued in five dimensions")


def test_gradients_of_closed_over_parameters():
  # d/dw E[f5] = sum cos(mu) exp(-sigma^2 / 2), and the params gradient depends on w. h's coefficients are
  # stop_gradient-ed, so d/dw is that of the Monte Carlo average of f; the params gradient stays unbiased.
  w = 1.5
  exact_value, exact_grad, exact_dw = _exact5(w)
  values, grads, dw, _ = _estimates5("score_function", "Normal", w=w)
  assert_mean(grads, exact_grad, what="params gradient with f closing over w")
  assert_mean(dw, exact_dw, what="gradient in w")
  assert_mean(values, exact_value, what="value with f closing over w")


def test_jit_vmap_and_expectation_agree_with_value_and_grad():
  # The vmapped (over keys) and jitted gradients of sfe.expectation equal sfe.value_and_grad, jitted, key
  # by key.
  values, grads, _, keys = _estimates5("score_function", "Normal")
  estimator = _controlled(sfe.score_function())  # the one in _estimates5
  single = jax.jit(lambda key: sfe.value_and_grad(estimator, f5, BUILDERS5["Normal"], PARAMS5, key, num_samples=1)[:2])
  for i in range(3):
    value, g = single(keys[i])
    np.testing.assert_allclose(values[i], value, rtol=FLOAT32_RTOL)
    np.testing.assert_allclose(grads[i], flat1(g), rtol=1e-4, atol=1e-5)
  assert len(set(values[:3].tolist())) == 3  # independent keys give different estimates


# ----------------------------------------------------------------------------------------------------------
# Full covariance: MultivariateNormalTri, f = x^T A x + b.x + w sum(cos x), w in {0, 1} (vmapped).
# E[x^T A x] = mu^T A mu + tr(A L L^T), E[cos x_d] = cos(mu_d) exp(-Sigma_dd / 2); exact gradients by autodiff
# of the closed form.
# ----------------------------------------------------------------------------------------------------------

A = jnp.array([[2.0, 0.3, -0.2], [0.3, 1.0, 0.1], [-0.2, 0.1, 0.5]])
B = jnp.array([0.4, -1.0, 0.2])
TRI_PARAMS = {
  "loc": jnp.array([0.5, -1.0, 0.3]),
  "tril": jnp.array([[1.0, 0.0, 0.0], [0.4, 0.7, 0.0], [-0.3, 0.2, 0.9]]),
}
LOWER = np.tril_indices(3)


def _tri_builder(p):
  return distrax.MultivariateNormalTri(p["loc"], p["tril"])


def _tri_f(x, w):
  return x @ A @ x + B @ x + w * jnp.sum(jnp.cos(x))


def _tri_closed_form(p, w):
  cov = p["tril"] @ p["tril"].T
  cos_term = jnp.sum(jnp.cos(p["loc"]) * jnp.exp(-jnp.diagonal(cov) / 2))
  return p["loc"] @ A @ p["loc"] + jnp.trace(A @ cov) + B @ p["loc"] + w * cos_term


def _tri_estimates(estimator, ws, num_repeats):
  """Single-sample estimates for each w: (len(ws), num_repeats, 3 + 6) with loc then the lower triangle."""

  @jax.jit
  def run(ws, keys):
    def one(w, key):
      _, g, _ = sfe.value_and_grad(estimator, lambda x: _tri_f(x, w), _tri_builder, TRI_PARAMS, key, num_samples=1)
      assert_upper = g["tril"][jnp.triu_indices(3, 1)]  # not parameters: exactly zero
      return jnp.concatenate([g["loc"], g["tril"][LOWER], assert_upper])

    return jax.vmap(lambda w: jax.vmap(lambda key: one(w, key))(keys))(ws)

  return np.asarray(run(jnp.asarray(ws), jax.random.split(KEY, num_repeats)))


def test_full_covariance():
  estimator_name = "score_function"
  make, num_repeats, _ = ESTIMATORS[estimator_name]
  ws = (0.0, 1.0)
  controlled = _tri_estimates(_controlled(make()), ws, num_repeats)
  plain = _tri_estimates(make(), ws[:1], num_repeats)[0]
  exact_grad = jax.jit(jax.grad(_tri_closed_form))
  for g, w in zip(controlled, ws):
    what = f"controlled {estimator_name} on MultivariateNormalTri, w={w}"
    exact = exact_grad(TRI_PARAMS, w)
    exact = np.concatenate([np.asarray(exact["loc"]), np.asarray(exact["tril"])[LOWER]])
    assert_mean(g[:, :9], exact, what=what, atol=FLOAT32_RTOL * np.max(np.abs(exact)))
    np.testing.assert_array_equal(g[:, 9:], 0.0)
  # w = 0: f is quadratic, h = f, and the variance collapses against the estimator without control variate.
  var_cv, _ = variance_and_se(controlled[0][:, :9])
  var_plain, _ = variance_and_se(plain[:, :9])
  assert np.all(var_cv <= 1e-4 * var_plain), f"{estimator_name}: variance {var_cv} did not collapse ({var_plain})"


# ----------------------------------------------------------------------------------------------------------
# A fixed coefficient, the base estimator's state and sample requirements.
# ----------------------------------------------------------------------------------------------------------


def test_fixed_coefficient_unbiased():
  exact_value, exact_grad, _ = _exact5()
  estimator = _controlled(sfe.score_function(), coefficient=1.0)
  values, grads = repeated_estimates(estimator, f5, BUILDERS5["Normal"], PARAMS5, KEY, num_samples=1, num_repeats=R5)
  assert_mean(flat(grads), exact_grad, what="score function + delta method with c = 1")
  assert_mean(np.asarray(values), exact_value, what="value with c = 1")


def test_state_threads_through_the_main_estimate_only():
  estimator = _default(sfe.score_function(baseline=sfe.baselines.moving_average(0.9)))
  step = jax.jit(
    lambda key, state: sfe.value_and_grad(estimator, f5, BUILDERS5["Normal"], PARAMS5, key, num_samples=4, state=state)[
      2
    ]
  )
  state = estimator.init(PARAMS5)
  for i in (1, 2):
    state = step(jax.random.fold_in(KEY, i), state)
    assert int(state.count) == i  # one update per call: the coefficient estimates discard theirs


def test_keeps_the_base_estimators_sample_requirements():
  base = sfe.score_function(baseline=sfe.baselines.leave_one_out())
  estimator = _default(base)
  dist = BUILDERS5["Normal"](PARAMS5)
  assert estimator.sample_count(dist) == base.sample_count(dist) and estimator.max_order == base.max_order
  assert estimator.name == f"sfe.with_control_variate({base.name}, sfe.control_variates.delta_method())"
  with pytest.raises(ValueError, match="at least 2"):
    sfe.value_and_grad(estimator, f5, BUILDERS5["Normal"], PARAMS5, KEY, num_samples=1)
  # The coefficient estimates use the smallest count, 2 samples, each.
  _, grads, _ = jax.jit(
    lambda key: sfe.value_and_grad(estimator, f5, BUILDERS5["Normal"], PARAMS5, key, num_samples=2)
  )(KEY)
  assert np.all(np.isfinite(flat1(grads)))


# ----------------------------------------------------------------------------------------------------------
# Errors.
# ----------------------------------------------------------------------------------------------------------


def test_non_gaussian_distribution_is_refused():
  estimator = _controlled(sfe.score_function())
  build = lambda p: distrax.Bernoulli(logits=p["logits"])
  with pytest.raises(TypeError, match=r"delta_method.*distrax\.Bernoulli"):
    sfe.value_and_grad(estimator, lambda b: jnp.sum(b), build, {"logits": jnp.zeros(3)}, KEY, num_samples=4)
  with pytest.raises(TypeError, match=r"distrax\.Laplace"):
    sfe.value_and_grad(
      _controlled(sfe.pathwise()),
      jnp.sum,
      lambda p: distrax.Laplace(p["loc"], 1.0),
      {"loc": jnp.zeros(2)},
      KEY,
      num_samples=4,
    )


@pytest.mark.parametrize("bad", [1, 0, -3])
def test_invalid_num_coefficient_samples(bad):
  with pytest.raises(ValueError, match="num_coefficient_samples"):
    _controlled(sfe.score_function(), num_coefficient_samples=bad)


def test_invalid_arguments():
  with pytest.raises(TypeError, match="num_coefficient_samples"):
    _controlled(sfe.score_function(), num_coefficient_samples=2.5)
  with pytest.raises(TypeError, match="control_variate"):
    sfe.with_control_variate(sfe.score_function(), lambda f, d: (f, 0.0))
  with pytest.raises(TypeError, match="estimator"):
    sfe.with_control_variate("score function", DELTA)
  with pytest.raises(ValueError, match="coefficient"):
    _controlled(sfe.score_function(), coefficient=jnp.ones(2))
