r"""The score-function (log-derivative, REINFORCE) estimator."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from sfe_jax._src import base
from sfe_jax._src.baselines import Baseline

sg = jax.lax.stop_gradient


def per_sample_scores(dist_builder, params, xs):
  """``grad_params log p(x_i)`` for each sample ``x_i``: the structure of params with a leading ``N`` axis."""

  def log_prob(p, x):
    return jnp.sum(dist_builder(p).log_prob(x))

  return jax.vmap(jax.grad(log_prob), in_axes=(None, 0))(sg(params), xs)


def score_function(baseline: Baseline | None = None) -> base.Estimator:
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

  The surrogate is :math:`\frac1N\sum_i f(x_i) + \frac1N\sum_i \bot(f(x_i) - b_i)\,
  (\log p_\theta(x_i) - \bot \log p_\theta(x_i))` (``⊥`` = stop_gradient): its value is the Monte Carlo
  average, its gradient in ``theta`` is the estimator and its gradient in anything ``f`` closes over is the
  gradient of the Monte Carlo average. With a per-coordinate baseline (``baselines.optimal()``) the
  per-sample scores are materialised and the second term is linear in ``theta``.

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
    Section 4.
  """
  if baseline is not None and not isinstance(baseline, Baseline):
    raise TypeError(
        "`baseline` must be an sfe_jax.baselines.Baseline (e.g. sfe.baselines.leave_one_out()) or None; "
        f"got {type(baseline).__name__}.")
  name = "score function" + (f" with {baseline.name}" if baseline is not None else "")

  def init(params):
    return base.EmptyState() if baseline is None else baseline.init(params)

  def surrogate(f, dist_builder, params, key, num_samples, state):
    xs = sg(base.sample(base.build_distribution(dist_builder, sg(params)), key, num_samples))
    f_values = base.evaluate(f, xs)
    mc_average = jnp.mean(f_values)
    if baseline is None:
      advantages, new_state = sg(f_values), state
    elif not baseline.per_coordinate:
      b, new_state = baseline.compute(sg(f_values), None, state)
      advantages = sg(f_values) - sg(b)
    else:
      scores = per_sample_scores(dist_builder, params, xs)
      b, new_state = baseline.compute(sg(f_values), scores, state)

      def leaf_grad(s, b_leaf):
        fb = jnp.reshape(sg(f_values), (-1,) + (1,) * (s.ndim - 1))
        return jnp.mean((fb - sg(b_leaf)) * s, axis=0)

      grads = jax.tree.map(leaf_grad, scores, b)
      return mc_average + base.linear_surrogate(params, grads), new_state

    log_p = base.joint_log_prob(base.build_distribution(dist_builder, params), xs)
    correction = jnp.mean(advantages * (log_p - sg(log_p)))
    return mc_average + correction, new_state

  min_samples = 1 if baseline is None else baseline.min_samples
  return base.Estimator(init, surrogate, name=name, min_samples=min_samples)
