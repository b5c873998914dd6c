"""Property-based tests over every public estimator and objective (hypothesis).

Random batch shapes, pytree layouts, parameter dtypes (float32, bfloat16, float16), extreme but finite
parameters (logits up to +-1e4, locations up to +-1e3, scales from 1e-3 to 1e3) and sample counts. Where the
maths is finite (a bounded ``f``), the value and every gradient must be finite, and the gradients must have the
structure, shapes and dtypes of ``params``; an invalid sample count must raise a ``ValueError`` or ``TypeError``
that names ``num_samples``. The default profile runs a few dozen examples per property; ``make test-full``
runs the ``slow`` profile with ten times more.
"""

import math

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sfe_jax as sfe
from tests.helpers import smallest_num_samples

KEY = jax.random.key(0)
DTYPES = (jnp.float32, jnp.bfloat16, jnp.float16)


def _relax_control(cp, z):
  return cp * jnp.sum(jnp.tanh(z))


CONTINUOUS = {
  "score_function": lambda: sfe.score_function(),
  "score_function+loo": lambda: sfe.score_function(sfe.baselines.leave_one_out()),
  "score_function+optimal": lambda: sfe.score_function(sfe.baselines.optimal()),
  "score_function+moving_average": lambda: sfe.score_function(sfe.baselines.moving_average()),
  "pathwise": lambda: sfe.pathwise(),
  "measure_valued": lambda: sfe.measure_valued(),
  "pathwise+delta": lambda: sfe.with_control_variate(sfe.pathwise(), sfe.control_variates.delta_method()),
}
DISCRETE = {
  "score_function": lambda: sfe.score_function(sfe.baselines.leave_one_out()),
  "arm": lambda: sfe.arm(),
  "disarm": lambda: sfe.disarm(),
  "rebar": lambda: sfe.rebar(),
  "relax": lambda: sfe.relax(_relax_control, jnp.float32(0.1)),
  "unordered_set": lambda: sfe.unordered_set(),
  "enumerate": lambda: sfe.enumerate(),
  "gumbel_softmax": lambda: sfe.gumbel_softmax(0.5),
  "straight_through": lambda: sfe.straight_through(),
  "measure_valued": lambda: sfe.measure_valued(),
}
OBJECTIVES = {"iwae": sfe.objectives.iwae, "dreg": sfe.objectives.dreg, "vimco": sfe.objectives.vimco}

batch_shapes = st.lists(st.integers(1, 3), min_size=0, max_size=2).map(tuple)
dtypes = st.sampled_from(DTYPES)
layouts = st.sampled_from(["dict", "tuple", "nested"])


def _layout(layout, leaves):
  """Params with the leaves in one of three pytree layouts, and a getter back to the leaves."""
  if layout == "dict":
    return dict(enumerate(leaves)), lambda p: [p[i] for i in range(len(leaves))]
  if layout == "tuple":
    return tuple(leaves), list
  return {"outer": {"inner": list(leaves)}}, lambda p: p["outer"]["inner"]


def _check_grads(grads, params, what):
  assert jax.tree.structure(grads) == jax.tree.structure(params), what
  for g, p in zip(jax.tree.leaves(grads), jax.tree.leaves(params)):
    assert g.shape == p.shape and g.dtype == p.dtype, f"{what}: gradient {g.shape} {g.dtype} for {p.shape} {p.dtype}"
    assert np.all(np.isfinite(np.asarray(g, np.float32))), f"{what}: non-finite gradient {g}"


def _run(est, f, build, params, num_samples):
  value, grads, state = jax.jit(
    lambda p, k: sfe.value_and_grad(est, f, build, p, k, num_samples=num_samples), static_argnums=()
  )(params, KEY)
  return value, grads, state


def _property_settings(max_examples):
  return settings(
    max_examples=max_examples, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
  )


def _profiles(body, strategies, default, slow):
  """The property at ``default`` examples, and a ``slow``-marked copy at ``slow`` examples (``make test-full``)."""
  return (
    _property_settings(default)(given(**strategies)(body)),
    pytest.mark.slow(_property_settings(slow)(given(**strategies)(body))),
  )


# ----------------------------------------------------------------------------------------------------------
# Continuous estimators on a Normal.
# ----------------------------------------------------------------------------------------------------------


_CONTINUOUS_STRATEGIES = dict(
  name=st.sampled_from(sorted(CONTINUOUS)),
  shape=batch_shapes,
  dtype=dtypes,
  layout=layouts,
  loc=st.floats(-1e3, 1e3),
  log_scale=st.floats(math.log(1e-3), math.log(1e3)),
  factor=st.integers(1, 3),
)


def _continuous(name, shape, dtype, layout, loc, log_scale, factor):
  est = CONTINUOUS[name]()
  params, leaves = _layout(layout, [jnp.full(shape, loc, dtype), jnp.full(shape, math.exp(log_scale), dtype)])
  build = lambda p: distrax.Normal(*leaves(p))
  f = lambda x: jnp.sum(jnp.tanh(x.astype(jnp.float32) / 10.0))  # bounded: every expectation is finite
  n = smallest_num_samples(est, build, params, at_least=2) * factor
  value, grads, _ = _run(est, f, build, params, n)
  what = f"{name} shape={shape} {jnp.dtype(dtype).name} {layout} loc={loc} scale={math.exp(log_scale)}"
  assert np.isfinite(float(value)), f"{what}: value {value}"
  _check_grads(grads, params, what)


test_continuous_estimators_are_finite_with_the_params_structure, test_continuous_slow = _profiles(
  _continuous, _CONTINUOUS_STRATEGIES, 6, 250
)


# ----------------------------------------------------------------------------------------------------------
# Discrete estimators on Bernoulli and one-hot categorical variables.
# ----------------------------------------------------------------------------------------------------------


_DISCRETE_STRATEGIES = dict(
  name=st.sampled_from(sorted(DISCRETE)),
  one_hot=st.booleans(),
  shape=batch_shapes,
  dtype=dtypes,
  layout=layouts,
  logits=st.lists(st.floats(-1e4, 1e4), min_size=1, max_size=3),
  factor=st.integers(1, 2),
)


def _discrete(name, one_hot, shape, dtype, layout, logits, factor):
  est = DISCRETE[name]()
  if one_hot:
    logits_array = jnp.broadcast_to(jnp.asarray(logits + [0.0], dtype), shape + (len(logits) + 1,))
    build = lambda p: distrax.OneHotCategorical(logits=leaves(p)[0], dtype=jnp.float32)
  else:
    logits_array = jnp.broadcast_to(jnp.asarray(logits[0], dtype), shape + (len(logits),))
    build = lambda p: distrax.Bernoulli(logits=leaves(p)[0], dtype=jnp.float32)
  params, leaves = _layout(layout, [logits_array])
  weights = jnp.linspace(-1.0, 1.0, math.prod(logits_array.shape))
  f = lambda x: jnp.sum(weights * jnp.reshape(x, (-1,)).astype(jnp.float32))
  what = f"{name} one_hot={one_hot} shape={shape} {jnp.dtype(dtype).name} {layout} logits={logits}"
  support = (len(logits) + 1 if one_hot else 2) ** (math.prod(shape) * (1 if one_hot else len(logits)))
  if name in ("enumerate", "unordered_set"):
    n = None if name == "enumerate" else min(2 * factor, support)
    if support > 2**16:  # both sum over the joint support: a clear error beyond max_support
      with pytest.raises(ValueError, match="max_support"):
        _run(est, f, build, params, n)
      return
  else:
    n = smallest_num_samples(est, build, params, at_least=2) * factor
  value, grads, state = _run(est, f, build, params, n)
  assert np.isfinite(float(value)), f"{what}: value {value}"
  _check_grads(grads, params, what)
  for leaf in jax.tree.leaves(state):
    if jnp.issubdtype(leaf.dtype, jnp.floating):
      assert np.all(np.isfinite(leaf)), f"{what}: non-finite state"


test_discrete_estimators_are_finite_with_the_params_structure, test_discrete_slow = _profiles(
  _discrete, _DISCRETE_STRATEGIES, 8, 300
)


# ----------------------------------------------------------------------------------------------------------
# Multi-sample objectives; invalid sample counts.
# ----------------------------------------------------------------------------------------------------------


_OBJECTIVES_STRATEGIES = dict(
  name=st.sampled_from(sorted(OBJECTIVES)),
  shape=batch_shapes,
  dtype=dtypes,
  loc=st.floats(-10.0, 10.0),
  log_scale=st.floats(math.log(1e-2), math.log(1e1)),
  num_samples=st.integers(2, 9),
)


def _objectives(name, shape, dtype, loc, log_scale, num_samples):
  params = {"loc": jnp.full(shape, loc, dtype), "scale": jnp.full(shape, math.exp(log_scale), dtype)}
  build = lambda p: distrax.Normal(p["loc"], p["scale"])
  log_joint = lambda z: -0.5 * jnp.sum(jnp.square(z.astype(jnp.float32) - 1.0))
  value, grads, _ = jax.jit(
    lambda p: sfe.objectives.value_and_grad(OBJECTIVES[name](), log_joint, build, p, KEY, num_samples=num_samples)
  )(params)
  what = f"{name} shape={shape} {jnp.dtype(dtype).name} loc={loc} scale={math.exp(log_scale)} K={num_samples}"
  assert np.isfinite(float(value)), f"{what}: value {value}"
  _check_grads(grads, params, what)


test_objectives_are_finite_with_the_params_structure, test_objectives_slow = _profiles(
  _objectives, _OBJECTIVES_STRATEGIES, 4, 150
)


_BAD_COUNTS_STRATEGIES = dict(
  name=st.sampled_from(sorted(CONTINUOUS)), num_samples=st.one_of(st.integers(-3, 0), st.floats(1.5, 9.5))
)


def _bad_counts(name, num_samples):
  build = lambda p: distrax.Normal(p, 1.0)
  with pytest.raises((ValueError, TypeError), match="num_samples"):
    sfe.value_and_grad(CONTINUOUS[name](), jnp.sum, build, jnp.zeros(2), KEY, num_samples=num_samples)


test_invalid_sample_counts_are_refused, test_invalid_sample_counts_slow = _profiles(
  _bad_counts, _BAD_COUNTS_STRATEGIES, 20, 200
)
