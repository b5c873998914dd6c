r"""Multi-sample objectives: the importance-weighted bound (IWAE) and its gradient estimators.

**These are objectives, not estimators of** ``E[f]``. They are :class:`sfe_jax.objectives.Objective` values,
a type of their own, run by their own entry points with the familiar arguments,

.. code-block:: python

   value, grads, state = sfe.objectives.value_and_grad(sfe.objectives.vimco(), log_joint, dist_builder, params,
                                                       key, num_samples=K)

so that estimator combinators (control variates) and ``sfe.value_and_grad`` refuse them with a clear error
instead of misreading their value as ``E[f]``. What sits in the ``f`` position is the LOG-JOINT
:math:`\log p(x, z)` of ONE latent sample ``z`` (a real
scalar; it may close over the model's parameters and the data ``x``), ``dist_builder(params)`` is the proposal
(the encoder, the variational posterior) :math:`q_\theta(z)`, and ``num_samples`` is the number ``K`` of
importance samples. The library forms the log-weights itself, because the gradient must know how they depend on
:math:`\theta` through :math:`q_\theta`,

.. math::
   \log w_k = \log p(x, z_k) - \log q_\theta(z_k), \qquad z_1, \dots, z_K \sim q_\theta \text{ independently},

and the surrogate's VALUE is one Monte Carlo estimate of the K-sample importance-weighted bound (Burda et al.
2016),

.. math::
   \hat L_K = \log \frac1K \sum_{k=1}^K w_k \quad(\text{a log-sum-exp}), \qquad
   L_K(\theta) = E_{z_{1:K} \sim q_\theta}[\hat L_K] \le \log p(x),

not an average of ``log_joint`` values. Its ``jax.grad`` with respect to ``params`` estimates
:math:`\nabla_\theta L_K`; its gradient with respect to anything ``log_joint`` closes over (a decoder, a prior)
is the usual IWAE model gradient :math:`\sum_k \tilde w_k \nabla \log p(x, z_k)` with the normalised weights
:math:`\tilde w_k = w_k / \sum_j w_j`, the exact gradient of :math:`\hat L_K` with respect to the model. The bound
is to be *maximised*: use ``-surrogate`` as a loss. With ``K = 1`` it is the evidence lower bound (ELBO).

Bias: every estimator here is unbiased for :math:`\nabla L_K` (with respect to :math:`\theta` and to the model).
:math:`\hat L_K` is unbiased for :math:`L_K`, but :math:`L_K` itself is a biased (low) estimate of
:math:`\log p(x)`; the gap shrinks as ``K`` grows (:math:`L_1 \le L_K \le L_{K+1} \le \log p(x)`, and
:math:`L_K \to \log p(x)` when the weights are bounded).

* :func:`iwae`: the reparameterized gradient of :math:`\hat L_K`; needs a reparameterizable ``q``. Every
  derivative of its surrogate is an unbiased estimate of the same derivative of :math:`L_K`.
* :func:`dreg`: doubly reparameterized gradients; the same expectation with less variance in :math:`\theta`.
  First order only.
* :func:`vimco`: a score-function gradient with leave-one-out baselines; any ``q``, discrete latents included.
  First order only.

``num_samples`` is ``K``, the number of evaluations of the log-joint, as it counts evaluations of ``f`` for the
estimators. :func:`surrogate` and :func:`value_and_grad` check their input exactly as
:func:`sfe_jax.expectation` and :func:`sfe_jax.value_and_grad` do.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from sfe_jax._src.core import api, checks, differentiation, distributions, sampling, types

_NOT_REPARAMETERIZABLE = "use sfe.objectives.vimco(), which works for any proposal q, discrete latents included"
_VALUE_NAME = "an estimate of the K-sample importance-weighted bound L_K"


# ----------------------------------------------------------------------------------------------------------
# Shared helpers.
# ----------------------------------------------------------------------------------------------------------


def _check_log_joint(log_joint, zs, who: str) -> None:
  """Checks, at trace time, that ``log_joint`` maps one latent sample to a real scalar."""
  if not callable(log_joint):
    raise TypeError(
      f"{who}: the function in the `f` position must be the log-joint log p(x, z) of one latent sample "
      f"(a callable returning a scalar); got {type(log_joint).__name__}."
    )
  one = jax.ShapeDtypeStruct(zs.shape[1:], zs.dtype)
  out = jax.eval_shape(log_joint, one)
  shape = getattr(out, "shape", None)
  if shape != ():
    got = shape if shape is not None else type(out).__name__
    raise ValueError(
      f"{who}: the log-joint (the function in the `f` position) must return the scalar log p(x, z) for one "
      f"latent sample; for a sample z of shape {tuple(zs.shape[1:])} it returned {got}. Sum the "
      "log-densities of all variables inside it (for example with jnp.sum)."
    )
  if not jnp.issubdtype(out.dtype, jnp.floating):
    raise TypeError(
      f"{who}: the log-joint (the function in the `f` position) must return a real floating-point scalar; "
      f"it returned dtype {out.dtype}."
    )


def log_mean_exp(log_w: jax.Array) -> jax.Array:
  r""":math:`\log \frac1K \sum_k \exp(\log w_k)` over the leading axis of ``log_w`` (shape ``(K,)``)."""
  return jax.nn.logsumexp(log_w, axis=0) - math.log(log_w.shape[0])


def leave_one_out_bounds(log_w: jax.Array) -> jax.Array:
  r"""VIMCO's :math:`\hat L_{-k}` for every ``k``: :math:`\hat L_K` with :math:`\log w_k` replaced by the mean
  of the other log-weights (the geometric mean of the other weights). Shape ``(K,)``, ``K >= 2``.

  :math:`\hat L_{-k} = \log \frac1K \big(\sum_{j \ne k} w_j + \exp(\frac{1}{K-1} \sum_{j \ne k} \log w_j)\big)`,
  computed in log space in O(K): :math:`\log \sum_{j \ne k} w_j` combines an exclusive prefix and suffix
  cumulative log-sum-exp (no cancellation), and a log-weight of :math:`-\infty` (a latent the model rules out)
  gives :math:`-\infty` means rather than NaN.
  """
  num = log_w.shape[0]
  neg_inf = jnp.isneginf(log_w)
  finite = jnp.where(neg_inf, jnp.zeros_like(log_w), log_w)
  others_mean = (jnp.sum(finite) - finite) / (num - 1)
  others_neg_inf = jnp.sum(neg_inf) - neg_inf.astype(jnp.int32)
  others_mean = jnp.where(others_neg_inf > 0, -jnp.inf, others_mean)
  pad = jnp.full((1,), -jnp.inf, log_w.dtype)
  prefix = jnp.concatenate([pad, jax.lax.cumlogsumexp(log_w)[:-1]])
  suffix = jnp.concatenate([jnp.flip(jax.lax.cumlogsumexp(jnp.flip(log_w)))[1:], pad])
  others_lse = jnp.logaddexp(prefix, suffix)
  return jnp.logaddexp(others_lse, others_mean) - math.log(num)


def _vimco_signals(log_w: jax.Array) -> jax.Array:
  r"""The learning signals :math:`\hat L_K - \hat L_{-k}` (shift-invariant: computed on centred log-weights)."""
  top = jnp.max(log_w)
  log_w = log_w - jnp.where(jnp.isfinite(top), top, jnp.zeros_like(top))
  return log_mean_exp(log_w) - leave_one_out_bounds(log_w)


# ----------------------------------------------------------------------------------------------------------
# The estimators.
# ----------------------------------------------------------------------------------------------------------


def iwae() -> types.Objective:
  r"""The importance-weighted bound with its reparameterized gradient (IWAE; Burda et al. 2016).

  **The function in the** ``f`` **position is the log-joint** :math:`\log p(x, z)` **of one latent sample, and
  the surrogate's value is** :math:`\hat L_K` **, not an estimate of** ``E[f]`` (see the module documentation).
  With :math:`z_k = g_\theta(\epsilon_k)` the proposal's own differentiable sampler and
  :math:`\log w_k = \log p(x, z_k) - \log q_\theta(z_k)`,

  .. math::
     \hat L_K = \log \frac1K \sum_{k=1}^K w_k, \qquad
     \nabla_\theta \hat L_K = \sum_{k=1}^K \tilde w_k \, \frac{d \log w_k}{d\theta}, \qquad
     \tilde w_k = \frac{w_k}{\sum_j w_j},

  where :math:`d/d\theta` is the total derivative: through :math:`z_k` (pathwise) and through the parameters of
  :math:`\log q_\theta` (a score term whose expectation is zero). The model gradient is
  :math:`\sum_k \tilde w_k \nabla \log p(x, z_k)`.

  * Needs: a reparameterizable ``q`` (discrete ``q`` is refused at trace time; use :func:`vimco`) and a
    ``log_joint`` differentiable in ``z``. Any shape of latent: ``z`` is one whole sample of ``q``, batch
    dimensions included, and :math:`\log q_\theta(z)` is summed over them.
  * Bias: none for :math:`\nabla_\theta L_K` and the model gradient. The value :math:`\hat L_K` is unbiased for
    :math:`L_K \le \log p(x)`, itself a biased estimate of :math:`\log p(x)` that tightens with ``K``.
  * Variance: the model gradient improves with ``K``, but the signal-to-noise ratio of the
    :math:`\theta`-gradient *decays* like :math:`O(1/\sqrt K)` (Rainforth et al. 2018), partly because of the
    score term; :func:`dreg` removes it. With ``K = 1`` this is the pathwise ELBO gradient.
  * Cost: ``K`` evaluations of ``log_joint`` and one backward pass through them.

  Returns:
    An :class:`sfe_jax.objectives.Objective` (stateless).

  Examples:
    >>> import jax, jax.numpy as jnp, distrax, sfe_jax as sfe
    >>> log_joint = lambda z: jnp.sum(-0.5 * z ** 2 - 0.5 * (1.0 - z) ** 2 - jnp.log(2 * jnp.pi))
    >>> params = {"loc": jnp.zeros(2), "scale": jnp.ones(2)}
    >>> build = lambda p: distrax.Normal(p["loc"], p["scale"])
    >>> estimate = jax.jit(lambda p, k: sfe.objectives.value_and_grad(
    ...     sfe.objectives.iwae(), log_joint, build, p, k, num_samples=16))
    >>> bound, grads, _ = estimate(params, jax.random.key(0))
    >>> bound.shape, grads["loc"].shape  # bound: an estimate of L_16 <= log p(x) (maximise it)
    ((), (2,))

  References:
    Burda, Grosse and Salakhutdinov, Importance weighted autoencoders, ICLR 2016. Rainforth, Kosiorek, Le,
    Maddison, Igl, Wood and Teh, Tighter variational bounds are not necessarily better, ICML 2018.
  """
  name = "sfe.objectives.iwae()"

  def surrogate(f, dist_builder, params, key, num_samples, state):
    dist = checks.build_distribution(dist_builder, params)
    distributions.check_reparameterizable(dist, name, _NOT_REPARAMETERIZABLE)
    zs, points = sampling.draw(dist, key, num_samples)
    _check_log_joint(f, zs, name)
    log_w = sampling.evaluate(f, zs) - sampling.joint_log_prob(dist, points)
    return log_mean_exp(log_w), state

  return types.Objective(types.empty_init, surrogate, name=name, max_order=None, value_name=_VALUE_NAME)


def dreg() -> types.Objective:
  r"""Doubly reparameterized gradients of the importance-weighted bound (DReG; Tucker et al. 2019).

  **The function in the** ``f`` **position is the log-joint** :math:`\log p(x, z)` **of one latent sample, and
  the surrogate's value is** :math:`\hat L_K` **, not an estimate of** ``E[f]`` (see the module documentation).
  The score term of the IWAE gradient, :math:`-\sum_k \tilde w_k \nabla_\theta \log q_\theta(z)|_{z=z_k}`, is
  reparameterized a second time; its expectation becomes a pathwise term with squared weights:

  .. math::
     \nabla_\theta L_K = E\Big[\sum_{k=1}^K \tilde w_k^2 \,
       \frac{\partial \log w_k}{\partial z_k} \frac{d z_k}{d\theta}\Big], \qquad
     \log w_k = \log p(x, z_k) - \log q_{\bot\theta}(z_k),

  where :math:`\bot\theta` means that the parameters of :math:`q` inside the log-weight are held fixed (only
  the path through :math:`z_k = g_\theta(\epsilon_k)` is differentiated). The model gradient is the usual
  :math:`\sum_k \tilde w_k \nabla \log p(x, z_k)`.

  Surrogate: ``log_joint`` is evaluated once per sample at :math:`\bot z_k` together with its gradient
  :math:`\partial \log p / \partial z_k` (one ``jax.vjp``); the value is :math:`\hat L_K` built from those
  values (so the model gradient has weights :math:`\tilde w_k`), and the :math:`\theta` path is the linear term
  :math:`\sum_k \bot(\tilde w_k^2\, \partial \log p / \partial z_k) \cdot (z_k - \bot z_k) - \bot(\tilde w_k^2)
  (\log q_{\bot\theta}(z_k) - \bot \log q_{\bot\theta}(z_k))`, zero in value. (Feeding ``log_joint``
  :math:`\bot z_k + c_k (z_k - \bot z_k)` with :math:`c_k = \bot \tilde w_k` gives the same gradient but needs
  the weights, hence ``log_joint``'s values, before ``log_joint`` is called: two evaluations.)

  * Needs: a reparameterizable ``q`` (discrete ``q`` is refused at trace time; use :func:`vimco`) and a
    ``log_joint`` differentiable in ``z``.
  * Bias: none for :math:`\nabla_\theta L_K` (the identity above holds for any reparameterizable ``q``) and the
    model gradient; the value is :math:`\hat L_K` as for :func:`iwae`.
  * Variance: lower than :func:`iwae` in :math:`\theta`, and the signal-to-noise ratio of the
    :math:`\theta`-gradient does not decay with ``K``, unlike IWAE's :math:`O(1/\sqrt K)` (Rainforth et al.
    2018; Tucker et al. 2019). When ``q`` equals the posterior the :math:`\theta`-gradient is exactly zero.
    With ``K = 1`` this is the "sticking the landing" ELBO gradient (Roeder et al. 2017). The model gradient is
    the same as :func:`iwae`'s.
  * Cost: ``K`` evaluations of ``log_joint``, one backward pass through them for :math:`\partial/\partial z`
    and, when ``log_joint`` closes over differentiated model parameters, one more for those.

  Returns:
    An :class:`sfe_jax.objectives.Objective` (stateless).

  Examples:
    With ``q`` equal to the posterior (here ``N(0.5, 0.5)``) every weight is ``p(x)``, and DReG's gradient is
    exactly zero for every draw (IWAE's is zero only on average):

    >>> import jax, jax.numpy as jnp, distrax, sfe_jax as sfe
    >>> log_joint = lambda z: jnp.sum(-0.5 * z ** 2 - 0.5 * (1.0 - z) ** 2 - jnp.log(2 * jnp.pi))
    >>> params = {"loc": jnp.full(2, 0.5), "scale": jnp.full(2, 0.5 ** 0.5)}
    >>> build = lambda p: distrax.Normal(p["loc"], p["scale"])
    >>> estimate = jax.jit(lambda p, k: sfe.objectives.value_and_grad(
    ...     sfe.objectives.dreg(), log_joint, build, p, k, num_samples=8))
    >>> bound, grads, _ = estimate(params, jax.random.key(0))
    >>> bool(jnp.abs(grads["loc"]).max() < 1e-5), bool(jnp.abs(grads["scale"]).max() < 1e-5)
    (True, True)

  References:
    Tucker, Lawson, Gu and Maddison, Doubly reparameterized gradient estimators for Monte Carlo objectives,
    ICLR 2019. Roeder, Wu and Duvenaud, Sticking the landing, NeurIPS 2017. Rainforth et al., Tighter
    variational bounds are not necessarily better, ICML 2018.
  """
  name = "sfe.objectives.dreg()"

  def surrogate(f, dist_builder, params, key, num_samples, state):
    dist = checks.build_distribution(dist_builder, params)
    distributions.check_reparameterizable(dist, name, _NOT_REPARAMETERIZABLE)
    zs, points = sampling.draw(dist, key, num_samples)  # differentiable in params (the theta path)
    _check_log_joint(f, zs, name)
    fixed_zs = jax.lax.stop_gradient(zs)
    log_p, log_p_vjp = jax.vjp(lambda z: sampling.evaluate(f, z), fixed_zs)
    (grad_log_p,) = log_p_vjp(jnp.ones_like(log_p))  # per-sample d log p / d z_k (samples are independent)
    log_q = sampling.joint_log_prob(
      checks.build_distribution(dist_builder, differentiation.stop_gradient(params)), points
    )  # theta only via z
    log_w = log_p - jax.lax.stop_gradient(log_q)
    weights_sq = jnp.square(jax.lax.stop_gradient(jax.nn.softmax(log_w)))
    lead = (-1,) + (1,) * (zs.ndim - 1)
    path_p = jnp.sum(jax.lax.stop_gradient(jnp.reshape(weights_sq, lead) * grad_log_p) * (zs - fixed_zs))
    path_q = jnp.sum(weights_sq * (log_q - jax.lax.stop_gradient(log_q)))
    return log_mean_exp(log_w) + path_p - path_q, state

  return types.Objective(types.empty_init, surrogate, name=name, value_name=_VALUE_NAME)


def vimco() -> types.Objective:
  r"""Variational inference for Monte Carlo objectives (VIMCO; Mnih and Rezende 2016): any ``q``.

  **The function in the** ``f`` **position is the log-joint** :math:`\log p(x, z)` **of one latent sample, and
  the surrogate's value is** :math:`\hat L_K` **, not an estimate of** ``E[f]`` (see the module documentation).
  Samples are not differentiated; the gradient is a score-function estimator with a per-sample leave-one-out
  baseline:

  .. math::
     \nabla_\theta L_K \approx \sum_{k=1}^K \big(\hat L_K - \hat L_{-k}\big)\, \nabla_\theta \log q_\theta(z_k)
       + \sum_{k=1}^K \tilde w_k\, \nabla_\theta \log w_k,

  where :math:`\hat L_{-k}` is :math:`\hat L_K` with :math:`\log w_k` replaced by the mean of the other
  log-weights (:func:`leave_one_out_bounds`), so :math:`\hat L_{-k}` does not depend on :math:`z_k` and the
  baseline adds no bias; :math:`\nabla_\theta \log w_k = -\nabla_\theta \log q_\theta(z_k)` at fixed
  :math:`z_k`. The model gradient is :math:`\sum_k \tilde w_k \nabla \log p(x, z_k)`.

  * Needs: only ``sample`` and a ``log_prob`` differentiable in the parameters: discrete latents (Bernoulli,
    categorical, any shape) and continuous ones alike. ``log_joint`` is never differentiated with respect to
    ``z`` (it may be a black box in ``z``), only with respect to what it closes over. ``log_joint`` receives
    samples in the distribution's own encoding (category indices for ``Categorical``).
  * Bias: none for :math:`\nabla_\theta L_K` and the model gradient; the value is :math:`\hat L_K`, unbiased for
    :math:`L_K \le \log p(x)`.
  * Variance: the signal :math:`\hat L_K - \hat L_{-k}` is the contribution of sample ``k`` to the bound, small
    when the samples agree; far lower than the plain score function with signal :math:`\hat L_K`, but still a
    score-function estimator, so prefer :func:`dreg` when ``q`` is reparameterizable.
  * Cost: ``K`` evaluations of ``log_joint`` (``K >= 2``: ``num_samples=1`` is refused), a backward pass
    through ``log q`` and, when ``log_joint`` closes over differentiated model parameters, one through
    ``log_joint``; the baselines cost O(K).

  Returns:
    An :class:`sfe_jax.objectives.Objective` (stateless); ``num_samples`` at least 2.

  Examples:
    A discrete latent-variable model: three bits z with a uniform prior and x ~ N(w . z, 1); the encoder's
    logits and the decoder's weights w are trained together by maximising the bound.

    >>> import jax, jax.numpy as jnp, distrax, sfe_jax as sfe
    >>> encoder, decoder = {"logits": jnp.zeros(3)}, {"w": jnp.array([1.0, -0.5, 0.3])}
    >>> build = lambda p: distrax.Bernoulli(logits=p["logits"])
    >>> def loss(enc, dec, key, x=1.0):
    ...   log_joint = lambda z: 3 * jnp.log(0.5) - 0.5 * (x - z.astype(jnp.float32) @ dec["w"]) ** 2
    ...   bound, _ = sfe.objectives.surrogate(sfe.objectives.vimco(), log_joint, build, enc, key, num_samples=8)
    ...   return -bound
    >>> step = jax.jit(jax.grad(loss, argnums=(0, 1)))  # one jitted training step
    >>> g_enc, g_dec = step(encoder, decoder, jax.random.key(0))
    >>> g_enc["logits"].shape, g_dec["w"].shape
    ((3,), (3,))

  References:
    Mnih and Rezende, Variational inference for Monte Carlo objectives, ICML 2016.
  """
  name = "sfe.objectives.vimco()"

  def surrogate(f, dist_builder, params, key, num_samples, state):
    zs, points = jax.lax.stop_gradient(
      sampling.draw(checks.build_distribution(dist_builder, differentiation.stop_gradient(params)), key, num_samples)
    )
    _check_log_joint(f, zs, name)
    log_p = sampling.evaluate(f, zs)
    log_q = sampling.joint_log_prob(checks.build_distribution(dist_builder, params), points)
    log_w = log_p - log_q
    signals = jax.lax.stop_gradient(_vimco_signals(log_w))
    return log_mean_exp(log_w) + jnp.sum(signals * (log_q - jax.lax.stop_gradient(log_q))), state

  count = types.fixed_count(minimum=2, reason=" (the baseline of each sample uses the other samples)")
  return types.Objective(types.empty_init, surrogate, name=name, sample_count=count, value_name=_VALUE_NAME)


# ----------------------------------------------------------------------------------------------------------
# Entry points.
# ----------------------------------------------------------------------------------------------------------


def surrogate(
  objective: types.Objective,
  log_joint: types.CostFn,
  dist_builder: types.DistBuilder,
  params: types.Params,
  key: types.PRNGKey,
  *,
  num_samples: int,
  state: types.State = None,
) -> tuple[jax.Array, types.State]:
  r"""A differentiable estimate of the K-sample bound :math:`L_K`: value :math:`\hat L_K`, gradient the objective's.

  Use it as a term of a loss (``-surrogate`` to maximise the bound). Gradients with respect to what
  ``log_joint`` closes over (a decoder, a prior) are the model gradient :math:`\sum_k \tilde w_k \nabla \log
  p(x, z_k)`.

  Args:
    objective: :func:`iwae`, :func:`dreg` or :func:`vimco`.
    log_joint: ``log p(x, z)`` of ONE latent sample ``z`` (a real scalar), closing over the model and data.
    dist_builder: maps ``params`` to the proposal :math:`q_\theta(z)`.
    params: a pytree; its floating-point array leaves are differentiated, the rest passed through.
    key: a JAX PRNG key.
    num_samples: ``K``, the number of importance samples (evaluations of ``log_joint``), a static int.
    state: the objective's state (``None``: ``objective.init(params)``).

  Returns:
    ``(surrogate, new_state)``.
  """
  checks.check_objective(objective)
  prepared = api.prepare(objective, log_joint, dist_builder, params, key, num_samples, state)
  return api.call_surrogate(
    objective, log_joint, dist_builder, params, key, prepared.num_samples, prepared.state, prepared.invalid
  )


def value_and_grad(
  objective: types.Objective,
  log_joint: types.CostFn,
  dist_builder: types.DistBuilder,
  params: types.Params,
  key: types.PRNGKey,
  *,
  num_samples: int,
  state: types.State = None,
) -> tuple[jax.Array, types.Params, types.State]:
  r"""One estimate :math:`\hat L_K` of the K-sample bound and the objective's estimate of :math:`\nabla L_K`.

  Arguments are those of :func:`surrogate`; ``grads`` has the structure of ``params`` (``None`` at leaves that
  are not floating-point arrays).

  Returns:
    ``(value, grads, new_state)``.
  """
  checks.check_objective(objective)
  return api.value_and_grad_of(objective, log_joint, dist_builder, params, key, num_samples, state)
