"""The NaN/inf and low-precision policy of the README, one rule at a time (``sfe_jax/_src/core/finite.py``).

Each test reproduces a silent wrong or poisoned result of an earlier version: a NaN batch poisoning a stateful
estimator for good, a NaN or negative-scale parameter giving plausible finite gradients, bfloat16 uniforms
flooring a probability at 2^-7, and a saturated tanh turning the score-function surrogate into NaN.
"""

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tensorflow_probability.substrates import jax as tfp

import sfe_jax as sfe
import sfe_jax.rl as rl
from tests.helpers import assert_mean

KEY = jax.random.key(0)
BITS = lambda p: distrax.Bernoulli(logits=p, dtype=jnp.float32)
NORMAL = lambda p: distrax.Normal(p[0], p[1])


def jitted(est, f, build, params, num_samples, api=sfe.value_and_grad):
  """``api(...)`` under jit (compiled once: eager execution compiles every operation on its own)."""
  return jax.jit(lambda p: api(est, f, build, p, KEY, num_samples=num_samples))(params)


# ----------------------------------------------------------------------------------------------------------
# Stateful pieces skip a non-finite update and count it.
# ----------------------------------------------------------------------------------------------------------

STATEFUL = {
  "moving-average": lambda: sfe.score_function(sfe.baselines.moving_average()),
  "rebar": lambda: sfe.rebar(),
  "relax": lambda: sfe.relax(lambda cp, z: cp * jnp.sum(jnp.tanh(z)), jnp.float32(0.1)),
}


@pytest.mark.parametrize("name", sorted(STATEFUL))
def test_a_nan_batch_is_skipped_and_counted_and_the_state_recovers(name):
  est = STATEFUL[name]()
  params = jnp.array([0.3, -0.2])
  good = lambda x: jnp.sum(x) + 1.0
  bad = lambda x: jnp.where(x[0] > 0, jnp.nan, jnp.sum(x) + 1.0)
  step = jax.jit(
    lambda f_is_bad, state, key: sfe.value_and_grad(
      est, lambda x: jnp.where(f_is_bad, bad(x), good(x)), BITS, params, key, num_samples=12, state=state
    )
  )
  keys = jax.random.split(KEY, 3)
  _, _, clean = step(False, est.init(params), keys[0])
  value, grads, poisoned = step(True, clean, keys[1])
  assert np.isnan(value) and np.all(np.isnan(grads))  # NaN in f, NaN out: never a plausible number
  assert int(poisoned.skipped) == 1
  for kept, before in zip(jax.tree.leaves(poisoned._replace(skipped=0)), jax.tree.leaves(clean._replace(skipped=0))):
    np.testing.assert_array_equal(kept, before)
  # The next clean call is exactly the call that would have followed the first one.
  after = step(False, poisoned, keys[2])
  expected = step(False, clean, keys[2])
  np.testing.assert_array_equal(after[0], expected[0])
  np.testing.assert_array_equal(after[1], expected[1])
  assert np.all(np.isfinite(after[1])) and int(after[2].skipped) == 1


# ----------------------------------------------------------------------------------------------------------
# NaN in, NaN out; out-of-domain parameters.
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
  "est", [sfe.arm(), sfe.disarm(), sfe.straight_through(), sfe.score_function()], ids=lambda e: e.name
)
def test_a_nan_logit_makes_the_value_and_every_gradient_nan(est):
  # ARM's gradient never looks at the logit it differentiates: it gave a finite number for the NaN one.
  value, grads, _ = jitted(est, lambda b: jnp.sum(b) ** 2, BITS, jnp.array([jnp.nan, 0.0]), 4)
  assert np.isnan(value) and np.all(np.isnan(grads))


@pytest.mark.parametrize(
  "est",
  [
    sfe.pathwise(),
    sfe.measure_valued(),
    sfe.score_function(),
    sfe.with_control_variate(sfe.pathwise(), sfe.control_variates.delta_method()),
  ],
  ids=lambda e: e.name,
)
def test_a_negative_scale_gives_nan_at_every_order(est):
  f = lambda x: jnp.sum(x) ** 2
  value, grads, _ = jitted(est, f, NORMAL, jnp.array([0.0, -1.0]), 8)
  assert np.isnan(value) and np.all(np.isnan(grads))
  if est.max_order is None:
    hessian = jax.jit(jax.hessian(lambda p: sfe.expectation(est, f, NORMAL, p, KEY, num_samples=8)[0]))(
      jnp.array([0.0, -1.0])
    )
    assert np.all(np.isnan(hessian))
  # A scale of 0 is the degenerate limit, not out of the domain: x = loc, d/dloc E[x^2] = 0 exactly.
  value, grads, _ = jitted(sfe.pathwise(), f, NORMAL, jnp.array([0.0, 0.0]), 8)
  assert float(value) == 0.0 and np.all(np.asarray(grads) == 0.0)


@pytest.mark.parametrize("est", [sfe.arm(), sfe.rebar(), sfe.unordered_set(), sfe.enumerate()], ids=lambda e: e.name)
def test_a_categorical_with_every_category_masked_or_invalid_probabilities_gives_nan(est):
  f = lambda x: jnp.sum(x * jnp.arange(3.0))
  one_hot = lambda p: distrax.OneHotCategorical(logits=p, dtype=jnp.float32)
  n = None if est.name == "sfe.enumerate()" else 3 if est.name == "sfe.rebar()" else 2
  all_masked = jnp.array([[0.0, 1.0, -jnp.inf], [-jnp.inf, -jnp.inf, -jnp.inf]])
  value, grads, _ = jitted(est, f, one_hot, all_masked, n)
  assert np.isnan(value) and np.all(np.isnan(grads))
  by_probs = lambda p: distrax.OneHotCategorical(probs=p, dtype=jnp.float32)
  value, grads, _ = jitted(est, f, by_probs, jnp.array([0.7, 0.5, -0.2]), n)
  assert np.isnan(value) and np.all(np.isnan(grads))


# ----------------------------------------------------------------------------------------------------------
# Low precision: float16/bfloat16 params are computed in float32.
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16], ids=lambda d: jnp.dtype(d).name)
@pytest.mark.parametrize(
  "est", [sfe.score_function(), sfe.gumbel_softmax(0.5, straight_through=True), sfe.rebar()], ids=lambda e: e.name
)
def test_low_precision_logits_are_unbiased(est, dtype):
  # At logit -8, P(b = 1) = 3.35e-4; bfloat16 uniforms (u = 0 with probability 2^-7) floored it at 0.0076.
  logit = jnp.array([-8.0], dtype)
  f = lambda b: jnp.sum(b)
  n = 3 * 1024
  run = jax.jit(jax.vmap(lambda k: sfe.value_and_grad(est, f, BITS, logit, k, num_samples=n)[:2]))
  values, grads = run(jax.random.split(KEY, 64))
  assert grads.dtype == dtype and grads.shape == (64, 1)
  p = float(jax.nn.sigmoid(-8.0))
  assert_mean(np.asarray(values), p, what=f"{est.name} value in {jnp.dtype(dtype).name}")
  if not est.name.startswith("sfe.gumbel_softmax"):  # straight-through is biased: its value only is checked
    assert_mean(np.asarray(grads, np.float32)[:, 0], p * (1 - p), what=f"{est.name} gradient", atol=1e-5)


def test_bfloat16_gaussian_pathwise_is_unbiased():
  # d/dscale E[x^4] = 12 scale^3 = 12 at scale 1; computed in bfloat16 it was 11.38 (7 standard errors off).
  params = jnp.array([0.0, 1.0], jnp.bfloat16)
  f = lambda x: x**4
  run = jax.jit(jax.vmap(lambda k: sfe.value_and_grad(sfe.pathwise(), f, NORMAL, params, k, num_samples=4096)[1]))
  grads = np.asarray(run(jax.random.split(KEY, 64)), np.float32)
  assert_mean(grads[:, 1], 12.0, what="bfloat16 pathwise d/dscale E[x^4]", atol=0.06)  # + bfloat16 rounding


# ----------------------------------------------------------------------------------------------------------
# Non-finite log-probabilities of the distribution's own samples.
# ----------------------------------------------------------------------------------------------------------


def test_magic_box_is_one_with_zero_derivative_at_infinite_log_probs():
  x = jnp.array([0.3, -jnp.inf, jnp.inf, jnp.nan])
  box, tangent = jax.jvp(sfe.objectives.magic_box, (x,), (jnp.ones(4),))
  np.testing.assert_array_equal(box, [1.0, 1.0, 1.0, np.nan])
  np.testing.assert_array_equal(tangent, [1.0, 0.0, 0.0, np.nan])


SQUASHED = {
  "distrax": lambda p: distrax.Transformed(distrax.Normal(p, 5.0), distrax.Tanh()),
  "distrax-block": lambda p: distrax.Transformed(
    distrax.MultivariateNormalDiag(p, 5.0 * jnp.ones(2)), distrax.Block(distrax.Tanh(), 1)
  ),
  "rl.TanhNormal": lambda p: rl.TanhNormal(p, 5.0 * jnp.ones(2)),
  "tfp": lambda p: tfp.distributions.TransformedDistribution(tfp.distributions.Normal(p, 5.0), tfp.bijectors.Tanh()),
  "tfp-independent": lambda p: tfp.distributions.Independent(
    tfp.distributions.TransformedDistribution(tfp.distributions.Normal(p, 5.0), tfp.bijectors.Tanh()), 1
  ),
}


@pytest.mark.parametrize("name", sorted(SQUASHED))
def test_saturating_tanh_gives_exact_score_function_gradients(name):
  # Normal(0, 5) saturates tanh to exactly +-1 for 7% of its samples: log_prob inverted them to inf and the
  # surrogate was NaN (distrax, TFP) or, with rl.TanhNormal's clipped inverse, biased by 6%. log_prob now comes
  # from the pre-image. f(a) = sum(a): d/dloc E[tanh(u)] = E[1 - tanh(u)^2], u ~ N(loc, 25), by quadrature.
  build, loc = SQUASHED[name], jnp.array([0.5, -1.0])
  for est in (sfe.score_function(), sfe.score_function(sfe.baselines.optimal())):
    run = jax.jit(jax.vmap(lambda k: sfe.value_and_grad(est, jnp.sum, build, loc, k, num_samples=256)[:2]))
    values, grads = run(jax.random.split(KEY, 200))
    assert np.all(np.isfinite(values)) and np.all(np.isfinite(grads))
    nodes, weights = np.polynomial.hermite_e.hermegauss(200)
    exact = [np.sum(weights * (1 - np.tanh(m + 5.0 * nodes) ** 2)) / np.sqrt(2 * np.pi) for m in np.asarray(loc)]
    assert_mean(np.asarray(grads), exact, what=f"{est.name} gradient of E[tanh(u)] ({name})", atol=2e-3)


@pytest.mark.parametrize("objective", ["iwae", "dreg", "vimco"])
def test_saturating_distrax_tanh_proposal_gives_the_bound_of_its_pre_image(objective):
  # The bound with q = tanh # N(loc, 25) equals the bound with q = N(loc, 25) and the log-joint
  # log p(tanh u) + log tanh'(u), sample by sample; log q of the saturated samples was NaN.
  loc = jnp.array([3.0, -2.0])
  log_joint = lambda a: -jnp.sum(a**2)
  log_tanh_prime = lambda u: jnp.sum(2.0 * (jnp.log(2.0) - u - jax.nn.softplus(-2.0 * u)))
  est = getattr(sfe.objectives, objective)()
  squashed = lambda p: distrax.Transformed(distrax.Normal(p, 5.0), distrax.Tanh())
  value, grads, _ = jitted(est, log_joint, squashed, loc, 64, sfe.objectives.value_and_grad)
  pre_image = lambda u: log_joint(jnp.tanh(u)) + log_tanh_prime(u)
  expected, expected_grads, _ = jitted(
    est, pre_image, lambda p: distrax.Normal(p, 5.0), loc, 64, sfe.objectives.value_and_grad
  )
  np.testing.assert_allclose(value, expected, rtol=1e-5)
  np.testing.assert_allclose(grads, expected_grads, rtol=1e-4, atol=1e-6)


def test_a_traced_moving_average_decay_is_refused_clearly():
  with pytest.raises(TypeError, match=r"`decay` of baselines\.moving_average must be a concrete Python number"):
    jax.jit(lambda d: sfe.baselines.moving_average(d).init(None))(jnp.float32(0.5))
