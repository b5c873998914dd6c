"""Non-finite values in :mod:`sfe_jax.rl` (issue 12): nothing silently wrong.

* Padding is ignored whatever it holds: NaN, +inf or -inf in the padded entries of any ``[B, T]`` input (or in
  the ``bootstrap_value`` of a trajectory that ends before ``T - 1``) gives exactly the values and gradients of
  zero padding, and the gradient is exactly 0 at every padded entry.
* Empty batches (``B = 0`` or ``T = 0``) are refused at trace time, naming the argument and its shape.
* A traced hyperparameter out of its range, or NaN, makes every output NaN (and the gradient at every valid
  step), never a plausible number; a Python one raises.
* Long-horizon importance sampling is computed in log space: values and gradients match a float64 reference
  where the products of ratios overflow or underflow float32 but the result does not.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sfe_jax as sfe
import sfe_jax.rl as rl

B, T = 3, 5
LENGTHS = np.array([T, 3, 1])
MASK = (np.arange(T)[None, :] < LENGTHS[:, None]).astype(np.float32)
PAD = MASK == 0
CUT = LENGTHS < T  # Trajectories that end before T - 1: their bootstrap_value is ignored.
NON_FINITE = [np.nan, np.inf, -np.inf]
ESTIMATORS = ["ordinary", "weighted", "per_decision", "truncated"]


def inputs(seed=0):
  """Every [B, T] input with zero padding, and a bootstrap value that is 0 where it is ignored."""
  rng = np.random.default_rng(seed)

  def uniform(low, high):
    return np.where(PAD, 0.0, rng.uniform(low, high, size=(B, T))).astype(np.float32)

  x = {name: uniform(-1.0, 1.0) for name in ("rewards", "values", "advantages", "returns", "old_values", "baseline")}
  x.update({name: uniform(-2.0, -0.1) for name in ("log_probs", "old_log_probs")})
  x["entropies"] = uniform(0.0, 1.0)
  x["bootstrap_value"] = np.where(CUT, 0.0, 0.7).astype(np.float32)
  return x


def reinforce(baseline, reward_to_go=True):
  def fn(x):
    b = x["baseline"] if baseline == "values" else baseline
    return rl.reinforce_loss(x["log_probs"], x["rewards"], MASK, 0.9, b, reward_to_go)

  return fn


def vtrace(**clips):
  def fn(x):
    return rl.vtrace(
      x["log_probs"], x["old_log_probs"], x["rewards"], x["values"], MASK, 0.9, bootstrap_value=x["bootstrap_value"],
      lam=0.9, **clips,
    )  # fmt: skip

  return fn


def off_policy(estimator):
  return lambda x: rl.off_policy_value(x["log_probs"], x["old_log_probs"], x["rewards"], MASK, 0.9, estimator, 1.2)


# name: (function of the inputs, the inputs it reads (padded), the inputs it is differentiated in).
LP, OLD, R, V, BOOT = "log_probs", "old_log_probs", "rewards", "values", "bootstrap_value"
CASES = {
  "discounted_returns": (lambda x: rl.discounted_returns(x[R], MASK, 0.9), [R], [R]),
  "gae": (lambda x: rl.gae(x[R], x[V], MASK, 0.9, 0.8, x[BOOT]), [R, V, BOOT], [V, BOOT]),
  "reinforce_loss": (reinforce(None), [LP, R], [LP]),
  "reinforce_loss/whole_return": (reinforce(None, False), [LP, R], [LP]),
  "reinforce_loss/leave_one_out": (reinforce(sfe.baselines.leave_one_out()), [LP, R], [LP]),
  "reinforce_loss/values": (reinforce("values"), [LP, R, "baseline"], [LP]),
  "actor_critic_loss": (
    lambda x: rl.actor_critic_loss(
      x[LP], x[V], x[R], MASK, 0.9, 0.8, x["entropies"], entropy_coef=0.1, bootstrap_value=x[BOOT]
    ),
    [LP, V, R, "entropies", BOOT],
    [LP, V, "entropies"],
  ),
  "ppo_loss": (lambda x: rl.ppo_loss(x[LP], x[OLD], x["advantages"], MASK, 0.2), [LP, OLD, "advantages"], [LP]),
  "ppo_value_loss": (
    lambda x: rl.ppo_value_loss(x[V], x["old_values"], x["returns"], MASK, 0.2),
    [V, "old_values", "returns"],
    [V],
  ),  # fmt: skip
  "ppo_value_loss/unclipped": (
    lambda x: rl.ppo_value_loss(x[V], x["old_values"], x["returns"], MASK, None),
    [V, "old_values", "returns"],
    [V],
  ),  # fmt: skip
  "importance_weights": (lambda x: rl.importance_weights(x[LP], x[OLD], MASK), [LP, OLD], [LP]),
  **{f"off_policy_value/{e}": (off_policy(e), [LP, OLD, R], [LP]) for e in ESTIMATORS},
  "vtrace": (vtrace(clip_rho=1.0, clip_c=0.8, clip_pg_rho=1.5), [LP, OLD, R, V, BOOT], [LP, V]),
  "vtrace/unclipped": (vtrace(clip_rho=None, clip_c=None, clip_pg_rho=None), [LP, OLD, R, V, BOOT], [LP, V]),
}


def weighted_sum(tree):
  """A scalar that every output reaches with a distinct weight (so no gradient cancels by symmetry)."""
  leaves = jax.tree.leaves(tree)
  return sum(jnp.sum(leaf * jnp.linspace(0.5, 1.5, leaf.size).reshape(leaf.shape)) for leaf in leaves)


@functools.cache
def value_and_grads(name):
  fn, _, diff = CASES[name]

  def run(x):
    grads = jax.grad(lambda d: weighted_sum(fn({**x, **d})))({k: x[k] for k in diff})
    return fn(x), grads

  return jax.jit(run)


def padding_of(name):
  return CUT if name == BOOT else PAD


@pytest.mark.parametrize("name", sorted(CASES))
def test_padding_is_ignored_in_values_and_gradients(name):
  _, padded, diff = CASES[name]
  run = value_and_grads(name)
  clean = inputs()
  want = jax.tree.map(np.asarray, run(clean))
  assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(want))
  for key in diff:  # With zero padding already: the gradient is 0 on the padding.
    np.testing.assert_array_equal(want[1][key][padding_of(key)], 0.0)
  for key in padded:
    for bad in NON_FINITE:
      x = dict(clean, **{key: np.where(padding_of(key), bad, clean[key]).astype(np.float32)})
      got = run(x)
      check = functools.partial(np.testing.assert_array_equal, err_msg=f"{name}: {bad} in the padding of {key}")
      jax.tree.map(check, got, want)


# ----------------------------------------------------------------------------------------------------------
# Empty batches.
# ----------------------------------------------------------------------------------------------------------

EMPTY_CALLS = {
  "discounted_returns": (lambda x: rl.discounted_returns(x, x, 0.9), "rewards"),
  "gae": (lambda x: rl.gae(x, x, x, 0.9, 0.8), "rewards"),
  "reinforce_loss": (lambda x: rl.reinforce_loss(x, x, x, 0.9), "log_probs"),
  "actor_critic_loss": (lambda x: rl.actor_critic_loss(x, x, x, x, 0.9), "log_probs"),
  "ppo_loss": (lambda x: rl.ppo_loss(x, x, x, x), "log_probs"),
  "ppo_value_loss": (lambda x: rl.ppo_value_loss(x, x, x, x), "values"),
  "importance_weights": (lambda x: rl.importance_weights(x, x, x), "target_log_probs"),
  "off_policy_value": (lambda x: rl.off_policy_value(x, x, x, x, 0.9), "target_log_probs"),
  "vtrace": (lambda x: rl.vtrace(x, x, x, x, x, 0.9), "target_log_probs"),
}


@pytest.mark.parametrize("shape", [(0, 4), (3, 0)])
@pytest.mark.parametrize("fn", sorted(EMPTY_CALLS))
def test_empty_batches_are_refused_at_trace_time(fn, shape):
  call, first = EMPTY_CALLS[fn]
  with pytest.raises(ValueError, match=rf"`{first}` of {fn} must hold at least one trajectory and one step.*{shape}"):
    jax.eval_shape(call, jax.ShapeDtypeStruct(shape, jnp.float32))


# ----------------------------------------------------------------------------------------------------------
# Traced hyperparameters out of range.
# ----------------------------------------------------------------------------------------------------------


def hyper(name):
  """A function (x, h) -> outputs with hyperparameter `name` ("fn/argument[/estimator]") set to h."""
  fn, arg, *rest = name.split("/")
  x_args = {
    "discounted_returns": lambda x: (x[R], MASK),
    "gae": lambda x: (x[R], x[V], MASK),
    "reinforce_loss": lambda x: (x[LP], x[R], MASK),
    "actor_critic_loss": lambda x: (x[LP], x[V], x[R], MASK),
    "ppo_loss": lambda x: (x[LP], x[OLD], x["advantages"], MASK),
    "ppo_value_loss": lambda x: (x[V], x["old_values"], x["returns"], MASK),
    "off_policy_value": lambda x: (x[LP], x[OLD], x[R], MASK),
    "vtrace": lambda x: (x[LP], x[OLD], x[R], x[V], MASK),
  }[fn]
  defaults = {"gamma": 0.9, "lam": 0.8}
  if fn == "off_policy_value":
    defaults.update(estimator=rest[0], clip_rho=1.2)
  if fn == "actor_critic_loss":
    defaults.update(entropies=None, entropy_coef=0.1)
  if fn == "vtrace":
    defaults.update(clip_rho=1.0, clip_c=0.8, clip_pg_rho=1.5)

  def call(x, h):
    kwargs = dict(defaults, **{arg: h})
    if fn in ("discounted_returns",):
      kwargs.pop("lam")
    if fn in ("reinforce_loss", "off_policy_value"):
      kwargs.pop("lam")
    if fn in ("ppo_loss", "ppo_value_loss"):
      kwargs = {"clip_eps": h}
    if fn == "actor_critic_loss":
      kwargs["entropies"] = x["entropies"]
    return getattr(rl, fn)(*x_args(x), **kwargs)

  diff = {"reinforce_loss": [LP], "actor_critic_loss": [LP, V], "ppo_loss": [LP], "ppo_value_loss": [V]}
  return call, diff.get(fn, [LP] if fn == "off_policy_value" else [])


UNIT = (1.5, -0.1, np.nan)
POSITIVE = (0.0, -0.1, np.nan)
HYPER_CASES = {
  "discounted_returns/gamma": (UNIT, 0.9),
  "gae/gamma": (UNIT, 0.9),
  "gae/lam": (UNIT, 0.8),
  "reinforce_loss/gamma": (UNIT, 0.9),
  "actor_critic_loss/gamma": (UNIT, 0.9),
  "actor_critic_loss/lam": (UNIT, 0.8),
  "ppo_loss/clip_eps": (POSITIVE, 0.2),
  "ppo_value_loss/clip_eps": (POSITIVE, 0.2),
  **{f"off_policy_value/gamma/{e}": (UNIT, 0.9) for e in ESTIMATORS},
  "off_policy_value/clip_rho/truncated": (POSITIVE, 1.2),
  "vtrace/gamma": (UNIT, 0.9),
  "vtrace/lam": (UNIT, 0.8),
  "vtrace/clip_rho": (POSITIVE, 1.0),
  "vtrace/clip_c": (POSITIVE, 0.8),
  "vtrace/clip_pg_rho": (POSITIVE, 1.5),
}


@pytest.mark.parametrize("name", sorted(HYPER_CASES))
def test_traced_hyperparameter_out_of_range_is_nan(name):
  call, diff = hyper(name)
  bad_values, good = HYPER_CASES[name]
  x = inputs(1)

  @jax.jit
  def run(h):
    grads = jax.grad(lambda d: weighted_sum(call({**x, **d}, h)))({k: x[k] for k in diff})
    return call(x, h), grads

  for bad in bad_values:
    with pytest.raises(ValueError, match=f"`{name.split('/')[1]}` of {name.split('/')[0]} must"):  # Python: refused.
      call(x, bad)
    out, grads = run(jnp.float32(bad))
    for leaf in jax.tree.leaves(out):  # Every output, padding included.
      np.testing.assert_array_equal(leaf, np.full(np.shape(leaf), np.nan), err_msg=f"{name}={bad}")
    for key in diff:  # NaN at every valid step; the padding still passes exactly 0.
      np.testing.assert_array_equal(grads[key], np.where(PAD, 0.0, np.nan), err_msg=f"{name}={bad}, grad {key}")
  # A valid traced value is the Python one (a constant of the compiled function, as it is of an eager call).
  out, _ = run(jnp.float32(good))
  python = jax.jit(lambda: call(x, good))()
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), out, python)


# ----------------------------------------------------------------------------------------------------------
# Long-horizon importance sampling, against float64.
# ----------------------------------------------------------------------------------------------------------


def long_horizon_batch(t, sign, up_down, seed=0):
  """4 trajectories whose per-step log-ratio is sign * 0.6 (+- 0.05), flipping sign halfway if up_down;
  rewards only on the last valid steps; the third trajectory ends 2 steps early."""
  rng = np.random.default_rng(seed)
  step = sign * 0.6 * np.where(np.arange(t) < t // 2, 1.0, -1.0 if up_down else 1.0)
  behaviour = np.log(rng.uniform(0.2, 1.0, size=(4, t))).astype(np.float32)
  target = (behaviour + step + rng.uniform(-0.05, 0.05, size=(4, t))).astype(np.float32)
  mask = np.ones((4, t), np.float32)
  mask[2, -2:] = 0.0
  rewards = np.zeros((4, t), np.float32)
  rewards[:, -6:] = rng.normal(size=(4, 6))
  return target, behaviour, rewards * mask, mask


def float64_reference(target, behaviour, rewards, mask, gamma, estimator, clip_rho):
  """Value and gradient in target_log_probs, in float64 (exp(+-600) is finite there), written out directly."""
  log_rho = (target.astype(np.float64) - behaviour) * mask
  r = rewards.astype(np.float64) * mask
  b, t = r.shape
  disc = np.float64(gamma) ** np.arange(t)
  if estimator in ("ordinary", "weighted"):
    w, ret = np.exp(log_rho.sum(axis=1)), (disc * r).sum(axis=1)
    if estimator == "ordinary":
      return np.mean(w * ret), (w * ret / b)[:, None] * mask
    value = np.sum(w * ret) / np.sum(w)
    return value, (w * (ret - value) / np.sum(w))[:, None] * mask
  log_clip = np.log(np.float64(np.float32(clip_rho))) if estimator == "truncated" else np.inf
  terms = disc * r * np.exp(np.cumsum(np.minimum(log_rho, log_clip), axis=1)) / b
  to_go = np.flip(np.cumsum(np.flip(terms, axis=1), axis=1), axis=1)  # d terms_t / d log_rho_k = terms_t, t >= k
  return terms.sum(), to_go * (log_rho < log_clip) * mask


LONG_CASES = [  # (T, sign, up_down, gamma, estimators)
  (200, 1, False, 0.99, ["weighted"]),
  (200, -1, False, 0.99, ["weighted"]),
  (200, 1, False, float(np.float32(np.exp(-0.6))), ["ordinary", "per_decision", "truncated"]),
  (1000, 1, True, 1.0, ESTIMATORS),
  (1000, -1, True, 1.0, ESTIMATORS),
]


@pytest.mark.parametrize("t,sign,up_down,gamma,estimators", LONG_CASES)
def test_long_horizon_importance_sampling_matches_float64(t, sign, up_down, gamma, estimators):
  target, behaviour, rewards, mask = long_horizon_batch(t, sign, up_down)
  clip_rho = float(np.exp(0.62))  # Clips some of the +0.6 steps, not the -0.6 ones.
  for estimator in estimators:
    fn = lambda lp, e=estimator: rl.off_policy_value(lp, behaviour, rewards, mask, gamma, e, clip_rho)  # noqa: E731
    value, grad = jax.jit(jax.value_and_grad(fn))(target)
    want_value, want_grad = float64_reference(target, behaviour, rewards, mask, gamma, estimator, clip_rho)
    assert np.isfinite(want_value) and 1e-3 < abs(want_value) < 1e3, want_value  # representable, not trivial
    rtol = 5e-4 if t == 1000 else 1e-4  # float32 sums of T log-ratios, partial sums up to 0.3 T: ~1e-7 T
    np.testing.assert_allclose(value, want_value, rtol=rtol, err_msg=estimator)
    scale = np.abs(want_grad).max()
    np.testing.assert_allclose(grad, want_grad, rtol=rtol, atol=rtol * scale, err_msg=estimator)


def test_infinite_log_probs_on_valid_steps():
  # A target log-probability of -inf (an action impossible under pi) on a valid step: its trajectory's weight
  # is 0 from that step on; values and gradients stay finite and exact.
  target, behaviour, rewards, mask = long_horizon_batch(8, 1, True, seed=3)
  rewards = np.random.default_rng(4).normal(size=rewards.shape).astype(np.float32) * mask
  target[1, 3] = -np.inf
  for estimator in ESTIMATORS:
    fn = lambda lp, e=estimator: rl.off_policy_value(lp, behaviour, rewards, mask, 0.9, e, 1.2)  # noqa: E731
    value, grad = jax.jit(jax.value_and_grad(fn))(target)
    want_value, want_grad = float64_reference(target, behaviour, rewards, mask, 0.9, estimator, 1.2)
    np.testing.assert_allclose(value, want_value, rtol=1e-5, err_msg=estimator)
    np.testing.assert_allclose(grad, np.nan_to_num(want_grad), rtol=1e-5, atol=1e-6, err_msg=estimator)
  # V-trace clips an infinite ratio (a behaviour log-probability of -inf on a valid step) to the clip level:
  # exactly the result of a ratio equal to it.
  x = inputs(2)
  old_inf, old_at_clip = x[OLD].copy(), x[OLD].copy()
  old_inf[0, 1] = -np.inf
  old_at_clip[0, 1] = x[LP][0, 1]  # ratio 1, the clip level
  clipped = jax.jit(lambda old: rl.vtrace(x[LP], old, x[R], x[V], MASK, 0.9, clip_rho=1.0, clip_c=1.0, clip_pg_rho=1.0))
  got, want = clipped(old_inf), clipped(old_at_clip)
  jax.tree.map(np.testing.assert_array_equal, got, want)
