"""The unordered set estimator (Kool et al. 2020) against brute force over orderings and sets, and enumeration.

The reference quantities are computed here independently, in numpy float64, straight from the definitions:
the probability of an unordered set is the sum over its k! orderings of the sequential without-replacement
probabilities (in the renormalised domain for the leave-one-out and leave-two-out ratios), and the exact mean
and variance of the estimator are sums over all k-subsets of the support.
"""

import itertools

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sfe_jax as sfe
from sfe_jax._src.discrete import unordered_set as us
from sfe_jax._src.discrete import views as discrete
from tests.helpers import assert_mean, assert_variance, flat, repeated_estimates, variance_and_se

KEY = jax.random.key(0)


# ----------------------------------------------------------------------------------------------------------
# Brute force, numpy float64.
# ----------------------------------------------------------------------------------------------------------


def _log_sum_exp(x):
  x = np.asarray(x, np.float64)
  m = np.max(x)
  return m + np.log(np.sum(np.exp(x - m)))


def bf_log_set_prob(subset, log_p, excluded=()):
  """log p^{D minus excluded}(subset): sum over the orderings of the renormalised sequential probabilities.

  ``1 - sum_{j<i} p(b_j)`` is summed explicitly over the values still in the domain (the same number in exact
  arithmetic, without the cancellation that would spoil the reference for probabilities near 1).
  """
  if not subset:
    return 0.0
  domain = np.ones(log_p.shape[0], bool)
  domain[list(excluded)] = False
  log_q = log_p - _log_sum_exp(log_p[domain])  # renormalised to the restricted domain
  terms = []
  for order in itertools.permutations(subset):
    remaining, total = domain.copy(), 0.0
    for b in order:
      total += log_q[b] - _log_sum_exp(log_q[remaining])
      remaining[b] = False
    terms.append(total)
  return _log_sum_exp(terms)


def bf_ratios(subset, log_p):
  """(log p(S), log R(S, s) (k,), log R^{D minus s}(S, s') (k, k)) from the definitions."""
  subset = list(subset)
  k = len(subset)
  log_ps = bf_log_set_prob(subset, log_p)
  drop = lambda *xs: [x for x in subset if x not in xs]
  loo = np.array([bf_log_set_prob(drop(s), log_p, [s]) for s in subset])
  ratio2 = np.zeros((k, k))
  for i, j in itertools.product(range(k), range(k)):
    if i != j:
      s, t = subset[i], subset[j]
      ratio2[i, j] = bf_log_set_prob(drop(s, t), log_p, [s, t]) - loo[i]
  return log_ps, loo - log_ps, ratio2


def bf_estimate(subset, log_p, f):
  """(value, c) with value = sum p(s) R f(s), c_s = p(s) R(S, s) (f(s) - sum_s' p(s') R^{D-s}(S, s') f(s'))."""
  subset = list(subset)
  _, log_ratio, log_ratio2 = bf_ratios(subset, log_p)
  p, fs = np.exp(log_p[subset]), f[subset]
  weights = p * np.exp(log_ratio)
  baselines = np.exp(log_ratio2) @ (p * fs)  # the diagonal of exp(log_ratio2) is R = 1
  return np.sum(weights * fs), weights * (fs - baselines)


def bf_moments(log_p, f, scores, k):
  """Exact mean and variance of the value and of the gradient estimate, summing over all k-subsets."""
  rows = []
  for subset in itertools.combinations(range(log_p.shape[0]), k):
    value, c = bf_estimate(subset, log_p, f)
    rows.append((np.exp(bf_log_set_prob(list(subset), log_p)), value, c @ scores[list(subset)]))
  probs = np.array([r[0] for r in rows])
  values = np.array([r[1] for r in rows])
  grads = np.stack([r[2] for r in rows])
  mean_v, mean_g = probs @ values, probs @ grads
  var_v = probs @ (values - mean_v) ** 2
  var_g = probs @ (grads - mean_g) ** 2
  return probs.sum(), mean_v, var_v, mean_g, var_g


def _log_softmax64(logits):
  logits = np.asarray(logits, np.float64)
  return logits - _log_sum_exp(logits)


def _library(subset, log_p):
  """The inputs of the library's set functions for ``subset``: (log p of its elements, log p outside it)."""
  mask = np.zeros(log_p.shape[0], bool)
  mask[list(subset)] = True
  log_rest = _log_sum_exp(log_p[~mask]) if (~mask).any() else -np.inf
  return np.float32(log_p[list(subset)]), np.float32(log_rest)


set_probabilities = jax.jit(us.set_probabilities)
set_estimate = jax.jit(us.set_estimate)


# ----------------------------------------------------------------------------------------------------------
# The probabilities of sets.
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [1.5, 25.0], ids=["moderate", "extreme"])
@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_set_probabilities_against_brute_force(k, scale):
  rng = np.random.default_rng(k)
  log_p = _log_softmax64(scale * rng.normal(size=7))  # scale 25: probabilities from ~1 down to ~1e-40
  for _ in range(3):
    subset = sorted(rng.choice(7, size=k, replace=False).tolist())
    probs = set_probabilities(*_library(subset, log_p))
    log_ps, log_ratio, log_ratio2 = bf_ratios(subset, log_p)
    tol = dict(rtol=1e-5, atol=2e-4)
    np.testing.assert_allclose(probs.log_p_set, log_ps, **tol)
    np.testing.assert_allclose(probs.log_ratio, log_ratio, **tol)
    np.testing.assert_allclose(probs.log_ratio2, log_ratio2, **tol)
    np.testing.assert_allclose(
      probs.log_one_minus_p, [np.log(np.sum(np.exp(np.delete(log_p, s)))) for s in subset], **tol
    )
    # Every subset U of S: Q(U) is p(U) in the domain (D minus S) + U.
    for bits in range(2**k):
      sub = [subset[i] for i in range(k) if bits >> i & 1]
      excluded = [x for x in subset if x not in sub]
      np.testing.assert_allclose(probs.log_q[bits], bf_log_set_prob(sub, log_p, excluded), **tol)
    assert all(np.all(np.isfinite(np.asarray(x))) for x in probs)


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 6])
def test_set_probabilities_sum_to_one_and_first_element_marginals(k):
  # sum_S p(S) = 1 over all k-subsets, and sum_{S containing s} p(S) p(s) R(S, s) = P(s drawn first) = p(s).
  log_p = _log_softmax64(np.random.default_rng(0).normal(size=6) * 2)
  subsets = np.array(list(itertools.combinations(range(6), k)), np.int32)
  log_ps, log_rests = zip(*[_library(s, log_p) for s in subsets])
  probs = jax.jit(jax.vmap(us.set_probabilities))(np.stack(log_ps), np.stack(log_rests))
  p_sets = np.exp(np.asarray(probs.log_p_set, np.float64))
  np.testing.assert_allclose(p_sets.sum(), 1.0, rtol=2e-6)
  first = np.zeros(6)
  np.add.at(first, subsets, p_sets[:, None] * np.exp(np.stack(log_ps) + np.asarray(probs.log_ratio, np.float64)))
  np.testing.assert_allclose(first, np.exp(log_p), rtol=2e-5)


def test_set_estimate_against_brute_force_and_exactly_unbiased():
  # On every 3-subset of a 6-value support: the library's value and gradient coefficients equal the formula
  # computed from the definitions, and their p(S)-weighted sums are exactly E[f] and its gradient.
  rng = np.random.default_rng(3)
  logits = rng.normal(size=6)
  log_p = _log_softmax64(logits)
  f = rng.normal(size=6) + 2.0
  scores = np.eye(6) - np.exp(log_p)  # d log p(x) / d logits for a categorical
  mean_value, mean_grad = 0.0, np.zeros(6)
  for subset in itertools.combinations(range(6), 3):
    est = set_estimate(*_library(subset, log_p), np.float32(f[list(subset)]))
    value, c = bf_estimate(subset, log_p, f)
    np.testing.assert_allclose(est.value, value, rtol=1e-5)
    np.testing.assert_allclose(est.coefficients, c, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.sum(est.weights), 1.0, rtol=1e-6)
    p_set = np.exp(bf_log_set_prob(list(subset), log_p))
    mean_value += p_set * float(est.value)
    mean_grad += p_set * np.asarray(est.coefficients, np.float64) @ scores[list(subset)]
  p = np.exp(log_p)
  np.testing.assert_allclose(mean_value, p @ f, rtol=1e-5)
  np.testing.assert_allclose(mean_grad, p * (f - p @ f), rtol=1e-4, atol=1e-6)


def test_constant_f_gives_zero_gradient_exactly():
  est = set_estimate(np.log(np.float32([0.5, 0.2, 0.1])), np.log(np.float32(0.2)), np.full(3, 7.0, np.float32))
  np.testing.assert_array_equal(est.coefficients, 0.0)
  np.testing.assert_allclose(est.value, 7.0, rtol=1e-6)


# ----------------------------------------------------------------------------------------------------------
# The support: log-probabilities, decoding and the Gumbel-top-k draw.
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["bernoulli-2x2", "independent", "categorical-2x3", "one-hot-3"])
def test_joint_log_probs_and_decode_match_enumeration(kind):
  rng = np.random.default_rng(0)
  if kind.startswith("bernoulli") or kind == "independent":
    dist = distrax.Bernoulli(logits=jnp.asarray(rng.normal(size=(2, 2)) * 3, jnp.float32))
    dist = distrax.Independent(dist, 2) if kind == "independent" else dist
  elif kind.startswith("categorical"):
    dist = distrax.Categorical(logits=jnp.asarray(rng.normal(size=(2, 3)), jnp.float32))
  else:
    dist = distrax.OneHotCategorical(logits=jnp.asarray(rng.normal(size=(3,)), jnp.float32))
  view = discrete.discrete_view(dist, who="test")

  @jax.jit
  def run():
    points = discrete.support(view)
    expected = jax.vmap(lambda x: discrete.log_prob(view, x))(points)
    return points, expected, us.joint_log_probs(view), us.decode(view, jnp.arange(points.shape[0]))

  points, expected, joint, decoded = run()
  np.testing.assert_allclose(joint, expected, rtol=1e-6, atol=1e-6)
  assert decoded.dtype == points.dtype
  np.testing.assert_array_equal(decoded, points)


def test_gumbel_top_k_draws_sets_with_probability_p_of_s():
  log_p = _log_softmax64(np.array([1.0, 0.3, -0.5, 0.0, -1.2]))
  n = 20_000
  draws = jax.jit(jax.vmap(lambda key: us.sample_set(jnp.asarray(log_p, jnp.float32), key, 2)))(
    jax.random.split(KEY, n)
  )
  draws = np.sort(np.asarray(draws), axis=1)
  assert np.all(draws[:, 0] != draws[:, 1])
  for subset in itertools.combinations(range(5), 2):
    hits = np.all(draws == np.array(subset), axis=1).astype(np.float64)
    assert_mean(hits, np.exp(bf_log_set_prob(list(subset), log_p)), what=f"frequency of {subset}")


# ----------------------------------------------------------------------------------------------------------
# The estimator: unbiased, exact at k = support size, and its variance.
# ----------------------------------------------------------------------------------------------------------


_RNG = np.random.default_rng(7)
_CAT_LOGITS = jnp.asarray(_RNG.normal(size=6), jnp.float32)
_CAT_TABLE = jnp.asarray(_RNG.normal(size=6) + 1.0, jnp.float32)
_BERN_LOGITS = jnp.asarray([0.7, -0.4, 1.5], jnp.float32)
_BERN_TABLE = jnp.asarray(_RNG.normal(size=8) + 1.0, jnp.float32)


def _categorical_problem():
  build = lambda p: distrax.Categorical(logits=p["logits"])
  f = lambda c: _CAT_TABLE[c] ** 2
  log_p = _log_softmax64(np.asarray(_CAT_LOGITS))
  scores = np.eye(6) - np.exp(log_p)
  return build, {"logits": _CAT_LOGITS}, f, log_p, np.asarray(_CAT_TABLE, np.float64) ** 2, scores


def _bernoulli_problem():
  build = lambda p: distrax.Bernoulli(logits=p["logits"])
  f = lambda b: _BERN_TABLE[jnp.sum(b.astype(jnp.int32) * jnp.array([4, 2, 1]))]
  bits = np.array(list(itertools.product([0, 1], repeat=3)), np.float64)  # index = 4 b0 + 2 b1 + b2
  logits = np.asarray(_BERN_LOGITS, np.float64)
  log_p = np.sum(np.where(bits > 0, -np.logaddexp(0, -logits), -np.logaddexp(0, logits)), axis=1)
  scores = bits - 1 / (1 + np.exp(-logits))
  return build, {"logits": _BERN_LOGITS}, f, log_p, np.asarray(_BERN_TABLE, np.float64), scores


PROBLEMS = {"categorical-6": _categorical_problem, "bernoulli-3": _bernoulli_problem}


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("problem", list(PROBLEMS))
def test_unbiased_with_the_exact_variance(problem, k):
  build, params, f, log_p, f_table, scores = PROBLEMS[problem]()
  exact_value, exact_grads, _ = jax.jit(lambda p: sfe.value_and_grad(sfe.enumerate(), f, build, p, KEY))(params)
  total, mean_v, var_v, mean_g, var_g = bf_moments(log_p, f_table, scores, k)
  np.testing.assert_allclose(total, 1.0, rtol=1e-12)
  np.testing.assert_allclose(mean_g, exact_grads["logits"], rtol=1e-5, atol=1e-7)  # the formula is unbiased
  values, grads = repeated_estimates(sfe.unordered_set(), f, build, params, KEY, num_samples=k, num_repeats=20_000)
  g = flat(grads)
  assert_mean(g, exact_grads["logits"], what=f"gradient, {problem}, k={k}")
  assert_mean(np.asarray(values), exact_value, what=f"value, {problem}, k={k}")
  assert_variance(g, var_g, what=f"gradient variance, {problem}, k={k}")
  assert_variance(np.asarray(values), var_v, what=f"value variance, {problem}, k={k}")


@pytest.mark.parametrize("problem", list(PROBLEMS))
def test_exact_with_zero_variance_when_the_set_is_the_support(problem):
  build, params, f, log_p, _, _ = PROBLEMS[problem]()
  size = log_p.shape[0]

  def both(est, key, n):
    # Also the gradient with respect to w, a parameter f closes over.
    surrogate = lambda p, w: sfe.expectation(est, lambda x: w * f(x), build, p, key, num_samples=n)[0]
    return jax.value_and_grad(surrogate, argnums=(0, 1))(params, jnp.float32(1.5))

  exact_value, (exact_grads, exact_dw) = jax.jit(lambda key: both(sfe.enumerate(), key, None))(KEY)
  values, (grads, dws) = jax.jit(jax.vmap(lambda key: both(sfe.unordered_set(), key, size)))(jax.random.split(KEY, 16))
  np.testing.assert_allclose(values, np.full(16, exact_value), rtol=1e-5)
  expected = np.broadcast_to(exact_grads["logits"], grads["logits"].shape)
  np.testing.assert_allclose(grads["logits"], expected, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(dws, np.full(16, exact_dw), rtol=1e-5)


@pytest.mark.slow
def test_exact_at_the_largest_set_size():
  k = us.MAX_SET_SIZE
  params = {"logits": jnp.asarray(np.random.default_rng(5).normal(size=k) * 3, jnp.float32)}
  build = lambda p: distrax.Categorical(logits=p["logits"])
  table = jnp.arange(k, dtype=jnp.float32) ** 0.5
  f = lambda c: table[c]
  exact_value, exact_grads, _ = jax.jit(lambda p: sfe.value_and_grad(sfe.enumerate(), f, build, p, KEY))(params)
  value, grads, _ = jax.jit(lambda p: sfe.value_and_grad(sfe.unordered_set(), f, build, p, KEY, num_samples=k))(params)
  np.testing.assert_allclose(value, exact_value, rtol=1e-5)
  np.testing.assert_allclose(grads["logits"], exact_grads["logits"], rtol=1e-3, atol=1e-6)


def test_variance_falls_to_zero_as_k_grows():
  build, params, f, log_p, f_table, scores = _categorical_problem()
  variances = [bf_moments(log_p, f_table, scores, k)[4].sum() for k in range(2, 7)]
  assert all(a > b for a, b in zip(variances, variances[1:])) and variances[-1] < 1e-25


def test_extreme_logits_finite_and_exact_at_the_support_size():
  params = {"logits": jnp.array([50.0, -50.0, 0.0, 20.0, -jnp.inf])}
  build = lambda p: distrax.Categorical(logits=p["logits"])
  f = lambda c: jnp.array([1.0, 2.0, 3.0, 4.0, 5.0])[c]
  for k in (2, 5):
    value, grads, _ = jax.jit(lambda p: sfe.value_and_grad(sfe.unordered_set(), f, build, p, KEY, num_samples=k))(
      params
    )
    assert np.isfinite(value) and np.all(np.isfinite(grads["logits"]))
  # k = 5 is the support: exact (the -inf class has probability 0 and gradient 0).
  p = np.asarray(jax.nn.softmax(params["logits"]), np.float64)
  np.testing.assert_allclose(value, p @ np.arange(1.0, 6.0), rtol=1e-6)
  np.testing.assert_allclose(grads["logits"][-1], 0.0)


# ----------------------------------------------------------------------------------------------------------
# Kool et al.'s three-bit toy: one logit shared by three bits.
# ----------------------------------------------------------------------------------------------------------


P0 = np.array([0.6, 0.51, 0.48])


def _toy():
  build = lambda phi: distrax.Bernoulli(logits=jnp.full(3, phi))
  f = lambda b: jnp.sum((b - jnp.asarray(P0, jnp.float32)) ** 2)
  bits = np.array(list(itertools.product([0, 1], repeat=3)), np.float64)
  log_p = np.full(8, 3 * np.log(0.5))  # phi = 0
  f_table = np.sum((bits - P0) ** 2, axis=1)
  scores = (bits.sum(axis=1) - 1.5)[:, None]  # d log p / d phi at phi = 0
  return build, f, log_p, f_table, scores


def _exact_loo_variance(f_table, scores, p, n):
  """Variance of REINFORCE with the leave-one-out baseline, n samples, by enumerating all 8^n draws."""
  draws = np.array(list(itertools.product(range(len(p)), repeat=n)))
  prob = np.prod(p[draws], axis=1)
  fx, sx = f_table[draws], scores[draws, 0]
  others = (fx.sum(axis=1, keepdims=True) - fx) / (n - 1)
  est = np.mean((fx - others) * sx, axis=1)
  mean = prob @ est
  return mean, prob @ (est - mean) ** 2


@pytest.mark.parametrize("k", [2, 4])
def test_kool_toy_lower_variance_than_reinforce_leave_one_out(k):
  build, f, log_p, f_table, scores = _toy()
  _, mean_us, _, mean_g, var_us = bf_moments(log_p, f_table, scores, k)
  mean_loo, var_loo = _exact_loo_variance(f_table, scores, np.exp(log_p), k)
  np.testing.assert_allclose([mean_g[0], mean_loo], -0.0450, rtol=1e-12)
  # Exact single-estimate variances (k = 2: 0.0061125 vs 0.007275; k = 4: 0.00113083 vs 0.0019875).
  assert var_us[0] < var_loo
  r = 40_000
  phi = jnp.float32(0.0)
  _, g_us = repeated_estimates(sfe.unordered_set(), f, build, phi, KEY, num_samples=k, num_repeats=r)
  _, g_loo = repeated_estimates(
    sfe.score_function(baseline=sfe.baselines.leave_one_out()),
    f,
    build,
    phi,
    jax.random.key(1),
    num_samples=k,
    num_repeats=r,
  )
  g_us, g_loo = np.asarray(g_us), np.asarray(g_loo)
  assert_mean(g_us, -0.0450, what=f"unordered set, k={k}")
  assert_variance(g_us, var_us[0], what=f"unordered set variance, k={k}")
  assert_variance(g_loo, var_loo, what=f"leave-one-out variance, n={k}")
  (v_us, se_us), (v_loo, se_loo) = variance_and_se(g_us), variance_and_se(g_loo)
  assert v_us + 5 * se_us < v_loo - 5 * se_loo, (v_us, se_us, v_loo, se_loo)


# ----------------------------------------------------------------------------------------------------------
# Errors, at trace time.
# ----------------------------------------------------------------------------------------------------------


def _call(build, params, num_samples, **kw):
  return sfe.value_and_grad(
    sfe.unordered_set(**kw), lambda x: jnp.sum(x * 1.0), build, params, KEY, num_samples=num_samples
  )


def test_refuses_a_continuous_distribution():
  with pytest.raises(TypeError, match=r"sfe.unordered_set\(\) needs Bernoulli.*not discrete"):
    _call(lambda p: distrax.Normal(p, 1.0), jnp.zeros(3), 2)


def test_refuses_more_samples_than_the_support():
  with pytest.raises(ValueError, match=r"at most 4 for sfe.unordered_set\(\).*support size 4 = 2\^2.*got 5"):
    _call(lambda p: distrax.Bernoulli(logits=p), jnp.zeros(2), 5)


def test_refuses_a_set_above_the_maximum():
  with pytest.raises(ValueError, match=rf"at most {us.MAX_SET_SIZE} .* got {us.MAX_SET_SIZE + 1}"):
    _call(lambda p: distrax.Categorical(logits=p), jnp.zeros(20), us.MAX_SET_SIZE + 1)


def test_refuses_a_support_above_max_support():
  with pytest.raises(ValueError, match=r"2\^17 = 131072 values of 17 variables.*max_support=65536"):
    _call(lambda p: distrax.Bernoulli(logits=p), jnp.zeros(17), 2)
  with pytest.raises(ValueError, match=r"3\^2 = 9 values .*max_support=8"):
    _call(lambda p: distrax.Categorical(logits=p), jnp.zeros((2, 3)), 2, max_support=8)


def test_refuses_a_single_sample_and_bad_max_support():
  with pytest.raises(ValueError, match=r"`num_samples` must be at least 2 for sfe.unordered_set\(\)"):
    _call(lambda p: distrax.Categorical(logits=p), jnp.zeros(3), 1)
  with pytest.raises(TypeError, match="`max_support` must be a Python int"):
    sfe.unordered_set(max_support=2.5)
