"""Score-function estimator and its baselines against the exact values of the reference (Section 1)."""

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sfe_jax as sfe
from tests.gaussian_reference import IDS, PARAMS, ROWS, dist_builder, loc_scale_columns
from tests.helpers import assert_mean, assert_variance, repeated_estimates

KEY = jax.random.key(0)
R = 40_000  # single-sample repeats


@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_plain_score_function_mean_and_variance(row):
  _, grads = repeated_estimates(sfe.score_function(), row.f, dist_builder, PARAMS, KEY, num_samples=1, num_repeats=R)
  g = loc_scale_columns(grads)
  assert_mean(g, row.grad, what=f"SF mean on {row.name}")
  assert_variance(g, row.var_sf, what=f"SF variance on {row.name}")


@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_optimal_baseline_mean_and_variance(row):
  # The optimal baseline is estimated leave-one-out from the other N - 1 samples; N * Var(estimate) tends to
  # the single-sample variance with the exact optimal constant, with an O(1/N) excess (allowed as rtol=3/N).
  n, repeats = 200, 4000
  _, grads = repeated_estimates(
    sfe.score_function(sfe.baselines.optimal()), row.f, dist_builder, PARAMS, KEY, num_samples=n, num_repeats=repeats
  )
  g = loc_scale_columns(grads)
  assert_mean(g, row.grad, what=f"SF* mean on {row.name}")
  assert_variance(g, row.var_sf_opt, scale=n, rtol=3.0 / n, what=f"SF* variance on {row.name}")


def _square_moments(k, mu=1.0, sigma=1.0):
  """Moments of f = (x - k)^2 under N(mu, sigma^2) for the exact baseline variances (per parameter)."""
  a = mu - k
  grad = np.array([2 * a, 2 * sigma])
  var_sf = np.array([a**4 / sigma**2 + 14 * a**2 + 15 * sigma**2, 2 * a**4 / sigma**2 + 60 * a**2 + 74 * sigma**2])
  e_fs2 = np.array([(a**2 + 3 * sigma**2) / sigma**2, (2 * a**2 + 10 * sigma**2) / sigma**2])
  e_s2 = np.array([1 / sigma**2, 2 / sigma**2])
  mean_f = a**2 + sigma**2
  var_f = 4 * a**2 * sigma**2 + 2 * sigma**4
  return grad, var_sf, e_fs2, e_s2, mean_f, var_f


def _constant_baseline_variance(k, b):
  """Var[(f - b) s] = E[f^2 s^2] - 2 b E[f s^2] + b^2 E[s^2] - (grad F)^2."""
  grad, var_sf, e_fs2, e_s2, _, _ = _square_moments(k)
  return var_sf - 2 * b * e_fs2 + b**2 * e_s2


@pytest.mark.parametrize("k", [-3.0, 0.0, 3.0])
@pytest.mark.parametrize("n", [2, 10])
def test_leave_one_out_exact_variance(k, n):
  # Var_LOO(N) = Var((f - F) s) / N + (Var(f) E[s^2] + (grad F)^2) / (N (N - 1)): write the estimate as
  # (1/N) sum_i (f_i - F) s_i - (1/(N(N-1))) sum_{i != j} (f_j - F) s_i; the two sums are uncorrelated and
  # in the second only the terms (i, j) and (j, i) are correlated, with covariance E[(f - F) s]^2.
  grad, _, _, e_s2, mean_f, var_f = _square_moments(k)
  var_centred = _constant_baseline_variance(k, mean_f)
  exact = var_centred / n + (var_f * e_s2 + grad**2) / (n * (n - 1))
  f = lambda x: (x - k) ** 2
  repeats = R // n
  _, grads = repeated_estimates(
    sfe.score_function(sfe.baselines.leave_one_out()),
    f,
    dist_builder,
    PARAMS,
    jax.random.key(1),
    num_samples=n,
    num_repeats=repeats,
  )
  g = loc_scale_columns(grads)
  assert_mean(g, grad, what="LOO mean")
  assert_variance(g, exact, what="LOO variance")
  plain = _square_moments(k)[1] / n
  assert np.all(exact < plain), "theory: leave-one-out beats no baseline on this problem"


@pytest.mark.parametrize("k", [-3.0, 3.0])
def test_constant_baseline_exact_variance(k):
  b = 5.0
  f = lambda x: (x - k) ** 2
  _, grads = repeated_estimates(
    sfe.score_function(sfe.baselines.constant(b)), f, dist_builder, PARAMS, KEY, num_samples=1, num_repeats=R
  )
  g = loc_scale_columns(grads)
  assert_mean(g, _square_moments(k)[0], what="constant-baseline mean")
  assert_variance(g, _constant_baseline_variance(k, b), what="constant-baseline variance")


def test_moving_average_state_is_zero_debiased():
  est = sfe.score_function(sfe.baselines.moving_average(decay=0.9))
  state = est.init(PARAMS)
  f = lambda x: 3.0 + 0.0 * x
  step = jax.jit(lambda s: sfe.value_and_grad(est, f, dist_builder, PARAMS, KEY, num_samples=4, state=s)[2])
  for _ in range(3):
    state = step(state)
  # A constant f: the debiased average is exactly that constant after any number of updates.
  assert int(state.count) == 3
  np.testing.assert_allclose(state.average / (1 - 0.9**3), 3.0, rtol=1e-6)


def test_moving_average_uses_only_past_and_reduces_variance():
  k = 3.0
  f = lambda x: (x - k) ** 2
  est = sfe.score_function(sfe.baselines.moving_average(decay=0.9))
  state = est.init(PARAMS)
  # Warm the average up on independent batches, then freeze the state: the baseline is a constant b.
  step = jax.jit(lambda s, k: sfe.value_and_grad(est, f, dist_builder, PARAMS, k, num_samples=64, state=s)[2])
  for i in range(30):
    state = step(state, jax.random.key(100 + i))
  b = float(state.average / (1 - 0.9**state.count))
  assert abs(b - _square_moments(k)[4]) < 2.0  # E[f] = 5; a sanity check on the warm-up, not the test.
  _, grads = repeated_estimates(est, f, dist_builder, PARAMS, KEY, num_samples=1, num_repeats=R, state=state)
  g = loc_scale_columns(grads)
  assert_mean(g, _square_moments(k)[0], what="moving-average mean")
  exact = _constant_baseline_variance(k, b)
  assert_variance(g, exact, what="moving-average variance")
  assert np.all(exact < _square_moments(k)[1])


def test_moving_average_first_call_has_zero_baseline():
  est = sfe.score_function(sfe.baselines.moving_average())
  plain = sfe.score_function()
  f = lambda x: (x - 3.0) ** 2
  grads = jax.jit(lambda e: sfe.value_and_grad(e, f, dist_builder, PARAMS, KEY, num_samples=8)[1], static_argnums=0)
  g1, g2 = grads(est), grads(plain)
  jax.tree.map(np.testing.assert_array_equal, g1, g2)


@pytest.mark.parametrize(
  "baseline",
  [
    None,
    sfe.baselines.constant(1.0),
    sfe.baselines.moving_average(),
    sfe.baselines.leave_one_out(),
    sfe.baselines.optimal(),
  ],
  ids=["none", "constant", "moving_average", "leave_one_out", "optimal"],
)
def test_never_differentiates_f(baseline):
  @jax.custom_jvp
  def f(x):
    return jnp.sum(jnp.sin(x))

  @f.defjvp
  def f_jvp(primals, tangents):
    raise AssertionError("the score-function estimator differentiated f")

  est = sfe.score_function(baseline)
  params = {"loc": jnp.zeros(3), "scale": jnp.ones(3)}
  build = lambda p: distrax.Normal(p["loc"], p["scale"])
  value, grads, _ = jax.jit(lambda p, k: sfe.value_and_grad(est, f, build, p, k, num_samples=8))(params, KEY)
  assert np.isfinite(value) and all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
  jax.jit(jax.grad(lambda p: sfe.expectation(est, f, build, p, KEY, num_samples=8)[0]))(params)


def test_black_box_f_without_derivative():
  # f goes through the host: no derivative exists, the score function does not need one.
  def host_f(x):
    return np.float32(np.sum(np.abs(x) > 0.5))

  f = lambda x: jax.pure_callback(host_f, jax.ShapeDtypeStruct((), jnp.float32), x, vmap_method="sequential")
  params = {"logits": jnp.zeros(4)}
  build = lambda p: distrax.Normal(p["logits"], 1.0)
  est = sfe.score_function(sfe.baselines.leave_one_out())
  value, grads, _ = jax.jit(lambda p: sfe.value_and_grad(est, f, build, p, KEY, num_samples=16))(params)
  assert grads["logits"].shape == (4,) and np.isfinite(value)


def test_discrete_distribution_unbiased_three_bit_toy():
  # Multi-dimensional Bernoulli toy (Kool et al. 2020; reference Section 2): three bits share one logit,
  # f(b) = sum (b_i - p0_i)^2, p0 = [0.6, 0.51, 0.48], true gradient -0.0450 at phi = 0.
  p0 = jnp.array([0.6, 0.51, 0.48])
  f = lambda b: jnp.sum((b - p0) ** 2)
  build = lambda p: distrax.Bernoulli(logits=jnp.broadcast_to(p["phi"], (3,)))
  params = {"phi": jnp.asarray(0.0)}
  _, grads = repeated_estimates(
    sfe.score_function(sfe.baselines.leave_one_out()), f, build, params, KEY, num_samples=2, num_repeats=R
  )
  assert_mean(np.asarray(grads["phi"]), -0.0450, what="three-bit toy")
