"""Statistical helpers shared by the test modules.

Tolerances come from standard errors, never from hand-tuning: a Monte Carlo mean is compared with the exact
value within ``NUM_SE`` standard errors, and a Monte Carlo variance within ``NUM_SE`` standard errors of the
variance estimate, computed from the fourth central moment by ``sfe.diagnostics.variance_and_std_error`` (the
chi-square bound is only valid for Gaussian estimates; gradient estimates are heavy-tailed, so the
fourth-moment form is the honest one).
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np

import sfe_jax as sfe

NUM_SE = 5.0


def repeated_estimates(estimator, f, dist_builder, params, key, *, num_samples, num_repeats, state=None):
  """``num_repeats`` independent estimates, jitted: (values (R,), grads with a leading R axis)."""
  run = jax.jit(
    lambda k: sfe.diagnostics.repeated_estimates(
      estimator, f, dist_builder, params, k, num_samples=num_samples, num_repeats=num_repeats, state=state
    )
  )
  return run(key)


def smallest_num_samples(estimator, dist_builder, params, at_least=1):
  """The smallest ``num_samples`` (evaluations of f) that ``estimator`` accepts here, and at least ``at_least``."""
  count = estimator.sample_count(dist_builder(params))
  n = count.smallest
  while n < at_least:
    n += count.multiple
  return n


def mean_and_se(samples):
  x = np.asarray(samples, dtype=np.float64)
  return x.mean(axis=0), x.std(axis=0, ddof=1) / np.sqrt(x.shape[0])


def variance_and_se(samples):
  """Unbiased sample variance and its standard error, in float64 (``sfe.diagnostics.variance_and_std_error``)."""
  return sfe.diagnostics.variance_and_std_error(np.asarray(samples, dtype=np.float64))


def assert_mean(samples, exact, *, what="mean", num_se=NUM_SE, atol=1e-6):
  mean, se = mean_and_se(samples)
  exact = np.asarray(exact, dtype=np.float64)
  bound = num_se * se + atol
  assert np.all(np.abs(mean - exact) <= bound), (
    f"{what}: Monte Carlo mean {mean} differs from exact {exact} by more than {num_se} standard errors ({se})."
  )


def assert_variance(samples, exact_var, *, scale=1.0, what="variance", num_se=NUM_SE, rtol=0.0):
  """``scale * Var(samples)`` matches ``exact_var`` within ``num_se`` standard errors (+ ``rtol`` model error)."""
  var, se = variance_and_se(samples)
  var, se = scale * var, scale * se
  exact_var = np.asarray(exact_var, dtype=np.float64)
  bound = num_se * se + rtol * np.abs(exact_var) + 1e-12
  assert np.all(np.abs(var - exact_var) <= bound), (
    f"{what}: Monte Carlo variance {var} differs from exact {exact_var} by more than {num_se} standard errors ({se})."
  )


def enumerate_expectation(f, dist_builder, params, support_points):
  """Exact ``E[f(x)]`` over a finite support: ``sum_x p(x) f(x)``; differentiable in params."""
  dist = dist_builder(params)
  xs = jnp.asarray(support_points)
  logp = jax.vmap(lambda x: jnp.sum(dist.log_prob(x)))(xs)
  return jnp.sum(jnp.exp(logp) * jax.vmap(f)(xs))


def bernoulli_support(shape):
  size = int(np.prod(shape))
  return np.array(list(itertools.product([0, 1], repeat=size)), dtype=np.int32).reshape((-1,) + tuple(shape))


def categorical_support(shape, num_categories):
  size = int(np.prod(shape))
  points = list(itertools.product(range(num_categories), repeat=size))
  return np.array(points, dtype=np.int32).reshape((-1,) + tuple(shape))


def flat(tree):
  """Stacks a pytree of arrays with a common leading axis into (leading, -1) numpy, leaves in tree order."""
  leaves = jax.tree.leaves(tree)
  return np.concatenate([np.asarray(l).reshape(l.shape[0], -1) for l in leaves], axis=1)


def flat1(tree):
  return np.concatenate([np.asarray(l).reshape(-1) for l in jax.tree.leaves(tree)])
