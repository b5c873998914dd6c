r"""Antithetic estimators for discrete variables: ARM and DisARM.

Both estimators evaluate ``f`` on *antithetic pairs* of samples. For bits with logits :math:`\phi_i`
(:math:`p_i = \sigma(\phi_i)`), one uniform :math:`u_i \sim U(0, 1)` per bit gives the two samples

.. math::
   b_i = 1[u_i < p_i], \qquad \tilde b_i = 1[u_i > 1 - p_i],

both marginally Bernoulli(:math:`p_i`) and negatively correlated. ``f`` is evaluated at ``b`` and at
``b~``; the difference :math:`f(\tilde b) - f(b)`, weighted per coordinate, estimates the gradient with
respect to the logits, and the chain rule through ``dist_builder`` carries it to ``params``.

Categorical variables are reached through stick-breaking (``views.stick_breaking_logits``): a variable
with K classes is the position of the first 1 among K - 1 independent bits, and the Bernoulli estimator is
applied to those bits.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from sfe_jax._src.core import checks, differentiation, sampling, types
from sfe_jax._src.discrete import views

_ARM = "arm"
_DISARM = "disarm"


def _uniform_and_logit(key: jax.Array, shape: tuple[int, ...], dtype) -> tuple[jax.Array, jax.Array]:
  r"""Uniforms ``u`` on a grid symmetric about 1/2, and ``logit(u) = log u - log(1 - u)``.

  ``u = (k + 1/2) / 2^m`` with ``k`` uniform over ``m`` random bits (``m = 23`` in float32, 52 in float64), so
  that ``u`` and ``1 - u`` have exactly the same distribution, both are exact floats, ``u`` is never 0, 1 or
  1/2, and ``logit(1 - u) = -logit(u)`` bit for bit. The antithetic sample is then exactly distributed as the
  first, and ``b``, ``b~`` are never equal at ``p = 1/2`` (DisARM's zero-variance case is exact).
  """
  if jnp.dtype(dtype) == jnp.float64:
    nbits, udtype = 52, jnp.float64
    raw = jax.random.bits(key, shape, jnp.uint64) >> 12
  else:
    nbits, udtype = 23, jnp.float32
    raw = jax.random.bits(key, shape, jnp.uint32) >> 9
  u = (raw.astype(udtype) + 0.5) * (2.0**-nbits)
  return u, jnp.log(u) - jnp.log(1.0 - u)


def _pair_gradients(kind: str, logits: jax.Array, key: jax.Array, num_pairs: int):
  """Antithetic bits and the per-pair weights: ``(b, b~, weights)``, each ``(num_pairs,) + logits.shape``.

  The gradient estimate of pair ``j`` with respect to the logits is ``(f(b~_j) - f(b_j)) * weights_j``.
  """
  phi = jax.lax.stop_gradient(logits)
  u, logit_u = _uniform_and_logit(key, (num_pairs,) + tuple(phi.shape), phi.dtype)
  # u < sigmoid(phi) <=> logit(u) < phi and u > 1 - sigmoid(phi) <=> -logit(u) < phi: no sigmoid is rounded
  # to 0 or 1, so logits of any size give exact bits.
  phi_row = phi[None]  # explicit rank against the leading pair axis
  b = (logit_u < phi_row).astype(phi.dtype)
  b_tilde = (-logit_u < phi_row).astype(phi.dtype)
  if kind == _ARM:
    weights = (u - 0.5).astype(phi.dtype)
  else:
    weights = 0.5 * (b_tilde - b) * jax.nn.sigmoid(jnp.abs(phi_row))
  return b, b_tilde, weights


def _antithetic(kind: str) -> types.Estimator:
  name = "sfe.arm()" if kind == _ARM else "sfe.disarm()"

  def surrogate(f, dist_builder, params, key, num_samples, state):
    view = views.discrete_view(checks.build_distribution(dist_builder, params), who=name)
    num_pairs = num_samples // 2
    if view.kind == views.BERNOULLI:
      bit_logits = view.logits
    else:
      bit_logits = views.stick_breaking_logits(view.logits)
    b, b_tilde, weights = _pair_gradients(kind, bit_logits, key, num_pairs)
    hard = jnp.stack([b, b_tilde])  # (2, num_pairs, *bits_shape)
    if view.kind == views.CATEGORICAL:
      hard = views.stick_breaking_decode(hard)
    f_values = sampling.evaluate_batched(f, jax.lax.stop_gradient(views.to_sample(view, hard)), 2)  # (2, num_pairs)
    mc_average = jnp.mean(f_values)
    # Not stop-gradient-ed: f may close over parameters, and the mixed derivative is ARM/DisARM on their
    # derivative of f (the samples and weights do not depend on params).
    diff = jnp.reshape(f_values[1] - f_values[0], (num_pairs,) + (1,) * (weights.ndim - 1))
    grad_bit_logits = jnp.mean(diff * weights, axis=0)
    return mc_average + differentiation.linear_surrogate(bit_logits, grad_bit_logits), state

  count = types.fixed_count(
    multiple=2, minimum=2, reason=(" (num_samples counts evaluations of f, two per antithetic pair)")
  )
  return types.Estimator(types.empty_init, surrogate, name=name, sample_count=count, chunking="independent")


_COMMON_DOC = r"""**Samples.** For bits with logits :math:`\phi` (:math:`p = \sigma(\phi)`), each antithetic
  pair draws one :math:`u \sim U(0, 1)` per bit and sets :math:`b = 1[u < p]`, :math:`\tilde b = 1[u > 1 - p]`
  (computed as :math:`\mathrm{logit}(u) < \phi` and :math:`-\mathrm{logit}(u) < \phi`, exact for logits of
  any size; ``u`` lies on a float grid symmetric about 1/2, so ``b~`` is exactly distributed as ``b``). Both
  samples are passed to ``f`` in the distribution's own encoding (``Bernoulli``'s dtype; category indices for
  ``Categorical``, one-hot vectors for ``OneHotCategorical``). ``num_samples`` counts evaluations of ``f``:
  it must be even, and the estimate averages over its ``num_samples // 2`` pairs. The value of the surrogate
  is the mean of ``f`` over all ``num_samples`` evaluations, an unbiased estimate of ``E[f]``; the gradient
  with respect to anything ``f`` closes over is the gradient of that mean. ``f`` itself is never
  differentiated (it may be a black box).

  **Distributions.** Bernoulli of any batch shape, and Categorical or OneHotCategorical of any batch shape
  (distrax, TFP's JAX substrate, numpyro), optionally wrapped in ``Independent``; all variables independent
  given ``params``. Continuous distributions are refused.

  **Categorical variables (stick-breaking).** A categorical variable with probabilities
  :math:`\pi_1..\pi_K` is the index of the first 1 among K - 1 independent bits with
  :math:`P(c_k = 1) = \pi_k / \sum_{j \ge k} \pi_j` (K when all are 0). Its expectation is therefore a
  function :math:`F(\psi(\theta))` of the bits' logits :math:`\psi`; the Bernoulli estimator gives an unbiased
  estimate of :math:`\nabla_\psi F` (with ``f`` composed with the decoding), and the exact chain rule through
  :math:`\psi(\theta)` (``views.stick_breaking_logits``, autodiff) makes the categorical gradient
  exactly unbiased too (Dong, Mnih and Tucker 2021). The ordering of the classes changes the bits and hence
  the variance, never the mean; classes are broken off in the order of the last axis of the logits.

  **Bias:** none (for Bernoulli and, through stick-breaking, categorical variables).

  **Cost:** two evaluations of ``f`` per antithetic pair, no derivative of ``f``, and no extra
  evaluation of ``dist_builder`` beyond the one whose logits are differentiated.

  **Derivative order:** first. A second derivative in ``params`` raises :class:`sfe_jax.HigherOrderError`;
  mixed derivatives in ``params`` and in what ``f`` closes over are the same estimator applied to the
  derivative of ``f``, unbiased."""


def _with_common_doc(fn):
  """Puts the text that ARM and DisARM share (samples, distributions, categoricals, bias, cost) in place."""
  fn.__doc__ = fn.__doc__.replace("{common}", _COMMON_DOC)
  return fn


@_with_common_doc
def arm() -> types.Estimator:
  r"""The ARM estimator (Augment-REINFORCE-Merge; Yin and Zhou 2019) for Bernoulli and categorical variables.

  For each antithetic pair (see below) and each bit :math:`i`, the estimate of the gradient of
  :math:`E[f(b)]` with respect to the logit :math:`\phi_i` is

  .. math::
     g_i^{\mathrm{ARM}} = \big(f(\tilde b) - f(b)\big)\,\big(u_i - \tfrac12\big),

  averaged over the pairs; the chain rule through ``dist_builder`` maps it to ``params``.

  **Variance.** For one bit and :math:`\Delta = f(1) - f(0)`, :math:`m = \min(p, 1 - p)`:
  :math:`\mathrm{Var} = \tfrac23 \Delta^2 (\tfrac18 - (\tfrac12 - m)^3) - \Delta^2 p^2 (1-p)^2`, zero only as
  :math:`p \to 0` or 1 (and for constant ``f``); at :math:`p = 1/2` it is :math:`\Delta^2 / 48`. ARM is never
  better per pair than :func:`disarm`, which is its conditional expectation given the pair ``(b, b~)``;
  prefer DisARM (ARM is provided for comparison and reproduction). On the one-bit toy of the reference
  (``E[(b - p0)^2]``) ARM beats REINFORCE with a leave-one-out baseline at equal cost (two evaluations); with
  many bits every coordinate shares the scalar difference :math:`f(\tilde b) - f(b)`, which adds variance.

  {common}

  Returns:
    An :class:`sfe_jax.Estimator` (``num_samples`` even).

  Examples:
    >>> import jax, jax.numpy as jnp, distrax, sfe_jax as sfe
    >>> params = {"logits": jnp.zeros(3)}
    >>> dist_builder = lambda p: distrax.Bernoulli(logits=p["logits"])
    >>> f = lambda b: jnp.sum((b - 0.45) ** 2)
    >>> estimate = jax.jit(lambda p, k: sfe.value_and_grad(sfe.arm(), f, dist_builder, p, k,
    ...                                                    num_samples=100))  # 50 antithetic pairs
    >>> value, grads, _ = estimate(params, jax.random.key(0))
    >>> grads["logits"].shape
    (3,)

  References:
    Yin and Zhou, ARM: Augment-REINFORCE-Merge gradient for stochastic binary networks, ICLR 2019.
    Dong, Mnih and Tucker, DisARM: an antithetic gradient estimator for binary latent variables, NeurIPS 2020.
    Dong, Mnih and Tucker, Coupled gradient estimators for discrete latent variables, NeurIPS 2021.
  """
  return _antithetic(_ARM)


@_with_common_doc
def disarm() -> types.Estimator:
  r"""The DisARM estimator (Dong, Mnih and Tucker 2020) for Bernoulli and categorical variables.

  For each antithetic pair (see below) and each bit :math:`i`, the estimate of the gradient of
  :math:`E[f(b)]` with respect to the logit :math:`\phi_i` is

  .. math::
     g_i^{\mathrm{DisARM}} = \tfrac12 \big(f(\tilde b) - f(b)\big)\,(\tilde b_i - b_i)\,
     \sigma(|\phi_i|),

  averaged over the pairs; the chain rule through ``dist_builder`` maps it to ``params``. A coordinate whose
  two bits agree contributes nothing.

  **Variance.** DisARM is ARM Rao-Blackwellised: :math:`g^{\mathrm{DisARM}} = E[g^{\mathrm{ARM}} \mid b,
  \tilde b]` coordinate by coordinate (integrating out the :math:`u_i` given the pair of bits), so
  :math:`\mathrm{Var}(\mathrm{ARM}) = \mathrm{Var}(\mathrm{DisARM}) + E[(g^{\mathrm{ARM}} -
  g^{\mathrm{DisARM}})^2]` and DisARM is never worse per pair, for any ``f``. For one bit,
  :math:`\Delta = f(1) - f(0)`, :math:`m = \min(p, 1 - p)`, :math:`M = 1 - m`:
  :math:`\mathrm{Var} = \tfrac12 \Delta^2 M^2 m (1 - 2m)`, which is zero in two cases: at :math:`p = 1/2`
  (then :math:`\tilde b = 1 - b` always and every pair gives exactly the true gradient :math:`\Delta / 4`) and
  as :math:`p \to 0` or 1 (the two samples agree). With many bits the shared scalar difference
  :math:`f(\tilde b) - f(b)` still adds variance that grows with the number of bits.

  {common}

  Returns:
    An :class:`sfe_jax.Estimator` (``num_samples`` even).

  Examples:
    >>> import jax, jax.numpy as jnp, distrax, sfe_jax as sfe
    >>> params = {"logits": jnp.zeros((2, 4))}
    >>> dist_builder = lambda p: distrax.OneHotCategorical(logits=p["logits"])
    >>> f = lambda x: jnp.sum(x * jnp.arange(4.0))  # x: two one-hot vectors, shape (2, 4)
    >>> estimate = jax.jit(lambda p, k: sfe.value_and_grad(sfe.disarm(), f, dist_builder, p, k,
    ...                                                    num_samples=8))  # 4 antithetic pairs
    >>> value, grads, _ = estimate(params, jax.random.key(0))
    >>> grads["logits"].shape
    (2, 4)

  References:
    Dong, Mnih and Tucker, DisARM: an antithetic gradient estimator for binary latent variables, NeurIPS 2020.
    Dong, Mnih and Tucker, Coupled gradient estimators for discrete latent variables, NeurIPS 2021 (the
    categorical extension through stick-breaking).
    Yin and Zhou, ARM: Augment-REINFORCE-Merge gradient for stochastic binary networks, ICLR 2019.
  """
  return _antithetic(_DISARM)
