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
# # Variational inference: ELBO gradients and multi-sample bounds
#
# Variational inference fits a distribution $q_\lambda(w)$ to a posterior $p(w \mid \mathcal D)$ by maximising
# the evidence lower bound
#
# $$\mathrm{ELBO}(\lambda) = E_{q_\lambda}[\log p(\mathcal D, w) - \log q_\lambda(w)]
#   = E_{q_\lambda}[\log p(\mathcal D \mid w)] - \mathrm{KL}(q_\lambda \,\|\, p) \le \log p(\mathcal D).$$
#
# Its gradient is the gradient of an expectation: exactly what sfe_jax estimates. This notebook fits a
# Gaussian $q$ to the posterior of a Bayesian logistic regression with the pathwise and the score-function
# gradients, with and without the delta-method control variate, measures their variance, and then turns to
# the $K$-sample importance-weighted bounds $L_K$ and their gradients: IWAE, DReG and VIMCO.
#
# The model, the data and the variational family come from the benchmark suite `benchmarks.logistic`.

# %%
import os

QUICK = os.environ.get("SFE_JAX_NOTEBOOK_QUICK", "0") == "1"  # the test suite runs the quick settings

# %%
import distrax
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

import sfe_jax as sfe
from benchmarks.logistic import measure, problems

STEPS = 300 if QUICK else 2_000  # Adam steps per training run
LOG_EVERY = 50 if QUICK else 100  # steps between points of the ELBO curves
NUM_SAMPLES = 10  # evaluations of f per gradient estimate
BATCH_SIZE = 32  # data points per step
VARIANCE_REPEATS = 1_000  # independent estimates per variance measurement (cheap: compilation dominates)
KS = (1, 8, 64) if QUICK else (1, 4, 16, 64, 256)  # the K of the multi-sample bounds
BOUND_REPEATS = 500  # independent estimates of L_K and its gradient per K

# %% [markdown]
# ## The model
#
# Breast-cancer diagnosis (scikit-learn's data set: 569 patients, 30 standardized features and a constant):
# $y_i \sim \mathrm{Bernoulli}(\sigma(x_i^\top w))$ with the prior $w \sim N(0, I)$, and a mean-field Gaussian
# $q_\lambda = N(\mu, \mathrm{diag}(e^{2 s}))$ with $\lambda = (\mu, s)$, `problems.dist_builder`. The KL
# divergence between two Gaussians is known in closed form (`problems.kl_to_prior`), so only the expected
# log-likelihood needs an estimator. On a batch $B$ of the data it is rescaled to the whole data set,
#
# $$f(w) = \frac{N}{|B|} \sum_{i \in B} \log p(y_i \mid x_i, w),$$
#
# a function of ONE sample $w$, which `problems.make_cost` builds, and the ELBO's estimate is
# `sfe.expectation(estimator, f, problems.dist_builder, params, key, num_samples=...)` minus the exact KL.

# %%
x_np, y_np = problems.load_data()
x, y = jnp.asarray(x_np), jnp.asarray(y_np)
num_data, dim = x.shape
print(f"{num_data} data points, {dim} weights")
assert (num_data, dim) == (569, 31)

# %% [markdown]
# ## Four gradient estimators
#
# * **pathwise** (`sfe.pathwise()`): $w = \mu + e^{s} \odot \epsilon$, $\epsilon \sim N(0, I)$, and
#   $\nabla_\lambda f(w)$ by the chain rule; it needs $f$ to be differentiable, which it is.
# * **score function** (`sfe.score_function()`): $f(w) \nabla_\lambda \log q_\lambda(w)$; it never
#   differentiates $f$, and pays for it in variance.
# * each of them **with the delta-method control variate** (`sfe.control_variates.delta_method()`): the
#   second-order Taylor expansion $h$ of $f$ about the mean $\mu$, whose expectation under a Gaussian is known,
#   $E_q[h] = f(\mu) + \frac12 \mathrm{tr}(\nabla^2 f(\mu)\, \Sigma)$; the estimator estimates
#   $E[f - c\,h]$ and adds $c\,E[h]$ exactly. `sfe.with_control_variate` estimates the coefficient $c$ from
#   10 extra pairs of single-sample estimates and computes one Hessian of $f$ per step: more work per step
#   than the plain estimators, for less variance.
#
# `measure.build_estimator` builds them exactly as the benchmark does:

# %%
LABELS = ("pathwise", "pathwise + delta", "score function", "score function + delta")
estimators = {label: measure.build_estimator(label) for label in LABELS}
for label, estimator in estimators.items():
  print(f"{label:>24}: {estimator.name}")
assert problems.NUM_COEFFICIENT_SAMPLES == 10


# %% [markdown]
# ## Training
#
# One step: a random batch, the estimator's gradient of $E_q[f]$ and the exact gradient of the KL, and an Adam
# step on $-\mathrm{ELBO}$. Every `LOG_EVERY` steps, `problems.evaluate` estimates the ELBO on the whole data
# set with 500 samples of $q$ (the same key for every point and estimator: common random numbers).


# %%
def train(label, key):
  estimator = estimators[label]
  opt = optax.adam(1e-2)

  def loss(params, key):
    k_batch, k_est = jax.random.split(key)
    idx = jax.random.choice(k_batch, num_data, (BATCH_SIZE,), replace=False)
    f = problems.make_cost(x[idx], y[idx], float(num_data))
    expected_f, _ = sfe.expectation(estimator, f, problems.dist_builder, params, k_est, num_samples=NUM_SAMPLES)
    return problems.kl_to_prior(params) - expected_f

  def step(carry, key):
    params, opt_state = carry
    updates, opt_state = opt.update(jax.grad(loss)(params, key), opt_state)
    return (optax.apply_updates(params, updates), opt_state), None

  segment = jax.jit(lambda carry, key: jax.lax.scan(step, carry, jax.random.split(key, LOG_EVERY))[0])
  params = problems.initial_params(dim)
  carry, curve, history = (params, opt.init(params)), [], {}
  for s in range(0, STEPS + 1, LOG_EVERY):
    history[s] = carry[0]
    elbo, accuracy = evaluate(carry[0], jax.random.key(7))
    curve.append((s, float(elbo), float(accuracy)))
    if s < STEPS:
      carry = segment(carry, jax.random.fold_in(key, s))
  return np.array(curve), history


evaluate = jax.jit(lambda params, key: problems.evaluate(params, key, x, y, 500))
runs = {label: train(label, jax.random.key(1)) for label in LABELS}

# %%
fig, ax = plt.subplots(figsize=(6.5, 3.8))
for label in LABELS:
  curve = runs[label][0]
  ax.plot(curve[:, 0], curve[:, 1], label=label, ls="--" if "delta" in label else "-")
ax.set_yscale("symlog")
ax.set_xlabel("Adam step")
ax.set_ylabel("ELBO (whole data set)")
ax.set_title(f"Bayesian logistic regression, {NUM_SAMPLES} evaluations of f per step")
ax.legend()
plt.show()
for label in LABELS:
  curve = runs[label][0]
  print(f"{label:>24}: ELBO {curve[0, 1]:8.1f} -> {curve[-1, 1]:6.1f}, accuracy {curve[-1, 2]:.3f}")

# %% [markdown]
# The pathwise gradient climbs fastest; the plain score function is far behind at the same number of
# evaluations of $f$, and the delta-method control variate closes much of that gap (the pathwise estimator,
# fast already, gains little from it). Asserted at the end of the run:

# %%
final = {label: runs[label][0][-1, 1] for label in LABELS}
assert final["pathwise"] > final["score function"]
assert final["score function + delta"] > final["score function"]
assert all(final[label] > runs[label][0][0, 1] for label in LABELS)

# %% [markdown]
# ## Gradient variance
#
# `sfe.diagnostics.gradient_moments` draws `VARIANCE_REPEATS` independent estimates (each with
# `NUM_SAMPLES` evaluations of $f$, on one fixed batch) and returns the variance of each coordinate of the
# gradient with its standard error. We measure it at the prior (where training starts) and at the $q$ that the
# pathwise run has reached, and report the average over the 31 coordinates of $\nabla_\mu$ (the standard
# error of the average is at most the average of the standard errors, the error bar we show).

# %%
batch_f = problems.make_cost(x[:BATCH_SIZE], y[:BATCH_SIZE], float(num_data))
where = {"prior": problems.initial_params(dim), "trained q": runs["pathwise"][1][STEPS]}
variance = {}
for label in LABELS:
  for name, params in where.items():
    m = sfe.diagnostics.gradient_moments(
      estimators[label],
      batch_f,
      problems.dist_builder,
      params,
      jax.random.key(2),
      num_samples=NUM_SAMPLES,
      num_repeats=VARIANCE_REPEATS,
    )
    variance[label, name] = (float(m.variance["mean"].mean()), float(m.variance_std_error["mean"].mean()))

print(f"{'variance of the mu-gradient':>28}: " + "".join(f"{name:>24}" for name in where))
for label in LABELS:
  print(f"{label:>28}: " + "".join(f"{variance[label, n][0]:13.3g} +- {variance[label, n][1]:7.2g}" for n in where))

# %%
fig, ax = plt.subplots(figsize=(6.5, 3.8))
width = 0.2
for i, label in enumerate(LABELS):
  v = np.array([variance[label, name] for name in where])
  ax.bar(np.arange(len(where)) + (i - 1.5) * width, v[:, 0], width, yerr=v[:, 1], label=label, capsize=3)
ax.set_yscale("log")
ax.set_xticks(range(len(where)), list(where))
ax.set_ylabel("variance of the mu-gradient")
ax.set_title(f"One estimate with {NUM_SAMPLES} evaluations of f")
ax.legend(fontsize=8)
plt.show()


# %% [markdown]
# At the prior, where training starts, the score function's variance is more than 100 times the pathwise
# one, and the delta method cuts the score function's variance by more than a factor of 1.5; at the trained
# $q$ the score function's variance is still above the pathwise one. Each
# comparison is asserted with 4 standard errors of margin on each side:


# %%
def lower(label, name):
  return variance[label, name][0] - 4 * variance[label, name][1]


def upper(label, name):
  return variance[label, name][0] + 4 * variance[label, name][1]


for name in where:
  ratio = variance["score function", name][0] / variance["pathwise", name][0]
  reduction = variance["score function", name][0] / variance["score function + delta", name][0]
  print(f"{name}: score function / pathwise = {ratio:.0f}, reduction by the delta method = {reduction:.1f}")
  assert lower("score function", name) > upper("pathwise", name)
assert lower("score function", "prior") > 100 * upper("pathwise", "prior")
assert lower("score function", "prior") > 1.5 * upper("score function + delta", "prior")

# %% [markdown]
# ## Multi-sample bounds: IWAE, DReG and VIMCO
#
# With $K$ samples $w_1, \dots, w_K \sim q$ and importance weights $w_k' = p(\mathcal D, w_k) / q(w_k)$, the
# importance-weighted bound (Burda et al. 2016)
#
# $$L_K = E\Big[\log \frac1K \sum_{k=1}^K \frac{p(\mathcal D, w_k)}{q(w_k)}\Big], \qquad
#   \mathrm{ELBO} = L_1 \le L_2 \le \dots \le L_K \le \log p(\mathcal D),$$
#
# tightens as $K$ grows. `sfe.objectives` has three estimators of its gradient in $\lambda$; they take the
# **log-joint** $\log p(\mathcal D, w)$ of one sample where the estimators take $f$, and `num_samples` is $K$:
#
# * `iwae()`: the pathwise gradient of $\log \frac1K \sum_k w_k'$;
# * `dreg()`: the doubly reparameterized gradient (Tucker et al. 2019), the same expectation without IWAE's
#   score term;
# * `vimco()`: a score-function gradient with leave-one-out baselines (Mnih and Rezende 2016), for any $q$
#   (discrete latents included; $K \ge 2$).
#
# We evaluate the bound at the $q$ the pathwise run reached. `sfe.diagnostics.repeated_estimates` gives
# `BOUND_REPEATS` independent estimates $\hat L_K$ (the value) and gradients.


# %%
def log_joint(w):
  """log p(D, w) = log p(y | x, w) + log N(w; 0, I), the whole data set."""
  return problems.log_likelihood(w, x, y, float(num_data)) + jnp.sum(distrax.Normal(0.0, 1.0).log_prob(w))


q_trained = runs["pathwise"][1][STEPS]
q_early = runs["pathwise"][1][100]  # the pathwise run after 100 steps: q still far from the ELBO optimum
OBJECTIVES = {"IWAE": sfe.objectives.iwae(), "DReG": sfe.objectives.dreg(), "VIMCO": sfe.objectives.vimco()}


def snr(grads):
  """The signal-to-noise ratio |mean| / std of each coordinate of the mu-gradient, averaged over coordinates."""
  g = np.asarray(grads["mean"], np.float64)
  return float(np.mean(np.abs(g.mean(axis=0)) / g.std(axis=0, ddof=1)))


@jax.jit(static_argnums=(0, 2))
def estimates(name, q, k):
  """``BOUND_REPEATS`` independent estimates of L_K (shape (R,)) and of its gradient (leading axis R)."""
  return sfe.diagnostics.repeated_estimates(
    OBJECTIVES[name], log_joint, problems.dist_builder, q, jax.random.key(k), num_samples=k, num_repeats=BOUND_REPEATS
  )


bound, bound_se = {}, {}
for k in KS:
  values = np.asarray(estimates("IWAE", q_trained, k)[0], np.float64)
  bound[k], bound_se[k] = values.mean(), values.std(ddof=1) / np.sqrt(values.size)
for k in KS:
  print(f"K = {k:3d}: L_K = {bound[k]:8.2f} +- {bound_se[k]:.2f}")

# %% [markdown]
# The bound tightens with $K$: each $L_K$ is above the previous one (within 4 standard errors of their
# difference), and the largest $K$'s bound is far above the ELBO $L_1$. The gap $L_K - L_1$ is what the
# mean-field $q$ misses of the posterior (the correlations between the weights, mostly).

# %%
for a, b in zip(KS[:-1], KS[1:]):
  assert bound[b] > bound[a] - 4 * np.hypot(bound_se[a], bound_se[b])
gap = bound[KS[-1]] - bound[1]
print(f"L_{KS[-1]} - L_1 = {gap:.2f} nats = {gap / np.hypot(bound_se[1], bound_se[KS[-1]]):.0f} standard errors")
assert gap > 5 * np.hypot(bound_se[1], bound_se[KS[-1]])

# %% [markdown]
# ## The signal-to-noise ratio of the encoder gradient
#
# A tighter bound is not necessarily a better training objective for $q$ (Rainforth et al. 2018): as
# $K \to \infty$, $L_K \to \log p(\mathcal D)$, which does not depend on $\lambda$, so the true gradient
# $\nabla_\lambda L_K$ shrinks like $1/K$, while the standard deviation of IWAE's estimate shrinks only like
# $1/\sqrt K$: its signal-to-noise ratio $|E[\hat g]| / \mathrm{sd}(\hat g)$ decays like $1/\sqrt K$. DReG
# removes the score term responsible; asymptotically its signal-to-noise ratio *grows* like $\sqrt K$ (Tucker
# et al. 2019).
#
# "Asymptotically" needs importance weights with a finite variance and $K$ large compared with it. On a
# well-behaved problem, a one-dimensional Gaussian model whose posterior is $N(0.5, 0.5)$ with
# $q = N(0.4, 0.6^2)$, the directions show (the right panel of the figure below, with the two asymptotic rates
# drawn for reference): IWAE's ratio falls by more than half from $K = 1$ to $K = 256$, DReG's rises.

# %%
toy_log_joint = lambda z: jnp.sum(-0.5 * z**2 - 0.5 * (1.0 - z) ** 2)
toy_q = {"loc": jnp.full(1, 0.4), "scale": jnp.full(1, 0.6)}
toy_builder = lambda p: distrax.Normal(p["loc"], p["scale"])
TOY_KS = (1, 16, 256)
toy_snr = {name: {} for name in ("IWAE", "DReG")}
for name in toy_snr:
  for k in TOY_KS:
    m = sfe.diagnostics.gradient_moments(
      OBJECTIVES[name], toy_log_joint, toy_builder, toy_q, jax.random.key(k), num_samples=k, num_repeats=4_000
    )
    toy_snr[name][k] = float(m.snr["loc"][0])
  print(f"{name}: SNR of the loc-gradient at K = {TOY_KS}: {np.round([toy_snr[name][k] for k in TOY_KS], 3)}")
assert toy_snr["IWAE"][256] < toy_snr["IWAE"][1] / 2
assert toy_snr["DReG"][256] > toy_snr["DReG"][1]

# %% [markdown]
# On the logistic regression we measure the signal-to-noise ratio of the gradient in $\mu$ (averaged over
# the coordinates) at the $q$ of the pathwise run after 100 steps, still far from the ELBO's optimum (at an
# optimum the $K = 1$ gradient is zero on average). There the weights are heavy-tailed (where the data nearly
# separate the classes, the posterior's tail follows the broad prior, beyond the reach of the narrow $q$), and
# the $K$ we can afford are far from the asymptotic regime: IWAE's signal-to-noise ratio falls with $K$
# (between $K = 1$ and the largest $K$), DReG's stays above IWAE's at the largest $K$, and VIMCO, a
# score-function estimator, stays below DReG.

# %%
snrs = {
  name: {k: snr(estimates(name, q_early, k)[1]) for k in KS if k >= (2 if name == "VIMCO" else 1)}
  for name in OBJECTIVES
}
fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
for name in OBJECTIVES:
  ks = sorted(snrs[name])
  axes[0].plot(ks, [snrs[name][k] for k in ks], "o-", label=name)
axes[0].set_title("Bayesian logistic regression (mu-gradient)")
for name in toy_snr:
  axes[1].plot(TOY_KS, [toy_snr[name][k] for k in TOY_KS], "o-", label=name)
toy_ks = np.array(TOY_KS, float)
axes[1].plot(toy_ks, toy_snr["IWAE"][1] / np.sqrt(toy_ks), "k:", label=r"$\propto 1/\sqrt{K}$")
axes[1].plot(toy_ks, toy_snr["DReG"][1] * np.sqrt(toy_ks), "k--", label=r"$\propto \sqrt{K}$")
axes[1].set_title("1-D Gaussian model (loc-gradient)")
for ax in axes:
  ax.set_xscale("log")
  ax.set_yscale("log")
  ax.set_xlabel("K")
  ax.set_ylabel("signal-to-noise ratio")
  ax.legend()
plt.show()

for name in OBJECTIVES:
  print(f"{name:>6}: SNR at K = {sorted(snrs[name])}: {np.round([snrs[name][k] for k in sorted(snrs[name])], 3)}")
k_max = KS[-1]
assert snrs["IWAE"][k_max] < snrs["IWAE"][1]
assert snrs["DReG"][k_max] > snrs["IWAE"][k_max]
assert snrs["VIMCO"][k_max] < snrs["DReG"][k_max]

# %% [markdown]
# What to take away:
#
# * For a continuous, differentiable model, the **pathwise** gradient is the default: its variance is orders
#   of magnitude below the score function's.
# * When only the score function applies (a non-differentiable $f$, a black-box simulator), a **control
#   variate** such as the delta method recovers much of the gap, for one Hessian of $f$ per step.
# * A larger $K$ gives a **tighter bound**, but IWAE's gradient for $q$ gets *noisier relative to its signal*;
#   use **DReG** to train $q$ with a multi-sample bound (or VIMCO when $q$ is discrete).
#
# ## References
#
# * Burda, Grosse and Salakhutdinov, Importance weighted autoencoders, ICLR 2016.
# * Mnih and Rezende, Variational inference for Monte Carlo objectives, ICML 2016.
# * Mohamed, Rosca, Figurnov and Mnih, Monte Carlo gradient estimation in machine learning, JMLR 2020.
# * Paisley, Blei and Jordan, Variational Bayesian inference with stochastic search, ICML 2012.
# * Rainforth, Kosiorek, Le, Maddison, Igl, Wood and Teh, Tighter variational bounds are not necessarily
#   better, ICML 2018.
# * Tucker, Lawson, Gu and Maddison, Doubly reparameterized gradient estimators for Monte Carlo objectives,
#   ICLR 2019.
