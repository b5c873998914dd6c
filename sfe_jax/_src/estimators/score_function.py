r"""The score-function (log-derivative, REINFORCE) estimator."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from sfe_jax._src.core import checks, differentiation, sampling, types
from sfe_jax._src.objectives import dice
from sfe_jax._src.variance.baselines import Baseline


def per_sample_scores(dist_builder, params, points):
  """``grad_params log p(x_i)`` for each sample: the structure of params with a leading ``N`` axis.

  ``points`` are the log-prob points of :func:`sampling.draw`. Leaves of ``params`` that are not differentiated
  (see :func:`sfe_jax.value_and_grad`) get ``None``.
  """
  split, diff = differentiation.split_params(differentiation.stop_gradient(params))

  def log_prob(d, x):
    return sampling.joint_log_prob(dist_builder(split.merge(d)), x[None])[0]

  return split.grads(jax.vmap(jax.grad(log_prob), in_axes=(None, 0))(diff, points))


def score_function(baseline: Baseline | None = None) -> types.Estimator:
  r"""The score-function estimator (log-derivative trick, REINFORCE; Williams 1992).

  .. math::
     \nabla_\theta E_{p_\theta}[f(x)] = E_{p_\theta}[(f(x) - b)\, \nabla_\theta \log p_\theta(x)]
     \approx \frac{1}{N} \sum_{i=1}^N (f(x_i) - b_i)\, \nabla_\theta \log p_\theta(x_i),

  where :math:`\log p_\theta(x)` is summed over all batch and event dimensions of the distribution.

  * Needs of the distribution: ``sample`` and a ``log_prob`` differentiable in the parameters; works for
    discrete and continuous distributions alike. ``f`` is never differentiated (it may be a black box that
    is not differentiable at all) and samples are never differentiated.
  * Bias: none, for any baseline independent of the sample it multiplies (all of :mod:`sfe_jax.baselines`).
  * Variance: often large; it grows with ``f``'s magnitude (shift ``f`` and the variance changes) and with the
    dimension. Baselines reduce it.
  * Cost: one evaluation of ``f`` per sample; ``num_samples`` is the number of evaluations.

  The surrogate is in DiCE form (Foerster et al. 2018), with the baseline entering as in Mao et al. (2019):

  .. math::
     L = \frac1N \sum_i \Big[ f(x_i)\, \square(\log p_\theta(x_i)) + \bot(b_i)\,\big(1 - \square(\log
     p_\theta(x_i))\big) \Big], \qquad \square(u) = e^{u - \bot u},

  (``⊥`` = stop_gradient). Its value is the Monte Carlo average of ``f``; its gradient in ``theta`` is the
  estimator above; its gradient in anything ``f`` closes over is the gradient of the Monte Carlo average; and
  **every higher derivative** is unbiased too: :math:`\nabla^n L` averages
  :math:`(f(x_i) - b_i)\, \nabla^n p_\theta(x_i) / p_\theta(x_i)` (e.g. :math:`(f - b)(s s^\top + \nabla^2
  \log p)` for the Hessian, ``s`` the score), whose expectation is :math:`\nabla^n E[f]` because ``b_i`` does
  not depend on ``x_i`` and :math:`E[\nabla^n p / p] = \nabla^n 1 = 0`. Mixed derivatives in ``theta`` and in
  what ``f`` closes over are unbiased as well. The per-coordinate ``baselines.optimal()`` enters as a term
  linear in ``params`` (it needs the per-sample scores): it reduces the variance of the first derivative, and
  higher derivatives are those of the score function without a baseline (still unbiased).

  Args:
    baseline: a :class:`sfe_jax.baselines.Baseline`, or ``None`` for no baseline.

  Returns:
    An :class:`sfe_jax.Estimator`.

  Examples:
    >>> import jax, jax.numpy as jnp, distrax, sfe_jax as sfe
    >>> dist_builder = lambda p: distrax.Bernoulli(logits=p)
    >>> f = lambda b: jnp.sum(b * jnp.array([1.0, 2.0]))   # E[f] = sigmoid(p) . [1, 2]; f is a black box
    >>> est = sfe.score_function(baseline=sfe.baselines.leave_one_out())
    >>> _, grads, _ = sfe.value_and_grad(est, f, dist_builder, jnp.zeros(2), jax.random.key(0),
    ...                                  num_samples=100_000)
    >>> bool(jnp.allclose(grads, jnp.array([0.25, 0.5]), atol=0.02))
    True

  References:
    Williams, Simple statistical gradient-following algorithms for connectionist reinforcement learning,
    1992. Mohamed, Rosca, Figurnov and Mnih, Monte Carlo gradient estimation in machine learning, JMLR 2020,
    Section 4. Foerster, Farquhar, Al-Shedivat, Rocktäschel, Xing and Whiteson, DiCE: the infinitely
    differentiable Monte Carlo estimator, ICML 2018. Mao, Foerster, Rocktäschel, Al-Shedivat, Farquhar and
    Whiteson, A baseline for any order gradient estimation in stochastic computation graphs, ICML 2019.
  """
  if baseline is not None and not isinstance(baseline, Baseline):
    raise TypeError(
      "`baseline` must be an sfe_jax.baselines.Baseline (e.g. sfe.baselines.leave_one_out()) or None; "
      f"got {type(baseline).__name__}."
    )
  name = "sfe.score_function()" if baseline is None else f"sfe.score_function(baseline={baseline.name})"

  def init(params):
    return types.EmptyState() if baseline is None else baseline.init(params)

  def surrogate(f, dist_builder, params, key, num_samples, state):
    xs, points = differentiation.stop_gradient(
      sampling.draw(checks.build_distribution(dist_builder, differentiation.stop_gradient(params)), key, num_samples)
    )
    f_values = sampling.evaluate(f, xs)
    log_p = sampling.joint_log_prob(checks.build_distribution(dist_builder, params), points)
    box = dice.magic_box(log_p)
    if baseline is None:
      return jnp.mean(f_values * box), state
    if not baseline.per_coordinate:
      b, new_state = baseline.compute(jax.lax.stop_gradient(f_values), None, state)
      return jnp.mean(f_values * box + jax.lax.stop_gradient(b) * (1.0 - box)), new_state
    scores = per_sample_scores(dist_builder, params, points)
    b, new_state = baseline.compute(jax.lax.stop_gradient(f_values), scores, state)

    def leaf_correction(s, b_leaf):  # -mean_i b_i s_i per coordinate: first order only, no bias at any order.
      if s is None:
        return None
      return -jnp.mean(jax.lax.stop_gradient(b_leaf) * s, axis=0)

    corrections = jax.tree.map(leaf_correction, scores, b, is_leaf=lambda x: x is None)
    return jnp.mean(f_values * box) + differentiation.linear_surrogate(params, corrections), new_state

  min_samples = 1 if baseline is None else baseline.min_samples
  reason = " (the baseline of each sample is computed from the other samples)" if min_samples > 1 else ""
  return types.Estimator(
    init,
    surrogate,
    name=name,
    sample_count=types.fixed_count(minimum=min_samples, reason=reason),
    max_order=None,
    # No baseline or a constant one: independent samples; any other baseline may use the batch: per chunk.
    chunking="independent" if baseline is None or baseline.name.startswith("sfe.baselines.constant(") else "per_chunk",
  )
