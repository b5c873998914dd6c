"""Gumbel-softmax, straight-through Gumbel and straight-through: exact expected gradients and special behaviour.

The relaxed estimators are biased for E[f(hard sample)], so they are tested against the exact expectation of
what they estimate: the expected relaxed gradient, computed by quadrature over the noise (1-D for a Bernoulli,
2-D for a three-class categorical), and the true gradient from sfe.enumerate() measures the bias.
"""

import re

import chex
import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sfe_jax as sfe
from tests.helpers import assert_mean, assert_variance, repeated_estimates

KEY = jax.random.key(0)
R = 20_000  # single-sample repeats
sigmoid = lambda x: 0.5 * (1.0 + np.tanh(0.5 * x))


# ----------------------------------------------------------------------------------------------------------
# Exact expected relaxed gradients by quadrature (float64 numpy).
# ----------------------------------------------------------------------------------------------------------


def _gauss_legendre(a, b, panels, order=20):
  x, w = np.polynomial.legendre.leggauss(order)
  edges = np.linspace(a, b, panels + 1)
  lo, hi = edges[:-1, None], edges[1:, None]
  return ((lo + hi) / 2 + (hi - lo) / 2 * x).ravel(), ((hi - lo) / 2 * w).ravel()


def bernoulli_quadrature(logit, t, f_prime, straight_through=False):
  """Mean and variance of the single-sample gradient in the logit ``l`` of one relaxed Bernoulli.

  The sample is s = sigmoid((l + L)/t), L logistic, and the per-sample gradient is f'(x) s(1-s)/t with x = s
  (x = 1[l + L > 0] straight-through). In y = (l + L)/t it is f'(x(y)) sigmoid'(y)/t, L has density
  sigmoid'(L) and dL = t dy, so E[g^k] = t^(1-k) int f'(x(y))^k sigmoid'(y)^k sigmoid'(t y - l) dy; the
  integrand is smooth on each side of y = 0 and decays like exp(-|y|): Gauss-Legendre panels on [-80, 0] and
  [0, 80] are exact to rounding.
  """
  y1, w1 = _gauss_legendre(-80.0, 0.0, 800)
  y2, w2 = _gauss_legendre(0.0, 80.0, 800)
  y, w = np.concatenate([y1, y2]), np.concatenate([w1, w2])
  x = (y > 0).astype(float) if straight_through else sigmoid(y)
  ds = sigmoid(y) * (1 - sigmoid(y))
  density = sigmoid(t * y - logit) * (1 - sigmoid(t * y - logit))
  g = f_prime(x) * ds
  mean = np.sum(w * g * density)
  second = np.sum(w * g**2 * density) / t
  return mean, second - mean**2


def categorical_quadrature(logits, t, grad_f, h=0.08, half_width=36.0):
  """Mean and variance of the single-sample relaxed gradient for one three-class Concrete variable.

  s = softmax((l + G)/t) depends only on D_k = G_k - G_0 (k = 1, 2), whose joint density is
  int gumbel(g) gumbel(g + d1) gumbel(g + d2) dg = 2 exp(-d1 - d2) / (1 + exp(-d1) + exp(-d2))^3. The
  per-sample gradient is (diag(s) - s s^T) grad_f(s) / t. The integrand is analytic with its nearest complex
  singularity at distance ~pi t, so the trapezoid rule with step h has error ~exp(-2 pi^2 t / h) (1e-11 at
  t = 0.1), and the tails beyond |d| = 36 weigh exp(-36).
  """
  d = np.arange(-half_width, half_width + h / 2, h)
  d1, d2 = (a.ravel() for a in np.meshgrid(d, d, indexing="ij"))
  m = np.maximum(0.0, np.maximum(-d1, -d2))
  log_norm = m + np.log(np.exp(-m) + np.exp(-d1 - m) + np.exp(-d2 - m))
  weight = np.exp(np.log(2.0) - d1 - d2 - 3 * log_norm) * h * h
  assert abs(weight.sum() - 1.0) < 1e-9  # the density integrates to one on this grid
  l = np.asarray(logits, np.float64)
  y = np.stack([np.zeros_like(d1), (l[1] - l[0] + d1) / t, (l[2] - l[0] + d2) / t], axis=-1)
  s = np.exp(y - y.max(axis=-1, keepdims=True))
  s /= s.sum(axis=-1, keepdims=True)
  gf = grad_f(s)
  g = s * (gf - np.sum(s * gf, axis=-1, keepdims=True)) / t
  mean = weight @ g
  return mean, weight @ g**2 - mean**2


def _exact_gradient(f, build, params):
  return sfe.value_and_grad(sfe.enumerate(), f, build, params, KEY)[1]


exact_gradient = jax.jit(_exact_gradient, static_argnums=(0, 1))  # the true gradient, from sfe.enumerate()


def bernoulli_build(p):
  return distrax.Bernoulli(logits=p["phi"], dtype=jnp.float32)


def _estimates_at_temperatures(f, build, params, temperatures, straight_through=False):
  """Single-sample estimates at each temperature, the temperature a traced argument of ONE jitted function."""
  chex.clear_trace_counter()  # `run` is redefined on every call of this helper

  @jax.jit
  @chex.assert_max_traces(n=1)  # a new temperature must not retrace
  def run(t):
    est = sfe.gumbel_softmax(t, straight_through=straight_through)
    return sfe.diagnostics.repeated_estimates(est, f, build, params, KEY, num_samples=1, num_repeats=R)

  return [run(jnp.asarray(t, jnp.float32)) for t in temperatures]


# ----------------------------------------------------------------------------------------------------------
# Gumbel-softmax: exact relaxed gradients, bias against the truth, variance.
# ----------------------------------------------------------------------------------------------------------

TEMPERATURES = [2.0, 1.0, 0.5, 0.1]


@pytest.mark.parametrize("phi,p0", [(0.0, 0.45), (-0.5, 0.2)], ids=["rebar_toy_phi0", "phi-0.5_p0.2"])
def test_relaxed_bernoulli_matches_quadrature_and_bias_shrinks(phi, p0):
  f = lambda b: (b - p0) ** 2
  f_prime = lambda x: 2 * (x - p0)
  params = {"phi": jnp.asarray(phi)}
  true = float(exact_gradient(f, bernoulli_build, params)["phi"])
  p = sigmoid(phi)
  np.testing.assert_allclose(true, (1 - 2 * p0) * p * (1 - p), rtol=1e-5)  # Reference, Section 2.
  biases = []
  for t, (_, grads) in zip(TEMPERATURES, _estimates_at_temperatures(f, bernoulli_build, params, TEMPERATURES)):
    mean, var = bernoulli_quadrature(phi, t, f_prime)
    assert_mean(grads["phi"], mean, what=f"relaxed gradient at t={t}")
    assert_variance(grads["phi"], var, what=f"relaxed gradient variance at t={t}")
    biases.append(abs(mean - true))
  assert all(b1 < b0 for b0, b1 in zip(biases, biases[1:])), f"|bias| per temperature: {biases}"
  # The variance grows like 1/t: t Var tends to p(1-p) int f'(sigmoid(y))^2 sigmoid'(y)^2 dy.
  variances = [bernoulli_quadrature(phi, t, f_prime)[1] for t in TEMPERATURES]
  assert all(v1 > v0 for v0, v1 in zip(variances, variances[1:]))


def test_relaxed_bias_vanishes_but_not_monotonically():
  # One bit with logit 1, f = (b - 0.45)^2: |bias| rises from t = 2 to t = 0.5, then falls like O(t). The
  # quadrature is checked against the estimator at t = 1 and t = 0.01 (the extremes of the claim).
  phi, p0 = 1.0, 0.45
  f_prime = lambda x: 2 * (x - p0)
  true = (1 - 2 * p0) * sigmoid(phi) * (1 - sigmoid(phi))
  bias = {t: bernoulli_quadrature(phi, t, f_prime)[0] - true for t in [2.0, 1.0, 0.5, 0.1, 0.01, 0.001]}
  assert abs(bias[1.0]) > abs(bias[2.0]) and abs(bias[0.5]) > abs(bias[1.0])
  assert abs(bias[0.1]) < abs(bias[0.5])
  np.testing.assert_allclose(bias[0.001] / bias[0.01], 0.1, rtol=0.02)  # O(t)
  f = lambda b: (b - p0) ** 2
  params = {"phi": jnp.asarray(phi)}
  for t, (_, grads) in zip([1.0, 0.01], _estimates_at_temperatures(f, bernoulli_build, params, [1.0, 0.01])):
    assert_mean(grads["phi"], bernoulli_quadrature(phi, t, f_prime)[0], what=f"relaxed gradient at t={t}")


def test_relaxed_categorical_matches_quadrature_and_bias_shrinks():
  logits = np.array([0.5, -0.3, 0.1])
  q = jnp.array([0.9, 0.0, 0.4])
  f = lambda x: jnp.sum((x - q) ** 2)  # x: a point of the simplex (a one-hot vector for enumerate)
  grad_f = lambda s: 2 * (s - np.asarray(q, np.float64))
  build = lambda p: distrax.OneHotCategorical(logits=p["logits"], dtype=jnp.float32)
  params = {"logits": jnp.asarray(logits, jnp.float32)}
  true = np.asarray(exact_gradient(f, build, params)["logits"], np.float64)
  biases = []
  for t, (_, grads) in zip(TEMPERATURES, _estimates_at_temperatures(f, build, params, TEMPERATURES)):
    mean, var = categorical_quadrature(logits, t, grad_f)
    assert_mean(grads["logits"], mean, what=f"relaxed categorical gradient at t={t}")
    assert_variance(grads["logits"], var, what=f"relaxed categorical variance at t={t}")
    biases.append(np.linalg.norm(mean - true))
  assert all(b1 < b0 for b0, b1 in zip(biases, biases[1:])), f"|bias| per temperature: {biases}"


def test_relaxed_gradient_is_pathwise_per_sample():
  # f(x) = c x: the value is c s and the gradient is exactly c s (1 - s) / t, sample by sample.
  c, t = 1.7, 1.0
  params = {"phi": jnp.asarray(0.4)}
  values, grads = repeated_estimates(
    sfe.gumbel_softmax(t), lambda x: c * x, bernoulli_build, params, KEY, num_samples=1, num_repeats=500
  )
  s = np.asarray(values, np.float64) / c
  assert np.sum((s > 0.01) & (s < 0.99)) > 300 and len(np.unique(s)) > 450  # genuinely relaxed, not hard
  np.testing.assert_allclose(grads["phi"], c * s * (1 - s) / t, rtol=1e-4, atol=1e-7)


# ----------------------------------------------------------------------------------------------------------
# Straight-through Gumbel: hard forward, relaxed backward.
# ----------------------------------------------------------------------------------------------------------


def test_straight_through_gumbel_bernoulli_matches_quadrature():
  # Logit 1, f = (b - 0.45)^2: the straight-through Gumbel gradient is biased at every temperature and its
  # expectation tends to p(1-p)(f'(0) + f'(1))/2, here the true gradient (f is quadratic), like O(t).
  phi, p0 = 1.0, 0.45
  f = lambda b: (b - p0) ** 2
  f_prime = lambda x: 2 * (x - p0)
  params = {"phi": jnp.asarray(phi)}
  p = sigmoid(phi)
  true = (1 - 2 * p0) * p * (1 - p)
  temps = [1.0, 0.1]
  for t, (values, grads) in zip(
    temps, _estimates_at_temperatures(f, bernoulli_build, params, temps, straight_through=True)
  ):
    mean, var = bernoulli_quadrature(phi, t, f_prime, straight_through=True)
    assert_mean(grads["phi"], mean, what=f"straight-through Gumbel gradient at t={t}")
    assert_variance(grads["phi"], var, what=f"straight-through Gumbel variance at t={t}")
    assert abs(mean - true) > 5e-3
    # The value is f at exact samples: an unbiased estimate of E[f(b)].
    assert set(np.unique(values).tolist()) <= {float(f(jnp.float32(0.0))), float(f(jnp.float32(1.0)))}
    assert_mean(values, p * (1 - p0) ** 2 + (1 - p) * p0**2, what="straight-through Gumbel value")
  low = bernoulli_quadrature(phi, 1e-3, f_prime, straight_through=True)[0]
  assert abs(low - true) < 2e-4


def test_straight_through_gumbel_categorical_linear_f():
  # For linear f the straight-through Gumbel gradient J_s^T c / t has the same expectation as the relaxed one.
  logits = np.array([0.5, -0.3, 0.1])
  c = jnp.array([1.0, -2.0, 0.5])
  t = 0.5
  build = lambda p: distrax.OneHotCategorical(logits=p["logits"], dtype=jnp.float32)
  params = {"logits": jnp.asarray(logits, jnp.float32)}
  _, grads = repeated_estimates(
    sfe.gumbel_softmax(t, straight_through=True), lambda x: x @ c, build, params, KEY, num_samples=1, num_repeats=R
  )
  mean, var = categorical_quadrature(logits, t, lambda s: np.broadcast_to(np.asarray(c, np.float64), s.shape))
  assert_mean(grads["logits"], mean, what="straight-through Gumbel, linear f")
  assert_variance(grads["logits"], var, what="straight-through Gumbel variance, linear f")


# ----------------------------------------------------------------------------------------------------------
# Straight-through: exact hard forward, d sample / d probs = identity backward.
# ----------------------------------------------------------------------------------------------------------

HARD_ESTIMATORS = {
  "straight_through": sfe.straight_through(),
  "st_gumbel_t0.5": sfe.gumbel_softmax(0.5, straight_through=True),
  "st_gumbel_t0.01": sfe.gumbel_softmax(0.01, straight_through=True),
}


@pytest.mark.parametrize("name", list(HARD_ESTIMATORS))
def test_straight_through_forward_is_exactly_hard(name):
  est = HARD_ESTIMATORS[name]
  # x (1 - x) is exactly 0 only at x = 0 or 1, and rows of one-hots sum to exactly 1.
  not_bits = lambda x: jnp.sum(x * (1 - x))
  not_one_hot = lambda x: jnp.sum(x * (1 - x)) + jnp.sum((jnp.sum(x, axis=-1) - 1) ** 2)
  cases = [
    (not_bits, lambda p: distrax.Bernoulli(logits=p["l"], dtype=jnp.float32)),
    (not_one_hot, lambda p: distrax.OneHotCategorical(logits=p["l"], dtype=jnp.float32)),
  ]

  @jax.jit
  def run(p, k):
    return [sfe.value_and_grad(est, f, build, p, k, num_samples=64)[:2] for f, build in cases]

  for value, grads in run({"l": jnp.array([[0.3, -1.2, 2.0], [50.0, -50.0, 0.0]])}, KEY):
    assert float(value) == 0.0
    assert np.all(np.isfinite(grads["l"]))


def _decode(values, support_values):
  """The index of the support point whose f-value each estimate equals (each must match exactly one)."""
  match = np.isclose(np.asarray(values)[:, None], np.asarray(support_values)[None, :], rtol=1e-6, atol=0)
  assert np.all(match.sum(axis=1) == 1), "f was evaluated at a point outside the discrete support"
  return match.argmax(axis=1)


@pytest.mark.parametrize("name", list(HARD_ESTIMATORS))
def test_straight_through_bernoulli_value_and_gradient_per_sample(name):
  # f is injective on {0,1}^3, so each single-sample value identifies the sample f saw. The value must be f at
  # that sample, the samples must have the right law, and the straight-through gradient is p(1-p) f'(b).
  est = HARD_ESTIMATORS[name]
  w = jnp.array([1.0, 2.0, 4.0])
  f = lambda b: jnp.sum(w * b) + 0.37 * jnp.sum(b) ** 2
  grad_f = lambda b: np.asarray(w) + 2 * 0.37 * b.sum(axis=-1, keepdims=True)
  logits = np.array([0.3, -1.2, 2.0])
  params = {"phi": jnp.asarray(logits, jnp.float32)}
  support = np.array([[(i >> 2) & 1, (i >> 1) & 1, i & 1] for i in range(8)], np.float64)
  support_values = jax.vmap(f)(jnp.asarray(support, jnp.float32))
  assert len(np.unique(np.asarray(support_values))) == 8
  values, grads = repeated_estimates(est, f, bernoulli_build, params, KEY, num_samples=1, num_repeats=4000)
  b = support[_decode(values, support_values)]
  p = sigmoid(logits)
  assert_mean(b, p, what="frequency of ones")
  if name == "straight_through":
    np.testing.assert_allclose(grads["phi"], p * (1 - p) * grad_f(b), rtol=1e-5)


def test_straight_through_categorical_value_and_gradient_per_sample():
  # Two three-class variables; f is injective on the 9 joint values. Gradient per sample: for each variable
  # j, (diag(pi_j) - pi_j pi_j^T) grad_j f(x).
  weights = jnp.array([[0.0, 1.0, 3.0], [0.0, 9.0, 27.0]])
  v = jnp.array([0.5, -1.0, 2.0])
  f = lambda x: jnp.sum(weights * x) + 0.5 * (x[0] @ v) ** 2
  logits = np.array([[0.2, -0.4, 1.0], [-1.0, 0.5, 0.0]])
  pi = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
  support = np.array([np.eye(3)[[i // 3, i % 3]] for i in range(9)])  # (9, 2, 3) one-hots
  support_values = jax.vmap(f)(jnp.asarray(support, jnp.float32))
  assert len(np.unique(np.asarray(support_values))) == 9
  results = []
  for build in [
    lambda p: distrax.OneHotCategorical(logits=p["logits"], dtype=jnp.float32),
    lambda p: distrax.Independent(distrax.OneHotCategorical(logits=p["logits"], dtype=jnp.float32), 1),
  ]:
    values, grads = repeated_estimates(
      sfe.straight_through(),
      f,
      build,
      {"logits": jnp.asarray(logits, jnp.float32)},
      KEY,
      num_samples=1,
      num_repeats=4000,
    )
    x = support[_decode(values, support_values)]
    assert_mean(x.reshape(len(x), -1), pi.ravel(), what="category frequencies")
    gf = np.broadcast_to(np.asarray(weights, np.float64), x.shape).copy()
    gf[:, 0, :] += np.asarray(v) * (x[:, 0, :] @ np.asarray(v))[:, None]
    expected = pi * (gf - np.sum(pi * gf, axis=-1, keepdims=True))
    np.testing.assert_allclose(grads["logits"], expected, rtol=1e-5, atol=1e-6)
    results.append(grads["logits"])
  # Index samples and one-hot samples: the same estimator, the same numbers.
  np.testing.assert_array_equal(results[0], results[1])


@pytest.mark.parametrize("kind", ["bernoulli", "categorical"])
def test_straight_through_exact_for_linear_and_unbiased_for_multilinear(kind):
  if kind == "bernoulli":
    logits = jnp.array([0.3, -1.2, 2.0])
    build = lambda p: distrax.Bernoulli(logits=p["l"], dtype=jnp.float32)
    linear = lambda b: jnp.sum(jnp.array([1.0, -2.0, 0.5]) * b)
    multilinear = lambda b: b[0] * b[1] + b[1] * b[2] - 2.0 * b[0] * b[1] * b[2]
  else:
    logits = jnp.array([[0.2, -0.4, 1.0], [-1.0, 0.5, 0.0]])
    build = lambda p: distrax.OneHotCategorical(logits=p["l"], dtype=jnp.float32)
    linear = lambda x: jnp.sum(jnp.array([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]]) * x)
    multilinear = lambda x: x[0] @ jnp.array([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0], [2.0, 0.0, 1.0]]) @ x[1]
  params = {"l": logits}
  repeat = lambda f, n: sfe.diagnostics.repeated_estimates(
    sfe.straight_through(), f, build, params, KEY, num_samples=1, num_repeats=n
  )[1]["l"]
  lin, multi, lin_true, multi_true = jax.jit(
    lambda: (
      repeat(linear, 50),
      repeat(multilinear, R),
      _exact_gradient(linear, build, params)["l"],
      _exact_gradient(multilinear, build, params)["l"],
    )
  )()
  # Linear f: every single estimate is exactly the true gradient (zero variance).
  np.testing.assert_allclose(lin, np.broadcast_to(lin_true, lin.shape), rtol=1e-5, atol=1e-7)
  # Multilinear across independent variables: unbiased.
  assert_mean(multi, multi_true, what="multilinear f")


@pytest.mark.parametrize("phi", [0.0, -0.8])
def test_straight_through_bernoulli_toy_bias_and_variance(phi):
  # f = (b - p0)^2 on one bit: E[g] = 2(p - p0) p(1-p), Var[g] = 4 p(1-p) (p(1-p))^2; the truth is
  # (1 - 2 p0) p(1-p), so the bias is (2p - 1) p(1-p): zero at p = 1/2 only.
  p0 = 0.45
  f = lambda b: (b - p0) ** 2
  params = {"phi": jnp.asarray(phi)}
  _, grads = repeated_estimates(sfe.straight_through(), f, bernoulli_build, params, KEY, num_samples=1, num_repeats=R)
  p = sigmoid(phi)
  q = p * (1 - p)
  assert_mean(grads["phi"], 2 * (p - p0) * q, what="straight-through toy mean")
  assert_variance(grads["phi"], 4 * q**3, what="straight-through toy variance")
  true = float(exact_gradient(f, bernoulli_build, params)["phi"])
  np.testing.assert_allclose(2 * (p - p0) * q - true, (2 * p - 1) * q, atol=1e-7)


# ----------------------------------------------------------------------------------------------------------
# Interface: encodings, closures, traced temperatures, errors, extreme logits.
# ----------------------------------------------------------------------------------------------------------

ALL_ESTIMATORS = {
  "gumbel_softmax": sfe.gumbel_softmax(0.5),
  "st_gumbel": sfe.gumbel_softmax(0.5, straight_through=True),
  "straight_through": sfe.straight_through(),
}


@pytest.mark.parametrize("name", list(ALL_ESTIMATORS))
def test_encodings_agree_and_closure_gradient(name):
  est = ALL_ESTIMATORS[name]
  table = jnp.array([0.5, -1.0, 2.0])
  f = lambda x: jnp.sum(jnp.sin(x @ table))  # f takes one-hot / simplex rows
  fb = lambda b: jnp.sum(jnp.cos(3.0 * b))
  categoricals = [
    lambda p: distrax.OneHotCategorical(logits=p["l"], dtype=jnp.float32),
    lambda p: distrax.Independent(distrax.OneHotCategorical(logits=p["l"], dtype=jnp.float32), 1),
  ]
  bernoullis = [
    lambda p: distrax.Bernoulli(logits=p["l"], dtype=jnp.float32),
    lambda p: distrax.Independent(distrax.Bernoulli(logits=p["l"], dtype=jnp.float32), 2),
  ]

  @jax.jit
  def run(logits, bits, w):
    cat = [sfe.value_and_grad(est, f, build, {"l": logits}, KEY, num_samples=16)[:2] for build in categoricals]
    bern = [sfe.value_and_grad(est, fb, build, {"l": bits}, KEY, num_samples=16)[:2] for build in bernoullis]
    # Gradient with respect to what f closes over: the ordinary gradient of the Monte Carlo average.
    loss = lambda w: sfe.expectation(est, lambda b: w * fb(b), bernoullis[0], {"l": bits}, KEY, num_samples=16)[0]
    return cat, bern, jax.grad(loss)(w)

  cat, bern, closure_grad = run(
    jnp.array([[0.2, -0.4, 1.0], [-1.0, 0.5, 0.0]]), jnp.array([[0.3, -1.2], [2.0, 0.0]]), jnp.asarray(1.3)
  )
  # With or without Independent: the same estimator, the same numbers.
  for (value, grads), (ref_value, ref_grads) in [(cat[1], cat[0]), (bern[1], bern[0])]:
    assert float(value) == float(ref_value)
    np.testing.assert_array_equal(grads["l"], ref_grads["l"])
  np.testing.assert_allclose(closure_grad, bern[0][0], rtol=1e-6)


def test_traced_temperature_matches_float_and_vmaps():
  build = lambda p: distrax.OneHotCategorical(logits=p["l"], dtype=jnp.float32)
  params = {"l": jnp.array([[0.2, -0.4, 1.0], [-1.0, 0.5, 0.0]])}
  f = lambda x: jnp.sum(jnp.sin(3.0 * x))
  run = lambda t: sfe.value_and_grad(sfe.gumbel_softmax(t), f, build, params, KEY, num_samples=8)[:2]
  ts = [0.05, 3.0]
  traced = jax.jit(jax.vmap(run))(jnp.asarray(ts))
  static = jax.jit(lambda: [run(t) for t in ts] + [run(jnp.asarray(0.05))])()
  for i, (value, grads) in enumerate(static[:2]):
    np.testing.assert_allclose(traced[0][i], value, rtol=1e-5)
    np.testing.assert_allclose(traced[1]["l"][i], grads["l"], rtol=1e-4, atol=1e-6)
  # A concrete JAX scalar is accepted (and checked) as well.
  np.testing.assert_allclose(static[2][0], static[0][0], rtol=1e-6)


@pytest.mark.parametrize(
  "temperature,error,match",
  [
    (0.0, ValueError, "finite and positive; got 0.0"),
    (-1.0, ValueError, "finite and positive; got -1.0"),
    (float("nan"), ValueError, "finite and positive"),
    (float("inf"), ValueError, "finite and positive"),
    (jnp.asarray(0.0), ValueError, "finite and positive"),
    (jnp.asarray(-0.5), ValueError, "finite and positive"),
    (jnp.ones(2), ValueError, r"scalar \(shape \(\)\); got an array of shape \(2,\)"),
    (jnp.asarray(1), TypeError, "floating-point dtype; got int"),
    (True, TypeError, "boolean"),
    ("0.5", TypeError, "got str"),
  ],
  ids=["zero", "negative", "nan", "inf", "jax_zero", "jax_negative", "shape", "int_array", "bool", "str"],
)
def test_bad_temperature(temperature, error, match):
  with pytest.raises(error, match=match):
    sfe.gumbel_softmax(temperature)


def test_bad_traced_temperature_and_flag():
  build = lambda p: distrax.Bernoulli(logits=p["l"], dtype=jnp.float32)
  run = lambda t: sfe.value_and_grad(sfe.gumbel_softmax(t), jnp.sum, build, {"l": jnp.zeros(2)}, KEY, num_samples=2)[0]
  with pytest.raises(TypeError, match="floating-point dtype; got int"):
    jax.jit(run)(jnp.asarray(1))
  # A traced value cannot be checked: a non-positive temperature gives NaN, never a plausible wrong number.
  values = jax.jit(jax.vmap(run))(jnp.array([0.0, -0.5, 0.5]))
  assert np.isnan(values[0]) and np.isnan(values[1]) and np.isfinite(values[2])
  with pytest.raises(ValueError, match=r"shape \(2,\)"):
    jax.jit(run)(jnp.ones(2))
  with pytest.raises(TypeError, match="`straight_through` must be a bool; got str"):
    sfe.gumbel_softmax(0.5, straight_through="yes")
  assert sfe.gumbel_softmax(1).name == "sfe.gumbel_softmax(temperature=1)"  # a Python int is a fine temperature


@pytest.mark.parametrize("name", list(ALL_ESTIMATORS))
def test_continuous_distribution_is_refused(name):
  est = ALL_ESTIMATORS[name]
  who = "sfe.straight_through()" if name == "straight_through" else "sfe.gumbel_softmax("
  build = lambda p: distrax.Normal(p["loc"], 1.0)
  with pytest.raises(TypeError, match=r"(?s)" + re.escape(who) + ".*distrax.Normal.*It is not discrete"):
    sfe.value_and_grad(est, jnp.sum, build, {"loc": jnp.zeros(2)}, KEY, num_samples=2)


def test_extreme_logits_are_finite():
  logits = jnp.array([50.0, -50.0, 0.0, 3.0])
  cat_logits = jnp.array([[50.0, -50.0, 0.0], [-50.0, -50.0, 50.0]])
  f = lambda x: jnp.sum(jnp.sin(3.0 * x) + x**2)
  cases = [
    (lambda p: distrax.Bernoulli(logits=p["l"], dtype=jnp.float32), "l"),
    (lambda p: distrax.OneHotCategorical(logits=p["l"], dtype=jnp.float32), "c"),
  ]
  estimators = [sfe.gumbel_softmax(t, straight_through=st) for t in (1.0, 0.01, 1e-3) for st in (False, True)]
  estimators.append(sfe.straight_through())

  @jax.jit
  def run(params, k):
    return [
      sfe.value_and_grad(est, f, build, {"l": params[which]}, k, num_samples=256)[:2]
      for est in estimators
      for build, which in cases
    ]

  out = run({"l": logits, "c": cat_logits}, KEY)
  assert len(out) == 14
  for value, grads in out:
    assert np.isfinite(value) and np.all(np.isfinite(grads["l"]))
