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
# # Discrete latent variables: training a Bernoulli VAE
#
# A variational autoencoder with **binary** latent variables cannot be trained with the reparameterization
# trick: a sample $b \in \{0, 1\}^L$ of the encoder $q_\phi(b \mid x)$ is a step function of its noise, and the
# derivative of a step is zero almost everywhere. The gradient of the evidence lower bound (ELBO) with respect
# to the encoder needs one of the discrete estimators of sfe_jax. This notebook trains the same VAE with four
# of them, at the same number of evaluations of the decoder per step, and compares the training curves and the
# variance of the gradient:
#
# * the score function (REINFORCE) with the **leave-one-out** baseline,
#   `sfe.score_function(sfe.baselines.leave_one_out())`;
# * **DisARM** (Dong, Mnih and Tucker 2020), `sfe.disarm()`, an antithetic pair of samples;
# * **RELAX** (Grathwohl et al. 2018), `sfe.relax(control, ...)`, the score function with a learned,
#   reparameterized control variate;
# * the **Gumbel-softmax** relaxation (Jang et al. 2017; Maddison et al. 2017), `sfe.gumbel_softmax(0.5)`,
#   pathwise through a continuous relaxation of the bits: low variance, but **biased**.
#
# The model, the data loading and the estimators' configuration come from the benchmark suite
# `benchmarks.vae`, which runs the same comparison at a larger scale.

# %%
import os

QUICK = os.environ.get("SFE_JAX_NOTEBOOK_QUICK", "0") == "1"  # the test suite runs the quick settings

# %%
import inspect

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

import sfe_jax as sfe
from benchmarks.vae import measure, problems

LABELS = ("LOO", "DisARM", "RELAX", "Gumbel")  # the benchmark's names of the four estimators
NUM_TRAIN = 2_000 if QUICK else 20_000  # training images (a subset of MNIST's 50,000)
NUM_EVAL = 300 if QUICK else 1_000  # images of each split on which the ELBO curves are evaluated
LATENT = 32  # Bernoulli latent variables
STEPS = 200 if QUICK else 2_000
LOG_EVERY = 50 if QUICK else 100  # steps between points of the curves
VARIANCE_AT = (0, STEPS // 2, STEPS)  # steps at which the gradient variance is measured
VARIANCE_EXAMPLES = 8 if QUICK else 20  # validation images of the variance measurement
VARIANCE_REPEATS = 50 if QUICK else 200  # independent gradient estimates per image

# %% [markdown]
# ## The data
#
# Statically binarized MNIST (28 x 28 = 784 binary pixels) when its file is present; otherwise scikit-learn's
# 8 x 8 digits binarized at half intensity (64 pixels, no download), which `problems.load_data(None)` provides.
# To keep the notebook to a few minutes on a CPU it trains a small model (`LATENT` binary latents, the linear
# model below) for `STEPS` steps on a subset of the training images (`NUM_TRAIN`, settings above); the
# benchmark suite (`python -m benchmarks`) runs the same comparison at full size (200 latents, all 50,000
# images, tens of thousands of steps).

# %%
MNIST = "../../shared/data/binarized_mnist/binarized_mnist.npz"
data = problems.load_data(MNIST if os.path.exists(MNIST) else None)
train = jnp.asarray(data["train"][:NUM_TRAIN])
train_eval = train[:NUM_EVAL]
valid_eval = jnp.asarray(data["valid"][:NUM_EVAL])
PIXELS = train.shape[1]
print(f"data: {data['name']}: {train.shape[0]} training images of {PIXELS} pixels (of {len(data['train'])})")

# %% [markdown]
# ## The model and the loss
#
# The model is the benchmark's *linear* Bernoulli VAE: a factorised Bernoulli prior $p(b)$ with learned
# logits, a decoder $p_\theta(x \mid b) = \prod_j \mathrm{Bernoulli}(x_j; \sigma(W b + c)_j)$ and an encoder
# $q_\phi(b \mid x) = \prod_l \mathrm{Bernoulli}(b_l; \sigma(V x + d)_l)$. Its ELBO splits into an expectation
# and an entropy that is known in closed form:
#
# $$\mathrm{ELBO}(x) = E_{q_\phi(b \mid x)}[\log p_\theta(x, b)] + H[q_\phi(\cdot \mid x)].$$
#
# Only the first term needs an estimator. With $f(b) = -\log p_\theta(x, b)$ (one sample $b$ to a scalar, as
# sfe_jax wants) and the encoder's logits as the parameters of `distrax.Bernoulli`, the loss of one image is
# `sfe.expectation(estimator, f, ...) - entropy(logits)`. Its gradient with respect to the logits is the
# estimator's, and its gradient with respect to the decoder (which `f` closes over) is the ordinary gradient of
# the Monte Carlo average. This is the benchmark's loss, printed from its source:

# %%
print(inspect.getsource(measure.per_example_loss))

# %% [markdown]
# Every estimator evaluates $f$ (the decoder) **twice per image and step**: two samples for the leave-one-out
# baseline, one antithetic pair for DisARM, two samples for RELAX (whose control is a small network, not the
# decoder) and two relaxed samples for the Gumbel-softmax, at temperature 0.5. The comparison is at equal cost
# in evaluations of $f$.

# %%
config = problems.VAEConfig(latent=LATENT, learning_rate=1e-3, batch_size=50)
evaluations = {label: problems.EVALUATIONS[label] for label in LABELS}
print("evaluations of f per image and step:", evaluations)
assert set(evaluations.values()) == {2}
assert all(problems.NUM_SAMPLES[label] == 2 for label in LABELS)

# %% [markdown]
# ## Training
#
# One training step draws a batch of 50 images, takes the gradient of the batch loss with respect to all the
# model's parameters (`measure.batch_loss` vmaps the loss above over the images) and applies Adam. RELAX's
# estimator state holds its control's parameters and their optimizer state: each call of the estimator
# returns them updated (one Adam step on the variance of the gradient estimate), so the control trains along
# with the model in the same jitted step. Every `LOG_EVERY` steps we evaluate the ELBO, with one sample of
# $b$ per image and the exact entropy, on fixed subsets of the training and the validation images.


# %%
def initial_state(label, params, key):
  """RELAX's state: the benchmark's control network, its offset at the initial mean of f."""
  if label != "RELAX":
    return None
  batch = train[: config.batch_size]
  control_params = measure.init_control(key, LATENT, PIXELS, float(measure.control_offset(params, batch, key)))
  return measure.make_estimator(label, config, batch[0], control_params).init({"logits": jnp.zeros(LATENT)})


def make_segment(label, opt):
  """``LOG_EVERY`` jitted training steps under ``lax.scan``."""

  def step(carry, key):
    params, opt_state, state = carry
    k_batch, k_est = jax.random.split(key)
    xb = train[jax.random.choice(k_batch, train.shape[0], (config.batch_size,), replace=False)]
    grads, state = jax.grad(lambda p: measure.batch_loss(label, config, p, state, xb, k_est), has_aux=True)(params)
    updates, opt_state = opt.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state, state), None

  @jax.jit
  def segment(carry, key):
    return jax.lax.scan(step, carry, jax.random.split(key, LOG_EVERY))[0]

  return segment


@jax.jit
def elbo_per_image(params, images, key):
  """The one-sample ELBO of each image (log p(x, b) + H[q], b ~ q): an unbiased estimate of its ELBO."""
  return jax.vmap(problems.elbo_one_sample, (None, 0, 0))(params, images, jax.random.split(key, len(images)))


# %% [markdown]
# ## The variance of the gradient
#
# At a few points of each run we measure the variance of the estimator's gradient with respect to the
# encoder's logits, on fixed validation images: `sfe.diagnostics.repeated_estimates` draws
# `VARIANCE_REPEATS` independent estimates of $\nabla_{\text{logits}} E_q[f]$ (each with its 2 evaluations of
# $f$) per image, and `sfe.diagnostics.variance_and_std_error` gives the variance of each coordinate with its
# standard error. We report the average over images and latent coordinates, with a conservative standard
# error (the coordinates of one image are correlated, so their errors are added linearly; the independent
# images' errors add in quadrature).


# %%
def logit_gradient_estimates(label, params, state, images, key):
  """(images, repeats, latent) independent estimates of the gradient of E_q[f] in the encoder's logits."""

  def one_image(x, k):
    cp = None if state is None else state.control_params
    estimator = measure.make_estimator(label, config, x, cp)
    f = lambda b: -problems.log_joint(params, x, b)
    logits = problems.encode(params, x)
    _, grads = sfe.diagnostics.repeated_estimates(
      estimator,
      f,
      problems.dist_builder,
      {"logits": logits},
      k,
      num_samples=problems.NUM_SAMPLES[label],
      num_repeats=VARIANCE_REPEATS,
      state=state,
    )
    return grads["logits"]

  return jax.vmap(one_image)(images, jax.random.split(key, images.shape[0]))


def gradient_variance(estimates):
  """The variance of one estimate, averaged over images and coordinates, and its standard error."""
  variance, std_error = sfe.diagnostics.variance_and_std_error(np.asarray(estimates, np.float64), axis=1)
  # Per image, the average of the coordinates' standard errors bounds that of their average (the coordinates
  # share their samples); the images are independent, so their errors add in quadrature.
  num_images = variance.shape[0]
  return float(variance.mean()), float(np.sqrt(np.sum(std_error.mean(axis=1) ** 2)) / num_images)


# %% [markdown]
# Now the four runs, from the same initial model and the same sequence of batches keys.

# %%
variance_images = valid_eval[:VARIANCE_EXAMPLES]
k_init, k_state, k_train, k_eval, k_var = jax.random.split(jax.random.key(0), 5)
initial_params = problems.init_model(k_init, "linear", PIXELS, LATENT, config.hidden, np.asarray(train.mean(0)))
results = {}
for label in LABELS:
  opt = optax.adam(config.learning_rate)
  carry = (initial_params, opt.init(initial_params), initial_state(label, initial_params, k_state))
  segment = make_segment(label, opt)
  variance_fn = jax.jit(lambda p, s, k, label=label: logit_gradient_estimates(label, p, s, variance_images, k))
  curve, variances = [], []
  for step in range(0, STEPS + 1, LOG_EVERY):
    params, _, state = carry
    # The same key at every point: the curves compare the models with common random numbers.
    curve.append([step, *(np.asarray(elbo_per_image(params, imgs, k_eval)) for imgs in (train_eval, valid_eval))])
    if step in VARIANCE_AT:
      variances.append((step, *gradient_variance(variance_fn(params, state, jax.random.fold_in(k_var, step)))))
    if step < STEPS:
      carry = segment(carry, jax.random.fold_in(k_train, step))
  results[label] = {"curve": curve, "variance": np.array(variances)}

# %% [markdown]
# ## ELBO curves
#
# The ELBO (in nats per image, higher is better) of the training and the validation subsets along training.

# %%
colors = dict(zip(LABELS, ("C0", "C1", "C2", "C3")))
names = {"LOO": "REINFORCE + leave-one-out", "DisARM": "DisARM", "RELAX": "RELAX", "Gumbel": "Gumbel-softmax (0.5)"}
fig, ax = plt.subplots(figsize=(6.5, 3.8))
for label in LABELS:
  steps = [c[0] for c in results[label]["curve"]]
  ax.plot(steps, [c[1].mean() for c in results[label]["curve"]], color=colors[label], label=f"{names[label]}")
  ax.plot(steps, [c[2].mean() for c in results[label]["curve"]], color=colors[label], ls="--")
ax.set_xlabel("training step (2 evaluations of f per image)")
ax.set_ylabel("ELBO (nats per image)")
ax.set_title(f"Linear Bernoulli VAE, {LATENT} latents, {data['name']}\nsolid: training images, dashed: validation")
ax.set_ylim(bottom=max(min(c[2].mean() for r in results.values() for c in r["curve"][1:]) - 10, -400))
ax.legend()
plt.show()

for label in LABELS:
  first, last = results[label]["curve"][0], results[label]["curve"][-1]
  print(
    f"{names[label]:>26}: validation ELBO {first[2].mean():7.1f} -> {last[2].mean():7.1f}, "
    f"training {first[1].mean():7.1f} -> {last[1].mean():7.1f}"
  )

# %% [markdown]
# Every estimator improves the ELBO far beyond its Monte Carlo error. The gain is the average over images of
# the difference between each image's final and initial ELBO, and its standard error is the standard
# deviation of these differences over the square root of the number of images:

# %%
for label in LABELS:
  first, last = results[label]["curve"][0][2], results[label]["curve"][-1][2]
  gain, se = (last - first).mean(), (last - first).std(ddof=1) / np.sqrt(first.size)
  print(f"{names[label]:>26}: validation ELBO gain {gain:6.1f} nats = {gain / se:5.1f} standard errors")
  assert gain > 5 * se

# %% [markdown]
# ## Gradient variance
#
# The variance of one gradient estimate (2 evaluations of $f$) with respect to the encoder's logits, averaged
# over images and latent coordinates, at the start, the middle and the end of training (note the logarithmic
# scale).

# %%
fig, ax = plt.subplots(figsize=(6.5, 3.8))
for i, label in enumerate(LABELS):
  v = results[label]["variance"]
  offset = (i - 1.5) * STEPS * 0.01
  ax.errorbar(v[:, 0] + offset, v[:, 1], yerr=v[:, 2], fmt="o-", color=colors[label], label=names[label], capsize=3)
ax.set_yscale("log")
ax.set_xlabel("training step")
ax.set_ylabel("variance of the logit gradient")
ax.set_title("Gradient variance at equal evaluations of f (2 per image)")
ax.legend()
plt.show()

for label in LABELS:
  row = ", ".join(f"{v:.3g} +- {se:.2g}" for _, v, se in results[label]["variance"])
  print(f"{names[label]:>26}: {row}")

# %% [markdown]
# What to take away from the variance plot:
#
# * The **Gumbel-softmax** estimate has by far the lowest variance, more than 10 times below each unbiased
#   estimator's at every checkpoint (asserted below): it differentiates through the decoder, which the others
#   never do. Its price is bias: it follows the gradient of the relaxed objective, not the ELBO's. In this run
#   the bias did not hurt (its ELBO curve is the ELBO of hard samples, the true objective), but it can, and
#   the unbiased estimators are the safe default.
# * **DisARM** and **REINFORCE with the leave-one-out baseline** have comparable variance with two
#   evaluations of $f$: within a factor of 2 of each other at every checkpoint (asserted below).
# * **RELAX**, as the benchmark configures it, has a variance far above the leave-one-out estimator's (more
#   than 5 times, asserted below): its control $c_\psi(z)$ starts as a constant, the mean of $f$ over a batch,
#   while the leave-one-out baseline is, for free, an estimate of $f$ for *this* image. $f$ differs between
#   images by tens of nats, far more than between two samples for one image, so a control that does not yet
#   track $f$ across images is a poor baseline, and this one learns slowly (its own Adam step of rate
#   $10^{-3}$ per training step). RELAX's strength is a control that matches $f$ well, which takes a richer
#   control or much longer training.
# * The variance of the leave-one-out, DisARM and Gumbel-softmax estimates grows as training proceeds (asserted
#   below): the encoder becomes confident and the decoder more sensitive to the latent bits, so $f$ varies more
#   between samples. Each checkpoint measures an estimator at its own parameters at that step, so the later
#   checkpoints compare four slightly different models as well as four estimators.

# %%
variances = {label: results[label]["variance"] for label in LABELS}
for label in ("LOO", "DisARM", "RELAX"):
  ratio = variances[label][:, 1] / variances["Gumbel"][:, 1]
  print(f"variance of {names[label]} / Gumbel-softmax at steps {VARIANCE_AT}: {np.round(ratio, 1)}")
  # Each unbiased estimator's variance, less 4 of its standard errors, is still 10 times the Gumbel-softmax's
  # variance plus 4 of its standard errors.
  assert np.all(
    variances[label][:, 1] - 4 * variances[label][:, 2]
    > 10 * (variances["Gumbel"][:, 1] + 4 * variances["Gumbel"][:, 2])
  )
ratio = variances["RELAX"][:, 1] / variances["LOO"][:, 1]
print(f"variance of RELAX / leave-one-out at steps {VARIANCE_AT}: {np.round(ratio, 1)}")
assert np.all(
  variances["RELAX"][:, 1] - 4 * variances["RELAX"][:, 2] > 5 * (variances["LOO"][:, 1] + 4 * variances["LOO"][:, 2])
)
ratio = variances["DisARM"][:, 1] / variances["LOO"][:, 1]
print(f"variance of DisARM / leave-one-out at steps {VARIANCE_AT}: {np.round(ratio, 2)}")
assert np.all((0.5 < ratio) & (ratio < 2))
for label in ("LOO", "DisARM", "Gumbel"):  # grows from the first checkpoint to the last, by 4 standard errors
  (_, v0, se0), (_, v1, se1) = variances[label][0], variances[label][-1]
  assert v1 - v0 > 4 * np.hypot(se0, se1)

# %% [markdown]
# ## References
#
# * Dong, Mnih and Tucker, DisARM: an antithetic gradient estimator for binary latent variables, NeurIPS 2020.
# * Grathwohl, Choi, Wu, Roeder and Duvenaud, Backpropagation through the void: optimizing control variates
#   for black-box gradient estimation, ICLR 2018.
# * Jang, Gu and Poole, Categorical reparameterization with Gumbel-softmax, ICLR 2017.
# * Kool, van Hoof and Welling, Buy 4 REINFORCE samples, get a baseline for free!, ICLR workshop 2019.
# * Maddison, Mnih and Teh, The Concrete distribution: a continuous relaxation of discrete random variables,
#   ICLR 2017.
# * Williams, Simple statistical gradient-following algorithms for connectionist reinforcement learning, 1992.
