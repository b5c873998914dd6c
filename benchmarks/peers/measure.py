r"""The functions timed (one per peer and estimator) and the cells of the peers suite.

Every function is ``(params, key) -> (value, {"loc": d/d mu, "scale": d/d sigma})`` with
``params = {"loc": mu, "scale": sigma}``, jitted by the timer; ``value`` estimates ``E[f]`` and the gradient is
the estimator's, from ``N`` samples.

numpyro: the gradient of ``Trace_ELBO``/``TraceGraph_ELBO`` is that of the ELBO, ``E_q[log p(x) - log q(x)]``.
To make it exactly the gradient of ``-E_q[f]``, with no entropy term and no extra noise, the model's sample site
``x`` has the guide's own distribution and a ``numpyro.factor("f", -f(x))``, so that ``log p(x) - log q(x) =
-f(x)`` sample by sample and ``elbo.loss`` (minus the ELBO) is the plain Monte Carlo estimate of ``E[f]``:

* pathwise (``Trace_ELBO``, the guide's ``Normal`` reparameterized): ``x = mu + sigma eps`` and the two log
  densities share ``mu`` and ``sigma``, so their derivatives cancel and the gradient is the mean of
  ``d f(mu + sigma eps) / d(mu, sigma)``, the pathwise estimator;
* score function (``TraceGraph_ELBO``): the guide's distribution is a subclass of ``numpyro.distributions.Normal``
  with ``reparametrized_params = []``, so ``has_rsample`` is ``False`` and numpyro treats the site as
  non-reparameterizable: it stops the gradient of the sample and of the guide's log density and adds the
  surrogate ``log q(x) * stop_gradient(cost)`` with the cost downstream of ``x`` (the model's terms minus the
  guide's), here ``-f(x)``. The model's copy of the guide's distribution takes ``stop_gradient`` of ``mu`` and
  ``sigma`` (else its own derivative, the score, would add a mean-zero term of its own), which leaves exactly
  the score-function estimator ``mean(f(x) d log q(x))``.

How that was verified (``tests/benchmarks/test_peers_benchmark.py``): with ``f = 0`` both give a gradient of
exactly zero (no entropy term survives); with ``f = 10`` the pathwise gradient is zero while the score-function
gradient is ``10 * mean(d log q)``, not zero (the score-function path is taken); and with the suite's ``f``
both are within a few standard errors of the exact gradient, whose closed-form standard errors differ by an
order of magnitude between the two estimators.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import distrax
import jax
import jax.numpy as jnp

import sfe_jax as sfe
from benchmarks import suite
from benchmarks.peers import problems
from benchmarks.peers.problems import PeersConfig
from benchmarks.timing import paired_ratio, time_interleaved

sg = jax.lax.stop_gradient
Fn = Callable[[Any, jax.Array], tuple[jax.Array, dict[str, jax.Array]]]


def _gaussian_log_prob(x, loc, scale):
  return -0.5 * jnp.square((x - loc) / scale) - jnp.log(scale) - 0.5 * math.log(2 * math.pi)


def hand_function(estimator: str, num_samples: int, cost: Callable = problems.cost) -> Fn:
  """The floor: ``jax.random.normal``, the log-density formula, a stop-gradient surrogate, ``jax.value_and_grad``."""

  def score_function(params, key):
    loc, scale = params["loc"], params["scale"]
    x = sg(loc + scale * jax.random.normal(key, (num_samples,) + loc.shape, loc.dtype))
    fx = cost(x)
    log_p = jnp.sum(_gaussian_log_prob(x, loc, scale), axis=-1)
    return jnp.mean(fx) + jnp.mean(sg(fx) * (log_p - sg(log_p)))

  def pathwise(params, key):
    loc, scale = params["loc"], params["scale"]
    return jnp.mean(cost(loc + scale * jax.random.normal(key, (num_samples,) + loc.shape, loc.dtype)))

  return jax.value_and_grad({"score_function": score_function, "pathwise": pathwise}[estimator])


def sfe_function(estimator: str, num_samples: int, cost: Callable = problems.cost) -> Fn:
  """``sfe.value_and_grad(sfe.score_function() | sfe.pathwise(), f, distrax.Normal, ...)``."""
  est = {"score_function": sfe.score_function, "pathwise": sfe.pathwise}[estimator]()

  def builder(params):
    return distrax.Normal(params["loc"], params["scale"])

  def run(params, key):
    value, grads, _ = sfe.value_and_grad(est, cost, builder, params, key, num_samples=num_samples)
    return value, grads

  return run


def tfp_function(estimator: str, num_samples: int, cost: Callable = problems.cost) -> Fn:
  """``tfp.monte_carlo.expectation`` (its DiCE surrogate when ``use_reparameterization=False``)."""
  from tensorflow_probability.substrates import jax as tfp  # noqa: PLC0415 (optional peer)

  tfd = tfp.distributions
  reparameterized = estimator == "pathwise"

  def surrogate(params, key):
    dist = tfd.Independent(tfd.Normal(params["loc"], params["scale"]), reinterpreted_batch_ndims=1)
    samples = dist.sample(num_samples, seed=key)
    return tfp.monte_carlo.expectation(
      cost, samples, log_prob=dist.log_prob, use_reparameterization=reparameterized, axis=0
    )

  return jax.value_and_grad(surrogate)


@functools.cache
def _score_normal():
  """``numpyro.distributions.Normal`` marked non-reparameterizable (``has_rsample`` is ``False``)."""
  import numpyro.distributions as nd  # noqa: PLC0415 (optional peer)

  class ScoreNormal(nd.Normal):
    reparametrized_params: list[str] = []

  return ScoreNormal


def numpyro_function(estimator: str, num_samples: int, cost: Callable = problems.cost) -> Fn:
  """``jax.value_and_grad`` of ``TraceGraph_ELBO`` (SF) or ``Trace_ELBO`` (PW) ``.loss`` (module docstring)."""
  import numpyro  # noqa: PLC0415 (optional peer)
  import numpyro.distributions as nd  # noqa: PLC0415
  from numpyro.infer import Trace_ELBO, TraceGraph_ELBO  # noqa: PLC0415

  reparameterized = estimator == "pathwise"
  guide_normal = nd.Normal if reparameterized else _score_normal()
  elbo = (Trace_ELBO if reparameterized else TraceGraph_ELBO)(num_particles=num_samples, vectorize_particles=True)

  def guide(dim):
    mu, sigma = numpyro.param("mu", jnp.zeros(dim)), numpyro.param("sigma", jnp.ones(dim))
    numpyro.sample("x", guide_normal(mu, sigma).to_event(1))

  def model(dim):
    mu, sigma = numpyro.param("mu", jnp.zeros(dim)), numpyro.param("sigma", jnp.ones(dim))
    if not reparameterized:
      mu, sigma = sg(mu), sg(sigma)
    x = numpyro.sample("x", nd.Normal(mu, sigma).to_event(1))
    numpyro.factor("f", -cost(x))

  def run(params, key):
    def loss(p):
      return elbo.loss(key, {"mu": p["loc"], "sigma": p["scale"]}, model, guide, p["loc"].shape[-1])

    return jax.value_and_grad(loss)(params)

  return run


FUNCTIONS: dict[str, Callable[..., Fn]] = {
  "hand": hand_function,
  "sfe_jax": sfe_function,
  "tfp": tfp_function,
  "numpyro": numpyro_function,
}


# ----------------------------------------------------------------------------------------------------------
# Timing.
# ----------------------------------------------------------------------------------------------------------
def timed_peers(config: PeersConfig) -> tuple[list[str], dict[str, str]]:
  """The peers timed (``hand`` first, always) and a note for each requested peer that cannot run here."""
  notes = {peer: note for peer in config.peers if (note := problems.missing(peer)) is not None}
  timed = ["hand"] + [p for p in config.peers if p != "hand" and p not in notes]
  return timed, notes


def measure_cell(
  config: PeersConfig, dim: int, num_samples: int, estimator: str, peers: list[str], notes: dict[str, str], cell_id: str
) -> list[dict[str, Any]]:
  """Times ``peers`` on one ``(D, N)`` and estimator, interleaved; one record per peer (timed or skipped)."""
  params = problems.initial_params(dim)
  key = config.key(cell_id)
  functions = {peer: FUNCTIONS[peer](estimator, num_samples) for peer in peers}
  timings = time_interleaved(
    functions,
    params,
    key,
    repeats=config.repeats,
    warmup=config.warmup,
    min_seconds=config.min_seconds,
    max_repeats=config.max_repeats,
  )
  floor = timings["hand"]
  common = {"estimator": estimator, "dim": dim, "num_samples": num_samples}
  records = []
  for peer in peers:
    t = timings[peer]
    value, grads = t["compiled"](params, key)
    relative, rms, max_z = problems.gradient_errors(estimator, params, grads, num_samples)
    records.append(
      {
        "kind": "timing",
        "peer": peer,
        **common,
        "seconds": t["median_seconds"],
        "min_seconds": t["min_seconds"],
        "compile_seconds": t["compile_seconds"],
        "repeats": len(t["times"]),
        "over_hand": t["median_seconds"] / floor["median_seconds"],
        "over_hand_paired": paired_ratio(t["times"], floor["times"]),
        "temp_bytes": t["temp_bytes"],
        "value": float(value),
        "relative_error": relative,
        "rms_relative_error": rms,
        "max_abs_z": max_z,
      }
    )
  for peer, note in notes.items():
    records.append({"kind": "skipped", "peer": peer, **common, "note": note})
  return records


def cells(config: PeersConfig) -> list[suite.Cell]:
  """One cell per ``(D, N)`` and estimator: every peer timed together, interleaved, against the floor.

  The id names the peers timed, so that a run after installing a missing peer measures the cell again.
  """
  peers, notes = timed_peers(config)
  out = []
  for dim, num_samples in config.sizes:
    for estimator in config.estimators:
      cell_id = f"peers/D={dim}/N={num_samples}/{estimator}/{'+'.join(peers)}"
      out.append((cell_id, functools.partial(measure_cell, config, dim, num_samples, estimator, peers, notes, cell_id)))
  return out
