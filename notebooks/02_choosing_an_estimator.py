# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Choosing an estimator
#
# sfe_jax gives every estimator the same signature, so trying another one is a one-word change. This notebook
# uses that to put the same problems under every estimator and measure what matters when you choose:
#
# * the **variance** of the gradient estimate (with its standard error),
# * the **bias**, for the estimators that have one, against the exact gradient,
# * the **time per estimate**, and the two combined as the **work-normalised variance**
#   $\mathrm{Var} \times \text{seconds}$: the variance you get per second of compute (Glynn and Whitt 1992).
#
# Every comparison is at equal `num_samples`, which the library defines as the number of evaluations of `f`
# for every estimator: equal `num_samples` means equal calls of your model. We look at a continuous problem,
# two discrete ones, the bias of the relaxations against their temperature, and the samplers (antithetic,
# stratified, randomized quasi-Monte Carlo) that change how the base randomness is drawn. A decision table at
# the end sums it up, and every claim it makes is checked against the numbers measured here.

# %%
import os

QUICK = os.environ.get("SFE_JAX_NOTEBOOK_QUICK", "0") == "1"  # the test suite runs the quick settings

# %%
import distrax
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np
import optax

import sfe_jax as sfe
from benchmarks.gaussian import problems as gaussian

NUM_REPEATS = 2000 if QUICK else 10_000  # independent estimates per variance
TIMING_REPEATS = 5 if QUICK else 30  # timed calls per estimator (the median is reported)
CONTROL_STEPS = 200 if QUICK else 2000  # training steps of the REBAR and RELAX controls
NUM_TEMPERATURES = 4 if QUICK else 9
SAMPLER_SIZES = (16, 256) if QUICK else (16, 32, 64, 128, 256, 512, 1024, 2048)
SAMPLER_REPEATS = 100 if QUICK else 400

# %% [markdown]
# ## How we measure
#
# For one estimator, `sfe.diagnostics.gradient_moments` draws `num_repeats` independent gradient estimates of
# `num_samples` samples each (a `vmap` over keys) and returns their mean, their per-coordinate variance and the
# standard error of both; `sfe.diagnostics.bias` turns the mean into a bias in standard errors (a z-score)
# against a known gradient; `sfe.diagnostics.time_per_estimate` times one compiled `sfe.value_and_grad` call.
# `sfe.diagnostics.evaluate` does all three in one call and multiplies variance and time, e.g. for the
# pathwise estimator:
#
# ```python
# report = sfe.diagnostics.evaluate(sfe.pathwise(), f, dist_builder, params, key, num_samples=48,
#                                   num_repeats=10_000, exact_grad=exact)
# report.moments.variance, report.moments.variance_std_error   # per coordinate, params' structure
# report.bias.max_abs_z                                         # the largest |bias| in standard errors
# report.timing.median_seconds, report.work_normalized_variance  # time, and variance x time
# ```
#
# `evaluate` compiles two programs per estimator (the repeated estimates, and the single estimate it times).
# Compilation, not computation, dominates at these sizes, so below we compute the moments of all the
# estimators of a problem in **one** compiled program (`gradient_moments` inlines itself under an outer
# `jax.jit`) and time each estimator with `time_per_estimate`: the same numbers `evaluate` gives, in fewer
# compilations. The helpers below do that, and summarise a gradient by its **total variance**, the sum of the
# variances of all its coordinates. Its standard error is bounded by the sum of the coordinates' standard errors
# (the standard deviation of a sum is at most the sum of the standard deviations), a conservative error bar.


# %%
def moments_of_all(estimators, f, dist_builder, params, key, *, num_samples, num_repeats, states=None):
  """``{name: GradientMoments}`` for every estimator; call it under ``jax.jit`` to compile them together."""
  states = states or {}
  keys = jax.random.split(key, len(estimators))
  return {
    name: sfe.diagnostics.gradient_moments(
      est, f, dist_builder, params, k, num_samples=num_samples, num_repeats=num_repeats, state=states.get(name)
    )
    for (name, est), k in zip(estimators.items(), keys)
  }


def total(tree):
  """The sum over all coordinates of a pytree of arrays (a float)."""
  return float(sum(jnp.sum(leaf) for leaf in jax.tree.leaves(tree)))


def summarise(estimators, moments, exact, seconds=None):
  """One row per estimator: total variance and its (conservative) standard error, bias z-score, time."""
  rows = {}
  for name in estimators:
    m = moments[name]
    variance, variance_se = total(m.variance), total(m.variance_std_error)
    z = float(sfe.diagnostics.bias(m, exact).max_abs_z)
    rows[name] = dict(variance=variance, variance_se=variance_se, max_abs_z=z)
    line = f"{name:24s} variance {variance:9.3e} +- {variance_se:7.1e}   bias max|z| {z:6.1f}"
    if seconds is not None:
      rows[name].update(seconds=seconds[name], work=variance * seconds[name])
      line += f"   {1e6 * seconds[name]:7.0f} us   variance x time {rows[name]['work']:.2e}"
    print(line)
  return rows


def times_of_all(estimators, f, dist_builder, params, key, *, num_samples, states=None):
  """``{name: median seconds}`` of one compiled ``sfe.value_and_grad`` call per estimator."""
  states = states or {}
  return {
    name: sfe.diagnostics.time_per_estimate(
      est, f, dist_builder, params, key, num_samples=num_samples, state=states.get(name), repeats=TIMING_REPEATS
    ).median_seconds
    for name, est in estimators.items()
  }


def bar_charts(panels, title):
  """Horizontal bars, one per estimator, log scale: ``panels`` is a list of ``(rows, quantity, label)``."""
  names = list(panels[0][0])
  y = np.arange(len(names))
  fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels) + 1.5, 0.4 * len(names) + 1.6), sharey=True)
  for ax, (rows, quantity, label) in zip(np.atleast_1d(axes), panels):
    values = np.array([rows[n][quantity] for n in names])
    scale = np.array([1.0 if quantity == "variance" else rows[n]["seconds"] for n in names])
    errors = np.array([rows[n]["variance_se"] for n in names]) * scale
    colors = ["tab:red" if rows[n]["max_abs_z"] > 5 else "tab:blue" for n in names]
    ax.barh(y, values, xerr=errors, color=colors, alpha=0.8)
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel(label)
    ax.grid(axis="x", alpha=0.3)
  first = np.atleast_1d(axes)[0]
  first.set_yticks(y, names)
  first.invert_yaxis()
  fig.suptitle(title + " (lower is better; red: biased, |z| > 5)")
  fig.tight_layout()
  plt.show()


# %% [markdown]
# ## A continuous problem
#
# Take $x \in \mathbb{R}^3$ with independent coordinates $x_d \sim N(\mu_d, \sigma_d^2)$, at $\mu = \sigma = 1$,
# and a smooth cost made of three of the reference cost functions of Mohamed et al. (2020), one per coordinate:
#
# $$f(x) = (x_1 - 3)^2 + e^{-x_2^2} + \cos(x_3 / 2).$$
#
# The benchmarks package has each term's cost and closed-form gradient (`benchmarks.gaussian.problems`), so the
# exact gradient of $E[f]$ is known: $\partial/\partial\mu = (-4, -0.2758, -0.2115)$ and
# $\partial/\partial\sigma = (2, -0.0919, -0.1936)$.

# %%
params = {"loc": jnp.ones(3), "scale": jnp.ones(3)}
normal = lambda p: distrax.Normal(p["loc"], p["scale"])  # noqa: E731 (three independent coordinates)

TERMS = (gaussian.Problem("(x-k)^2", 3.0), gaussian.Problem("exp(-kx^2)", 1.0), gaussian.Problem("cos(kx)", 0.5))
term_costs = [gaussian.cost(term) for term in TERMS]


def f_cont(x):
  return sum(cost(x[d]) for d, cost in enumerate(term_costs))


exact_terms = [gaussian.exact(term, mu=1.0, sigma=1.0) for term in TERMS]
exact_cont = {
  "loc": jnp.array([e.grad[0] for e in exact_terms]),
  "scale": jnp.array([e.grad[1] for e in exact_terms]),
}
print({name: np.round(grad, 4) for name, grad in exact_cont.items()})
assert np.allclose(exact_cont["loc"], [-4.0, -0.275793, -0.211546], atol=1e-6)
assert np.allclose(exact_cont["scale"], [2.0, -0.091931, -0.193616], atol=1e-6)

# %% [markdown]
# The candidates, all unbiased:
#
# * the **score function** $\frac1N\sum_i f(x_i)\nabla\log p(x_i)$ (REINFORCE), alone and with a
#   **leave-one-out** baseline (each sample's baseline is the mean of the others) or the per-coordinate
#   **optimal** baseline $E[f s^2]/E[s^2]$;
# * **pathwise** $\frac1N\sum_i \nabla_\theta f(\mu + \sigma\epsilon_i)$, which needs a differentiable $f$;
# * **measure-valued**, which writes each derivative of the density as a difference of two distributions and
#   evaluates $f$ at both: $4D = 12$ evaluations per base sample here;
# * the **delta-method control variate**, the second-order Taylor expansion $h$ of $f$ about the mean, whose
#   expectation is exact under a Gaussian: estimate $E[f - c\,h]$ and add $c\,E[h]$ back.
#
# All at $N = 48$ evaluations of $f$ (four measure-valued base samples).

# %%
N_CONT = 48
delta = sfe.control_variates.delta_method()
continuous = {
  "score function": sfe.score_function(),
  "SF + leave-one-out": sfe.score_function(sfe.baselines.leave_one_out()),
  "SF + optimal baseline": sfe.score_function(sfe.baselines.optimal()),
  "measure-valued": sfe.measure_valued(),
  "pathwise": sfe.pathwise(),
  "pathwise + delta method": sfe.with_control_variate(sfe.pathwise(), delta),
}
moments_cont = jax.jit(
  lambda p, k: moments_of_all(continuous, f_cont, normal, p, k, num_samples=N_CONT, num_repeats=NUM_REPEATS)
)(params, jax.random.key(1))
seconds_cont = times_of_all(continuous, f_cont, normal, params, jax.random.key(2), num_samples=N_CONT)
rows_cont = summarise(continuous, moments_cont, exact_cont, seconds_cont)
bar_charts(
  [(rows_cont, "variance", "total variance"), (rows_cont, "work", "variance x seconds per estimate")],
  f"Continuous problem, N = {N_CONT} evaluations of f",
)


# %% [markdown]
# What to read in the chart:
#
# * Every estimator is unbiased: no bias above 5 standard errors.
# * A baseline is the first thing to add to the score function: leave-one-out cuts the variance by more than
#   1.5 times here, at no extra evaluation of $f$ (the optimal baseline does about as well).
# * Pathwise is far below the score function with a baseline (more than 5 times lower), because it uses the
#   derivative of $f$ instead of only its values.
# * The delta-method control variate helps even pathwise: $f$ is close to its quadratic expansion, and the
#   quadratic term $(x_1 - 3)^2$, which dominates the variance, is matched exactly. Pathwise with the delta
#   method is the best estimator here, more than 3 times below pathwise alone.
# * Measure-valued spends 12 evaluations on each base sample; on this $f$ its variance stays above pathwise's.
#
# The time per estimate depends on your machine and its load: the right panel shows how the ranking changes once
# time is accounted for (the delta method computes a Hessian of $f$ and a coefficient on each call), but only
# variances are checked below.


# %%
def clearly_below(rows, a, b, factor):
  """Whether ``a``'s variance is below ``b``'s by more than ``factor``, 3 standard errors apart on each side."""
  upper_a = rows[a]["variance"] + 3 * rows[a]["variance_se"]
  lower_b = rows[b]["variance"] - 3 * rows[b]["variance_se"]
  print(f"{b} / {a}: {rows[b]['variance'] / rows[a]['variance']:.1f}")
  return upper_a * factor < lower_b


assert all(rows_cont[name]["max_abs_z"] < 5 for name in continuous)
assert clearly_below(rows_cont, "SF + leave-one-out", "score function", 1.5)
assert clearly_below(rows_cont, "pathwise", "SF + leave-one-out", 5)
assert clearly_below(rows_cont, "pathwise", "measure-valued", 2)
assert clearly_below(rows_cont, "pathwise + delta method", "pathwise", 3)

# %% [markdown]
# ### Pathwise is not always better
#
# The ranking depends on $f$. For an oscillating cost the derivative $f'$ can vary more than $f$ itself: for
# $f(x) = \cos(2x)$ at $\mu = \sigma = 1$, the exact single-sample variance of the pathwise estimate of
# $\partial/\partial\mu$ is 1.94, against 0.44 for the score function without any baseline (the closed forms
# of Mohamed et al. 2020, Figure 3, in `benchmarks.gaussian.problems`):

# %%
cos2 = gaussian.exact(gaussian.Problem("cos(kx)", 2.0))
print({name: round(v[0], 4) for name, v in cos2.variance.items()})  # single-sample variances of d/dmu
assert round(cos2.variance["PW"][0], 2) == 1.94 and round(cos2.variance["SF"][0], 2) == 0.44

# %% [markdown]
# ## Discrete problems
#
# Pathwise gradients do not exist for discrete samples. We take two problems with exact answers from
# `sfe.enumerate()`, which sums over the whole support:
#
# * **six independent bits** $b_i \sim \mathrm{Bernoulli}(\sigma(\phi_i))$ and
#   $f(b) = (w^\top b - 1.6)^2$, whose bits interact through the square;
# * **three categorical variables** with four classes each (one-hot vectors $x_j$), and
#   $f(x) = (\sum_j x_j^\top v - 2)^2$ with class values $v = (0, 0.5, 1, 1.5)$.
#
# Both supports have 64 points. The distributions use float samples (`dtype=jnp.float32`), because the
# relaxations feed `f` relaxed values in the sample's own encoding.

# %%
W_BITS = jnp.array([1.0, 0.9, 0.7, 0.6, 0.4, 0.3])
params_bits = {"logits": jnp.array([1.0, -0.5, 0.3, -1.2, 0.8, 0.0])}
bernoulli = lambda p: distrax.Bernoulli(logits=p["logits"], dtype=jnp.float32)  # noqa: E731
f_bits = lambda b: (jnp.dot(W_BITS, b) - 1.6) ** 2  # noqa: E731

VALUES = jnp.array([0.0, 0.5, 1.0, 1.5])
params_cat = {"logits": jnp.array([[0.5, 0.0, -0.5, 0.2], [-1.0, 0.3, 0.8, 0.0], [0.0, 0.4, -0.2, -0.6]])}
categorical = lambda p: distrax.OneHotCategorical(logits=p["logits"], dtype=jnp.float32)  # noqa: E731
f_cat = lambda x: (jnp.sum(x @ VALUES) - 2.0) ** 2  # noqa: E731 (x: three one-hot rows, shape (3, 4))

_, exact_bits, _ = sfe.value_and_grad(sfe.enumerate(), f_bits, bernoulli, params_bits, jax.random.key(0))
_, exact_cat, _ = sfe.value_and_grad(sfe.enumerate(), f_cat, categorical, params_cat, jax.random.key(0))
print("exact gradient, bits:", np.round(exact_bits["logits"], 4))
print("exact gradient, categorical:\n", np.round(exact_cat["logits"], 4))


# %% [markdown]
# The candidates, at $N = 6$ evaluations of $f$:
#
# * the **score function**, alone and with a **leave-one-out** baseline;
# * **ARM** and **DisARM**: antithetic pairs of samples sharing their uniforms (DisARM is ARM with the
#   uniforms integrated out, never worse); categorical variables go through stick-breaking;
# * **REBAR** and **RELAX**: the score function with a control variate built on the Gumbel relaxation,
#   trained to minimise the variance as you go (REBAR evaluates $f$ three times per sample: two samples);
# * the **unordered set** estimator: 6 *distinct* values drawn without replacement, with a built-in baseline;
# * **Gumbel-softmax** (temperature 0.5) and **straight-through**: biased, one evaluation and one backward
#   pass of $f$ per sample.
#
# REBAR and RELAX carry their control in their state. We first train it (at fixed `params`: the control only),
# then measure with the trained state; both steps run in the same compiled program as the moments. RELAX's
# control here is a REBAR-like relaxation of `f` with a learned scale and temperature, plus a learned linear
# term in the noisy logits `z`.


# %%
N_DISC = 6


def discrete_estimators(f, soften, z_shape):
  def relax_control(cp, z):
    return cp["scale"] * f(soften(z / jnp.exp(cp["log_t"]))) + jnp.sum(cp["w"] * z) + cp["b"]

  control_params = {"scale": 1.0, "log_t": jnp.log(0.5), "w": jnp.zeros(z_shape), "b": 0.0}
  return {
    "score function": sfe.score_function(),
    "SF + leave-one-out": sfe.score_function(sfe.baselines.leave_one_out()),
    "ARM": sfe.arm(),
    "DisARM": sfe.disarm(),
    "REBAR": sfe.rebar(temperature=0.5, optimizer=optax.adam(1e-2)),
    "RELAX": sfe.relax(relax_control, jax.tree.map(jnp.float32, control_params), optimizer=optax.adam(1e-2)),
    "unordered set": sfe.unordered_set(),
    "Gumbel-softmax (t = 0.5)": sfe.gumbel_softmax(0.5),
    "straight-through": sfe.straight_through(),
  }


def discrete_moments(estimators, f, dist_builder, params, key):
  """Trains the REBAR and RELAX controls at fixed params, then the moments of every estimator (one program)."""

  def train(est, key):
    def step(state, k):
      _, _, state = sfe.value_and_grad(est, f, dist_builder, params, k, num_samples=N_DISC, state=state)
      return state, None

    return jax.lax.scan(step, est.init(params), jax.random.split(key, CONTROL_STEPS))[0]

  @jax.jit
  def run(params, key):
    k_rebar, k_relax, k_moments = jax.random.split(key, 3)
    states = {"REBAR": train(estimators["REBAR"], k_rebar), "RELAX": train(estimators["RELAX"], k_relax)}
    moments = moments_of_all(
      estimators, f, dist_builder, params, k_moments, num_samples=N_DISC, num_repeats=NUM_REPEATS, states=states
    )
    return states, moments

  return run(params, key)


estimators_bits = discrete_estimators(f_bits, jax.nn.sigmoid, params_bits["logits"].shape)
states_bits, moments_bits = discrete_moments(estimators_bits, f_bits, bernoulli, params_bits, jax.random.key(10))
seconds_bits = times_of_all(
  estimators_bits, f_bits, bernoulli, params_bits, jax.random.key(11), num_samples=N_DISC, states=states_bits
)
print("Six bits:")
rows_bits = summarise(estimators_bits, moments_bits, exact_bits, seconds_bits)

estimators_cat = discrete_estimators(f_cat, lambda z: jax.nn.softmax(z, axis=-1), params_cat["logits"].shape)
states_cat, moments_cat = discrete_moments(estimators_cat, f_cat, categorical, params_cat, jax.random.key(20))
print("Three categorical variables:")
rows_cat = summarise(estimators_cat, moments_cat, exact_cat)

bar_charts(
  [
    (rows_bits, "variance", "six bits: total variance"),
    (rows_bits, "work", "six bits: variance x seconds"),
    (rows_cat, "variance", "three categoricals: total variance"),
  ],
  f"Discrete problems, N = {N_DISC} evaluations of f",
)

# %% [markdown]
# What the numbers say:
#
# * Every unbiased estimator is within 5 standard errors of the exact gradient, on both problems; the two
#   relaxations are not (Gumbel-softmax and straight-through: bias of more than 5 standard errors). Their low
#   variance is the variance of an estimate of something else.
# * Leave-one-out is again the cheap first step from the plain score function (a smaller gain than on the
#   continuous problem: a constant baseline removes the part of the score function's variance that comes from
#   the level of $f$, as notebook 1 shows, and that part is a smaller share here).
# * DisARM is never worse than ARM (it is ARM with the uniforms integrated out).
# * RELAX, once its control is trained, has the lowest variance of the unbiased estimators on both problems.
# * REBAR spends three evaluations per sample, so it averages only two samples here.
# * The unordered set estimator sees 6 distinct values out of 64; its cost grows like $2^k$ with the set size
#   $k$ (a dynamic programme over the subsets of the set) and with the support, which it enumerates: it is for
#   small supports, where `sfe.enumerate()` (64 evaluations here) is the other option.
# * Times per estimate are all of the same order at this size; on a loaded machine their noise is larger than
#   their differences, so read the work-normalised panel as a rough guide.

# %%
for rows in (rows_bits, rows_cat):
  for name, row in rows.items():
    biased = name in ("Gumbel-softmax (t = 0.5)", "straight-through")
    assert (row["max_abs_z"] > 5) if biased else (row["max_abs_z"] < 5), (name, row["max_abs_z"])
  assert clearly_below(rows, "SF + leave-one-out", "score function", 1.0)
  assert clearly_below(rows, "RELAX", "SF + leave-one-out", 1.0)
  assert rows["DisARM"]["variance"] < rows["ARM"]["variance"] + 3 * rows["ARM"]["variance_se"]
  unbiased = [name for name in rows if name not in ("Gumbel-softmax (t = 0.5)", "straight-through", "RELAX")]
  assert all(clearly_below(rows, "RELAX", name, 1.0) for name in unbiased)
gain = {
  name: rows["score function"]["variance"] / rows["SF + leave-one-out"]["variance"]
  for name, rows in (("continuous", rows_cont), ("bits", rows_bits), ("categorical", rows_cat))
}
print("leave-one-out's gain:", {name: round(g, 2) for name, g in gain.items()})
assert gain["continuous"] > 1.3 * max(gain["bits"], gain["categorical"])

# %% [markdown]
# ## The relaxations: bias against temperature
#
# Gumbel-softmax replaces the step $b = 1[\phi + L > 0]$ (logistic noise $L$) by $\sigma((\phi + L)/t)$ and
# differentiates through it: it estimates the gradient of the *relaxed* objective $E[f(s)]$, not of
# $E[f(b)]$. The temperature $t$ trades bias for variance: as $t \to 0$ the relaxation approaches the step
# (the bias shrinks) and its slope steepens (the variance grows). The straight-through Gumbel
# variant evaluates $f$ at the hard sample and differentiates through the relaxed one; plain straight-through
# has no temperature at all. The temperature can be a traced JAX scalar, so one compiled program measures them
# all (a `vmap` over temperatures).

# %%
TEMPERATURES = np.geomspace(0.05, 5.0, NUM_TEMPERATURES)


@jax.jit
def relaxation_moments(temperatures, key):
  def at(t):
    moments = {
      "Gumbel-softmax": sfe.diagnostics.gradient_moments(
        sfe.gumbel_softmax(t), f_bits, bernoulli, params_bits, key, num_samples=N_DISC, num_repeats=NUM_REPEATS
      ),
      "straight-through Gumbel": sfe.diagnostics.gradient_moments(
        sfe.gumbel_softmax(t, straight_through=True),
        f_bits,
        bernoulli,
        params_bits,
        key,
        num_samples=N_DISC,
        num_repeats=NUM_REPEATS,
      ),
    }
    return {name: (m.mean, m.std_error, m.variance, m.variance_std_error) for name, m in moments.items()}

  return jax.vmap(at)(temperatures)


def bias_and_variance(mean, std_error, variance, variance_se):
  """The norm of the bias relative to the exact gradient's, the norm of its standard errors, total variance."""
  scale = float(jnp.linalg.norm(exact_bits["logits"]))
  bias = np.linalg.norm(mean["logits"] - exact_bits["logits"], axis=-1) / scale
  noise = np.linalg.norm(std_error["logits"], axis=-1) / scale
  return bias, noise, np.sum(variance["logits"], axis=-1), np.sum(variance_se["logits"], axis=-1)


relaxed = {
  name: bias_and_variance(*values)
  for name, values in relaxation_moments(jnp.asarray(TEMPERATURES, jnp.float32), jax.random.key(30)).items()
}
m_st = moments_bits["straight-through"]
plain_st = bias_and_variance(
  *jax.tree.map(lambda x: x[None], (m_st.mean, m_st.std_error, m_st.variance, m_st.variance_std_error))
)

fig, (ax_bias, ax_var) = plt.subplots(1, 2, figsize=(11, 3.8))
for (name, (bias, noise, variance, variance_se)), color in zip(relaxed.items(), ("tab:blue", "tab:orange")):
  ax_bias.errorbar(TEMPERATURES, bias, yerr=2 * noise, marker="o", color=color, label=name)
  ax_var.errorbar(TEMPERATURES, variance, yerr=2 * variance_se, marker="o", color=color, label=name)
ax_bias.axhline(plain_st[0][0], color="tab:green", ls="--", label="straight-through (no temperature)")
ax_var.axhline(plain_st[2][0], color="tab:green", ls="--", label="straight-through (no temperature)")
ax_var.axhline(rows_bits["DisARM"]["variance"], color="gray", ls=":", label="DisARM (unbiased)")
for ax, label in ((ax_bias, "|bias| / |exact gradient|"), (ax_var, "total variance")):
  ax.set_xscale("log")
  ax.set_yscale("log")
  ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
  ax.set_xlabel("temperature t")
  ax.set_ylabel(label)
  ax.grid(alpha=0.3)
ax_bias.legend(fontsize=8)
ax_var.legend(fontsize=8)
fig.suptitle(f"Relaxations on the six bits, N = {N_DISC} (error bars: 2 standard errors)")
fig.tight_layout()
plt.show()

# %%
gs_bias, gs_noise, gs_variance, gs_variance_se = relaxed["Gumbel-softmax"]
st_bias, st_noise, _, _ = relaxed["straight-through Gumbel"]
print("Gumbel-softmax relative bias:", np.round(gs_bias, 3))
print("Gumbel-softmax total variance:", np.round(gs_variance, 4))
print("straight-through Gumbel relative bias:", np.round(st_bias, 3))
print("noise level of the bias (1 standard error):", np.round(gs_noise, 4))
print(f"bias ratio t = {TEMPERATURES[-1]:g} / t = {TEMPERATURES[0]:g}: {gs_bias[-1] / gs_bias[0]:.0f}")
print(f"variance ratio t = {TEMPERATURES[0]:g} / t = {TEMPERATURES[-1]:g}: {gs_variance[0] / gs_variance[-1]:.0f}")
assert gs_bias[-1] > 5 * gs_bias[0] and gs_bias[-1] > 5 * gs_noise[-1]
assert gs_variance[0] > 100 * gs_variance[-1]
assert st_bias[-1] > 5 * st_noise[-1]
assert gs_variance[0] > rows_bits["DisARM"]["variance"]

# %% [markdown]
# The trade-off is plain: from $t = 5$ down to $t = 0.05$ the bias of Gumbel-softmax falls by more than 5 times (at
# $t = 0.05$ it is at the level of the Monte Carlo noise, so this is a bound) and its variance rises by more than
# 100 times; the straight-through Gumbel variant is biased at $t = 5$ too, and plain straight-through sits at a
# fixed bias (its gradient treats $f$ as linear in each bit). At no temperature is a relaxation both unbiased and
# low-variance: at the lowest temperature the variance is above that of the unbiased DisARM (the dotted line).

# %% [markdown]
# ## Samplers: how the base randomness is drawn
#
# An estimator that averages independent per-sample terms (the score function without a baseline, pathwise,
# measure-valued) stays unbiased however its $N$ points are placed, as long as each point is marginally right.
# The `sampler=` keyword of `sfe.value_and_grad`, `sfe.expectation` and the diagnostics places them:
#
# * `"iid"`: independent draws, variance $\propto N^{-1}$;
# * `"antithetic"`: pairs $u, 1 - u$, i.e. $x$ and its reflection about the mean: exact for the parts of the
#   integrand that are odd about the mean, twice the variance for the even parts;
# * `"stratified"`: a Latin hypercube, one point in each of the $N$ strata of every coordinate;
# * `"rqmc"`: scrambled Sobol points, whose variance decays like $N^{-2}$ to $N^{-3}$ for smooth integrands in
#   low dimension.
#
# Here is the pathwise estimator of the continuous problem under each sampler, against $N$ (powers of two,
# where Sobol points are balanced), with the slope of $\log \mathrm{Var}$ against $\log N$ fitted for each.

# %%
SAMPLERS = ("iid", "antithetic", "stratified", "rqmc")


@jax.jit
def sampler_study(key):
  variances = {}
  for sampler in SAMPLERS:
    for n in SAMPLER_SIZES:
      m = sfe.diagnostics.gradient_moments(
        sfe.pathwise(),
        f_cont,
        normal,
        params,
        jax.random.fold_in(key, n),
        num_samples=n,
        num_repeats=SAMPLER_REPEATS,
        sampler=sampler,
      )
      variances[sampler, n] = (m.variance, m.variance_std_error)
  return variances


by_sampler = sampler_study(jax.random.key(40))
sizes = np.array(SAMPLER_SIZES)
curves, slopes = {}, {}
for sampler in SAMPLERS:
  curves[sampler] = np.array([[total(by_sampler[sampler, n][0]), total(by_sampler[sampler, n][1])] for n in sizes])
  slopes[sampler] = np.polyfit(np.log(sizes), np.log(curves[sampler][:, 0]), 1)

fig, ax = plt.subplots(figsize=(6.5, 4.2))
for sampler, color in zip(SAMPLERS, ("tab:blue", "tab:orange", "tab:green", "tab:red")):
  variance, variance_se = curves[sampler].T
  ax.errorbar(sizes, variance, yerr=2 * variance_se, fmt="o", color=color)
  slope, intercept = slopes[sampler]
  ax.plot(sizes, np.exp(intercept) * sizes**slope, color=color, label=f"{sampler}: slope {slope:.2f}")
ax.set_xscale("log", base=2)
ax.set_yscale("log")
ax.set_xlabel("N (evaluations of f)")
ax.set_ylabel("total variance of the pathwise gradient")
ax.set_title("Samplers on the continuous problem")
ax.grid(alpha=0.3)
ax.legend()
plt.show()

ratio = curves["iid"][-1, 0] / curves["rqmc"][-1, 0]
print({sampler: round(float(slope), 2) for sampler, (slope, _) in slopes.items()})
print(f"iid / rqmc variance at N = {sizes[-1]}: {ratio:.0f}")

# %% [markdown]
# The i.i.d. slope is $-1$, as it must be. Stratified sampling and RQMC decay faster (slopes below $-1.5$):
# $f$ is smooth and has only three coordinates, the case they are made for, and at the largest $N$ RQMC's
# variance is more than 10 times below i.i.d.'s. Antithetic pairs cancel the odd part of the integrand (the
# pathwise term $2(x_1 - 3)$ of the quadratic is odd about the mean, so its $\mu_1$ derivative becomes exact up
# to rounding) but double the even part: they move the constant, not the slope. Per unit of compute, RQMC costs
# about as much as i.i.d. sampling (the README's sampler section measures it), so on smooth, low-dimensional
# problems it is close to free variance reduction. It does not apply to estimators that couple their samples
# (baselines estimated from the batch, estimated coefficients) or draw their own randomness (ARM, DisARM, the
# relaxations, REBAR, RELAX): these refuse any sampler but `"iid"` with a clear error.

# %%
assert -1.3 < slopes["iid"][0] < -0.7 and -1.3 < slopes["antithetic"][0] < -0.7
assert slopes["stratified"][0] < -1.5 and slopes["rqmc"][0] < -1.5
assert ratio > 10
antithetic_mu1 = by_sampler["antithetic", sizes[-1]][0]["loc"][0]  # d/dmu_1: the odd term 2 (x_1 - 3)
print(f"antithetic variance of d/dmu_1: {antithetic_mu1:.1e} (iid: {by_sampler['iid', sizes[-1]][0]['loc'][0]:.1e})")
assert antithetic_mu1 < 1e-4 * by_sampler["iid", sizes[-1]][0]["loc"][0]
try:
  sfe.value_and_grad(sfe.disarm(), f_bits, bernoulli, params_bits, jax.random.key(0), num_samples=6, sampler="rqmc")
except ValueError as error:
  print(str(error)[:100], "...")

# %% [markdown]
# ## A decision table
#
# | your problem | use | measured here |
# | --- | --- | --- |
# | continuous, $f$ differentiable | `sfe.pathwise()` | > 5x below SF + leave-one-out, > 2x below MVD |
# | ... and $f$ nearly quadratic | `with_control_variate(pathwise(), delta_method())` | > 3x below pathwise |
# | ... and $f$ oscillating | the score function with a baseline may win | $\cos(2x)$: 0.44 (SF) vs 1.94 (PW) |
# | ... smooth, few coordinates | `sampler="rqmc"` | slope < -1.5; > 10x below i.i.d. |
# | $f$ a black box | `score_function(baselines.leave_one_out())` | below the plain SF on all 3 problems |
# | discrete, small support | `sfe.enumerate()` | exact |
# | discrete, black-box $f$ | leave-one-out, DisARM (bits), RELAX | RELAX below leave-one-out on both |
# | discrete, bias acceptable | `gumbel_softmax(t)`, `straight_through()` | bias > 5 standard errors on both |
#
# In words: use the derivative of $f$ when you have it (pathwise), and a control variate when a cheap
# approximation of $f$ with a known expectation exists; but check, because an oscillating $f$ can make
# pathwise worse than the score function. Without derivatives, never use the score function without a baseline.
# For discrete variables, enumerate small supports exactly; otherwise leave-one-out and DisARM are cheap and
# need nothing, and RELAX pays back the training of its control. The relaxations give the lowest variance, of a
# biased estimate: check the bias with `sfe.enumerate()` on a small instance of your problem, and keep in mind
# that Gumbel-softmax's bias grows with the temperature and its variance as the temperature falls.
#
# Time per estimate decides between estimators of similar variance: measure it on your own problem and
# machine with `sfe.diagnostics.evaluate`, which reports the work-normalised variance directly. The claims of
# the table, checked once more against the numbers above:

# %%
table_claims = {
  "pathwise vs SF + leave-one-out": clearly_below(rows_cont, "pathwise", "SF + leave-one-out", 5),
  "pathwise vs measure-valued": clearly_below(rows_cont, "pathwise", "measure-valued", 2),
  "delta method on pathwise": clearly_below(rows_cont, "pathwise + delta method", "pathwise", 3),
  "pathwise loses on cos(2x)": cos2.variance["PW"][0] > cos2.variance["SF"][0],
  "RQMC slope": slopes["rqmc"][0] < -1.5 and ratio > 10,
  "leave-one-out helps": all(
    clearly_below(rows, "SF + leave-one-out", "score function", 1.0) for rows in (rows_cont, rows_bits, rows_cat)
  ),
  "RELAX below leave-one-out": all(
    clearly_below(rows, "RELAX", "SF + leave-one-out", 1.0) for rows in (rows_bits, rows_cat)
  ),
  "relaxations biased": all(
    rows[name]["max_abs_z"] > 5
    for rows in (rows_bits, rows_cat)
    for name in ("Gumbel-softmax (t = 0.5)", "straight-through")
  ),
}
print(table_claims)
assert all(table_claims.values())

# %% [markdown]
# ## References
#
# * Mohamed, Rosca, Figurnov and Mnih, *Monte Carlo gradient estimation in machine learning*, JMLR 2020.
# * Williams, *Simple statistical gradient-following algorithms for connectionist reinforcement learning*, 1992.
# * Glynn and Whitt, *The asymptotic efficiency of simulation estimators*, Operations Research 1992.
# * Paisley, Blei and Jordan, *Variational Bayesian inference with stochastic search*, ICML 2012.
# * Pflug, *Sampling derivatives of probabilities*, Computing 1989.
# * Yin and Zhou, *ARM: augment-REINFORCE-merge gradient for stochastic binary networks*, ICLR 2019.
# * Dong, Mnih and Tucker, *DisARM: an antithetic gradient estimator for binary latent variables*, NeurIPS 2020.
# * Tucker, Mnih, Maddison, Lawson and Sohl-Dickstein, *REBAR*, NeurIPS 2017.
# * Grathwohl, Choi, Wu, Roeder and Duvenaud, *Backpropagation through the void*, ICLR 2018.
# * Kool, van Hoof and Welling, *Estimating gradients for discrete random variables by sampling without
#   replacement*, ICLR 2020.
# * Maddison, Mnih and Teh, *The Concrete distribution*, ICLR 2017; Jang, Gu and Poole, *Categorical
#   reparameterization with Gumbel-softmax*, ICLR 2017.
# * Bengio, Léonard and Courville, *Estimating or propagating gradients through stochastic neurons*, 2013.
# * McKay, Beckman and Conover, *A comparison of three methods for selecting values of input variables*, 1979;
#   Owen, *Scrambled net variance for integrals of smooth functions*, Annals of Statistics 1997.
