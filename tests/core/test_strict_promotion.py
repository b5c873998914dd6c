"""The library's own code runs under strict rank and dtype promotion.

Under ``jax_numpy_rank_promotion="raise"`` an operation that would broadcast arrays of different ranks raises,
and under ``jax_numpy_dtype_promotion="strict"`` one that would promote between dtypes raises. sfe_jax writes
every such operation explicitly (``x[None]``, ``keepdims=True``, ``astype``) and calls ``log_prob`` on one
sample at a time, so every estimator, objective, loss and diagnostic traces in both modes (promotion errors
are raised while tracing, so ``jax.eval_shape`` checks them without compiling). The exceptions are the
libraries it calls, each pinned below so that a fix upstream is noticed:

* rank promotion: distrax's ``Bernoulli`` sampler (and TFP's) compares uniforms of shape ``(1, *batch)``
  against probabilities of shape ``batch`` inside ``sample``; every estimator on a Bernoulli inherits it.
* dtype promotion: optax's Adam multiplies its int32 step count by Python floats, so ``rebar``/``relax``
  (whose controls train with an optax optimizer) inherit it; distrax's integer-valued ``Bernoulli``
  ``log_prob`` mixes its int32 samples with float32 logits.
"""

import distrax
import jax
import jax.numpy as jnp
import pytest

import sfe_jax as sfe

KEY = jax.random.key(0)
GAUSS = (
  lambda p: distrax.Normal(p["loc"], p["scale"]),
  {"loc": jnp.zeros(3), "scale": jnp.ones(3)},
  lambda x: jnp.sum((x - 0.5) ** 2),
)
MVN = (
  lambda p: distrax.MultivariateNormalDiag(p["loc"], p["scale"]),
  {"loc": jnp.zeros(3), "scale": jnp.ones(3)},
  lambda x: jnp.sum((x - 0.5) ** 2),
)
CATEGORICAL = (
  lambda p: distrax.Categorical(logits=p["logits"]),
  {"logits": jnp.zeros((2, 3))},
  lambda x: jnp.sum(x.astype(jnp.float32)),
)
ONE_HOT = (
  lambda p: distrax.OneHotCategorical(logits=p["logits"], dtype=jnp.float32),
  {"logits": jnp.zeros((2, 3))},
  lambda x: jnp.sum(x * jnp.arange(3.0)[None]),
)
BERNOULLI = (
  lambda p: distrax.Bernoulli(logits=p["logits"], dtype=jnp.float32),
  {"logits": jnp.zeros(3)},
  lambda b: jnp.sum((b - 0.3) ** 2),
)

ESTIMATORS = {
  "score_function": (sfe.score_function, GAUSS, 4),
  "score_function-loo": (lambda: sfe.score_function(sfe.baselines.leave_one_out()), MVN, 4),
  "score_function-optimal": (lambda: sfe.score_function(sfe.baselines.optimal()), GAUSS, 4),
  "score_function-moving_average": (lambda: sfe.score_function(sfe.baselines.moving_average()), CATEGORICAL, 4),
  "pathwise": (sfe.pathwise, MVN, 4),
  "measure_valued": (sfe.measure_valued, GAUSS, 12),
  "measure_valued-categorical": (sfe.measure_valued, CATEGORICAL, 6),
  "with_control_variate": (
    lambda: sfe.with_control_variate(sfe.score_function(), sfe.control_variates.delta_method()),
    GAUSS,
    4,
  ),
  "enumerate": (sfe.enumerate, CATEGORICAL, None),
  "arm": (sfe.arm, CATEGORICAL, 4),
  "disarm": (sfe.disarm, CATEGORICAL, 4),
  "gumbel_softmax": (lambda: sfe.gumbel_softmax(0.5), ONE_HOT, 4),
  "straight_through": (sfe.straight_through, ONE_HOT, 4),
  "unordered_set": (sfe.unordered_set, CATEGORICAL, 2),
  "rebar": (sfe.rebar, ONE_HOT, 3),
  "relax": (lambda: sfe.relax(lambda cp, z: cp["w"] * jnp.sum(z), {"w": jnp.ones(())}), ONE_HOT, 2),
}
# Estimators that raise in one mode because of a library they call (see the module docstring).
UPSTREAM = {("rebar", "dtype"): "optax", ("relax", "dtype"): "optax"}


def strict(mode):
  return jax.numpy_rank_promotion("raise") if mode == "rank" else jax.numpy_dtype_promotion("strict")


@pytest.mark.parametrize("mode", ["rank", "dtype"])
@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_estimators_under_strict_promotion(name, mode):
  make, (build, params, f), n = ESTIMATORS[name]
  estimator = make()

  def run():
    with strict(mode):
      return jax.eval_shape(lambda p, k: sfe.value_and_grad(estimator, f, build, p, k, num_samples=n)[:2], params, KEY)

  if (name, mode) in UPSTREAM:
    with pytest.raises(Exception, match="promotion"):
      run()
    return
  value, grads = run()
  assert value.shape == () and jax.tree.map(jnp.shape, grads) == jax.tree.map(jnp.shape, params)


def test_upstream_bernoulli_exceptions():
  build, params, f = BERNOULLI
  run = lambda: jax.eval_shape(lambda p: sfe.value_and_grad(sfe.disarm(), f, build, p, KEY, num_samples=4), params)
  with strict("rank"), pytest.raises(ValueError, match="rank_promotion"):
    run()  # distrax's Bernoulli sampler
  with strict("dtype"):
    run()  # float-valued Bernoulli: fine
  int_build = lambda p: distrax.Bernoulli(logits=p["logits"])
  int_f = lambda b: jnp.sum(b.astype(jnp.float32))
  with strict("dtype"), pytest.raises(Exception, match="promotion"):
    jax.eval_shape(lambda p: sfe.value_and_grad(sfe.score_function(), int_f, int_build, p, KEY, num_samples=4), params)


@pytest.mark.parametrize("mode", ["rank", "dtype"])
@pytest.mark.parametrize("name", ["iwae", "dreg", "vimco"])
def test_objectives_under_strict_promotion(name, mode):
  build, params, _ = GAUSS
  objective = getattr(sfe.objectives, name)()
  with strict(mode):
    value, _, _ = jax.eval_shape(
      lambda p: sfe.objectives.value_and_grad(objective, lambda z: -jnp.sum(z**2), build, p, KEY, num_samples=4),
      params,
    )
  assert value.shape == ()


@pytest.mark.parametrize("mode", ["rank", "dtype"])
def test_dice_and_diagnostics_under_strict_promotion(mode):
  # The RL losses have their own test, with every option (tests/rl/test_rl.py::test_no_implicit_promotion).
  build, params, f = GAUSS

  def everything():
    return [
      sfe.objectives.dice(jnp.ones(3), jnp.zeros(3)),
      sfe.diagnostics.gradient_moments(sfe.pathwise(), f, build, params, KEY, num_samples=4, num_repeats=3),
      sfe.diagnostics.variance_and_std_error(jnp.arange(5.0)),
    ]

  with strict(mode):
    outputs = jax.eval_shape(everything)
  assert all(x.shape is not None for x in jax.tree.leaves(outputs))
