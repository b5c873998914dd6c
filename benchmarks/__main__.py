"""Command line.

``python -m benchmarks {variance,bernoulli,logistic,vae,rl,throughput,scale,all} [--quick|--full] [--out DIR]
[--device cpu|gpu]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

DESCRIPTION = """\
Benchmarks of sfe_jax. Each suite shows a progress bar and appends every finished cell (one estimator on one
problem at one size) to <suite>.jsonl in --out at once, with the device, JAX version and seed; a re-run with
the same --out resumes where an interrupted one stopped (nothing finished is recomputed; delete the .jsonl to
start over). The reports are rebuilt from the JSON lines: <suite>.md (the summary), <suite>.csv (one line per
measurement), <suite>.json (configuration, environment and measurements) and <suite>.png (plots).

suites:
  variance    Single-sample variance and mean of the gradient of E_{x~N(mu,sigma^2)}[f(x;k)] at mu=sigma=1 for
              the 8 cost functions of closed_forms.md Section 1 ((x-k)^2, exp(-kx^2), cos(kx)) and 6 more
              values of k, for the score function (SF), SF with the optimal baseline (SF*, measured with N
              samples, N x Var reported), pathwise (PW), coupled measure-valued (MVD) and SF with the
              delta-method control variate, each beside its exact value, with a flag when a measured value is
              more than 5 standard errors from it; work-normalised variance (variance x seconds per
              estimate); variance.png plots the measured points on the exact curves against k.
  throughput  Median time of jitted sfe.value_and_grad (score function, pathwise) on a 100-dimensional
              diagonal Gaussian at num_samples 1e3, 1e4, 1e5, against a hand-written JAX version of the same
              estimator (target: within 5%) and against the forward Monte Carlo estimate (target: under 2x).
  bernoulli   The Bernoulli toy E[(b - p0)^2] (closed_forms.md Section 2): single-estimate variance against p
              for REINFORCE, REINFORCE leave-one-out, ARM, DisARM (closed forms beside the measured points),
              RELAX with a fixed control and Gumbel-softmax (with its bias), work-normalised variance, and
              the REBAR/RELAX training toy (p0 = 0.45 and 0.499, Adam 0.01 from phi = 0); PNG plots.
  logistic    Bayesian logistic regression on scikit-learn's breast-cancer data (closed_forms.md Section 3):
              ELBO and accuracy over training, and per-dimension gradient variance of mean and log_scale at
              checkpoints, for pathwise, score function and measure-valued, each with and without the
              delta-method control variate, and the score function with a moving-average baseline.
  vae         Discrete VAE with Bernoulli latents, linear and nonlinear (closed_forms.md Section 4), trained
              with REINFORCE leave-one-out, ARM, DisARM, RELAX and Gumbel-softmax at 2 evaluations of f per
              example: training ELBO, 100-sample importance-weighted test bound and gradient variance along
              training (--data for binarized MNIST; the quick preset uses fewer latents, see vae.md).
  rl          Policy gradients (sfe_jax.rl) on gymnax CartPole-v1: REINFORCE with a leave-one-out or a learned
              value baseline and PPO trained until the mean return of sampled evaluation episodes is 500 (the
              cap): environment steps and seconds to solve, learning curves, and the variance of five
              policy-gradient estimators (no baseline, leave-one-out, value, actor-critic GAE, PPO's first
              step) at fixed parameters along training, and the time of the losses' gradients against
              hand-written JAX.
  scale       Peak resident memory and seconds per gradient of jitted sfe.value_and_grad (score function,
              pathwise) on a 100-dimensional diagonal Gaussian against num_samples (1e5, 1e6; the full preset
              up to 1e8), unchunked and with chunk_size 1e4, 1e5 (1e6), each cell in a fresh process; the
              fastest chunk size per num_samples.
  all         All seven.
"""


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
    prog="python -m benchmarks", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument(
    "suite",
    choices=("variance", "bernoulli", "logistic", "vae", "rl", "throughput", "scale", "all"),
    help="which benchmark to run",
  )
  mode = parser.add_mutually_exclusive_group()
  mode.add_argument(
    "--quick",
    dest="mode",
    action="store_const",
    const="quick",
    help="the default: 2e4 repeats per variance cell, 30 timed runs per function "
    "(a few minutes at most on 2 CPU cores)",
  )
  mode.add_argument(
    "--full",
    dest="mode",
    action="store_const",
    const="full",
    help="2e5 repeats per variance cell (SF*: 1e5 repeats of 400 samples), 200 timed runs per "
    "function; tighter intervals and more stable timings, several times slower",
  )
  parser.add_argument(
    "--out",
    default="bench-results",
    metavar="DIR",
    help="folder for the results and reports (created if missing; default: %(default)s)",
  )
  parser.add_argument(
    "--data",
    default=None,
    metavar="PATH",
    help="for the vae suite: a binarized MNIST .npz with train/valid/test arrays of 784 0/1 pixels "
    "(e.g. ../shared/data/binarized_mnist/binarized_mnist.npz); default: scikit-learn's "
    "8x8 digits, binarized, shipped with scikit-learn (no download)",
  )
  parser.add_argument(
    "--device",
    choices=("cpu", "gpu"),
    default=None,
    help="run on the CPU or on the GPU (needs a CUDA build of jaxlib, e.g. "
    "pip install 'jax[cuda12]'); default: JAX's default device",
  )
  args = parser.parse_args(argv)
  mode = args.mode or "quick"
  select_device(args.device)

  # Imported after parsing so that --help is instant.

  from benchmarks import bernoulli, gaussian, logistic, rl, scale, throughput, vae  # noqa: PLC0415

  by_name = {
    "variance": gaussian,
    "bernoulli": bernoulli,
    "logistic": logistic,
    "vae": vae,
    "rl": rl,
    "throughput": throughput,
    "scale": scale,
  }
  suites = tuple(by_name) if args.suite == "all" else (args.suite,)
  start = time.perf_counter()
  outside = 0
  for suite in suites:
    print(f"[{suite}] {mode} mode, writing into {os.path.abspath(args.out)}", flush=True)
    log = lambda line: print(line, flush=True)  # noqa: E731
    module = by_name[suite]
    config = module.PRESETS[mode]
    if suite == "vae" and args.data is not None:
      config = dataclasses.replace(config, data_path=args.data)
    result = module.run(config, args.out, log=log)
    outside += result["meta"].get("outside", 0)
    print(result["markdown"], flush=True)
    print(f"[{suite}] done in {result['meta']['seconds']:.1f} s: " + ", ".join(result["paths"].values()), flush=True)
  print(f"total {time.perf_counter() - start:.1f} s", flush=True)
  if outside:
    print(f"WARNING: {outside} variance measurements are outside their intervals (see the reports).", flush=True)
  return 0


def select_device(device: str | None) -> None:
  """Makes ``device`` JAX's default device; a clear error if there is none of that kind."""
  if device is None:
    return
  import jax  # noqa: PLC0415

  platform = {"cpu": "cpu", "gpu": "gpu"}[device]
  try:
    devices = jax.devices(platform)
  except RuntimeError as e:
    raise SystemExit(
      f"--device {device}: JAX has no {device.upper()} backend here ({e}). For a GPU install a CUDA build of "
      "jaxlib, for example pip install 'jax[cuda12]'."
    ) from e
  jax.config.update("jax_default_device", devices[0])
  print(f"device: {devices[0]}", flush=True)


if __name__ == "__main__":
  sys.exit(main())
