"""sfe_jax benchmarks: variance against exact values, throughput against hand-written JAX and the peers.

Run ``python -m benchmarks --help``. The suites, registered in :data:`benchmarks.suite.REGISTRY` (each a package
following :class:`benchmarks.suite.Suite`):

* ``variance`` (:mod:`benchmarks.gaussian`): single-sample gradient variances on the Gaussian cost functions of
  Mohamed et al. (2020) against their exact values;
* ``throughput``: ``sfe.value_and_grad`` against a hand-written jitted surrogate and the forward estimate,
  with chunked and sharded rows;
* ``bernoulli``: the Bernoulli toy's closed-form variances, and the REBAR/RELAX training toy;
* ``logistic``: Bayesian logistic regression trained by each continuous estimator;
* ``vae``: a discrete VAE trained by each discrete estimator at equal evaluations of f;
* ``rl``: policy gradients on gymnax CartPole;
* ``scale``: peak memory and time against ``num_samples`` and ``chunk_size``, each cell in a fresh process;
* ``peers``: the same gradient through sfe_jax, TFP, numpyro and hand-written JAX.

Shared machinery: :mod:`benchmarks.store` (the results file: atomic cells, lock, configuration hash,
provenance), :mod:`benchmarks.timing` (compiled-only timing), :mod:`benchmarks.report` (tables, CSV, JSON,
environment) and :mod:`benchmarks.compare` (``python -m benchmarks compare A B``).
"""
