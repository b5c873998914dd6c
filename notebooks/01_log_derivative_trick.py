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
# # The log-derivative trick
#
# Welcome to sfe_jax. This first tutorial is about the one question the whole library answers: how do you
# compute the gradient of an expectation,
#
# $$\nabla_\theta F(\theta), \qquad F(\theta) = \mathbb{E}_{x \sim p_\theta}[f(x)],$$
#
# when all you can do is draw samples $x$ from $p_\theta$ and evaluate $f$ on them? This is the problem behind
# policy gradients in reinforcement learning, variational inference, discrete latent-variable models and
# black-box optimisation. You cannot simply differentiate a Monte Carlo average $\frac1N \sum_i f(x_i)$: the
# parameters $\theta$ only enter through *how* the samples were drawn.
#
# In this notebook you will
#
# 1. derive the **log-derivative trick** $\nabla_\theta \mathbb{E}_{p_\theta}[f] =
#    \mathbb{E}_{p_\theta}[f\, \nabla_\theta \log p_\theta]$ step by step;
# 2. turn it into a Monte Carlo estimate (the **score-function** or REINFORCE estimator) and run it with
#    sfe_jax on a one-dimensional Gaussian whose gradient we know exactly;
# 3. see why its variance is often high, and how **baselines** reduce it;
# 4. reproduce the Gaussian study of Mohamed, Rosca, Figurnov and Mnih (2020): the measured variance of four
#    estimators (score function, pathwise, measure-valued, and a control variate) against their exact values.
#
# Every exact value comes from the closed forms in the project's `benchmarks.gaussian.problems` module, and
# every measured number is compared with it, within its standard error.

# %%
import os

QUICK = os.environ.get("SFE_JAX_NOTEBOOK_QUICK", "0") == "1"  # the test suite runs the quick settings

# %%
import functools

import distrax
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import sfe_jax as sfe
from benchmarks.gaussian import problems

# Independent single-sample estimates drawn to measure a variance (more: smaller standard errors).
NUM_REPEATS = 20_000 if QUICK else 200_000
# Repeats of the N-sample estimates of the baseline section.
BASELINE_REPEATS = 2_000 if QUICK else 20_000
# Points on each exact curve of the Gaussian study.
CURVE_POINTS = 8 if QUICK else 40
NUM_SE = 5  # measured values must be within this many standard errors of the exact ones

# %% [markdown]
# ## Deriving the identity
#
# Write the expectation as an integral (a sum, for a discrete $x$) and differentiate it:
#
# $$
# \nabla_\theta \mathbb{E}_{p_\theta}[f(x)]
# = \nabla_\theta \int f(x)\, p_\theta(x)\, dx
# \overset{(1)}{=} \int f(x)\, \nabla_\theta p_\theta(x)\, dx
# \overset{(2)}{=} \int f(x)\, p_\theta(x)\, \nabla_\theta \log p_\theta(x)\, dx
# = \mathbb{E}_{p_\theta}\big[f(x)\, \nabla_\theta \log p_\theta(x)\big].
# $$
#
# * Step (1) **differentiates under the integral sign**. $f$ does not depend on $\theta$, so the derivative only
#   acts on the density. This exchange is allowed when $p_\theta$ is differentiable in $\theta$ and
#   $|f(x)\, \nabla_\theta p_\theta(x)|$ is bounded by an integrable function near $\theta$ (dominated
#   convergence); it holds for every problem in this notebook.
# * Step (2) is the **log-derivative identity**: the chain rule gives
#   $\nabla_\theta \log p_\theta(x) = \nabla_\theta p_\theta(x) / p_\theta(x)$, that is
#   $p_\theta\, \nabla_\theta \log p_\theta = \nabla_\theta p_\theta$ wherever $p_\theta(x) > 0$.
#
# The last integral is again an expectation under $p_\theta$, which we *can* estimate from samples. The vector
# $s_\theta(x) = \nabla_\theta \log p_\theta(x)$ is called the **score**. Notice what the identity does *not*
# need: $f$ is only evaluated, never differentiated, so it may be discontinuous, a black box, or defined on a
# discrete $x$.
#
# The score has mean zero, by the same two steps run backwards:
# $\mathbb{E}_{p_\theta}[s_\theta] = \int \nabla_\theta p_\theta = \nabla_\theta \int p_\theta =
# \nabla_\theta 1 = 0$. Keep this in mind: it is what makes baselines work.
#
# ### The Gaussian score
#
# Our running example is $x \sim N(\mu, \sigma^2)$ with $\theta = (\mu, \sigma)$. Writing $x = \mu + \sigma
# \epsilon$ with $\epsilon \sim N(0, 1)$, the log-density
# $\log p = -\frac{(x - \mu)^2}{2\sigma^2} - \log \sigma - \frac12 \log 2\pi$ has the score
#
# $$s_\mu = \frac{x - \mu}{\sigma^2} = \frac{\epsilon}{\sigma}, \qquad
# s_\sigma = \frac{(x - \mu)^2}{\sigma^3} - \frac{1}{\sigma} = \frac{\epsilon^2 - 1}{\sigma}.$$
#
# In sfe_jax a distribution is described by a `dist_builder`, a function from a pytree of parameters to a
# [distrax](https://github.com/google-deepmind/distrax) distribution. `jax.grad` of its `log_prob` is the score,
# and it matches the formulas above:

# %%
MU, SIGMA = 1.0, 1.0
params = {"loc": jnp.float32(MU), "scale": jnp.float32(SIGMA)}


def dist_builder(p):
  return distrax.Normal(p["loc"], p["scale"])


def log_prob(p, x):
  return dist_builder(p).log_prob(x)


samples = dist_builder(params).sample(seed=jax.random.key(0), sample_shape=100_000)
scores = jax.vmap(jax.grad(log_prob), in_axes=(None, 0))(params, samples)  # one score per sample
eps = (samples - MU) / SIGMA
assert np.allclose(scores["loc"], eps / SIGMA, atol=1e-4)
assert np.allclose(scores["scale"], (eps**2 - 1) / SIGMA, atol=1e-4)

# The score has mean zero: its average over the samples is within 5 standard errors of 0.
for name, s in scores.items():
  s = np.asarray(s, np.float64)
  mean, se = s.mean(), s.std() / np.sqrt(s.size)
  print(f"E[s_{name}] = {mean:+.4f} +- {se:.4f}")
  assert abs(mean) < NUM_SE * se

# %% [markdown]
# ## The Monte Carlo estimate
#
# Draw $x_1, \dots, x_N$ independently from $p_\theta$ and average:
#
# $$\hat g_N = \frac1N \sum_{i=1}^N f(x_i)\, \nabla_\theta \log p_\theta(x_i),
# \qquad \mathbb{E}[\hat g_N] = \nabla_\theta F, \qquad
# \mathrm{Var}[\hat g_N] = \frac{\mathrm{Var}[f(x)\, s_\theta(x)]}{N}.$$
#
# It is unbiased, and its error shrinks like $1/\sqrt{N}$ at a rate set by the **single-sample variance**
# $\mathrm{Var}[f\, s_\theta]$. This is the score-function estimator, also known as REINFORCE (Williams 1992).
#
# Let us estimate the gradient of $F(\mu, \sigma) = \mathbb{E}_{N(\mu, \sigma^2)}[(x - k)^2]$ with $k = 3$ at
# $\mu = \sigma = 1$, one of the cost functions of Mohamed et al. (2020). With $a = \mu - k$ it has the closed
# form $F = a^2 + \sigma^2$, so $\partial F / \partial \mu = 2a = -4$ and $\partial F / \partial \sigma =
# 2\sigma = 2$. The `problems` module of the benchmarks provides the cost function and these exact values.
#
# `sfe.value_and_grad` takes an estimator, `f` (a function of **one** sample; the library vmaps it), the
# `dist_builder`, the parameters, an explicit PRNG key and the number of samples. It returns the Monte Carlo
# estimate of $F$, the gradient estimate (with the structure of `params`) and the estimator's state (empty here).

# %%
problem = problems.Problem("(x-k)^2", 3.0)
f = problems.cost(problem)  # f(x) = (x - 3)^2, for one sample
ref = problems.exact(problem, MU, SIGMA)  # exact value, gradient and single-sample variances
print(f"exact: F = {ref.value}, dF/dmu = {ref.grad[0]}, dF/dsigma = {ref.grad[1]}")
assert (ref.value, ref.grad) == (5.0, (-4.0, 2.0))

NUM_SAMPLES = 1_000
value, grads, state = sfe.value_and_grad(
  sfe.score_function(), f, dist_builder, params, jax.random.key(1), num_samples=NUM_SAMPLES
)
print(
  f"estimate with N = {NUM_SAMPLES}: F ~ {value:.3f}, dF/dmu ~ {grads['loc']:.3f}, dF/dsigma ~ {grads['scale']:.3f}"
)

# The estimate is within a few exact standard errors, sqrt(Var[f s] / N), of the exact gradient.
for i, leaf in enumerate(("loc", "scale")):
  std_error = np.sqrt(ref.variance["SF"][i] / NUM_SAMPLES)
  assert abs(float(grads[leaf]) - ref.grad[i]) < NUM_SE * std_error

# %% [markdown]
# How fast does the estimate settle? `sfe.diagnostics.repeated_estimates` draws many independent estimates in
# one vmapped call; with `num_samples=1` each is a single-sample estimate $f(x_i)\, s_\theta(x_i)$, and their
# running mean is the $N$-sample estimate for every $N$ at once. For comparison we also run
# `sfe.pathwise()`, the reparameterisation estimator: it writes $x = \mu + \sigma \epsilon$ and
# differentiates $f$ itself, $\hat g = f'(x)\, \partial x / \partial \theta$ (more on it in the last section).
# The shaded bands are $\pm 2$ exact standard errors, $2\sqrt{\mathrm{Var}/N}$, from the closed forms.


# %%
@jax.jit  # one compiled function for both estimators
def single_sample_estimates(key):
  estimators = {"SF": sfe.score_function(), "PW": sfe.pathwise()}
  return {
    label: sfe.diagnostics.repeated_estimates(
      estimator, f, dist_builder, params, key, num_samples=1, num_repeats=NUM_REPEATS
    )[1]["loc"]  # (values, grads): the d/dmu estimates, shape (NUM_REPEATS,)
    for label, estimator in estimators.items()
  }


convergence = {}
for label, g in single_sample_estimates(jax.random.key(2)).items():
  g = np.asarray(g, np.float64)
  convergence[label] = np.cumsum(g) / np.arange(1, g.size + 1)  # the N-sample estimate, N = 1, 2, ...

n = np.unique(np.geomspace(1, NUM_REPEATS, 200).astype(int))
fig, ax = plt.subplots(figsize=(6.5, 3.8))
for label, color, name in (("SF", "C0", "score function"), ("PW", "C1", "pathwise")):
  band = 2 * np.sqrt(ref.variance[label][0] / n)
  ax.fill_between(n, ref.grad[0] - band, ref.grad[0] + band, color=color, alpha=0.2)
  ax.plot(n, convergence[label][n - 1], color=color, label=f"{name} (single-sample Var = {ref.variance[label][0]:g})")
ax.axhline(ref.grad[0], color="k", lw=0.8, ls="--", label=r"exact $\partial F/\partial\mu = -4$")
ax.set(xscale="log", xlabel="number of samples N", ylabel=r"estimate of $\partial F/\partial\mu$", ylim=(-12, 4))
ax.set_title(r"Running estimates of $\nabla_\mu\, E[(x-3)^2]$, $x \sim N(1, 1)$")
ax.legend(loc="lower right", fontsize=8)
plt.show()

for label in ("SF", "PW"):
  final_se = np.sqrt(ref.variance[label][0] / NUM_REPEATS)
  print(f"{label}: estimate with N = {NUM_REPEATS}: {convergence[label][-1]:.4f} (exact -4, se {final_se:.4f})")
  assert abs(convergence[label][-1] - ref.grad[0]) < NUM_SE * final_se

# %% [markdown]
# Both estimates converge to $-4$, but the score function's band is much wider: for the same accuracy it needs
# many more samples. Why?
#
# ## Why the variance is high
#
# The single-sample variance is $\mathrm{Var}[f\, s] = \mathbb{E}[f^2 s^2] - (\nabla_\theta F)^2$. The score
# function only sees the *values* of $f$, each multiplied by a score that is positive or negative at random; the
# gradient emerges from cancellations between samples. Pathwise sees the *slope* $f'$. For our quadratic the
# closed forms are
#
# $$\mathrm{Var}_{SF,\mu} = \frac{a^4}{\sigma^2} + 14 a^2 + 15 \sigma^2 = 87, \qquad
# \mathrm{Var}_{PW,\mu} = 4 \sigma^2 = 4,$$
#
# a ratio of 21.75: to match the pathwise accuracy, the score function needs about 22 times more samples here.
#
# A telling symptom: the score-function variance depends on the *level* of $f$, not only on how it varies.
# Replace $f$ by $f + c$ for a constant $c$. The gradient does not change, and neither does the estimator's mean,
# because $\mathbb{E}[c\, s] = c\, \mathbb{E}[s] = 0$. But the variance does:
#
# $$\mathrm{Var}[(f + c)\, s] = \mathrm{Var}[f s] + 2c\, \mathbb{E}[f s^2] + c^2\, \mathbb{E}[s^2]
# = \mathrm{Var}_{SF^*} + \mathbb{E}[s^2]\,(c + b^*)^2, \qquad b^* = \frac{\mathbb{E}[f s^2]}{\mathbb{E}[s^2]},$$
#
# a parabola in $c$ whose minimum, $\mathrm{Var}_{SF^*} = \mathrm{Var}_{SF} - \mathbb{E}[f s^2]^2 /
# \mathbb{E}[s^2]$, is reached at $c = -b^*$. Here $\mathbb{E}[s_\mu^2] = 1/\sigma^2$ (the Fisher information),
# and the closed forms give $\mathrm{Var}_{SF^*,\mu} = 38$, so $b^* = \sqrt{\sigma^2 (87 - 38)} = 7$ (positive,
# as $f \ge 0$). A shift of $c = 20$ multiplies the variance by more than 8 (from 87 to 767), and $c = -7$ more
# than halves it. (The pathwise estimator is unaffected: $f + c$ has the same slope.)
#
# We check this by measurement: for every shift $c$, `NUM_REPEATS` single-sample estimates, the same random
# numbers for every $c$, in one jitted and vmapped call; `sfe.diagnostics.variance_and_std_error` gives each
# variance with its standard error.

# %%
var_sf, var_sf_opt = ref.variance["SF"][0], ref.variance["SF*"][0]
fisher = {"loc": 1 / SIGMA**2, "scale": 2 / SIGMA**2}  # E[s^2] for mu and sigma
b_star = np.sqrt((var_sf - var_sf_opt) / fisher["loc"])  # E[f s^2] / E[s^2] > 0 since f >= 0


def shifted_variance(c):
  """Exact single-sample variance of the score function for f + c (d/dmu)."""
  return var_sf_opt + fisher["loc"] * (c + b_star) ** 2


assert (ref.variance["SF"][0], ref.variance["PW"][0], ref.variance["SF*"][0]) == (87.0, 4.0, 38.0)
assert ref.variance["SF"][0] / ref.variance["PW"][0] == 21.75
assert np.isclose(b_star, 7.0, rtol=1e-12)
assert np.isclose(shifted_variance(20.0), 767.0) and shifted_variance(20.0) > 8 * var_sf
assert shifted_variance(-7.0) < var_sf / 2


@jax.jit
def shifted_estimates(shifts, key):
  def one_shift(c):
    _, g = sfe.diagnostics.repeated_estimates(
      sfe.score_function(), lambda x: f(x) + c, dist_builder, params, key, num_samples=1, num_repeats=NUM_REPEATS
    )
    return g["loc"]

  return jax.vmap(one_shift)(shifts)  # shape (num_shifts, NUM_REPEATS)


shifts = np.linspace(-20.0, 20.0, 9)
estimates = np.asarray(shifted_estimates(jnp.asarray(shifts, jnp.float32), jax.random.key(3)), np.float64)
means = estimates.mean(axis=1)
mean_se = estimates.std(axis=1) / np.sqrt(NUM_REPEATS)
variances, variance_se = sfe.diagnostics.variance_and_std_error(estimates, axis=1)

fine = np.linspace(-21, 21, 200)
fig, (ax_mean, ax_var) = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
ax_mean.errorbar(shifts, means, yerr=2 * mean_se, fmt="o", color="C0", capsize=3, label="measured (±2 se)")
ax_mean.axhline(ref.grad[0], color="k", ls="--", lw=0.8, label="exact gradient")
ax_mean.set(xlabel="shift c", ylabel=r"mean of the $\mu$-gradient estimate", title="The mean does not move")
ax_mean.legend(fontsize=8)
ax_var.plot(fine, shifted_variance(fine), "k--", lw=0.8, label="exact")
ax_var.errorbar(shifts, variances, yerr=2 * variance_se, fmt="o", color="C0", capsize=3, label="measured (±2 se)")
ax_var.set(xlabel="shift c", ylabel="single-sample variance", title=r"The variance is a parabola in $c$")
ax_var.legend(fontsize=8)
fig.suptitle(r"Score function for $f(x) + c$, $f = (x-3)^2$, $x \sim N(1, 1)$")
plt.show()

mean_z = (means - ref.grad[0]) / mean_se
variance_z = (variances - shifted_variance(shifts)) / variance_se
print(f"largest |z| of the means: {np.abs(mean_z).max():.2f}, of the variances: {np.abs(variance_z).max():.2f}")
assert np.all(np.abs(mean_z) < NUM_SE) and np.all(np.abs(variance_z) < NUM_SE)

# %% [markdown]
# Every mean lies on the exact gradient within its error bar, and every variance on the parabola. (The means
# drift slightly and linearly with $c$ because every shift reuses the same samples: the drift is $c$ times the
# sample average of the score, which is zero only on average.)
#
# ## Baselines
#
# Shifting $f$ by $-b$ is exactly what a **baseline** does: the estimator becomes
#
# $$\hat g_N = \frac1N \sum_{i=1}^N \big(f(x_i) - b_i\big)\, \nabla_\theta \log p_\theta(x_i).$$
#
# It stays unbiased whenever $b_i$ does not depend on the sample $x_i$ it multiplies, since then
# $\mathbb{E}[b_i\, s(x_i)] = \mathbb{E}[b_i]\, \mathbb{E}[s(x_i)] = 0$. The parabola above tells us what to aim
# for: $b$ close to $b^*$. Three baselines of `sfe.baselines`:
#
# * `constant(b)`: a fixed number, for instance a guess of $\mathbb{E}[f]$. Its single-sample variance is
#   $\mathrm{Var}_{SF^*} + \mathbb{E}[s^2] (b - b^*)^2$.
# * `leave_one_out()`: $b_i = \frac{1}{N-1} \sum_{j \ne i} f(x_j)$, the mean of the *other* samples (RLOO,
#   Kool et al. 2019). No tuning, and independent of $x_i$. As $N$ grows, $b_i \to \mathbb{E}[f] = F$, so to
#   first order in $1/N$ it behaves like `constant(F)`: good, but $F \neq b^*$ in general.
# * `optimal()`: estimates $b^* = \mathbb{E}[f s^2] / \mathbb{E}[s^2]$ per parameter coordinate, again from the
#   other samples only. Its variance tends to the minimum $\mathrm{Var}_{SF^*}$, plus an excess of order $1/N$:
#   the price of estimating $b^*$ (`problems.optimal_baseline_excess` gives its first-order value).
#
# We measure each with `N = 1000` samples per estimate, using `sfe.diagnostics.gradient_moments` (mean, variance
# and standard errors over independent repeats) and `sfe.diagnostics.bias` (the distance of the mean from the
# exact gradient, in standard errors). An average of $N$ samples has $1/N$ of the single-sample variance, so
# we plot $N \times$ the measured variance against the exact single-sample values. With $F = 5$ and, for $\sigma$,
# $b^*_\sigma = 9$ (from $\mathrm{Var}_{SF,\sigma} = 346$, $\mathrm{Var}_{SF^*,\sigma} = 184$ and
# $\mathbb{E}[s_\sigma^2] = 2/\sigma^2$), the exact values for $(\mu, \sigma)$ are: no baseline $(87, 346)$;
# `constant(5.0)` and, to first order, `leave_one_out()` $(42, 216)$; `optimal()` $(38, 184)$ plus its excess.

# %%
N_BASELINE = 1_000
BASELINES = {
  "none": sfe.score_function(),
  "constant(5.0)": sfe.score_function(sfe.baselines.constant(5.0)),
  "leave_one_out()": sfe.score_function(sfe.baselines.leave_one_out()),
  "optimal()": sfe.score_function(sfe.baselines.optimal()),
}
LEAVES = ("loc", "scale")  # mu, sigma
b_stars = [np.sqrt((ref.variance["SF"][i] - ref.variance["SF*"][i]) / fisher[leaf]) for i, leaf in enumerate(LEAVES)]
excess = problems.optimal_baseline_excess(problem, N_BASELINE, MU, SIGMA)


def constant_baseline_variance(b, i):
  return ref.variance["SF*"][i] + fisher[LEAVES[i]] * (b - b_stars[i]) ** 2


exact_baseline = {  # single-sample variance (mu, sigma); first order in 1/N for leave_one_out and optimal
  "none": ref.variance["SF"],
  "constant(5.0)": tuple(constant_baseline_variance(5.0, i) for i in range(2)),
  "leave_one_out()": tuple(constant_baseline_variance(ref.value, i) for i in range(2)),
  "optimal()": tuple(ref.variance["SF*"][i] + excess[i] for i in range(2)),
}
assert np.allclose(b_stars, [7.0, 9.0]) and np.allclose(exact_baseline["constant(5.0)"], [42.0, 216.0])
# Estimating b* is not free: at N = 100 the first-order excess on sigma is already over a third of Var SF*.
excess_100 = problems.optimal_baseline_excess(problem, 100, MU, SIGMA)
print(
  f"excess of optimal() over Var SF*: {excess[0]:.2f}, {excess[1]:.2f} at N = {N_BASELINE}; "
  f"{excess_100[0]:.2f}, {excess_100[1]:.2f} at N = 100"
)
assert excess_100[1] > ref.variance["SF*"][1] / 3


@jax.jit  # one compiled function for the four estimators (gradient_moments works under jit)
def baseline_moments(key):
  return {
    name: sfe.diagnostics.gradient_moments(
      estimator, f, dist_builder, params, key, num_samples=N_BASELINE, num_repeats=BASELINE_REPEATS
    )
    for name, estimator in BASELINES.items()
  }


measured_baseline = {}
all_moments = baseline_moments(jax.random.key(4))  # a dict: jit returns its keys sorted
for name in BASELINES:
  moments = all_moments[name]
  z_bias = sfe.diagnostics.bias(moments, {"loc": ref.grad[0], "scale": ref.grad[1]}).max_abs_z
  measured_baseline[name] = [
    (N_BASELINE * float(moments.variance[leaf]), N_BASELINE * float(moments.variance_std_error[leaf]))
    for leaf in LEAVES
  ]
  (v_mu, se_mu), (v_sigma, se_sigma) = measured_baseline[name]
  print(
    f"{name:16s} N x Var: mu {v_mu:6.1f} +- {se_mu:4.1f} (exact {exact_baseline[name][0]:6.1f}), "
    f"sigma {v_sigma:6.1f} +- {se_sigma:4.1f} (exact {exact_baseline[name][1]:6.1f}); max |z| of the mean {z_bias:.2f}"
  )
  assert z_bias < NUM_SE  # every baseline keeps the estimator unbiased
  for i in range(2):
    v, se = measured_baseline[name][i]
    assert abs(v - exact_baseline[name][i]) < NUM_SE * se

fig, axes = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
names = list(BASELINES)
for i, (ax, param) in enumerate(zip(axes, (r"\mu", r"\sigma"))):
  values = [measured_baseline[name][i][0] for name in names]
  errors = [2 * measured_baseline[name][i][1] for name in names]
  ax.bar(names, values, yerr=errors, color="C0", alpha=0.7, capsize=4, label="measured (±2 se)")
  ax.plot(names, [exact_baseline[name][i] for name in names], "k_", ms=30, mew=2, label="exact")
  ax.set(ylabel=r"$N \times$ variance", title=rf"$\partial F / \partial {param}$, N = {N_BASELINE}")
  ax.tick_params(axis="x", labelsize=8)
  ax.legend(fontsize=8)
fig.suptitle("Score function with the baselines of sfe.baselines")
plt.show()

# Exact: every baseline removes more than a third of the variance, for mu and for sigma.
assert all(exact_baseline[name][i] < 2 / 3 * ref.variance["SF"][i] for name in names[1:] for i in range(2))
for i in range(2):
  ratio = measured_baseline["none"][i][0] / measured_baseline["optimal()"][i][0]
  print(f"variance without / with optimal(): {ratio:.2f}")
  assert ratio > 1.5  # exact: 87 / 38.4 = 2.26 for mu, 346 / 190.4 = 1.82 for sigma

# %% [markdown]
# (`constant(5.0)` and `leave_one_out()` give almost the same numbers: they see the same random numbers, and
# with $N = 1000$ the leave-one-out mean stays within a few tenths of $F = 5$.)
#
# All four estimators are unbiased (their means lie within a few standard errors of the exact gradient), and
# every baseline removes more than a third of the variance here, at the cost of nothing (`constant`,
# `leave_one_out`) or of the per-sample scores (`optimal`). `leave_one_out()` is the usual default: it needs no
# tuning and no knowledge of $f$. A baseline only removes the part of the variance that a *constant* can
# explain; the remaining $\mathrm{Var}_{SF^*}$ (38 here, against 4 for pathwise) is the price of using values of
# $f$ only.
#
# ## The Gaussian study of Mohamed et al. (2020)
#
# Mohamed, Rosca, Figurnov and Mnih (2020, Section 3) compare gradient estimators on three cost functions under
# $x \sim N(\mu, \sigma^2)$ at $\mu = \sigma = 1$, sweeping a parameter $k$:
#
# * $f(x) = (x - k)^2$, a quadratic whose minimum moves with $k$;
# * $f(x) = \exp(-k x^2)$, a bump that gets narrower as $k$ grows;
# * $f(x) = \cos(k x)$, which oscillates faster as $k$ grows.
#
# The estimators (all four have the same call signature in sfe_jax; swapping one for another is a one-word change):
#
# * **score function**, `sfe.score_function()`: $f(x)\, s_\theta(x)$.
# * **pathwise**, `sfe.pathwise()`: with $x = \mu + \sigma\epsilon$,
#   $\hat g_\mu = f'(x)$ and $\hat g_\sigma = f'(x)\, \epsilon$. It needs a differentiable $f$.
# * **measure-valued**, `sfe.measure_valued()`: it writes the derivative of the density as a difference of two
#   distributions, $\partial_\theta p_\theta = c_\theta (p^+ - p^-)$, and estimates
#   $c_\theta (\mathbb{E}_{p^+}[f] - \mathbb{E}_{p^-}[f])$ with coupled samples (for $\mu$:
#   $[f(\mu + \sigma W) - f(\mu - \sigma W)] / (\sqrt{2\pi}\sigma)$ with a Weibull $W$). One base sample costs 4
#   evaluations of $f$ (2 for $\mu$, 2 for $\sigma$), so it is run with `num_samples=4`, and its variance is per
#   base sample, as in the paper.
# * **score function with a control variate**,
#   `sfe.with_control_variate(sfe.score_function(), sfe.control_variates.delta_method())`: it subtracts
#   $c\, h(x)$, where $h$ is the second-order Taylor expansion of $f$ at $\mu$ (whose expectation is known
#   exactly), and adds back $c\, \nabla_\theta \mathbb{E}[h]$ computed exactly. The scalar $c$ is estimated from
#   10 extra pairs of single-sample estimates (`num_coefficient_samples=10`), so one estimate costs more than one
#   evaluation of $f$.
#
# `problems.exact(problem, mu, sigma)` gives the exact gradient and the exact single-sample variance of the score
# function, pathwise and measure-valued estimators. The control variate's coefficient is itself random, so it has
# no closed-form variance there: for it we check that it stays unbiased, and plot its measured variance next to
# the others.
#
# One jitted function measures every estimator on every problem: within each family the values of $k$ are
# vmapped (`problems.cost` works with a traced $k$), so JAX compiles it once.

# %%
STUDY = {  # label: (estimator, num_samples of one estimate)
  "SF": (sfe.score_function(), 1),
  "PW": (sfe.pathwise(), 1),
  "MVD": (sfe.measure_valued(), 4),
  "SF + delta method": (sfe.with_control_variate(sfe.score_function(), sfe.control_variates.delta_method()), 1),
}
# The values of k the benchmark measures (CURVE_PROBLEMS), grouped by family.
KS = {
  family: np.array(sorted(p.k for p in problems.CURVE_PROBLEMS if p.family == family)) for family in problems.FAMILIES
}


@jax.jit
def study_estimates(ks, key):
  """Single-(base-)sample estimates of every estimator on every problem, (mu, sigma) on the last axis:
  {(label, family): array of shape (len(k), NUM_REPEATS, 2)}."""

  def one_problem(estimator, num_samples, family, k, key):
    _, g = sfe.diagnostics.repeated_estimates(
      estimator, problems.cost(problems.Problem(family, k)), dist_builder, params, key,
      num_samples=num_samples, num_repeats=NUM_REPEATS,
    )  # fmt: skip
    return jnp.stack([g["loc"], g["scale"]], axis=-1)

  estimates = {}
  for j, (label, (estimator, num_samples)) in enumerate(STUDY.items()):
    for family in ks:  # the values of k of one family are vmapped
      problem = functools.partial(one_problem, estimator, num_samples, family, key=jax.random.fold_in(key, j))
      estimates[label, family] = jax.vmap(problem)(ks[family])
  return estimates


measured = {}  # (label, family) -> mean, mean se, variance, variance se: arrays of shape (len(k), 2)
ks = {family: jnp.asarray(k, jnp.float32) for family, k in KS.items()}
for (label, family), g in study_estimates(ks, jax.random.key(10)).items():
  g = np.asarray(g, np.float64)
  variance, variance_se = sfe.diagnostics.variance_and_std_error(g, axis=1)
  measured[label, family] = (g.mean(axis=1), g.std(axis=1) / np.sqrt(NUM_REPEATS), variance, variance_se)

exact_at = {
  (family, k): problems.exact(problems.Problem(family, float(k)), MU, SIGMA) for family in KS for k in KS[family]
}

# %% [markdown]
# The exact curves, on a grid of $k$ over the paper's ranges (the measure-valued variances of the last two
# families are computed by numerical quadrature in `problems.exact`), and the measured points with $\pm 2$
# standard-error bars:

# %%
GRIDS = {
  "(x-k)^2": np.linspace(-3, 3, CURVE_POINTS),
  "exp(-kx^2)": np.geomspace(0.1, 10, CURVE_POINTS),
  "cos(kx)": np.geomspace(0.5, 5, CURVE_POINTS),
}
curves = {
  family: [problems.exact(problems.Problem(family, float(k)), MU, SIGMA) for k in grid]
  for family, grid in GRIDS.items()
}
COLORS = {"SF": "C0", "PW": "C1", "MVD": "C2", "SF + delta method": "C3"}
TITLES = {"(x-k)^2": r"$f = (x-k)^2$", "exp(-kx^2)": r"$f = \exp(-kx^2)$", "cos(kx)": r"$f = \cos(kx)$"}

fig, axes = plt.subplots(2, 3, figsize=(13, 7.5))
for col, family in enumerate(problems.FAMILIES):
  for row, param in enumerate((r"\mu", r"\sigma")):
    ax = axes[row, col]
    for label, color in COLORS.items():
      mean, _, variance, variance_se = measured[label, family]
      if label in problems.WITH_EXACT_VARIANCE:
        exact_curve = [e.variance[label][row] for e in curves[family]]
        ax.plot(GRIDS[family], exact_curve, color=color, lw=1.2, label=f"{label} exact")
        ax.errorbar(KS[family], variance[:, row], yerr=2 * variance_se[:, row], fmt="o", ms=4, color=color, capsize=2)
      elif family != "(x-k)^2":  # the controlled quadratic has variance ~0: off a log axis
        ax.errorbar(
          KS[family], variance[:, row], yerr=2 * variance_se[:, row], fmt="s", ms=5, mfc="none", color=color,
          capsize=2, label=f"{label} (measured)",
        )  # fmt: skip
    if family == "(x-k)^2":
      ax.text(0.03, 0.04, "SF + delta method: variance ~ 0", transform=ax.transAxes, fontsize=8, color="C3")
    else:
      ax.set_xscale("log")
      ax.set_xticks(KS[family], [f"{k:g}" for k in KS[family]], minor=False)
      ax.set_xticks([], minor=True)
    ax.set_yscale("log")
    ax.set_title(rf"{TITLES[family]}: $\partial F/\partial {param}$", fontsize=10)
    ax.set_xlabel("k")
  axes[0, 0].set_ylabel("single-sample variance")
  axes[1, 0].set_ylabel("single-sample variance")
axes[0, 1].legend(fontsize=7, loc="lower left")
fig.suptitle(r"Gradient variance under $x \sim N(1, 1)$: exact curves, measured points (±2 se)")
fig.tight_layout()
plt.show()

# %% [markdown]
# Every measured variance lies on its exact curve, and every estimator is unbiased:

# %%
worst_variance_z, worst_mean_z = 0.0, 0.0
for (label, family), (mean, mean_se, variance, variance_se) in measured.items():
  exact_grad = np.array([exact_at[family, k].grad for k in KS[family]])
  worst_mean_z = max(worst_mean_z, np.abs((mean - exact_grad) / mean_se).max())
  if label in problems.WITH_EXACT_VARIANCE:
    exact_variance = np.array([exact_at[family, k].variance[label] for k in KS[family]])
    worst_variance_z = max(worst_variance_z, np.abs((variance - exact_variance) / variance_se).max())
num_problems = sum(len(k) for k in KS.values())
print(
  f"largest |z| over {num_problems} problems, 2 parameters and {len(STUDY)} estimators: "
  f"means {worst_mean_z:.2f}, variances (SF, PW, MVD) {worst_variance_z:.2f}"
)
assert worst_mean_z < NUM_SE and worst_variance_z < NUM_SE

# %% [markdown]
# What the figure teaches (Mohamed et al. 2020, Section 3):
#
# * **No estimator wins everywhere.** For the quadratic, pathwise beats the score function at every $k$. But for
#   the narrow bump $\exp(-kx^2)$ and the fast oscillation $\cos(kx)$ the pathwise variance *grows* with $k$
#   (the slope $f'$ gets large) while the score function's, which only sees bounded values of $f$, does not:
#   past a crossing (around $k \approx 0.87$ for $\exp(-kx^2)$ and $k \approx 1.06$ for $\cos(kx)$, for $\mu$)
#   the score function is the better choice. At $k = 10$ the pathwise $\mu$-variance of $\exp(-kx^2)$ is more
#   than 12 times the score function's.
# * **The score-function variance grows with the size of $f$**, as the shift experiment showed: for the
#   quadratic it climbs steeply as $|k|$ moves the minimum of $f$ away from where the samples fall.
# * **Measure-valued** estimates are differences of $f$ at coupled points: low variance on these smooth
#   one-dimensional problems (below the score function for $\mu$ at every measured $k$, though not for $\sigma$ on
#   the narrowest bump), at 4 evaluations per base sample and a cost that grows with the dimension.
# * **A control variate is only as good as its fit.** For the quadratic the Taylor expansion *is* $f$ and the
#   variance all but vanishes. For $\exp(-kx^2)$ and $\cos(kx)$ it helps at small $k$, where $f$ is close to
#   quadratic over the bulk of the samples; at large $k$ the best coefficient is near zero, and the coefficient
#   estimated from 10 pairs is noisy enough to make the variance *worse* than without the control variate
#   (`num_coefficient_samples` trades more evaluations for a less noisy coefficient).

# %%
for family in ("(x-k)^2",):
  ratios = [e.variance["SF"][i] / e.variance["PW"][i] for e in curves[family] for i in range(2)]
  assert min(ratios) > 1  # pathwise beats the score function on the quadratic at every k of the grid
bump_10 = exact_at["exp(-kx^2)", 10.0]
assert bump_10.variance["PW"][0] > 12 * bump_10.variance["SF"][0]  # 0.94 against 0.077
for family, crossing in (("exp(-kx^2)", 0.870), ("cos(kx)", 1.064)):  # closed_forms.md: mu crossings
  below, above = (problems.exact(problems.Problem(family, crossing + d), MU, SIGMA).variance for d in (-0.01, 0.01))
  assert below["PW"][0] < below["SF"][0] and above["PW"][0] > above["SF"][0]
for family in KS:  # MVD below SF for mu at every measured k, exactly
  assert all(exact_at[family, k].variance["MVD"][0] < exact_at[family, k].variance["SF"][0] for k in KS[family])
narrow = exact_at["exp(-kx^2)", 10.0].variance  # ... but not for sigma on the narrowest bump
assert narrow["MVD"][1] > narrow["SF"][1]

# Measured: the same facts, with margins far beyond the standard errors.
_, _, var_sf_bump, _ = measured["SF", "exp(-kx^2)"]
_, _, var_pw_bump, _ = measured["PW", "exp(-kx^2)"]
bump_ratio = var_pw_bump[-1, 0] / var_sf_bump[-1, 0]
_, _, var_cv_quad, _ = measured["SF + delta method", "(x-k)^2"]
_, _, var_sf_quad, _ = measured["SF", "(x-k)^2"]
cv_quad_ratio = (var_cv_quad / var_sf_quad).max()
_, _, var_cv_bump, _ = measured["SF + delta method", "exp(-kx^2)"]
cv_small_k, cv_large_k = var_cv_bump[0] / var_sf_bump[0], var_cv_bump[-2] / var_sf_bump[-2]
print(f"exp(-10 x^2): measured PW / SF variance (mu) = {bump_ratio:.1f}")
print(f"(x-k)^2: largest measured variance ratio (SF + delta method) / SF = {cv_quad_ratio:.1e}")
print(
  f"exp(-kx^2): (SF + delta method) / SF variance at k = {KS['exp(-kx^2)'][0]}: {cv_small_k.round(3)}, "
  f"at k = {KS['exp(-kx^2)'][-2]}: {cv_large_k.round(1)} (mu, sigma)"
)
assert bump_ratio > 8
assert cv_quad_ratio < 1e-4
assert np.all(cv_small_k < 0.5) and np.all(cv_large_k > 1)

# %% [markdown]
# ## Take-aways
#
# * The log-derivative trick, $\nabla_\theta \mathbb{E}_{p_\theta}[f] = \mathbb{E}_{p_\theta}[f\, \nabla_\theta
#   \log p_\theta]$, needs only samples and the gradient of `log_prob`: $f$ may be any black box, and $x$ may be
#   discrete. In sfe_jax it is `sfe.score_function()`.
# * Its estimate is unbiased but often noisy, and its variance depends on the level of $f$. Shifting $f$ by a
#   constant leaves the mean alone and moves the variance along a parabola.
# * Baselines pick that shift for you without bias: `sfe.baselines.leave_one_out()` is a good default,
#   `sfe.baselines.optimal()` reaches the minimum for large batches.
# * When $f$ is differentiable and the distribution reparameterisable, try `sfe.pathwise()`, but measure: it is
#   not always better. `sfe.diagnostics.gradient_moments` and `sfe.diagnostics.evaluate` measure any estimator's
#   mean, variance and standard errors on your own problem.
#
# Next, notebook 2, *Choosing an estimator*, compares the estimators on more problems; later notebooks put them to
# work on discrete latent variables (notebook 3) and policy gradients (notebook 4).
#
# ## References
#
# * Williams (1992), *Simple statistical gradient-following algorithms for connectionist reinforcement learning*.
# * Paisley, Blei and Jordan (2012), *Variational Bayesian inference with stochastic search*.
# * Kool, van Hoof and Welling (2019), *Buy 4 REINFORCE samples, get a baseline for free!*
# * Mohamed, Rosca, Figurnov and Mnih (2020), *Monte Carlo gradient estimation in machine learning*, JMLR.
