"""Chunked estimation (``chunk_size=``): exact where it must be, unbiased with the unchunked variance, bounded memory.

* ``chunk_size >= num_samples`` is the unchunked call, bit for bit.
* Smaller chunks (with a remainder chunk): the mean over keys matches the exact gradient of the Gaussian
  cost functions (``tests/gaussian_reference.py``) within 5 standard errors, and for independent samples the
  variance matches the exact single-sample variance over ``num_samples``, as unchunked; coupled estimators
  (leave-one-out, optimal baselines, estimated control-variate coefficients) stay unbiased.
* Gradients of what ``f`` closes over, second derivatives, vmap over keys.
* Memory: XLA's temporary buffers of the compiled gradient do not grow with ``num_samples``.
* Refusals: estimators that define their estimate on the whole sample or carry state, and chunk sizes the
  estimator cannot take, with errors that name the argument.
"""

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sfe_jax as sfe
from tests.gaussian_reference import ROWS
from tests.helpers import assert_mean, assert_variance, flat, flat1

KEY = jax.random.key(0)
ROW = ROWS[0]  # (x - k)^2, k = -3, at mu = sigma = 1: gradient (8, 2)
PARAMS = {"loc": jnp.float32(1.0), "scale": jnp.float32(1.0)}
NORMAL = lambda p: distrax.Normal(p["loc"], p["scale"])  # noqa: E731
BITS = lambda p: distrax.Bernoulli(logits=p, dtype=jnp.float32)  # noqa: E731
R = 4000


def _estimates(est, num_samples, chunk_size, f=ROW.f, params=PARAMS, build=NORMAL, repeats=R):
  one = lambda k: sfe.value_and_grad(est, f, build, params, k, num_samples=num_samples, chunk_size=chunk_size)[:2]
  return jax.jit(jax.vmap(one))(jax.random.split(KEY, repeats))


SAME_CASES = {
  "sf": (sfe.score_function(), 12),
  "sf-loo": (sfe.score_function(sfe.baselines.leave_one_out()), 12),
  "pathwise": (sfe.pathwise(), 12),
  "mvd": (sfe.measure_valued(), 12),
  "disarm": (sfe.disarm(), 12),
  "gumbel-softmax": (sfe.gumbel_softmax(0.5), 12),
}


@pytest.mark.parametrize("name", sorted(SAME_CASES))
def test_one_chunk_is_the_unchunked_call_bit_for_bit(name):
  est, n = SAME_CASES[name]
  if name in ("disarm", "gumbel-softmax"):
    params, build = {"logits": jnp.array([0.3, -1.2])}, lambda p: BITS(p["logits"])
    f = lambda b: jnp.sum((b - 0.4) ** 2)
  else:
    params, build, f = PARAMS, NORMAL, ROW.f
  run = lambda c: jax.jit(lambda k: sfe.value_and_grad(est, f, build, params, k, num_samples=n, chunk_size=c)[:2])(KEY)
  reference = run(None)
  for chunk_size in (n, 2 * n):
    value, grads = run(chunk_size)
    np.testing.assert_array_equal(value, reference[0])
    np.testing.assert_array_equal(flat1(grads), flat1(reference[1]))


# (estimator, num_samples, chunk_size, single-sample variances or None, evaluations of f per variance unit)
UNBIASED_CASES = {
  "sf": (sfe.score_function(), 40, 12, ROW.var_sf, 1),
  "pathwise": (sfe.pathwise(), 40, 12, ROW.var_pw, 1),
  "mvd": (sfe.measure_valued(), 40, 12, ROW.var_mvd, 4),  # one base sample: 4 evaluations of f in one dimension
  "sf-loo": (sfe.score_function(sfe.baselines.leave_one_out()), 40, 12, None, 1),
  "sf-optimal": (sfe.score_function(sfe.baselines.optimal()), 40, 12, None, 1),
  "sf+delta": (sfe.with_control_variate(sfe.score_function(), sfe.control_variates.delta_method()), 40, 12, None, 1),
}


@pytest.mark.parametrize("name", sorted(UNBIASED_CASES))
def test_chunks_are_unbiased_with_the_unchunked_variance(name):
  est, n, chunk_size, variance, per_unit = UNBIASED_CASES[name]
  values, grads = _estimates(est, n, chunk_size)
  estimates = flat(grads)
  assert_mean(estimates, ROW.grad, what=f"{name}, chunk_size={chunk_size}: gradient")
  assert_mean(np.asarray(values), 17.0, what=f"{name}: value")  # E[(x - k)^2] = (mu - k)^2 + sigma^2
  if variance is not None:  # independent samples: Var = single-unit variance / (num_samples / per_unit)
    assert_variance(estimates, np.asarray(variance) * per_unit / n, what=f"{name}, chunk_size={chunk_size}")


def test_gradient_of_what_f_closes_over_is_the_chunked_mean():
  est = sfe.score_function()

  def one(k):
    return jax.value_and_grad(
      lambda w: sfe.expectation(est, lambda x: w * ROW.f(x), NORMAL, PARAMS, k, num_samples=50, chunk_size=8)[0]
    )(jnp.float32(1.0))

  values, dws = jax.jit(jax.vmap(one))(jax.random.split(KEY, 16))
  np.testing.assert_allclose(dws, values, rtol=1e-6)  # d/dw of the mean of w f(x_i) is the mean of f(x_i)


def test_second_derivatives_are_unbiased_under_chunking():
  # E[(x - k)^2] = (mu - k)^2 + sigma^2: the Hessian in (mu, sigma) is 2 I.
  est = sfe.score_function(sfe.baselines.leave_one_out())

  def one(k):
    surrogate = lambda t: sfe.expectation(
      est, ROW.f, lambda t: distrax.Normal(t[0], t[1]), t, k, num_samples=40, chunk_size=16
    )[0]
    return jax.hessian(surrogate)(jnp.array([1.0, 1.0]))

  hessians = jax.jit(jax.vmap(one))(jax.random.split(KEY, 2000))
  assert_mean(np.asarray(hessians).reshape(-1, 4), [2.0, 0.0, 0.0, 2.0], what="chunked Hessian")


def test_first_order_estimators_keep_their_guard_under_chunking():
  surrogate = lambda t: sfe.expectation(
    sfe.measure_valued(), ROW.f, lambda t: distrax.Normal(t[0], t[1]), t, KEY, num_samples=40, chunk_size=8
  )[0]
  with pytest.raises(sfe.HigherOrderError, match="first-order"):
    jax.eval_shape(jax.hessian(surrogate), jnp.array([1.0, 1.0]))


def test_low_precision_gradients_are_summed_in_float32():
  # 1000 chunks of 2: a bfloat16 running sum would stall near 256 x one chunk's gradient.
  def run(dtype):
    params = {"loc": jnp.zeros(2, dtype), "scale": jnp.ones(2, dtype)}
    return jax.jit(
      lambda k: sfe.value_and_grad(sfe.pathwise(), ROW.f, NORMAL, params, k, num_samples=2000, chunk_size=2)[:2]
    )(KEY)

  (_, low), (_, full) = run(jnp.bfloat16), run(jnp.float32)
  assert low["loc"].dtype == jnp.bfloat16
  np.testing.assert_allclose(flat1(low).astype(np.float32), flat1(full), rtol=1e-2)


def test_deterministic_for_a_key_and_vmappable():
  est = sfe.pathwise()
  run = jax.jit(lambda k: sfe.value_and_grad(est, ROW.f, NORMAL, PARAMS, k, num_samples=30, chunk_size=7)[:2])
  a, b = run(KEY), run(KEY)
  np.testing.assert_array_equal(flat1(a), flat1(b))
  keys = jax.random.split(KEY, 3)
  values, _ = _estimates(est, 30, 7, repeats=3)
  np.testing.assert_allclose(values, [run(k)[0] for k in keys], rtol=1e-6)


@pytest.mark.parametrize("est", [sfe.score_function(), sfe.pathwise()], ids=["sf", "pathwise"])
def test_compiled_memory_does_not_grow_with_num_samples(est):
  params = {"loc": jnp.zeros(100), "scale": jnp.ones(100)}
  f = lambda x: jnp.sum((x - 0.5) ** 2)

  def temp_bytes(n, chunk_size):
    g = jax.jit(lambda p, k: sfe.value_and_grad(est, f, NORMAL, p, k, num_samples=n, chunk_size=chunk_size)[:2])
    return g.lower(params, KEY).compile().memory_analysis().temp_size_in_bytes

  chunk = 10_000 * 100 * 4  # the bytes of one chunk of samples
  small, large = temp_bytes(100_000, 10_000), temp_bytes(10_000_000, 10_000)
  assert large < small * 1.01 + 1e5, (small, large)
  assert large < 16 * chunk
  assert temp_bytes(100_000, None) > 5 * small  # unchunked, the buffers grow with num_samples


def test_chunk_size_lifts_the_memory_refusal():
  params = {"loc": jnp.zeros(100), "scale": jnp.ones(100)}
  vg = lambda c: jax.eval_shape(
    lambda p: sfe.value_and_grad(
      sfe.pathwise(), jnp.sum, NORMAL, p, KEY, num_samples=10**8, chunk_size=c, max_memory=2**30
    )[:2],
    params,
  )
  with pytest.raises(ValueError, match="max_memory"):
    vg(None)
  vg(10**5)  # one chunk needs 8 x 1e5 x 400 bytes = 320 MB
  with pytest.raises(ValueError, match=r"num_samples=100000000 in chunks of chunk_size=1000000, .* 3\.0 GiB"):
    vg(10**6)


@pytest.mark.parametrize(
  "est, build, params, n, match",
  [
    (sfe.unordered_set(), BITS, jnp.zeros(3), 6, r"sfe\.unordered_set\(\) does not support `chunk_size`"),
    (sfe.enumerate(), BITS, jnp.zeros(2), None, r"sfe\.enumerate\(\) does not support `chunk_size`"),
    (sfe.rebar(), BITS, jnp.zeros(2), 6, r"sfe\.rebar\(\) does not support `chunk_size`"),
    (
      sfe.score_function(sfe.baselines.moving_average()),
      NORMAL,
      PARAMS,
      6,
      r"moving_average\(\)\) carries state.*chunk_size",
    ),
  ],
  ids=["unordered_set", "enumerate", "rebar", "moving_average"],
)
def test_estimators_that_cannot_chunk_refuse(est, build, params, n, match):
  with pytest.raises(ValueError, match=match):
    sfe.value_and_grad(est, lambda x: jnp.sum(x), build, params, KEY, num_samples=n, chunk_size=3)


def test_a_custom_estimator_is_not_chunked_unless_it_says_so():
  inner = sfe.pathwise()
  custom = sfe.Estimator(inner.init, inner.surrogate, name="my_estimator")
  with pytest.raises(ValueError, match="my_estimator does not support `chunk_size`"):
    sfe.value_and_grad(custom, ROW.f, NORMAL, PARAMS, KEY, num_samples=10, chunk_size=5)
  chunked = custom._replace(chunking="independent")
  jax.jit(lambda k: sfe.value_and_grad(chunked, ROW.f, NORMAL, PARAMS, k, num_samples=10, chunk_size=5)[:2])(KEY)
  with pytest.raises(ValueError, match=r"my_estimator has chunking='independant'; .* must be one of"):
    sfe.value_and_grad(
      custom._replace(chunking="independant"), ROW.f, NORMAL, PARAMS, KEY, num_samples=10, chunk_size=5
    )


@pytest.mark.parametrize(
  "est, n, chunk_size, error, match",
  [
    (sfe.pathwise(), 10, 0, ValueError, r"`chunk_size` must be at least 1; got 0"),
    (sfe.pathwise(), 10, 2.0, TypeError, r"`chunk_size` must be a Python int; got float"),
    (sfe.disarm(), 10, 3, ValueError, r"`chunk_size` must be a multiple of 2 for sfe\.disarm\(\)"),
    (sfe.score_function(sfe.baselines.leave_one_out()), 10, 1, ValueError, r"`chunk_size` must be at least 2"),
    (
      sfe.score_function(sfe.baselines.leave_one_out()),
      10,
      3,
      ValueError,
      r"the last chunk .* at least 2 .*; got 1 \(num_samples=10, chunk_size=3\)",
    ),
  ],
  ids=["zero", "float", "disarm-odd", "loo-one", "loo-rest-one"],
)
def test_bad_chunk_sizes_are_refused_clearly(est, n, chunk_size, error, match):
  build, params = (BITS, jnp.zeros(2)) if est.name == "sfe.disarm()" else (NORMAL, PARAMS)
  with pytest.raises(error, match=match):
    sfe.value_and_grad(est, lambda x: jnp.sum(x), build, params, KEY, num_samples=n, chunk_size=chunk_size)


def test_a_traced_chunk_size_is_refused():
  with pytest.raises(TypeError, match=r"`chunk_size` must be a static Python int"):
    jax.jit(lambda c: sfe.value_and_grad(sfe.pathwise(), ROW.f, NORMAL, PARAMS, KEY, num_samples=10, chunk_size=c))(5)


def test_what_chunking_means_for_each_baseline():
  plain = sfe.baselines.constant(0.5)
  custom = plain._replace(name="my_batch_mean_baseline")  # a baseline written outside the library may use the batch
  assert sfe.score_function().chunking == "independent"
  assert sfe.score_function(plain).chunking == "independent"
  assert sfe.score_function(custom).chunking == "per_chunk"
  assert sfe.score_function(sfe.baselines.leave_one_out()).chunking == "per_chunk"
  assert sfe.with_control_variate(sfe.pathwise(), sfe.control_variates.delta_method()).chunking == "per_chunk"
  assert sfe.with_control_variate(sfe.pathwise(), sfe.control_variates.delta_method(), coefficient=1.0).chunking == (
    "independent"
  )
  assert sfe.unordered_set().chunking == "none" and sfe.relax(lambda cp, z: jnp.sum(z), {}).chunking == "none"
