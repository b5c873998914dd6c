"""REBAR and RELAX: unbiased for any control, the control update, variance reduction by training, errors."""

import chex
import distrax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sfe_jax as sfe
from sfe_jax._src.discrete import views as discrete
from tests.helpers import assert_mean, assert_variance, repeated_estimates, variance_and_se

KEY = jax.random.key(0)
R = 100_000  # single-sample repeats


def _exact_grad(f, build, params):
  return jax.jit(lambda p: sfe.value_and_grad(sfe.enumerate(), f, build, p, KEY)[1])(params)


def _toy(p0):
  return (lambda b: (b - p0) ** 2), (lambda p: distrax.Bernoulli(logits=p["phi"], dtype=jnp.float32))


def _mlp_control(key, z_shape, hidden=16):
  """A random one-hidden-layer tanh network of the flattened z, and its parameters."""
  size = int(np.prod(z_shape))
  k1, k2, k3 = jax.random.split(key, 3)
  cp = {
    "w1": jax.random.normal(k1, (hidden, size)) / np.sqrt(size),
    "b1": jax.random.normal(k2, (hidden,)),
    "w2": jax.random.normal(k3, (hidden,)) / np.sqrt(hidden),
  }
  control_fn = lambda cp, z: jnp.tanh(cp["w1"] @ jnp.ravel(z) + cp["b1"]) @ cp["w2"]
  return control_fn, cp


def _gradient_recorder():
  """An optax transformation that leaves the params unchanged and keeps the last gradient in its state."""
  return optax.GradientTransformation(
    init=lambda p: jax.tree.map(jnp.zeros_like, p),
    update=lambda g, state, params=None: (jax.tree.map(jnp.zeros_like, g), g),
  )


# ----------------------------------------------------------------------------------------------------------
# The conditional relaxation z~ ~ p(z | b).
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["bernoulli", "categorical"])
def test_conditional_relaxation_matches_the_joint(kind):
  # If z ~ p(z), b = H(z) and z~ ~ p(z | b), then z~ has the distribution of z, and H(z~) = b exactly.
  if kind == "bernoulli":
    dist = distrax.Bernoulli(logits=jnp.array([-1.5, 0.3, 2.0]))
  else:
    dist = distrax.Categorical(logits=jnp.array([[0.5, -1.0, 2.0, 0.0], [-3.0, 1.0, 1.0, 0.2]]))
  view = discrete.discrete_view(dist, who="test")
  n = 200_000

  @jax.jit
  def draw(key):
    noise, v = discrete.draw_noise(view, key, n)
    z = view.logits + noise
    b = discrete.hard_from_noisy(view, z)
    z_tilde = discrete.conditional_noisy_logits(view, b, v)
    diffs = [h(z) - h(z_tilde) for h in (lambda x: x, jnp.tanh, lambda x: jnp.exp(-(x**2)))]
    return b, z_tilde, discrete.hard_from_noisy(view, z_tilde), jnp.stack(diffs, axis=-1).reshape(n, -1)

  b, z_tilde, b_tilde, diffs = draw(KEY)
  np.testing.assert_array_equal(b_tilde, b)
  assert_mean(diffs, np.zeros(diffs.shape[1]), what=f"{kind}: E[h(z)] - E[h(z~)]")  # each column has mean 0
  # Independent checks of the closed forms: z~ given b = 1 is Logistic(phi) truncated to z > 0, whose CDF at
  # x > 0 is (sigmoid(x - phi) - sigmoid(-phi)) / sigmoid(phi); for the argmax of a categorical the maximum
  # is standard Gumbel whatever b is.
  if kind == "bernoulli":
    phi = np.asarray(view.logits)
    ones = np.asarray(b) > 0.5
    for i in range(3):
      x = np.asarray(z_tilde)[ones[:, i], i]
      cdf = lambda t: (1 / (1 + np.exp(phi[i] - t)) - 1 / (1 + np.exp(phi[i]))) / (1 / (1 + np.exp(-phi[i])))
      empirical = x[:, None] <= np.array([0.5, 1.0, 3.0])[None, :]
      assert_mean(empirical.astype(float), cdf(np.array([0.5, 1.0, 3.0])), what="truncated logistic CDF")
  else:
    top = np.asarray(jnp.max(z_tilde, axis=-1)).reshape(-1)
    empirical = (top[:, None] <= np.array([-1.0, 0.0, 2.0])[None, :]).astype(float)
    assert_mean(empirical, np.exp(-np.exp(-np.array([-1.0, 0.0, 2.0]))), what="Gumbel maximum CDF")


def test_conditional_relaxation_is_finite_at_extreme_logits():
  for dist in (
    distrax.Bernoulli(logits=jnp.array([50.0, -50.0, 0.0])),
    distrax.Categorical(logits=jnp.array([[50.0, -50.0, 0.0], [-50.0, -50.0, 50.0]])),
  ):
    view = discrete.discrete_view(dist, who="test")
    # Every hard value, including those of probability e^-100.
    hard = (
      jnp.arange(60)[:, None] % 2 * jnp.ones(3)
      if view.kind == discrete.BERNOULLI
      else jnp.arange(120).reshape(60, 2) % 3
    )

    @jax.jit
    def run(logits):
      _, v = discrete.draw_noise(view, KEY, 60)
      conditional = lambda l: discrete.conditional_noisy_logits(view._replace(logits=l), hard, v)
      return conditional(logits), jax.jacrev(lambda l: jnp.sum(conditional(l), axis=0))(logits)

    for x in run(view.logits):
      assert np.all(np.isfinite(x))


# ----------------------------------------------------------------------------------------------------------
# Unbiased for arbitrary control parameters (the state held fixed).
# ----------------------------------------------------------------------------------------------------------


def _rebar_toy_moments(phi, p0, t, eta, n=1000):
  """Mean and variance of the single-sample REBAR estimate on the Bernoulli toy, by midpoint quadrature over
  the two uniforms (u for z, v for z~), written from the paper's formulas independently of the library."""
  p = 1 / (1 + np.exp(-phi))
  grid = (np.arange(n) + 0.5) / n
  # u is split at 1 - p, where b jumps, so the midpoint rule on each piece converges as 1 / n^2.
  u_grid = np.concatenate([(1 - p) * grid, 1 - p + p * grid])
  weights = np.concatenate([np.full(n, (1 - p) / n), np.full(n, p / n)])[:, None] / n
  u, v = np.meshgrid(u_grid, grid, indexing="ij")
  z = phi + np.log(u) - np.log1p(-u)
  b = (z > 0).astype(float)
  logit = lambda x: np.log(x) - np.log1p(-x)
  z_tilde = np.where(b > 0, phi - logit(v * p), phi + logit(v * (1 - p)))
  dz_tilde = np.where(b > 0, 1 - (1 - p) / (1 - v * p), 1 - p / (1 - v * (1 - p)))
  f = lambda x: (x - p0) ** 2
  s = lambda x: 1 / (1 + np.exp(-x / t))
  c = lambda x: eta * f(s(x))
  dc = lambda x: eta * 2 * (s(x) - p0) * s(x) * (1 - s(x)) / t
  g = (f(b) - c(z_tilde)) * (b - p) + dc(z) - dc(z_tilde) * dz_tilde
  mean = np.sum(weights * g)
  return mean, np.sum(weights * (g - mean) ** 2)


@pytest.mark.parametrize("temperature, scale, phi", [(0.5, 1.0, 0.3), (0.1, 0.3, -1.0), (2.0, -1.0, 1.5)])
def test_rebar_toy_unbiased_with_exact_variance(temperature, scale, phi):
  p0 = 0.45
  f, build = _toy(p0)
  params = {"phi": jnp.float32(phi)}
  est = sfe.rebar(temperature, scale)
  _, grads = repeated_estimates(
    est,
    f,
    build,
    params,
    KEY,
    num_samples=3,
    num_repeats=R,  # one sample
    state=est.init(params),
  )
  g = np.asarray(grads["phi"])
  exact = _exact_grad(f, build, params)["phi"]
  quad_mean, quad_var = _rebar_toy_moments(phi, p0, temperature, scale)
  np.testing.assert_allclose(quad_mean, exact, rtol=2e-4)  # the quadrature itself is right
  assert_mean(g, exact, what="REBAR toy mean")
  assert_variance(g, quad_var, rtol=1e-3, what="REBAR toy variance")


def test_rebar_unbiased_for_a_set_state_on_categorical():
  # REBAR on a one-hot categorical: f receives one-hot vectors (hard) and simplex points (relaxed).
  table = jnp.array([[1.0, -2.0, 0.5], [0.3, 2.0, -1.0]])
  f = lambda x: jnp.sum(table * x) + x[0, 0] * x[1, 1]
  build = lambda p: distrax.OneHotCategorical(logits=p["logits"], dtype=jnp.float32)
  params = {"logits": jnp.array([[0.2, -0.5, 1.0], [0.0, 0.3, -1.2]])}
  est = sfe.rebar()
  state = est.init(params)._replace(
    control_params={"log_temperature": jnp.float32(np.log(0.3)), "scale": jnp.float32(0.7)}
  )
  _, grads = repeated_estimates(est, f, build, params, KEY, num_samples=6, num_repeats=R // 2, state=state)
  exact = np.ravel(_exact_grad(f, build, params)["logits"])
  assert_mean(np.asarray(grads["logits"]).reshape(R // 2, -1), exact, what="REBAR categorical mean")


@pytest.mark.parametrize("problem", ["bernoulli-toy", "bernoulli-3", "independent-2x2", "categorical"])
def test_relax_unbiased_with_random_mlp_control(problem):
  rng = np.random.default_rng(1)
  if problem == "bernoulli-toy":
    f, build = _toy(0.499)
    params = {"phi": jnp.float32(0.4)}
    z_shape = ()
  elif problem == "bernoulli-3":
    p0 = jnp.array([0.6, 0.51, 0.48])
    f = lambda b: jnp.sum((b - p0) ** 2)
    build = lambda p: distrax.Bernoulli(logits=p["logits"])
    params = {"logits": jnp.array([0.3, -0.8, 1.1])}
    z_shape = (3,)
  elif problem == "independent-2x2":
    w = jnp.asarray(rng.normal(size=(2, 2)), jnp.float32)
    f = lambda b: jnp.sin(jnp.sum(w * b)) + b[0, 1] * b[1, 0]
    build = lambda p: distrax.Independent(distrax.Bernoulli(logits=p["logits"]), 2)
    params = {"logits": jnp.asarray(rng.normal(size=(2, 2)), jnp.float32)}
    z_shape = (2, 2)
  else:
    table = jnp.asarray(rng.normal(size=(2, 3)), jnp.float32)
    f = lambda b: jnp.sum(jnp.take_along_axis(table, b[:, None], axis=1)) + (b[0] == b[1])
    build = lambda p: distrax.Categorical(logits=p["logits"])
    params = {"logits": jnp.asarray(rng.normal(size=(2, 3)), jnp.float32)}
    z_shape = (2, 3)
  control_fn, cp = _mlp_control(jax.random.key(5), z_shape)
  est = sfe.relax(control_fn, cp)
  _, grads = repeated_estimates(est, f, build, params, KEY, num_samples=1, num_repeats=R, state=est.init(params))
  leaf = next(iter(params))
  exact = np.ravel(_exact_grad(f, build, params)[leaf])
  g = np.asarray(grads[leaf]).reshape(R, -1)
  assert_mean(g, exact, what=f"RELAX mean on {problem}")
  if problem == "bernoulli-toy":
    # The control matters: this random control is far from the best baseline, so the variance differs from
    # REINFORCE's closed form p(1-p)[f(1)^2 (1-p) + f(0)^2 p] - Delta^2 p^2 (1-p)^2.
    p = 1 / (1 + np.exp(-0.4))
    reinforce = p * (1 - p) * (0.501**4 * (1 - p) + 0.499**4 * p) - (0.002 * p * (1 - p)) ** 2
    var, se = variance_and_se(g[:, 0])
    assert abs(var - reinforce) > 10 * se


def test_relax_never_differentiates_f():
  @jax.custom_jvp
  def f(b):
    return jnp.sum(jnp.sin(b))

  @f.defjvp
  def f_jvp(primals, tangents):
    raise AssertionError("RELAX differentiated f")

  control_fn, cp = _mlp_control(KEY, (3,))
  build = lambda p: distrax.Bernoulli(logits=p)
  value, grads, _ = jax.jit(lambda p, k: sfe.value_and_grad(sfe.relax(control_fn, cp), f, build, p, k, num_samples=4))(
    jnp.zeros(3), KEY
  )
  assert np.isfinite(value) and np.all(np.isfinite(grads))


def test_gradient_of_what_f_closes_over_is_that_of_the_monte_carlo_mean():
  # REBAR's control evaluates f (relaxed); only the hard evaluations reach the gradient of f's parameters.
  build = lambda p: distrax.Bernoulli(logits=p, dtype=jnp.float32)
  params = jnp.array([0.3, -0.5, 1.0])
  est = sfe.rebar()

  def loss(w):
    f = lambda b: w * jnp.sum(b) + w**2
    return sfe.expectation(est, f, build, params, KEY, num_samples=9)[0]

  w = jnp.float32(1.5)
  value, dw = jax.jit(jax.value_and_grad(loss))(w)
  mean_sum_b = (value - w**2) / w
  np.testing.assert_allclose(dw, mean_sum_b + 2 * w, rtol=1e-6)


# ----------------------------------------------------------------------------------------------------------
# The control update.
# ----------------------------------------------------------------------------------------------------------


def test_rebar_control_gradient_matches_an_independent_computation():
  # For the toy, write g(log t, eta) for the same noise by hand and differentiate sum(g^2) in (log t, eta).
  p0, phi, n = 0.45, 0.4, 4
  f, build = _toy(p0)
  params = {"phi": jnp.float32(phi)}
  est = sfe.rebar(0.7, 0.8, optimizer=_gradient_recorder())
  state = est.init(params)
  value, grads, new_state = jax.jit(
    lambda s: sfe.value_and_grad(est, f, build, params, KEY, num_samples=3 * n, state=s)
  )(state)

  @jax.jit
  def by_hand(cp):
    view = discrete.discrete_view(build(params), who="test")
    noise, v = discrete.draw_noise(view, KEY, n)  # the same noise
    z = phi + noise
    b = (z > 0).astype(jnp.float32)
    p = jax.nn.sigmoid(phi)
    logit = lambda x: jnp.log(x) - jnp.log1p(-x)
    z_tilde = jnp.where(b > 0, phi - logit(v * p), phi + logit(v * (1 - p)))
    dz_tilde = jnp.where(b > 0, 1 - (1 - p) / (1 - v * p), 1 - p / (1 - v * (1 - p)))

    def g(cp):
      t, eta = jnp.exp(cp["log_temperature"]), cp["scale"]
      s = lambda x: jax.nn.sigmoid(x / t)
      dc = lambda x: eta * 2 * (s(x) - p0) * s(x) * (1 - s(x)) / t
      per_sample = (f(b) - eta * f(s(z_tilde))) * (b - p) + dc(z) - dc(z_tilde) * dz_tilde
      return jnp.mean(per_sample)

    return jnp.mean(f(b)), g(cp), jax.grad(lambda c: g(c) ** 2)(cp)

  mean_f, g, expected = by_hand(state.control_params)
  np.testing.assert_allclose(value, mean_f, rtol=1e-6)
  np.testing.assert_allclose(grads["phi"], g, rtol=1e-4, atol=1e-7)
  for name in ("log_temperature", "scale"):
    np.testing.assert_allclose(new_state.opt_state[name], expected[name], rtol=1e-3, atol=1e-8)
  jax.tree.map(np.testing.assert_array_equal, new_state.control_params, state.control_params)


@pytest.mark.parametrize("kind", ["bernoulli", "categorical"])
def test_relax_control_gradient_matches_finite_differences(kind):
  # d/dphi sum(g^2) along a random direction, against central differences of the estimator itself.
  if kind == "bernoulli":
    f = lambda b: jnp.sum((b - jnp.array([0.6, 0.51, 0.48])) ** 2)
    build = lambda p: distrax.Bernoulli(logits=p["logits"])
    params = {"logits": jnp.array([0.3, -0.8, 1.1]), "unused": jnp.ones(2)}
    z_shape = (3,)
  else:
    f = lambda b: jnp.sum(b * jnp.array([1.0, -1.0])) + (b[0] == 2)
    build = lambda p: distrax.Categorical(logits=p["logits"])
    params = {"logits": jnp.array([[0.1, 0.5, -0.2], [1.0, -1.0, 0.0]]), "unused": jnp.ones(2)}
    z_shape = (2, 3)
  control_fn, cp = _mlp_control(jax.random.key(2), z_shape, hidden=8)
  est = sfe.relax(control_fn, cp, optimizer=_gradient_recorder())
  n = 3

  @jax.jit
  def run(cp):
    state = est.init(params)._replace(control_params=cp)
    _, grads, new_state = sfe.value_and_grad(est, f, build, params, KEY, num_samples=n, state=state)
    return sum(jnp.sum(g**2) for g in jax.tree.leaves(grads)), new_state.opt_state

  objective, control_grad = run(cp)
  assert float(objective) > 0
  leaves, treedef = jax.tree.flatten(cp)
  keys = jax.random.split(jax.random.key(9), len(leaves))
  direction = jax.tree.unflatten(treedef, [jax.random.normal(k, l.shape) for k, l in zip(keys, leaves)])
  eps = 1e-2
  shift = lambda s: jax.tree.map(lambda c, d: c + s * d, cp, direction)
  finite_difference = (run(shift(eps))[0] - run(shift(-eps))[0]) / (2 * eps)
  analytic = sum(jnp.sum(g * d) for g, d in zip(jax.tree.leaves(control_grad), jax.tree.leaves(direction)))
  np.testing.assert_allclose(analytic, finite_difference, rtol=2e-2)


def test_optimizer_set_to_zero_freezes_the_control_and_default_trains_it():
  build = lambda p: distrax.Bernoulli(logits=p, dtype=jnp.float32)
  f = lambda b: jnp.sum((b - 0.45) ** 2)
  params = jnp.array([0.2, -0.3])
  control_fn, cp = _mlp_control(KEY, (2,))
  for est, frozen in (
    (sfe.rebar(optimizer=optax.set_to_zero()), True),
    (sfe.relax(control_fn, cp), False),
    (sfe.relax(control_fn, cp, optax.set_to_zero()), True),
  ):
    state = est.init(params)
    _, _, new_state = jax.jit(lambda s: sfe.value_and_grad(est, f, build, params, KEY, num_samples=6, state=s))(state)
    same = [
      bool(np.array_equal(a, b))
      for a, b in zip(jax.tree.leaves(state.control_params), jax.tree.leaves(new_state.control_params))
    ]
    assert all(same) if frozen else not any(same)


# ----------------------------------------------------------------------------------------------------------
# Training reduces the variance (reference Section 2: REBAR p0 = 0.45, RELAX p0 = 0.499, Adam 0.01, phi = 0).
# ----------------------------------------------------------------------------------------------------------


def _train_toy(est, f, build, steps, key, num_samples):
  params = {"phi": jnp.float32(0.0)}
  opt = optax.adam(0.01)

  def step(carry, k):
    params, opt_state, est_state = carry
    _, grads, est_state = sfe.value_and_grad(est, f, build, params, k, num_samples=num_samples, state=est_state)
    updates, opt_state = opt.update(grads, opt_state)
    return (optax.apply_updates(params, updates), opt_state, est_state), None

  carry = (params, opt.init(params), est.init(params))
  carry, _ = jax.jit(lambda c, ks: jax.lax.scan(step, c, ks))(carry, jax.random.split(key, steps))
  return carry[0], carry[2]


def _reinforce_toy_variance(p0, phi):
  p = 1 / (1 + np.exp(-phi))
  f1, f0 = (1 - p0) ** 2, p0**2
  return p * (1 - p) * (f1**2 * (1 - p) + f0**2 * p) - ((f1 - f0) * p * (1 - p)) ** 2


@pytest.mark.parametrize("which", ["rebar", "relax"])
def test_training_the_control_reduces_the_variance(which):
  if which == "rebar":
    p0, n = 0.45, 3  # one sample: three evaluations of f
    est = sfe.rebar(optimizer=optax.adam(0.01))
  else:
    p0, n = 0.499, 1
    control_fn, cp = _mlp_control(jax.random.key(3), (), hidden=10)
    est = sfe.relax(control_fn, cp, optimizer=optax.adam(0.01))
  f, build = _toy(p0)
  params, trained = _train_toy(est, f, build, 2000, jax.random.key(11), n)
  exact = _exact_grad(f, build, params)["phi"]
  stats = {}
  for name, state in (("initial", est.init(params)), ("trained", trained)):
    _, grads = repeated_estimates(est, f, build, params, jax.random.key(7), num_samples=n, num_repeats=R, state=state)
    g = np.asarray(grads["phi"])
    assert_mean(g, exact, what=f"{which} {name} mean")
    stats[name] = variance_and_se(g)
  (v0, se0), (v1, se1) = stats["initial"], stats["trained"]
  reinforce = _reinforce_toy_variance(p0, float(params["phi"]))
  print(
    f"{which}: phi={float(params['phi']):.3f} variance initial {v0:.4g} +- {se0:.2g}, trained {v1:.4g} +- "
    f"{se1:.2g}, REINFORCE {reinforce:.4g}"
  )
  assert v0 - v1 > 10 * np.hypot(se0, se1)
  if which == "relax":
    assert v1 + 10 * se1 < reinforce / 5  # far below REINFORCE once trained


# ----------------------------------------------------------------------------------------------------------
# The one-call training step, extreme logits, errors, the docstring examples.
# ----------------------------------------------------------------------------------------------------------


def test_whole_training_step_is_one_jitted_call():
  table = jnp.array([[1.0, -2.0, 0.5], [0.3, 2.0, -1.0]])
  f = lambda x: jnp.sum(table * x)
  build = lambda p: distrax.OneHotCategorical(logits=p["logits"])
  params = {"logits": jnp.zeros((2, 3))}
  control_fn, cp = _mlp_control(KEY, (2, 3))
  est = sfe.relax(
    lambda cp, z: control_fn(cp["mlp"], z) + cp["scale"] * f(jax.nn.softmax(z / 0.5)),
    {"mlp": cp, "scale": 1.0},
    optimizer=optax.adam(1e-2),
  )
  opt = optax.adam(0.05)
  chex.clear_trace_counter()

  @jax.jit
  @chex.assert_max_traces(n=1)  # the updated estimator state must not retrace the step
  def step(params, opt_state, est_state, key):
    value, grads, est_state = sfe.value_and_grad(est, f, build, params, key, num_samples=2, state=est_state)
    updates, opt_state = opt.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state, est_state, value

  opt_state, est_state = opt.init(params), est.init(params)
  for i in range(200):
    params, opt_state, est_state, value = step(params, opt_state, est_state, jax.random.key(i))
  assert int(est_state.opt_state[0].count) == 200
  assert np.all(np.isfinite(params["logits"]))
  # Minimising E[f]: the most negative entry of each row (-2 and -1) becomes the most likely category.
  np.testing.assert_array_equal(np.argmax(params["logits"], axis=-1), [1, 2])


@pytest.mark.parametrize("which, kind", [("rebar", "categorical"), ("relax", "bernoulli")])
def test_logits_of_plus_minus_fifty_are_finite(which, kind):
  if kind == "bernoulli":
    build = lambda p: distrax.Bernoulli(logits=p)
    params = jnp.array([50.0, -50.0, 0.0])
    f = lambda b: jnp.sum((b - 0.3) ** 2)
    z_shape = (3,)
  else:
    build = lambda p: distrax.OneHotCategorical(logits=p, dtype=jnp.float32)
    params = jnp.array([[50.0, -50.0, 0.0], [-50.0, -50.0, 50.0]])
    f = lambda x: jnp.sum(x * jnp.array([1.0, 2.0, 3.0]))
    z_shape = (2, 3)
  control_fn, cp = _mlp_control(KEY, z_shape)
  est = sfe.rebar() if which == "rebar" else sfe.relax(control_fn, cp)
  value, grads, state = jax.jit(lambda p, k: sfe.value_and_grad(est, f, build, p, k, num_samples=66))(params, KEY)
  for x in [value, grads] + jax.tree.leaves(state):
    assert np.all(np.isfinite(x))


def test_errors():
  build = lambda p: distrax.Bernoulli(logits=p)
  params = jnp.zeros(3)
  f = lambda b: jnp.sum(b)
  control_fn, cp = _mlp_control(KEY, (3,))
  with pytest.raises(TypeError, match=r"sfe.relax\(\) needs Bernoulli.*not discrete"):
    sfe.value_and_grad(sfe.relax(control_fn, cp), f, lambda p: distrax.Normal(p, 1.0), params, KEY, num_samples=2)
  with pytest.raises(TypeError, match=r"sfe.rebar\(\) needs"):
    sfe.value_and_grad(sfe.rebar(), f, lambda p: distrax.Normal(p, 1.0), params, KEY, num_samples=3)
  with pytest.raises(
    ValueError,
    match=r"must return a real floating-point scalar.*shape \(3,\).*returned shape "
    r"\(3,\)",
  ):
    sfe.value_and_grad(sfe.relax(lambda cp, z: z * cp["w2"][0], cp), f, build, params, KEY, num_samples=2)
  with pytest.raises(TypeError, match=r"control_fn\(control_params, z\)` raised"):
    sfe.value_and_grad(sfe.relax(lambda cp, z: cp["missing"], cp), f, build, params, KEY, num_samples=2)
  with pytest.raises(TypeError, match="`control_fn` must be a callable"):
    sfe.relax("mlp", cp)
  with pytest.raises(TypeError, match="`control_params` leaves must be floating-point.*\\['n'\\]"):
    sfe.relax(control_fn, {"n": jnp.arange(3)})
  for bad in (optax.adam, "adam", 1e-3):
    with pytest.raises(TypeError, match="`optimizer` must be an optax.GradientTransformation"):
      sfe.rebar(optimizer=bad)
    with pytest.raises(TypeError, match="`optimizer` must be an optax.GradientTransformation"):
      sfe.relax(control_fn, cp, optimizer=bad)
  for bad in (0.0, -0.5, float("nan"), float("inf")):
    with pytest.raises(ValueError, match="`temperature` must be a finite positive number"):
      sfe.rebar(temperature=bad)
  for bad in ("hot", None, True, jnp.ones(2)):
    with pytest.raises(TypeError, match="`temperature` must be a real number"):
      sfe.rebar(temperature=bad)
  with pytest.raises(ValueError, match="`scale` must be a finite number"):
    sfe.rebar(scale=float("nan"))
  with pytest.raises(TypeError, match=r"`state` does not match sfe\.rebar\(\).*RelaxState"):
    sfe.value_and_grad(sfe.rebar(), f, build, params, KEY, num_samples=3, state=sfe.EmptyState())
  with pytest.raises(ValueError, match=r"multiple of 3 for sfe\.rebar\(\).*3 per sample"):
    sfe.value_and_grad(sfe.rebar(), f, build, params, KEY, num_samples=4)
