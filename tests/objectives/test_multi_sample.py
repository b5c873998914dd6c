"""Multi-sample objectives (IWAE, DReG, VIMCO) against the exact K-sample importance-weighted bound.

The exact bound L_K = E[log (1/K) sum_k w_k] and its gradients (with respect to the proposal's parameters and to
the model's parameters that the log-joint closes over) come from summing over every K-tuple of a small discrete
latent, or from Gauss-Hermite quadrature on the K-dimensional grid of standard-normal noises z = mu + sigma eps
(exact to about 1e-11 in float64), differentiated by autodiff.
"""

import functools
import itertools

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sfe_jax as sfe
from sfe_jax._src.objectives import multi_sample
from tests.helpers import assert_mean, mean_and_se, variance_and_se

KEY = jax.random.key(0)
R = 20_000
ESTIMATORS = {"iwae": sfe.objectives.iwae, "dreg": sfe.objectives.dreg, "vimco": sfe.objectives.vimco}


def _repeats(estimator, make_log_joint, build, theta, model, num_samples, key, num_repeats=R):
  """Values (R,) and gradients (theta, model), each with a leading R axis, over independent keys."""

  def one(k):
    def bound(t, m):
      return sfe.objectives.surrogate(estimator, make_log_joint(m), build, t, k, num_samples=num_samples)[0]

    return jax.value_and_grad(bound, argnums=(0, 1))(theta, model)

  return jax.jit(jax.vmap(one))(jax.random.split(key, num_repeats))


def _assert_tree_mean(samples, exact, what):
  for name in exact:
    assert_mean(np.asarray(samples[name]), np.asarray(exact[name]), what=f"{what} [{name}]")


def _f64(tree):
  return jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), tree)


def _np(tree):
  return jax.tree.map(lambda x: np.asarray(x, np.float64), tree)


# ----------------------------------------------------------------------------------------------------------
# Discrete latents: the exact bound by enumerating every K-tuple.
# ----------------------------------------------------------------------------------------------------------

CAT_LIK = jnp.array([0.3, -1.2, 0.8, -0.4])
BITS_LIK = jax.random.normal(jax.random.key(3), (8,))
BITS_INDEX = jnp.array([4, 2, 1])


def _cat_log_joint(model):
  return lambda z: jax.nn.log_softmax(model["prior"])[z] + CAT_LIK[z]


def _bits_log_joint(model):
  def log_joint(b):
    b = b.astype(model["prior"].dtype)
    prior = jnp.sum(b * model["prior"] - jax.nn.softplus(model["prior"]))
    return prior + BITS_LIK[jnp.sum(b.astype(jnp.int32) * BITS_INDEX)]

  return log_joint


DISCRETE = {
  "categorical": (
    lambda p: distrax.Categorical(logits=p["logits"]),
    _cat_log_joint,
    {"logits": jnp.array([0.5, -0.3, 0.1, 1.0])},
    {"prior": jnp.array([0.2, 0.0, -0.5, 0.4])},
    np.arange(4, dtype=np.int32),
  ),
  "bernoulli": (
    lambda p: distrax.Bernoulli(logits=p["logits"]),
    _bits_log_joint,
    {"logits": jnp.array([0.5, -1.0, 0.3])},
    {"prior": jnp.array([0.3, -0.2, 0.6])},
    np.array(list(itertools.product([0, 1], repeat=3)), dtype=np.int32),
  ),
}


def _exact_discrete_bound(build, make_log_joint, support, num_samples):
  """L_K(theta, model) = sum over all K-tuples of prod_k q(z_k) * log mean_k w_k; differentiable."""

  def bound(theta, model):
    dist = build(theta)
    log_q = jax.vmap(lambda z: jnp.sum(dist.log_prob(z)))(support)
    log_w = jax.vmap(make_log_joint(model))(support) - log_q
    idx = np.array(list(itertools.product(range(len(support)), repeat=num_samples)))  # (S^K, K)
    tuple_log_q = jnp.sum(log_q[idx], axis=1)
    tuple_bound = jax.nn.logsumexp(log_w[idx], axis=1) - np.log(num_samples)
    return jnp.sum(jnp.exp(tuple_log_q) * tuple_bound)

  return bound


@pytest.mark.parametrize("num_samples", [2, 3])
@pytest.mark.parametrize("problem", sorted(DISCRETE))
def test_vimco_matches_exact_discrete_bound(problem, num_samples):
  build, make_log_joint, theta, model, support = DISCRETE[problem]
  bound = _exact_discrete_bound(build, make_log_joint, jnp.asarray(support), num_samples)
  exact_value, (exact_theta, exact_model) = jax.jit(jax.value_and_grad(bound, argnums=(0, 1)))(theta, model)
  values, (g_theta, g_model) = _repeats(sfe.objectives.vimco(), make_log_joint, build, theta, model, num_samples, KEY)
  assert_mean(np.asarray(values), float(exact_value), what="VIMCO value vs L_K")
  _assert_tree_mean(g_theta, exact_theta, "VIMCO proposal gradient")
  _assert_tree_mean(g_model, exact_model, "VIMCO model gradient")
  # The bound tightens with K and stays below log p(x) = log sum_z p(x, z).
  log_px = jax.jit(lambda m: jax.nn.logsumexp(jax.vmap(make_log_joint(m))(jnp.asarray(support))))(model)
  lower = jax.jit(_exact_discrete_bound(build, make_log_joint, jnp.asarray(support), num_samples - 1))(theta, model)
  assert float(lower) < float(exact_value) < float(log_px)


def test_vimco_is_the_explicit_formula():
  # Same key, same samples: sum_k (L - L_{-k} - w~_k) grad log q(z_k), with L_{-k} computed by brute force.
  build, make_log_joint, theta, model, _ = DISCRETE["categorical"]
  k_samples, key = 5, jax.random.key(11)
  value, (g_theta, g_model) = jax.jit(
    jax.value_and_grad(
      lambda t, m: sfe.objectives.surrogate(
        sfe.objectives.vimco(), make_log_joint(m), build, t, key, num_samples=k_samples
      )[0],
      argnums=(0, 1),
    )
  )(theta, model)

  @jax.jit
  def reference_terms(theta, model):
    zs = build(theta).sample(seed=key, sample_shape=(k_samples,))
    scores = jax.vmap(lambda z: jax.grad(lambda t: build(t).log_prob(z))(theta)["logits"])(zs)
    model_grads = jax.vmap(lambda z: jax.grad(lambda m: make_log_joint(m)(z))(model)["prior"])(zs)
    return build(theta).log_prob(zs), jax.vmap(make_log_joint(model))(zs), scores, model_grads

  log_q, log_p, scores, model_grads = _np(reference_terms(theta, model))
  log_w = log_p - log_q
  lme = lambda a: np.log(np.mean(np.exp(a - a.max()))) + a.max()
  big_l = lme(log_w)
  signals = np.empty(k_samples)
  for k in range(k_samples):
    replaced = log_w.copy()
    replaced[k] = np.delete(log_w, k).mean()
    signals[k] = big_l - lme(replaced)
  w_tilde = np.exp(log_w - big_l) / k_samples
  np.testing.assert_allclose(float(value), big_l, rtol=1e-5)
  np.testing.assert_allclose(g_theta["logits"], (signals - w_tilde) @ scores, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(g_model["prior"], w_tilde @ model_grads, rtol=1e-4, atol=1e-6)


def test_leave_one_out_bounds_brute_force_and_infinities():
  rng = np.random.default_rng(0)
  for log_w in [
    rng.normal(size=6) * 3.0,
    rng.normal(size=2),
    1e4 + rng.normal(size=7),
    np.array([0.5, -np.inf, 1.0, -2.0]),
    np.array([-np.inf, -np.inf, 0.3]),
  ]:
    got = np.asarray(jax.jit(multi_sample.leave_one_out_bounds)(jnp.asarray(log_w, jnp.float32)))
    expected = []
    for k in range(len(log_w)):
      replaced = np.array(log_w, np.float64)
      replaced[k] = np.delete(replaced, k).mean()
      expected.append(np.logaddexp.reduce(replaced) - np.log(len(log_w)))
    assert not np.any(np.isnan(got))
    np.testing.assert_allclose(got, np.array(expected), rtol=1e-5)


@pytest.mark.parametrize("dist_name", ["bernoulli", "categorical", "one_hot"])
def test_vimco_extreme_logits_jit_and_vmap(dist_name):
  logits = jnp.array([[50.0, -50.0, 0.0], [-50.0, 1.0, 50.0]])
  if dist_name == "bernoulli":
    build = lambda p: distrax.Bernoulli(logits=p["logits"])
    log_joint = lambda b: jnp.sum(b * jnp.array([[1.0, -2.0, 0.5], [0.3, 0.0, -1.0]])) - 3.0
  elif dist_name == "categorical":
    build = lambda p: distrax.Categorical(logits=p["logits"])
    log_joint = lambda z: jnp.sum(jnp.array([0.2, -1.0, 0.7])[z])
  else:
    build = lambda p: distrax.OneHotCategorical(logits=p["logits"])
    log_joint = lambda z: jnp.sum(z * jnp.array([0.2, -1.0, 0.7]))
  params = {"logits": logits}
  run = jax.jit(
    lambda p, k: sfe.objectives.value_and_grad(sfe.objectives.vimco(), log_joint, build, p, k, num_samples=4)[:2]
  )
  keys = jax.random.split(KEY, 3)
  values, many = jax.jit(jax.vmap(run, in_axes=(None, 0)))(params, keys)
  assert values.shape == (3,) and many["logits"].shape == (3, 2, 3)
  assert np.all(np.isfinite(values)) and np.all(np.isfinite(many["logits"]))
  value, grads = run(params, keys[1])
  np.testing.assert_allclose(values[1], value, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(many["logits"][1], grads["logits"], rtol=1e-5, atol=1e-6)
  # The latents with logits +-50 are (almost surely) deterministic: their learning signals multiply scores of
  # about exp(-50), so those gradients vanish instead of overflowing.
  assert np.all(np.abs(np.asarray(many["logits"])[:, 0, :2]) < 1e-6)


# ----------------------------------------------------------------------------------------------------------
# Continuous latent: a Gaussian model, q = N(mu, sigma^2), the exact bound by Gauss-Hermite quadrature.
# ----------------------------------------------------------------------------------------------------------

X_OBS = 1.3
THETA = {"mu": jnp.asarray(0.2), "log_sigma": jnp.asarray(-0.1)}
MODEL = {"a": jnp.asarray(0.0), "log_s": jnp.asarray(0.0)}


def gauss_build(p):
  return distrax.Normal(p["mu"], jnp.exp(p["log_sigma"]))


def gauss_log_joint(model):
  """log N(z; a, 1) + log N(x; z, s^2): the posterior is N((a + x/s^2)/(1 + 1/s^2), 1/(1 + 1/s^2))."""

  def log_joint(z):
    s = jnp.exp(model["log_s"])
    return -0.5 * (z - model["a"]) ** 2 - 0.5 * ((X_OBS - z) / s) ** 2 - model["log_s"] - jnp.log(2 * jnp.pi)

  return log_joint


def _quadrature_bound(theta, model, num_samples, nodes):
  """L_K by the tensor Gauss-Hermite rule on K standard-normal noises; differentiable in theta and model."""
  t, w = np.polynomial.hermite.hermgauss(nodes)
  eps, weights = jnp.asarray(np.sqrt(2.0) * t), jnp.asarray(w / np.sqrt(np.pi))
  z = theta["mu"] + jnp.exp(theta["log_sigma"]) * eps
  log_w = jax.vmap(gauss_log_joint(model))(z) - gauss_build(theta).log_prob(z)
  grids = jnp.stack(jnp.meshgrid(*([log_w] * num_samples), indexing="ij"))
  grid_weights = jnp.prod(jnp.stack(jnp.meshgrid(*([weights] * num_samples), indexing="ij")), axis=0)
  return jnp.sum(grid_weights * (jax.nn.logsumexp(grids, axis=0) - np.log(num_samples)))


@functools.cache
def exact_gaussian_bound(num_samples, nodes=100):
  theta, model = THETA, MODEL
  with jax.enable_x64(True):
    fn = jax.jit(jax.value_and_grad(_quadrature_bound, argnums=(0, 1)), static_argnums=(2, 3))
    value, (g_theta, g_model) = fn(_f64(theta), _f64(model), num_samples, nodes)
    return float(value), _np(g_theta), _np(g_model)


def test_quadrature_reference_converged():
  coarse, fine = exact_gaussian_bound(2, nodes=70), exact_gaussian_bound(2, nodes=110)
  np.testing.assert_allclose(coarse[0], fine[0], rtol=0, atol=1e-9)
  for a, b in zip(coarse[1:], fine[1:]):
    for name in a:
      np.testing.assert_allclose(a[name], b[name], rtol=0, atol=1e-8)
  # K = 1 is the ELBO, in closed form: E_q[log p(x, z)] + entropy of q.
  mu, sigma = float(THETA["mu"]), np.exp(float(THETA["log_sigma"]))  # the float32 values, exactly
  elbo = (
    -0.5 * (mu**2 + sigma**2)
    - 0.5 * ((X_OBS - mu) ** 2 + sigma**2)
    - np.log(2 * np.pi)
    + 0.5 * np.log(2 * np.pi * np.e * sigma**2)
  )
  np.testing.assert_allclose(exact_gaussian_bound(1)[0], elbo, rtol=1e-10)


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_continuous_matches_exact_bound(name):
  exact_value, exact_theta, exact_model = exact_gaussian_bound(2)
  values, (g_theta, g_model) = _repeats(ESTIMATORS[name](), gauss_log_joint, gauss_build, THETA, MODEL, 2, KEY)
  assert_mean(np.asarray(values), exact_value, what=f"{name} value vs L_2")
  _assert_tree_mean(g_theta, exact_theta, f"{name} proposal gradient")
  _assert_tree_mean(g_model, exact_model, f"{name} model gradient")


def test_dreg_lower_variance_and_snr_does_not_decay():
  # At K = 8 DReG's proposal-gradient variance is far below IWAE's; from K = 8 to K = 64 IWAE's
  # signal-to-noise ratio falls (Rainforth et al. 2018) while DReG's does not (Tucker et al. 2019).
  snr = {}
  for k in (8, 64):
    for name in ("iwae", "dreg"):
      _, (g_theta, _) = _repeats(
        ESTIMATORS[name](), gauss_log_joint, gauss_build, THETA, MODEL, k, jax.random.key(k), num_repeats=10_000
      )
      g = np.stack([np.asarray(g_theta["mu"]), np.asarray(g_theta["log_sigma"])], axis=1)
      var, var_se = variance_and_se(g)
      mean, _ = mean_and_se(g)
      snr[name, k] = (np.abs(mean[0]) / np.sqrt(var[0]), np.sqrt((1 + 0.5 * (mean[0] ** 2 / var[0])) / len(g)))
      if k == 8:
        snr[name, "var"] = (var, var_se)
  (v_iwae, se_iwae), (v_dreg, se_dreg) = snr["iwae", "var"], snr["dreg", "var"]
  assert np.all(v_iwae - v_dreg > 5 * np.hypot(se_iwae, se_dreg)), (v_iwae, v_dreg)
  (s8, e8), (s64, e64) = snr["iwae", 8], snr["iwae", 64]
  assert s8 - s64 > 5 * np.hypot(e8, e64), ("IWAE SNR should decay with K", s8, s64)
  (s8, e8), (s64, e64) = snr["dreg", 8], snr["dreg", 64]
  assert s64 - s8 > 5 * np.hypot(e8, e64), ("DReG SNR should not decay with K", s8, s64)


@pytest.mark.parametrize("name", ["iwae", "dreg"])
def test_one_sample_is_the_elbo(name):
  key = jax.random.key(5)
  value, grads, _ = jax.jit(
    lambda t: sfe.objectives.value_and_grad(
      ESTIMATORS[name](), gauss_log_joint(MODEL), gauss_build, t, key, num_samples=1
    )
  )(THETA)

  def elbo_estimate(theta, stop_q_params):
    z = gauss_build(theta).sample(seed=key, sample_shape=(1,))[0]
    q_params = jax.lax.stop_gradient(theta) if stop_q_params else theta
    return gauss_log_joint(MODEL)(z) - gauss_build(q_params).log_prob(z)

  np.testing.assert_allclose(value, jax.jit(elbo_estimate, static_argnums=1)(THETA, False), rtol=1e-6)
  # IWAE: the pathwise ELBO gradient; DReG: "sticking the landing" (q's parameters stopped in log q).
  expected = jax.jit(jax.grad(elbo_estimate), static_argnums=1)(THETA, name == "dreg")
  for p in THETA:
    np.testing.assert_allclose(grads[p], expected[p], rtol=1e-5, atol=1e-6)


def test_dreg_is_the_explicit_formula_two_dim():
  # q = N(mu, diag(sigma^2)) in 2-D: sum_k w~_k^2 d log w_k / d theta with q's parameters stopped inside log w,
  # and the model gradient sum_k w~_k grad log p(x, z_k).
  theta = {"mu": jnp.array([0.2, -0.3]), "log_sigma": jnp.array([-0.1, 0.2])}
  model = {"a": jnp.array([0.1, 0.4])}
  build = lambda p: distrax.MultivariateNormalDiag(p["mu"], jnp.exp(p["log_sigma"]))
  make = lambda m: lambda z: -0.5 * jnp.sum((z - m["a"]) ** 2) - 0.5 * jnp.sum((z - 1.0) ** 2 / 0.5)
  key, k_samples = jax.random.key(2), 6
  value, (g_theta, g_model) = jax.jit(
    jax.value_and_grad(
      lambda t, m: sfe.objectives.surrogate(sfe.objectives.dreg(), make(m), build, t, key, num_samples=k_samples)[0],
      argnums=(0, 1),
    )
  )(theta, model)

  def log_w(t, m):
    z = build(t).sample(seed=key, sample_shape=(k_samples,))
    return jax.vmap(make(m))(z) - build(jax.lax.stop_gradient(t)).log_prob(z)

  @jax.jit
  def reference(theta, model):
    lw = log_w(theta, model)
    w_tilde = jax.nn.softmax(lw)
    jac_theta, jac_model = jax.jacrev(log_w, argnums=(0, 1))(theta, model)
    bound = jax.nn.logsumexp(lw) - np.log(k_samples)
    return (
      bound,
      {p: jnp.tensordot(w_tilde**2, jac_theta[p], 1) for p in theta},
      jnp.tensordot(w_tilde, jac_model["a"], 1),
    )

  bound, expected_theta, expected_model = reference(theta, model)
  np.testing.assert_allclose(value, bound, rtol=1e-6)
  for p in theta:
    np.testing.assert_allclose(g_theta[p], expected_theta[p], rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(g_model["a"], expected_model, rtol=1e-4, atol=1e-6)


def test_exact_posterior_proposal_gives_zero_dreg_gradient():
  # q = p(z | x): every log-weight equals log p(x), so DReG's proposal gradient is exactly zero, while IWAE's
  # and VIMCO's single estimates are not (their expectation is zero, their variance is not).
  theta = {"mu": jnp.asarray(0.65), "log_sigma": jnp.asarray(0.5 * np.log(0.5))}

  def gradient(objective, t):
    return sfe.objectives.value_and_grad(objective, gauss_log_joint(MODEL), gauss_build, t, KEY, num_samples=4)[1]

  grads = {name: jax.jit(functools.partial(gradient, ESTIMATORS[name]()))(theta) for name in ESTIMATORS}
  np.testing.assert_allclose([grads["dreg"]["mu"], grads["dreg"]["log_sigma"]], 0.0, atol=1e-5)
  for name in ("iwae", "vimco"):
    assert np.abs(grads[name]["mu"]) + np.abs(grads[name]["log_sigma"]) > 1e-2


# ----------------------------------------------------------------------------------------------------------
# Errors.
# ----------------------------------------------------------------------------------------------------------


def test_vimco_needs_two_samples():
  build, make_log_joint, theta, model, _ = DISCRETE["categorical"]
  with pytest.raises(ValueError, match=r"num_samples.*at least 2.*sfe\.objectives\.vimco\(\)"):
    sfe.objectives.value_and_grad(sfe.objectives.vimco(), make_log_joint(model), build, theta, KEY, num_samples=1)


@pytest.mark.parametrize("name", ["iwae", "dreg"])
@pytest.mark.parametrize("problem", sorted(DISCRETE))
def test_reparameterized_estimators_refuse_discrete_q(name, problem):
  build, make_log_joint, theta, model, _ = DISCRETE[problem]
  with pytest.raises(
    TypeError, match=rf"sfe\.objectives\.{name}\(\) needs a reparameterizable.*distrax\..*sfe\.objectives\.vimco\(\)"
  ):
    sfe.objectives.value_and_grad(ESTIMATORS[name](), make_log_joint(model), build, theta, KEY, num_samples=4)


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_non_scalar_log_joint_is_refused(name):
  theta = {"mu": jnp.zeros(3), "log_sigma": jnp.zeros(3)}
  log_joint = lambda z: -0.5 * z**2  # forgot the sum
  with pytest.raises(ValueError, match=rf"sfe\.objectives\.{name}\(\).*log-joint.*scalar.*shape \(3,\).*\(3,\)"):
    sfe.objectives.value_and_grad(ESTIMATORS[name](), log_joint, gauss_build, theta, KEY, num_samples=4)


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_integer_log_joint_is_refused(name):
  with pytest.raises(TypeError, match=rf"sfe\.objectives\.{name}\(\).*real floating-point.*int32"):
    sfe.objectives.value_and_grad(ESTIMATORS[name](), lambda z: jnp.int32(1), gauss_build, THETA, KEY, num_samples=4)


@pytest.mark.parametrize("name", ["iwae", "dreg", "vimco"])
def test_saturated_tanh_proposal_stays_finite(name):
  # TFP's bijectors cache the pre-image of their own samples; log q must be evaluated on that very array, or a
  # saturated tanh is inverted to atanh(1) = inf (a regression of per-sample log_prob calls).
  from tensorflow_probability.substrates import jax as tfp  # noqa: PLC0415

  tfd, tfb = tfp.distributions, tfp.bijectors
  build = lambda p: tfd.Independent(tfd.TransformedDistribution(tfd.Normal(p["loc"], p["scale"]), tfb.Tanh()), 1)
  params = {"loc": jnp.full(2, 3.0), "scale": jnp.full(2, 2.0)}
  log_joint = lambda z: -jnp.sum(z**2)
  value, grads, _ = jax.jit(
    lambda p: sfe.objectives.value_and_grad(getattr(sfe.objectives, name)(), log_joint, build, p, KEY, num_samples=256)
  )(params)
  assert np.isfinite(value) and all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


@pytest.mark.parametrize("name", ["iwae", "dreg", "vimco"])
def test_params_with_non_array_leaves(name):
  # An equinox-style params pytree: a function leaf is passed through to dist_builder, not differentiated.
  build = lambda p: distrax.Normal(p["loc"], p["squash"](p["scale"]))
  params = {"loc": jnp.zeros(2), "scale": jnp.ones(2), "squash": jax.nn.softplus}
  log_joint = lambda z: -0.5 * jnp.sum(z**2)
  # Compiled with params closed over (jax.jit cannot take a function leaf as an argument); the library sees them
  # as it does eagerly.
  value, grads, _ = jax.jit(
    lambda: sfe.objectives.value_and_grad(getattr(sfe.objectives, name)(), log_joint, build, params, KEY, num_samples=4)
  )()
  assert grads["squash"] is None and grads["loc"].shape == (2,) and np.isfinite(value)
