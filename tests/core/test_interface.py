"""One interface, no silent wrong answers: encodings, objectives, sample counts, state, errors, jit.

* ``f`` receives the distribution's own sample encoding (shape and dtype) under every estimator, or the
  estimator refuses the distribution at trace time with the fix.
* Objectives (the K-sample bounds) are not estimators: the estimator entry points and combinators refuse them,
  the diagnostics name their value for what it is.
* ``num_samples`` counts evaluations of ``f`` everywhere, checked in one place.
* A state that does not match the estimator, and an error inside ``f``, are reported with what went wrong.
* Estimators are static: usable as static or ordinary arguments of ``jax.jit``.
"""

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sfe_jax as sfe
from tests.helpers import assert_mean, repeated_estimates, smallest_num_samples

KEY = jax.random.key(0)


def _control(cp, z):
  return cp["a"] * jnp.sum(jnp.tanh(z))


ESTIMATORS = {
  "score_function": sfe.score_function(),
  "score_function-loo": sfe.score_function(sfe.baselines.leave_one_out()),
  "score_function-optimal": sfe.score_function(sfe.baselines.optimal()),
  "measure_valued": sfe.measure_valued(),
  "enumerate": sfe.enumerate(),
  "arm": sfe.arm(),
  "disarm": sfe.disarm(),
  "relax": sfe.relax(_control, {"a": jnp.float32(0.2)}),
  "unordered_set": sfe.unordered_set(),
  "rebar": sfe.rebar(),
  "gumbel_softmax": sfe.gumbel_softmax(0.5),
  "st_gumbel_softmax": sfe.gumbel_softmax(0.5, straight_through=True),
  "straight_through": sfe.straight_through(),
}
RELAXED = ("rebar", "gumbel_softmax", "st_gumbel_softmax", "straight_through")

DISTRIBUTIONS = {
  "bernoulli-int": lambda t: distrax.Bernoulli(logits=t),
  "bernoulli-float": lambda t: distrax.Bernoulli(logits=t, dtype=jnp.float32),
  "independent-bernoulli-float": lambda t: distrax.Independent(distrax.Bernoulli(logits=t, dtype=jnp.float32), 1),
  "categorical": lambda t: distrax.Categorical(logits=jnp.reshape(t, (2, 3))),
  "one-hot-int": lambda t: distrax.OneHotCategorical(logits=jnp.reshape(t, (2, 3))),
  "one-hot-float": lambda t: distrax.OneHotCategorical(logits=jnp.reshape(t, (2, 3)), dtype=jnp.float32),
}
THETA = {"bernoulli": jnp.array([0.3, -0.5, 1.0]), "categorical": jnp.array([0.3, -0.5, 1.0, 0.0, 0.2, -0.1])}


def _theta(dist_name):
  return THETA["bernoulli" if dist_name.startswith(("bernoulli", "independent")) else "categorical"]


def _refused_reason(est_name, dist_name):
  if est_name not in RELAXED:
    return None
  if dist_name == "categorical":
    return r"index-valued Categorical cannot hold.*Use OneHotCategorical"
  if dist_name.endswith("-int"):
    return r"samples have dtype int32.*dtype=jnp\.float32"
  return None


@pytest.mark.parametrize("dist_name", sorted(DISTRIBUTIONS))
@pytest.mark.parametrize("est_name", sorted(ESTIMATORS))
def test_f_sees_the_distributions_own_encoding(est_name, dist_name):
  est, build, theta = ESTIMATORS[est_name], DISTRIBUTIONS[dist_name], _theta(dist_name)
  own = jax.eval_shape(lambda k: build(theta).sample(seed=k), KEY)
  seen = []

  def f(x):
    seen.append((tuple(x.shape), x.dtype))
    return jnp.sum(jnp.asarray(x, jnp.float32) * jnp.arange(1.0, x.size + 1.0).reshape(x.shape))

  n = smallest_num_samples(est, build, theta, at_least=2)
  reason = _refused_reason(est_name, dist_name)
  traced = lambda: jax.eval_shape(lambda t: sfe.value_and_grad(est, f, build, t, KEY, num_samples=n)[:2], theta)
  if reason is not None:
    with pytest.raises(TypeError, match=reason):
      traced()
    return
  traced()
  assert seen and all(s == (tuple(own.shape), own.dtype) for s in seen), (seen, own)


# ----------------------------------------------------------------------------------------------------------
# Objectives are not estimators.
# ----------------------------------------------------------------------------------------------------------

Q = lambda p: distrax.Normal(p["loc"], p["scale"])  # noqa: E731
Q_PARAMS = {"loc": jnp.array([0.2, -0.1]), "scale": jnp.array([1.0, 0.8])}
LOG_JOINT = lambda z: jnp.sum(-0.5 * z**2 - 0.5 * (1.5 - z) ** 2)  # noqa: E731


@pytest.mark.parametrize("name", ["iwae", "dreg", "vimco"])
def test_objectives_are_refused_where_an_estimator_of_e_f_is_expected(name):
  objective = getattr(sfe.objectives, name)()
  for entry in (sfe.value_and_grad, sfe.expectation):
    with pytest.raises(
      TypeError,
      match=rf"sfe\.objectives\.{name}\(\), a multi-sample objective.*L_K.*"
      r"sfe\.objectives\.value_and_grad",
    ):
      entry(objective, LOG_JOINT, Q, Q_PARAMS, KEY, num_samples=4)
  with pytest.raises(TypeError, match="multi-sample objective"):
    sfe.with_control_variate(objective, sfe.control_variates.delta_method())
  with pytest.raises(TypeError, match=r"`objective` is sfe\.pathwise\(\), an estimator of E\[f\]"):
    sfe.objectives.value_and_grad(sfe.pathwise(), LOG_JOINT, Q, Q_PARAMS, KEY, num_samples=4)


def test_diagnostics_report_an_objectives_value_as_the_bound():
  report = sfe.diagnostics.evaluate(
    sfe.objectives.iwae(), LOG_JOINT, Q, Q_PARAMS, KEY, num_samples=4, num_repeats=500, timing_repeats=2
  )
  assert report.value_name.startswith("an estimate of the K-sample importance-weighted bound")
  assert report.estimator_name == "sfe.objectives.iwae()"
  values, _ = repeated_estimates(sfe.objectives.iwae(), LOG_JOINT, Q, Q_PARAMS, KEY, num_samples=4, num_repeats=500)
  # The value is the mean of the bounds L_4, not of the log-joint (which is far lower).
  log_joint_mean = lambda k: jnp.mean(jax.vmap(LOG_JOINT)(Q(Q_PARAMS).sample(seed=k, sample_shape=(4000,))))
  mean_log_joint = float(jax.jit(log_joint_mean)(KEY))
  assert float(report.moments.value_mean) > mean_log_joint + 0.5
  assert_mean(np.asarray(values), float(report.moments.value_mean), what="bound", num_se=6)
  plain = sfe.diagnostics.evaluate(
    sfe.pathwise(), LOG_JOINT, Q, Q_PARAMS, KEY, num_samples=4, num_repeats=50, timing_repeats=2
  )
  assert plain.value_name == "E[f]"


# ----------------------------------------------------------------------------------------------------------
# num_samples: evaluations of f, one shared check.
# ----------------------------------------------------------------------------------------------------------

NORMAL3 = lambda p: distrax.Normal(p, 1.0)  # noqa: E731
BITS3 = lambda p: distrax.Bernoulli(logits=p, dtype=jnp.float32)  # noqa: E731


@pytest.mark.parametrize(
  "est, build, n, error, pattern",
  [
    (sfe.score_function(), NORMAL3, None, TypeError, r"`num_samples` is required for sfe\.score_function\(\)"),
    (sfe.pathwise(), NORMAL3, 0, ValueError, r"at least 1.*got 0"),
    (
      sfe.measure_valued(),
      NORMAL3,
      13,
      ValueError,
      r"multiple of 12 for sfe\.measure_valued\(\).*evaluations of f.*4 D = 12 times per base sample.*got 13",
    ),
    (sfe.measure_valued(), BITS3, 7, ValueError, r"multiple of 6.*2 D = 6.*got 7"),
    (sfe.arm(), BITS3, 3, ValueError, r"multiple of 2.*two per antithetic pair.*got 3"),
    (sfe.rebar(), BITS3, 4, ValueError, r"multiple of 3 for sfe\.rebar\(\).*3 per sample.*got 4"),
    (sfe.enumerate(), BITS3, 10**6, ValueError, r"must be 8 \(or None\) for sfe\.enumerate\(\).*each of the 8"),
    (sfe.unordered_set(), BITS3, 9, ValueError, r"at most 8 for sfe\.unordered_set\(\).*got 9"),
    (sfe.unordered_set(), BITS3, 1, ValueError, r"at least 2 for sfe\.unordered_set\(\)"),
    (
      sfe.score_function(sfe.baselines.leave_one_out()),
      NORMAL3,
      1,
      ValueError,
      r"at least 2 for sfe\.score_function\(baseline=sfe\.baselines\.leave_one_out\(\)\) \(the baseline of each sample",
    ),
  ],
)
def test_num_samples_is_checked_in_one_place(est, build, n, error, pattern):
  with pytest.raises(error, match=pattern):
    sfe.value_and_grad(est, jnp.sum, build, jnp.zeros(3), KEY, num_samples=n)


def test_enumerate_counts_the_support():
  f = lambda b: jnp.sum(b * jnp.array([1.0, 2.0, 3.0]))

  def run(**kwargs):
    return jax.jit(lambda t: sfe.value_and_grad(sfe.enumerate(), f, BITS3, t, KEY, **kwargs)[:2])(jnp.zeros(3))

  default, explicit = run(), run(num_samples=8)
  np.testing.assert_allclose(default[0], 3.0, rtol=1e-6)
  np.testing.assert_allclose(explicit[1], default[1])


# ----------------------------------------------------------------------------------------------------------
# State, errors inside f, and jit.
# ----------------------------------------------------------------------------------------------------------

PARAMS = {"loc": jnp.zeros(3), "scale": jnp.ones(3)}
BUILD = lambda p: distrax.Normal(p["loc"], p["scale"])  # noqa: E731


@pytest.mark.parametrize(
  "state, pattern",
  [
    (
      sfe.EmptyState(),
      r"`state` does not match sfe\.score_function\(baseline=sfe\.baselines\.moving_average\(\)\).*MovingAverageState",
    ),
    ({}, r"`state` does not match"),
    (
      sfe.baselines.MovingAverageState(jnp.zeros(2), jnp.zeros((), jnp.int32)),
      r"`state`\.average must have shape \(\) .*got shape \(2,\)",
    ),
  ],
)
def test_a_state_that_does_not_match_is_refused(state, pattern):
  est = sfe.score_function(sfe.baselines.moving_average())
  with pytest.raises(TypeError, match=pattern):
    sfe.value_and_grad(est, jnp.sum, BUILD, PARAMS, KEY, num_samples=4, state=state)


def test_an_error_inside_f_says_what_f_was_called_with():
  with pytest.raises(
    TypeError,
    match=r"`f` raised TypeError when called with one sample of shape \(3,\) and "
    r"dtype float32.*never sees a sample axis",
  ) as info:
    sfe.value_and_grad(sfe.pathwise(), lambda x: jnp.sum(x + jnp.ones(4)), BUILD, PARAMS, KEY, num_samples=4)
  assert isinstance(info.value.__cause__, TypeError)
  with pytest.raises(IndexError, match=r"one sample of shape \(3,\)"):
    sfe.value_and_grad(sfe.score_function(), lambda x: x[5, 1], BUILD, PARAMS, KEY, num_samples=4)


def test_estimators_pass_through_jit_as_static_or_ordinary_arguments():
  est = sfe.score_function(sfe.baselines.leave_one_out())
  f = lambda x: jnp.sum((x - 0.5) ** 2)
  closed_over = lambda p, k: sfe.value_and_grad(est, f, BUILD, p, k, num_samples=16)
  expected = jax.jit(closed_over)(PARAMS, KEY)
  ordinary = jax.jit(sfe.value_and_grad, static_argnums=(1, 2), static_argnames="num_samples")(
    est, f, BUILD, PARAMS, KEY, num_samples=16
  )
  static = jax.jit(sfe.value_and_grad, static_argnums=(0, 1, 2), static_argnames="num_samples")(
    est, f, BUILD, PARAMS, KEY, num_samples=16
  )
  for got in (ordinary, static):
    np.testing.assert_allclose(got[0], expected[0], rtol=1e-6)
    np.testing.assert_allclose(got[1]["loc"], expected[1]["loc"], rtol=1e-5)
  assert jax.tree.leaves(est) == [] and hash(est) == hash(est)
  assert jax.tree.leaves(sfe.objectives.iwae()) == []


def test_measure_valued_on_one_hot_categorical_is_unbiased():
  build = lambda t: distrax.OneHotCategorical(logits=t)
  theta = jnp.array([[0.3, -0.5, 1.0], [0.0, 0.2, -0.1]])
  table = jnp.array([[1.0, -2.0, 0.5], [0.3, 2.0, -1.0]])
  f = lambda x: jnp.sum(table * x) + x[0, 0] * x[1, 2]
  exact = jax.jit(lambda t: sfe.value_and_grad(sfe.enumerate(), f, build, t, KEY)[1])(theta)
  one = lambda k: sfe.value_and_grad(sfe.measure_valued(), f, build, theta, k, num_samples=6)[1]
  grads = jax.jit(jax.vmap(one))(jax.random.split(KEY, 4000))
  assert_mean(np.asarray(grads).reshape(4000, -1), np.asarray(exact).reshape(-1), what="MVD one-hot gradient")
