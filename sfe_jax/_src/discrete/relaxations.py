r"""Relaxation estimators for discrete variables: Gumbel-softmax (Concrete) and the straight-through family.

All three estimators here differentiate *through* ``f``: they replace the discrete sample by something
differentiable in the logits (a relaxed sample, or a hard sample with a surrogate derivative), so ``f`` must be
a differentiable JAX function of its input, defined on real-valued inputs and not only on the discrete values.
In exchange for that, and for a bias, they have a variance that does not grow with the magnitude of ``f``.

* :func:`gumbel_softmax`: ``f`` at the Concrete relaxation of the sample; pathwise gradient through it.
  With ``straight_through=True``: ``f`` at the exact hard sample, gradient through the relaxed one.
* :func:`straight_through`: ``f`` at the exact hard sample, gradient as if the sample were its mean.

What ``f`` receives is the distribution's own encoding, with values between the discrete ones:

* Bernoulli with a floating-point dtype (``distrax.Bernoulli(logits, dtype=jnp.float32)``): an array with the
  shape and dtype of one sample, entries in ``[0, 1]`` (exactly 0 or 1 for the straight-through estimators).
* OneHotCategorical with a floating-point dtype: points of the probability simplex in the trailing axis, the
  shape of one sample (exact one-hot vectors for the straight-through estimators).

A distribution whose samples cannot hold relaxed values is refused at trace time with the fix: an
index-valued ``Categorical`` (use ``OneHotCategorical`` and write ``table[x]`` as ``x @ table``), or an
integer dtype (pass ``dtype=jnp.float32``). Otherwise ``f`` would silently receive another encoding than
under every other estimator.

All three are first-order estimators: a second derivative in ``params`` raises
:class:`sfe_jax.HigherOrderError` (the straight-through derivative is a heuristic whose derivative means
nothing, and the relaxation's Hessian is not an estimate of the Hessian of ``E[f]``). For every derivative of
the *relaxed* objective, use :func:`sfe_jax.pathwise` on a relaxed distribution (TFP's
``RelaxedBernoulli`` or ``RelaxedOneHotCategorical``).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sfe_jax._src.core import checks, sampling, types
from sfe_jax._src.discrete import views

Array = jax.Array


def _check_temperature(temperature: Any) -> Any:
  """Checks ``temperature``; returns a Python float or the (possibly traced) JAX scalar as given.

  Python numbers and concrete arrays are checked to be finite and positive here; a traced scalar (the
  constructor called under ``jax.jit`` with an annealed temperature) can only be checked for shape and dtype.
  """
  hint = "Pass a positive float such as 0.5, or a floating-point JAX scalar such as jnp.asarray(0.5)."
  if isinstance(temperature, (bool, np.bool_)):
    raise TypeError(f"`temperature` must be a positive float; got the boolean {temperature!r}. {hint}")
  if isinstance(temperature, (int, float)) and not isinstance(temperature, np.generic):
    value = float(temperature)
    if not (math.isfinite(value) and value > 0.0):
      raise ValueError(f"`temperature` must be finite and positive; got {temperature!r}. {hint}")
    return value
  if not (hasattr(temperature, "shape") and hasattr(temperature, "dtype")):
    raise TypeError(f"`temperature` must be a float or a JAX scalar; got {type(temperature).__name__}. {hint}")
  if tuple(temperature.shape) != ():
    raise ValueError(
      f"`temperature` must be a scalar (shape ()); got an array of shape {tuple(temperature.shape)}. To use "
      f"several temperatures, jax.vmap over them. {hint}"
    )
  if not jnp.issubdtype(temperature.dtype, jnp.floating):
    raise TypeError(f"`temperature` must have a floating-point dtype; got {temperature.dtype}. {hint}")
  if not isinstance(temperature, jax.core.Tracer):
    value = float(temperature)
    if not (math.isfinite(value) and value > 0.0):
      raise ValueError(f"`temperature` must be finite and positive; got {value!r}. {hint}")
  return temperature


def _straight(hard: Array, soft: Array) -> Array:
  """``hard`` in value, the derivative of ``soft``: ``hard + (soft - stop_gradient(soft))``.

  The parenthesis matters: ``soft - stop_gradient(soft)`` is exactly zero, so the value is exactly ``hard``
  (``(hard + soft) - soft`` can be off by one rounding).
  """
  return hard + (soft - jax.lax.stop_gradient(soft))


def gumbel_softmax(temperature: float | Array, straight_through: bool = False) -> types.Estimator:
  r"""The Gumbel-softmax (Concrete) relaxation estimator, optionally straight-through.

  A discrete sample is a deterministic, non-differentiable function of noise: ``b = 1[phi + L > 0]`` with
  logistic noise ``L`` for a Bernoulli with logit ``phi``, ``b = argmax_k (log pi_k + G_k)`` with Gumbel noise
  ``G_k`` for a categorical (the Gumbel-max trick). The relaxation replaces the step or the argmax by a
  smooth function at temperature ``t``,

  .. math::
     s = \sigma\big((\phi + L)/t\big) \quad\text{(binary Concrete)}, \qquad
     s = \mathrm{softmax}\big((\log\pi + G)/t\big) \quad\text{(Concrete)},

  and differentiates through it (pathwise):
  :math:`\hat g = \frac1N \sum_{i=1}^N \nabla_\theta f(s_i(\theta))`, and the value is
  :math:`\frac1N \sum_i f(s_i)`. With ``straight_through=True`` (straight-through Gumbel) ``f`` is evaluated at
  the exact hard sample ``b_i`` and differentiated as if it had been evaluated at ``s_i``:
  :math:`\hat g = \frac1N \sum_i \nabla f(b_i)^\top \partial s_i / \partial \theta`, with value
  :math:`\frac1N \sum_i f(b_i)` (the forward input is ``b + (s - stop_gradient(s))``, exactly ``b``).

  * Distributions: Bernoulli (any shape) and OneHotCategorical, with a floating-point dtype (distrax, TFP;
    numpyro's Bernoulli samples integers and is refused), optionally wrapped in ``Independent``. ``f``
    receives the distribution's own shape and dtype: for a Bernoulli, values in ``[0, 1]``; for a one-hot
    categorical, points of the simplex. With ``straight_through=True`` the entries are exactly 0 or 1
    (one-hot vectors). ``f`` must be differentiable in its input and defined between the discrete values.
  * Bias: unbiased for the gradient of the *relaxed* objective :math:`E[f(s)]`, not of :math:`E[f(b)]`,
    even for linear ``f``; the bias vanishes as ``t -> 0`` (like ``O(t)`` for smooth ``f``) but not
    monotonically. Straight-through: the value is unbiased for :math:`E[f(b)]`, the gradient is biased and
    its bias need not vanish as ``t -> 0``.
  * Variance: bounded by ``f``'s slope, growing like ``1/t`` as the temperature falls: the temperature
    trades bias for variance. The derivations page of the documentation gives the limits and measured
    numbers.
  * Cost: one evaluation of ``f`` and of its gradient per sample; ``num_samples`` is the number of
    evaluations.

  The surrogate is :math:`\frac1N \sum_i f(x_i)` with ``x_i`` the relaxed (or straight-through) inputs, which
  are differentiable in the logits; its gradient with respect to anything ``f`` closes over is the gradient of
  that Monte Carlo average. Logits of any size give finite values and gradients (``s`` saturates at 0 or 1,
  where its derivative is 0).

  Args:
    temperature: the temperature ``t > 0``: a Python float, checked here, or a floating-point JAX scalar of
      shape ``()`` (for example an annealed temperature passed into a jitted training step), whose shape and
      dtype are checked here. The value of a traced temperature cannot be checked at trace time: if it is
      not positive, the value and the gradients are NaN.
    straight_through: if ``True``, the straight-through Gumbel estimator (hard forward, relaxed backward).

  Returns:
    An :class:`sfe_jax.Estimator`.

  Examples:
    >>> import jax, jax.numpy as jnp, distrax, sfe_jax as sfe
    >>> params = {"logits": jnp.zeros((2, 3))}
    >>> dist_builder = lambda p: distrax.OneHotCategorical(logits=p["logits"], dtype=jnp.float32)
    >>> f = lambda x: jnp.sum(x * jnp.array([1.0, 2.0, 3.0]))  # x: (2, 3), rows in the simplex
    >>> value, grads, _ = sfe.value_and_grad(sfe.gumbel_softmax(0.5), f, dist_builder, params,
    ...                                      jax.random.key(0), num_samples=100)
    >>> grads["logits"].shape
    (2, 3)

  References:
    Maddison, Mnih and Teh, The Concrete distribution: a continuous relaxation of discrete random variables,
    ICLR 2017. Jang, Gu and Poole, Categorical reparameterization with Gumbel-softmax, ICLR 2017 (which also
    introduces straight-through Gumbel-softmax).
  """
  temperature = _check_temperature(temperature)
  if not isinstance(straight_through, (bool, np.bool_)):
    raise TypeError(f"`straight_through` must be a bool; got {type(straight_through).__name__} {straight_through!r}.")
  straight_through = bool(straight_through)
  shown = f"{temperature:g}" if isinstance(temperature, float) else "<traced>"
  name = f"sfe.gumbel_softmax(temperature={shown}{', straight_through=True' if straight_through else ''})"

  def surrogate(f, dist_builder, params, key, num_samples, state):
    view = views.discrete_view(checks.build_distribution(dist_builder, params), who=name)
    views.require_relaxable(view, name)
    z = views.noisy_logits(view, key, num_samples)
    t = jnp.asarray(temperature, dtype=view.logits.dtype)
    if not isinstance(temperature, float):
      # A traced temperature cannot be checked at trace time: a non-positive one gives NaN (never a plausible
      # but wrong finite answer, which a negative temperature would otherwise give).
      t = jnp.where(t > 0, t, jnp.nan)
    soft = views.relaxed_input(view, views.soften(view, z, t))
    if straight_through:
      xs = _straight(views.to_sample(view, views.hard_from_noisy(view, jax.lax.stop_gradient(z))), soft)
    else:
      xs = soft
    return jnp.mean(sampling.evaluate(f, xs)), state

  return types.Estimator(types.empty_init, surrogate, name=name, chunking="independent")


def straight_through() -> types.Estimator:
  r"""The straight-through estimator (Bengio et al. 2013) for Bernoulli and categorical variables.

  ``f`` is evaluated at exact samples ``b_i ~ p_theta`` (bits, or one-hot vectors, as floats), and
  differentiated as if ``d b / d p`` were the identity, i.e. as if ``f`` had been evaluated at the mean
  ``p = E[b]``:

  .. math::
     \hat g = \frac1N \sum_{i=1}^N \Big(\frac{\partial p}{\partial \theta}\Big)^\top \nabla f(b_i), \qquad
     \frac{\partial p}{\partial \phi} = p(1-p) \ \text{(Bernoulli)}, \quad
     \frac{\partial \pi}{\partial \ell} = \mathrm{diag}(\pi) - \pi\pi^\top \ \text{(categorical)}.

  The forward input is ``b + (p - stop_gradient(p))``: exactly ``b`` in value. The value is
  :math:`\frac1N \sum_i f(b_i)`, an unbiased estimate of :math:`E[f(b)]`.

  * Distributions: Bernoulli (any shape) and OneHotCategorical, with a floating-point dtype (distrax, TFP),
    optionally wrapped in ``Independent``. ``f`` receives exact samples in the distribution's own encoding:
    bits 0/1, or one-hot vectors. ``f`` must be differentiable in its input.
  * Bias: :math:`E[\hat g] = J_p^\top E[\nabla f(b)]`, which is the true gradient when ``f`` is linear in each
    variable's bit (one-hot vector) separately, i.e. multilinear across independent variables (then
    :math:`E[f(b)] = f(p)`); otherwise it is biased, and the bias depends on how ``f`` extends off the discrete
    values. For one bit and ``f(b) = (b - c)^2``: :math:`E[\hat g] = 2(p - c)\,p(1-p)` against the true
    :math:`(1 - 2c)\,p(1-p)`, a bias of :math:`(2p - 1)\,p(1-p)`. The bias does not shrink with ``num_samples``.
  * Variance: :math:`J_p^\top \mathrm{Cov}[\nabla f(b)] J_p / N`; small (zero for linear ``f``) and
    independent of any temperature.
  * Cost: one evaluation of ``f`` and of its gradient per sample.

  Samples are drawn from the distribution at ``stop_gradient(params)``; the gradient with respect to anything
  ``f`` closes over is the ordinary gradient of the Monte Carlo average at the hard samples.

  Returns:
    An :class:`sfe_jax.Estimator`.

  Examples:
    >>> import jax, jax.numpy as jnp, distrax, sfe_jax as sfe
    >>> params = {"logits": jnp.zeros(3)}
    >>> dist_builder = lambda p: distrax.Bernoulli(logits=p["logits"], dtype=jnp.float32)
    >>> f = lambda b: jnp.sum((b - 0.45) ** 2)  # b: three floats, each exactly 0.0 or 1.0
    >>> value, grads, _ = sfe.value_and_grad(sfe.straight_through(), f, dist_builder, params,
    ...                                      jax.random.key(0), num_samples=100)
    >>> grads["logits"].shape
    (3,)

  References:
    Bengio, Leonard and Courville, Estimating or propagating gradients through stochastic neurons for
    conditional computation, arXiv:1308.3432, 2013. Hinton, Neural networks for machine learning (Coursera
    lectures), 2012.
  """
  name = "sfe.straight_through()"

  def surrogate(f, dist_builder, params, key, num_samples, state):
    view = views.discrete_view(checks.build_distribution(dist_builder, params), who=name)
    views.require_relaxable(view, name)
    hard = views.sample_hard(view._replace(logits=jax.lax.stop_gradient(view.logits)), key, num_samples)
    if view.kind == views.BERNOULLI:
      probs = jax.nn.sigmoid(view.logits)
    else:
      probs = jax.nn.softmax(view.logits, axis=-1)
    xs = _straight(views.to_sample(view, hard), views.relaxed_input(view, probs[None]))
    return jnp.mean(sampling.evaluate(f, xs)), state

  return types.Estimator(types.empty_init, surrogate, name=name, chunking="independent")
