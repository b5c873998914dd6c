"""The user-facing contract of value_and_grad / expectation, and clear errors on bad input."""

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sfe_jax as sfe

KEY = jax.random.key(0)
PARAMS = {"loc": jnp.zeros(3), "scale": jnp.ones(3)}


def build(p):
  return distrax.Normal(p["loc"], p["scale"])


def f(x):
  return jnp.sum((x - 0.5) ** 2)


def test_design_example():
  est = sfe.score_function(baseline=sfe.baselines.leave_one_out())
  value, grads, state = sfe.value_and_grad(est, f, build, PARAMS, KEY, num_samples=1000)
  surrogate, state2 = sfe.expectation(est, f, build, PARAMS, KEY, num_samples=1000)
  assert value.shape == () and jax.tree.structure(grads) == jax.tree.structure(PARAMS)
  assert state == sfe.EmptyState() and state2 == sfe.EmptyState()
  np.testing.assert_allclose(surrogate, value)


def test_legacy_raw_key_is_accepted():
  value, _, _ = sfe.value_and_grad(sfe.pathwise(), f, build, PARAMS, jax.random.PRNGKey(0), num_samples=4)
  assert np.isfinite(value)


def test_integer_f_output_is_promoted_to_float():
  value, grads, _ = sfe.value_and_grad(
    sfe.score_function(), lambda x: jnp.sum(x > 0), build, PARAMS, KEY, num_samples=8
  )
  assert jnp.issubdtype(value.dtype, jnp.floating)


# ---------------------------------------------------------------------------------------------------------
# Bad input: each error names the argument, what was expected and what was given, at trace time.
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("estimator", [sfe.score_function(), sfe.pathwise()], ids=["sf", "pw"])
def test_non_scalar_f(estimator):
  with pytest.raises(ValueError, match=r"`f` must return a scalar.*shape \(3,\).*\(3,\)"):
    sfe.value_and_grad(estimator, lambda x: x**2, build, PARAMS, KEY, num_samples=4)


def test_non_scalar_f_under_jit():
  run = jax.jit(lambda p, k: sfe.value_and_grad(sfe.pathwise(), lambda x: x, build, p, k, num_samples=4))
  with pytest.raises(ValueError, match="`f` must return a scalar"):
    run(PARAMS, KEY)


def test_complex_f():
  with pytest.raises(TypeError, match="real scalar"):
    sfe.value_and_grad(sfe.score_function(), lambda x: jnp.sum(x) * 1j, build, PARAMS, KEY, num_samples=4)


@pytest.mark.parametrize(
  "n, error, pattern",
  [
    (0, ValueError, "at least 1.*got 0"),
    (-3, ValueError, "at least 1.*got -3"),
    (2.5, TypeError, "Python int.*float"),
    (True, TypeError, "Python int.*bool"),
  ],
)
def test_bad_num_samples(n, error, pattern):
  with pytest.raises(error, match=f"`num_samples` must be.*{pattern}"):
    sfe.value_and_grad(sfe.score_function(), f, build, PARAMS, KEY, num_samples=n)


def test_traced_num_samples():
  run = jax.jit(lambda n: sfe.value_and_grad(sfe.pathwise(), f, build, PARAMS, KEY, num_samples=n))
  with pytest.raises(TypeError, match="`num_samples` must be a static Python int"):
    run(4)


@pytest.mark.parametrize("baseline", [sfe.baselines.leave_one_out(), sfe.baselines.optimal()])
def test_leave_one_out_needs_two_samples(baseline):
  with pytest.raises(ValueError, match=r"`num_samples` must be at least 2 for sfe\.score_function\(baseline=.*got 1"):
    sfe.value_and_grad(sfe.score_function(baseline), f, build, PARAMS, KEY, num_samples=1)


@pytest.mark.parametrize("seed", [0, 42, np.int64(3)])
def test_int_seed_refused(seed):
  with pytest.raises(TypeError, match=r"`key` must be a JAX PRNG key.*jax\.random\.key"):
    sfe.value_and_grad(sfe.score_function(), f, build, PARAMS, seed, num_samples=4)


def test_int_array_seed_refused():
  with pytest.raises(TypeError, match=r"`key` must be a JAX PRNG key.*int32"):
    sfe.value_and_grad(sfe.score_function(), f, build, PARAMS, jnp.arange(2), num_samples=4)


def test_batch_of_keys_refused():
  with pytest.raises(ValueError, match=r"single PRNG key.*\(4,\).*vmap"):
    sfe.value_and_grad(sfe.pathwise(), f, build, PARAMS, jax.random.split(KEY, 4), num_samples=4)


def test_params_that_do_not_build_a_distribution():
  with pytest.raises(TypeError, match=r"`dist_builder\(params\)` raised KeyError.*'scale'"):
    sfe.value_and_grad(sfe.pathwise(), f, build, {"loc": jnp.zeros(3)}, KEY, num_samples=4)


def test_incompatible_shapes_in_params():
  bad = {"loc": jnp.zeros(3), "scale": jnp.ones(4)}
  with pytest.raises(TypeError, match=r"`dist_builder\(params\)` raised"):
    sfe.value_and_grad(sfe.score_function(), f, build, bad, KEY, num_samples=4)


def test_builder_returning_a_non_distribution():
  with pytest.raises(TypeError, match=r"must return a distribution.*got dict"):
    sfe.value_and_grad(sfe.score_function(), f, lambda p: p, PARAMS, KEY, num_samples=4)


def test_params_without_a_floating_point_array_are_refused():
  with pytest.raises(TypeError, match=r"at least one floating-point array leaf.*params\['loc'\]: array of dtype int32"):
    sfe.value_and_grad(
      sfe.score_function(), f, build, {"loc": jnp.zeros(3, jnp.int32), "scale": 1.0}, KEY, num_samples=4
    )


def test_integer_leaves_are_passed_through_with_no_gradient():
  params = {"loc": jnp.zeros(3, jnp.int32), "scale": jnp.ones(3)}
  value, grads, _ = sfe.value_and_grad(sfe.score_function(), f, build, params, KEY, num_samples=4)
  assert grads["loc"] is None and grads["scale"].shape == (3,)


def test_not_an_estimator():
  with pytest.raises(TypeError, match="`estimator` must be an sfe_jax Estimator.*function"):
    sfe.value_and_grad(sfe.score_function, f, build, PARAMS, KEY, num_samples=4)


def test_f_not_callable():
  with pytest.raises(TypeError, match="`f` must be a callable"):
    sfe.value_and_grad(sfe.pathwise(), 3.0, build, PARAMS, KEY, num_samples=4)


def test_bad_baseline_arguments():
  with pytest.raises(TypeError, match="`baseline` must be an sfe_jax.baselines.Baseline"):
    sfe.score_function(baseline=0.5)
  with pytest.raises(ValueError, match=r"`decay`.*\[0, 1\).*1.0"):
    sfe.baselines.moving_average(decay=1.0)
  with pytest.raises(ValueError, match="`value`.*scalar"):
    sfe.baselines.constant(jnp.ones(2))
