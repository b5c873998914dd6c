r"""DiCE: surrogates for stochastic computation graphs whose every derivative is an unbiased estimate.

A stochastic computation graph has stochastic nodes ``x_w ~ p_theta(x_w | parents)`` and costs ``c_t`` that
depend on some of the nodes (and possibly on ``theta`` directly). The Infinitely Differentiable Monte Carlo
Estimator (DiCE, Foerster et al. 2018) is the surrogate

.. math::

    L = \sum_t \square\Big(\sum_{w \in W_t} \log p(x_w)\Big)\, c_t,
    \qquad \square(x) = \exp(x - \mathrm{stop\_gradient}(x)),

where ``W_t`` is the set of stochastic nodes that influence cost ``t``. ``box`` is 1 in value and
``d box(x) = box(x) dx``, so ``L`` evaluates to ``sum_t c_t`` and, for every ``n``, the ``n``-th derivative of
``L`` (``jax.grad`` applied ``n`` times, ``jax.hessian``, ``jax.jacfwd``...) is an unbiased estimate of the
``n``-th derivative of ``E[sum_t c_t]``. Baselines (Mao et al. 2019) add a term of zero expectation at every
order that reduces the variance.

This module works on arrays of already computed log-probabilities and costs, so it fits any sampler: samples
``x_w`` must enter the costs and the log-probabilities as constants (``jax.lax.stop_gradient``, or samples of a
discrete distribution, which carry no gradient anyway); otherwise pathwise terms are added on top of the
score-function terms and the estimate is no longer DiCE's.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def magic_box(x: Array) -> Array:
  """DiCE's magic box ``exp(x - stop_gradient(x))``: 1 in value, ``d box(x) = box(x) dx``.

  Where ``x`` is infinite (a log-probability of ``-inf`` or ``inf`` at a sample) the box is exactly 1 with a
  zero derivative, instead of ``exp(inf - inf) = NaN``: such a sample keeps its cost in the value and adds no
  score term. A NaN stays NaN.
  """
  finite_x = jnp.where(jnp.isinf(x), jnp.zeros_like(x), x)
  return jnp.exp(finite_x - jax.lax.stop_gradient(finite_x))


def _as_float_array(x: Any, name: str, min_ndim: int = 1) -> Array:
  x = jnp.asarray(x)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise TypeError(f"`{name}` must be a floating-point array (it is differentiated); got dtype {x.dtype}.")
  if x.ndim < min_ndim:
    raise ValueError(
      f"`{name}` must have at least {min_ndim} dimension(s), the last one indexing its nodes; got shape "
      f"{x.shape}. For one cost, pass an array of shape (1,)."
    )
  return x


def _check_dependencies(dependencies: Any, num_costs: int, num_nodes: int) -> np.ndarray:
  if isinstance(dependencies, jax.core.Tracer):
    raise TypeError(
      "`dependencies` must be a concrete (numpy or Python) boolean matrix: it is the graph's structure, "
      "not data. Close over it instead of passing it through jax.jit as a traced argument."
    )
  dep = np.asarray(dependencies)
  if dep.shape != (num_costs, num_nodes):
    raise ValueError(
      f"`dependencies` must have shape (num_costs, num_nodes) = ({num_costs}, {num_nodes}), with "
      f"dependencies[t, w] true when stochastic node w influences cost t; got shape {dep.shape}."
    )
  if dep.dtype != np.bool_:
    if not np.all((dep == 0) | (dep == 1)):
      raise ValueError("`dependencies` must be boolean (or 0/1); it has other values.")
    dep = dep.astype(bool)
  return dep


def surrogate(
  costs: Array,
  log_probs: Array,
  *,
  dependencies: Any | None = None,
  baselines: Array | None = None,
) -> Array:
  r"""The DiCE surrogate of ``E[sum_t c_t]``, averaged over leading batch axes; all its derivatives are unbiased.

  .. math::

      L = \sum_t \square\Big(\sum_{w \in W_t} \log p(x_w)\Big)\, c_t
          \;+\; \sum_w \big(1 - \square(\log p(x_w))\big)\, \square\Big(\sum_{v < w} \log p(x_v)\Big)\, b_w .

  *Sequences* (``dependencies=None``, the common case): stochastic node ``t`` (e.g. the actions at time ``t``)
  influences costs ``t, t + 1, ...``, so ``W_t = {0, ..., t}`` and the magic box holds the cumulative sum of
  log-probabilities. The first derivative is then REINFORCE with reward-to-go and baseline,
  ``sum_t grad log p(x_t) (sum_{s >= t} c_s - b_t)`` (plus ``sum_t grad c_t`` for costs that depend on theta
  directly). *General graphs*: pass ``dependencies[t, w] = True`` when node ``w`` influences cost ``t``.

  Unbiasedness. For every order ``n``, ``E[nabla^n L] = nabla^n E[sum_t c_t]`` when the samples enter as
  constants (stop-gradient), each ``log_probs[w]`` is ``log p_theta(x_w | parents of w)`` evaluated
  differentiably in theta, and ``W_t`` contains every node that ``c_t`` depends on (extra nodes only add
  variance, missing ones give bias).

  Baselines (Mao, Foerster, Rocktäschel, Al-Shedivat, Farquhar and Whiteson 2019, Section 4). The baseline
  term equals ``sum_w (box(S_{<w}) - box(S_{<=w})) b_w`` with ``S_{<w} = sum_{v<w} log p(x_v)``: 0 in value,
  and of zero expectation at *every* order: integrating ``x_w`` out of
  ``nabla^n [p(x_{<=w}) b_w]`` gives ``nabla^n [p(x_{<w}) b_w]``, the other half of the term. This holds
  whenever ``b_w`` does not depend on ``x_w`` nor on later nodes (it may depend on earlier nodes, on
  observations, and even on theta, but pass it through ``jax.lax.stop_gradient`` unless you mean to
  differentiate it: a critic's own loss belongs elsewhere). So baselines never change the expectation of any
  derivative; they reduce the variance of the first derivative as ``b_w ~ E[sum_{t >= w} c_t | x_{<w}]``
  (the value function) does for REINFORCE, and, unlike the first-order form ``(1 - box(log p_w)) b_w`` of
  Foerster et al. (2018), they also act as control variates for the score-function products in the higher
  derivatives. Baselines need the sequence structure (``dependencies=None``), which fixes the nodes ``v < w``.

  Variance. Without baselines the ``n``-th derivative is a sum of products of ``n`` score terms times costs;
  its variance grows with the horizon and with ``n``. Average over a batch (leading axes) and use baselines.

  Args:
    costs: ``(..., T)`` costs ``c_t`` (e.g. discounted rewards ``gamma^t r_t``, with the sign of the objective
      you want the derivative of); leading axes are a batch of independent samples of the whole graph.
    log_probs: ``(..., N)`` log-probabilities ``log p_theta(x_w | parents)`` of the sampled stochastic nodes,
      differentiable in theta; the same leading axes as ``costs``. ``N == T`` for sequences.
    dependencies: ``None`` for a sequence, or a concrete boolean ``(T, N)`` matrix (numpy), ``True`` at
      ``[t, w]`` when node ``w`` influences cost ``t``.
    baselines: ``None``, or ``(..., N)`` baselines ``b_w`` (sequences only), one per stochastic node.

  Returns:
    A scalar: the batch mean of ``L``. Its value is the batch mean of ``sum_t c_t``; its ``n``-th derivative
    is an unbiased estimate of the ``n``-th derivative of ``E[sum_t c_t]``.

  Raises:
    TypeError / ValueError: on non-floating inputs, mismatched shapes, or a malformed ``dependencies``.

  Examples:
    >>> import jax, jax.numpy as jnp, distrax, sfe_jax as sfe
    >>> theta, key = jnp.array(0.5), jax.random.key(0)
    >>> def loss(theta):
    ...   dist = distrax.Normal(theta, 1.0)
    ...   x = jax.lax.stop_gradient(dist.sample(seed=key, sample_shape=(100_000, 1)))
    ...   return sfe.objectives.dice(x ** 2, dist.log_prob(x))  # E[x^2] = theta^2 + 1
    >>> bool(abs(jax.grad(jax.grad(loss))(theta) - 2.0) < 0.1)  # the exact second derivative is 2
    True

  References:
    Foerster, Farquhar, Al-Shedivat, Rocktäschel, Xing and Whiteson, "DiCE: The Infinitely Differentiable
    Monte Carlo Estimator", ICML 2018. Mao, Foerster, Rocktäschel, Al-Shedivat, Farquhar and Whiteson, "A
    Baseline for Any Order Gradient Estimation in Stochastic Computation Graphs", ICML 2019. Schulman, Heess,
    Weber and Abbeel, "Gradient Estimation Using Stochastic Computation Graphs", NeurIPS 2015.
  """
  costs = _as_float_array(costs, "costs")
  log_probs = _as_float_array(log_probs, "log_probs")
  if costs.shape[:-1] != log_probs.shape[:-1]:
    raise ValueError(
      f"`costs` and `log_probs` must have the same leading (batch) axes; got shapes {costs.shape} and "
      f"{log_probs.shape} (the last axis indexes costs and stochastic nodes respectively)."
    )
  num_costs, num_nodes = costs.shape[-1], log_probs.shape[-1]
  dtype = jnp.result_type(costs.dtype, log_probs.dtype)
  costs, log_probs = costs.astype(dtype), log_probs.astype(dtype)

  if dependencies is None:
    if num_costs != num_nodes:
      raise ValueError(
        f"With `dependencies=None` (a sequence: node t influences costs t, t+1, ...), `costs` and "
        f"`log_probs` need the same last axis; got {num_costs} costs and {num_nodes} nodes. Pass a "
        "(num_costs, num_nodes) boolean `dependencies` matrix for another graph."
      )
    inclusive = jnp.cumsum(log_probs, axis=-1)  # S_{<=t}
  else:
    if baselines is not None:
      raise ValueError(
        "`baselines` need the sequence structure (`dependencies=None`): the any-order baseline term "
        "box(S_{<w}) (1 - box(log p_w)) b_w needs the nodes that precede each node."
      )
    dep = _check_dependencies(dependencies, num_costs, num_nodes)
    inclusive = log_probs @ jnp.asarray(dep.T, dtype)  # (..., T): sum of log p_w over w in W_t
  per_sample = jnp.sum(magic_box(inclusive) * costs, axis=-1)

  if baselines is not None:
    baselines = _as_float_array(baselines, "baselines").astype(dtype)
    if baselines.shape != log_probs.shape:
      raise ValueError(
        f"`baselines` must have the shape of `log_probs`, one baseline per stochastic node; got "
        f"{baselines.shape}, expected {log_probs.shape}."
      )
    exclusive = inclusive - log_probs  # S_{<t}
    per_sample = per_sample + jnp.sum((magic_box(exclusive) - magic_box(inclusive)) * baselines, axis=-1)

  return jnp.mean(per_sample) if per_sample.ndim else per_sample
