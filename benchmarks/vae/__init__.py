r"""Discrete VAE benchmark (``closed_forms.md``, Section 4): Bernoulli latents, training with each estimator.

Model. ``latent`` Bernoulli latents ``b`` with learnable prior logits ``a`` (``log p(b) = sum b log sigmoid(a) +
(1 - b) log sigmoid(-a)``); Bernoulli pixels. ``linear``: encoder ``x -> logits`` and decoder ``b -> pixel
logits`` are affine maps. ``nonlinear``: two hidden layers of ``hidden`` units with LeakyReLU(0.3) in the
encoder, the mirror in the decoder. The decoder's output bias starts at the logit of the mean training pixel.

Objective. The ELBO per example is ``E_q[log p(x, b)] + H(q(.|x))``. The first term's gradient is estimated by
``sfe.expectation`` with ``f(b) = -log p(x, b)`` (the decoder and prior are closed over, so they get the
ordinary gradient of the Monte Carlo average), per example under ``jax.vmap`` (the estimator's params are the
encoder's logits for that example, ``dist_builder`` makes ``distrax.Bernoulli``); the entropy of the factorised
``q`` is exact and differentiated analytically. The loss is minus the batch mean; Adam on every model parameter.

Estimators, at equal evaluations of ``f`` per example and step (2 each; ``evaluations`` is in every record):

* ``LOO``: REINFORCE with the leave-one-out baseline, ``sfe.score_function(sfe.baselines.leave_one_out())``,
  2 samples.
* ``ARM`` / ``DisARM``: ``sfe.arm()`` / ``sfe.disarm()``, one antithetic pair (``num_samples=2``).
* ``RELAX``: ``sfe.relax``, 2 samples (2 evaluations of ``f`` plus 4 of the control). The control is small and
  does not call ``f``: ``c(z) = a + w2 . tanh(Wz z + Wx x + b1)`` with ``RELAX_HIDDEN`` units, so it depends on
  the noisy logits ``z`` and on the example ``x`` (closed over). ``a`` starts at the mean of ``f`` over the
  first training batch at the initial model (a data-dependent start, so the control begins as a baseline of
  the right size), ``w2 = 0``, ``Wz, Wx`` small random. It is trained by ``sfe.relax`` itself with
  ``optax.adam(control_learning_rate)`` on the single-estimate variance; under ``jax.vmap`` each example
  proposes an updated control state and the benchmark keeps their batch mean (exact for the control
  gradient's first moment; an approximation of Adam on the batch-mean variance objective).
* ``Gumbel``: ``sfe.gumbel_softmax(GUMBEL_TEMPERATURE)`` (binary Concrete, temperature 0.5), 2 samples (2
  evaluations of ``f`` and its derivative at relaxed points). Biased; its decoder gradient is also that of
  relaxed samples.

Measures, per training run (one cell per ``(model, estimator)``):

* ``curve``: ``[step, training ELBO]`` every ``log_every`` steps, the ELBO being the mean over the window's
  batches of ``log p(x, b) + H(q)`` with ONE fresh hard sample ``b ~ q`` per example (the same unbiased monitor
  for every estimator, Gumbel included; this extra evaluation of ``f`` is not part of the estimators' cost).
* ``checkpoints``: every ``checkpoint_every`` steps (and at 0 and at the end), ``[step, test IW bound, test
  ELBO, gradient variance, gradient mean square]``: the ``iw_samples``-sample importance-weighted bound
  ``log 1/K sum_k p(x, b_k) / q(b_k | x)`` and the ELBO (``K = 1``, same samples' first) averaged over the
  first ``num_test`` test images; and, on a fixed batch (the first ``batch_size`` training images),
  ``variance_repeats`` independent estimates of the gradient of the loss with respect to the encoder's
  logits (shape ``(batch, latent)``): the per-coordinate variance averaged over examples and latents, and the
  mean square of the per-coordinate mean less variance / repeats (unbiased for the squared gradient, the
  signal) likewise.
* Times: ``seconds`` (and ``seconds_per_step``), the steady-state time of the compiled training steps, each
  segment of ``log_every`` steps timed to completion (``block_until_ready``) after ahead-of-time compilation
  and one untimed warm-up segment, without the checkpoint evaluations; ``compile_seconds``, compiling the
  training and evaluation programs, apart; ``wall_seconds``, the whole cell (everything included).

Data. ``data_path``: an ``.npz`` with ``train``/``valid``/``test`` uint8 0/1 arrays (binarized MNIST, 784 pixels).
``data_path=None``: an embedded default needing no download, scikit-learn's ``load_digits`` (1797 8x8 images,
64 pixels) binarized at ``>= 8``, permuted with a fixed seed and split 1200 / 297 / 300.

Seeds: every cell's key is ``config.key(cell id)`` = ``fold_in(key(seed), crc32(cell id))``.
"""

from __future__ import annotations

from benchmarks import suite
from benchmarks.vae.measure import (
  batch_loss,
  cell_id,
  cells,
  control_offset,
  init_control,
  make_estimator,
  measure_training,
  per_example_loss,
)
from benchmarks.vae.problems import (
  DIGITS_SPLIT,
  ESTIMATORS,
  EVALUATIONS,
  GUMBEL_TEMPERATURE,
  LEAKY_SLOPE,
  MODELS,
  NUM_SAMPLES,
  PRESETS,
  RELAX_HIDDEN,
  SUITE,
  VAEConfig,
  bounds,
  dist_builder,
  elbo_one_sample,
  encode,
  entropy,
  init_model,
  load_data,
  log_joint,
  log_q,
)
from benchmarks.vae.render import plot, to_markdown

SUMMARY = """\
Discrete VAE with Bernoulli latents, linear and nonlinear (closed_forms.md Section 4), trained with
REINFORCE leave-one-out, ARM, DisARM, RELAX and Gumbel-softmax at 2 evaluations of f per example:
training ELBO, 100-sample importance-weighted test bound and gradient variance along training, and
the seconds of the compiled training steps (compilation timed apart) (--data for binarized MNIST;
the quick preset uses fewer latents, see vae.md)."""

OPTIONS: tuple[suite.Option, ...] = (
  suite.Option(
    "--data",
    "data_path",
    help="a binarized MNIST .npz with train/valid/test arrays of 784 0/1 pixels "
    "(e.g. ../shared/data/binarized_mnist/binarized_mnist.npz); default: scikit-learn's "
    "8x8 digits, binarized, shipped with scikit-learn (no download)",
    metavar="PATH",
  ),
)

__all__ = [
  "DIGITS_SPLIT",
  "ESTIMATORS",
  "EVALUATIONS",
  "GUMBEL_TEMPERATURE",
  "LEAKY_SLOPE",
  "MODELS",
  "NUM_SAMPLES",
  "OPTIONS",
  "PRESETS",
  "RELAX_HIDDEN",
  "SUITE",
  "SUMMARY",
  "VAEConfig",
  "batch_loss",
  "bounds",
  "cell_id",
  "cells",
  "dist_builder",
  "elbo_one_sample",
  "encode",
  "entropy",
  "control_offset",
  "init_control",
  "init_model",
  "load_data",
  "log_joint",
  "log_q",
  "make_estimator",
  "measure_training",
  "per_example_loss",
  "plot",
  "run",
  "to_markdown",
]


def run(config: VAEConfig, out_dir: str | None = None, log: suite.Log = print) -> dict:
  """Runs (or resumes, from ``out_dir/vae.jsonl``) the VAE suite and writes its reports.

  Args:
    config: the configuration (checked first).
    out_dir: the folder of the results and reports; ``None``: in memory only.
    log: receives the progress lines.

  Returns:
    ``{"records": [...], "markdown": str, "meta": {...}, "paths": {...}}``.
  """
  return suite.run(SUITE, config, cells, to_markdown, plot, out_dir, log)
