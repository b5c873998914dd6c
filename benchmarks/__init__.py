"""sfe_jax benchmarks: variance against exact values, and throughput against hand-written JAX.

Run ``python -m benchmarks --help``. Suites:

* ``variance`` (:mod:`benchmarks.gaussian`): single-sample gradient variances of the score function, the score
  function with the optimal baseline, pathwise and coupled measure-valued estimators on the Gaussian cost
  functions of Mohamed et al. (2020), against their exact values.
* ``throughput`` (:mod:`benchmarks.throughput`): the time of ``sfe.value_and_grad`` against a hand-written
  jitted JAX surrogate of the same estimator and against the forward Monte Carlo estimate.

Each suite writes ``<suite>.md``, ``<suite>.csv`` and ``<suite>.json`` into the output folder.
"""
