r"""Measure-valued derivatives (weak derivatives) for Gaussian, Bernoulli and categorical distributions.

The derivative of a density with respect to one of its parameters is a signed measure, which can be written
as a scaled difference of two probability distributions (a weak derivative, Pflug 1989):

.. math::
   \partial_{\theta_j} p_\theta(x) = c_\theta\, \big(p^+_\theta(x) - p^-_\theta(x)\big)
   \quad\Rightarrow\quad
   \partial_{\theta_j} E_{p_\theta}[f(x)] = c_\theta\, \big(E_{p^+}[f(x)] - E_{p^-}[f(x)]\big).

Both expectations are estimated by sampling, so ``f`` is only evaluated, never differentiated. The estimator
works per coordinate of the natural parameters (``loc``/``scale``, ``probs``), and the chain rule to the
user's ``params`` comes from autodiff through ``dist_builder``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from sfe_jax._src.core import checks, differentiation, distributions, samplers, sampling, types
from sfe_jax._src.discrete import views

_WHO = "sfe.measure_valued()"


class _Family(NamedTuple):
  """What the estimator works with: a diagonal Gaussian or a discrete view, and the evaluations per sample."""

  gaussian: distributions.GaussianDiag | None
  view: views.DiscreteView | None
  evaluations: int  # evaluations of f per base sample
  description: str


def _family(dist) -> _Family:
  gaussian = distributions.gaussian_diag(dist)
  if gaussian is not None:
    dim = math.prod(gaussian.loc.shape)
    return _Family(gaussian, None, 4 * dim, f"4 D = {4 * dim} times per base sample of this Gaussian (D = {dim})")
  try:
    view = views.discrete_view(dist, who=_WHO)
  except TypeError:
    raise TypeError(
      f"{_WHO} supports Gaussians with independent coordinates ({distributions.GAUSSIAN_DIAG_CLASSES}) and "
      f"Bernoulli, Categorical and OneHotCategorical variables (distrax, tfp, numpyro); got "
      f"{distributions.describe(dist)}. Measure-valued derivatives need the weak derivative of each "
      "parameter's density, which sfe_jax knows only for these families (a correlated Gaussian such as "
      "MultivariateNormalTri has none per coordinate); for other distributions use sfe.score_function() (any "
      "distribution) or sfe.pathwise() (reparameterizable ones)."
    ) from None
  dim = view.num_variables
  if view.kind == views.BERNOULLI:
    return _Family(None, view, 2 * dim, f"2 D = {2 * dim} times per base sample of these D = {dim} bits")
  k = view.num_categories
  return _Family(
    None, view, dim * k, f"D K = {dim * k} times per base sample of these D = {dim} variables with K = {k} classes"
  )


def _sample_count(dist) -> types.SampleCount:
  family = _family(dist)
  return types.SampleCount(
    multiple=family.evaluations,
    minimum=family.evaluations,
    reason=f" (num_samples counts evaluations of f, and it evaluates f {family.description})",
  )


def _replace_coordinate(bases, values, eye):
  """Copies of ``bases`` with coordinate ``j`` set to ``values[..., j]``, stacked along a new axis ``j``.

  ``bases`` and ``values`` have shape ``(..., D)``, ``eye`` is the boolean identity ``(D, D)``; the result has
  shape ``(..., D, D)`` with element ``[..., j, i] = values[..., j] if i == j else bases[..., i]``.
  """
  eye = jnp.reshape(eye, (1,) * (values.ndim - 1) + eye.shape)
  return jnp.where(eye, values[..., :, None], bases[..., None, :])


def _gaussian(f, nat, key, num, coupling):
  """Weak derivatives of a diagonal Gaussian, per coordinate: ``(value, GaussianDiag of gradients)``."""
  shape = nat.loc.shape
  dim = math.prod(shape)
  dtype = nat.loc.dtype
  loc = jnp.reshape(jax.lax.stop_gradient(nat.loc), (1, dim))
  scale = jnp.reshape(jax.lax.stop_gradient(nat.scale), (1, dim))

  # All randomness comes from one draw of independent uniforms: one random-bit generation and no inverse erf,
  # which halves the compile time of the whole estimator against one jax.random sampler per distribution.
  # With u in (0, 1]:
  #   sqrt(-2 log u) is Rayleigh, i.e. Weibull(scale sqrt(2), concentration 2);
  #   (sqrt(-2 log u) cos(2 pi v), sqrt(-2 log u) sin(2 pi v)) are two independent N(0, 1) (Box-Muller);
  #   |M|^2 = -2 log u + z^2 is chi-square with 3 degrees of freedom (Maxwell), with a random sign.
  sides = 6 if coupling else 8
  if samplers.active():  # The sampler's points in (0, 1), coordinates (side, coordinate) of one sample.
    u = jnp.moveaxis(jnp.reshape(samplers.uniforms(key, num, sides * dim, dtype), (num, sides, dim)), 1, 0)
  else:
    u = 1.0 - jax.random.uniform(key, (sides, num, dim), dtype)
  rayleigh = lambda v: jnp.sqrt(-2.0 * jnp.log(v))
  two_pi = 2.0 * math.pi
  eps, eps_other = rayleigh(u[0]) * jnp.cos(two_pi * u[1]), rayleigh(u[0]) * jnp.sin(two_pi * u[1])
  x_plus = loc + scale * eps  # A sample of the distribution itself.
  weibull_plus = rayleigh(u[2])
  sign = jnp.where(u[3] < 0.5, -1.0, 1.0).astype(dtype)
  maxwell = sign * jnp.sqrt(-2.0 * jnp.log(u[4]) + eps_other**2)
  if coupling:
    x_minus = x_plus
    weibull_minus = weibull_plus
    normal_minus = maxwell * u[5]  # M U ~ N(0, 1)
  else:
    x_minus = loc + scale * rayleigh(u[5]) * jnp.cos(two_pi * u[6])
    normal_minus = rayleigh(u[5]) * jnp.sin(two_pi * u[6])
    weibull_minus = rayleigh(u[7])

  # Sides, in order: loc +, loc -, scale +, scale -. Each has shape (N, D).
  coordinates = jnp.stack(
    [loc + scale * weibull_plus, loc - scale * weibull_minus, loc + scale * maxwell, loc + scale * normal_minus], axis=1
  )
  bases = jnp.stack([x_plus, x_minus, x_plus, x_minus], axis=1)
  perturbed = _replace_coordinate(bases, coordinates, jnp.eye(dim, dtype=bool))  # (N, 4, D, D)
  fs = sampling.evaluate_batched(f, jnp.reshape(perturbed, (num, 4, dim) + shape), 3)  # (N, 4, D)

  grad_loc = jnp.mean(fs[:, 0] - fs[:, 1], axis=0, keepdims=True) / (math.sqrt(2.0 * math.pi) * scale)
  grad_scale = jnp.mean(fs[:, 2] - fs[:, 3], axis=0, keepdims=True) / scale
  # The scale-minus samples (x_j ~ N(loc_j, scale_j^2), the rest a sample of p) are distributed as p itself.
  value = jnp.mean(fs[:, 3])
  grads = distributions.GaussianDiag(jnp.reshape(grad_loc, shape), jnp.reshape(grad_scale, shape))
  return value, grads


def _bernoulli(f, view, xs):
  """``d/dp_j = E[f(b; b_j = 1) - f(b; b_j = 0)]``; returns ``(value, probs, gradients in probs)``."""
  probs = jax.nn.sigmoid(view.logits)  # Differentiable in params: carries the chain rule.
  shape, num = view.variables_shape, xs.shape[0]
  dim = math.prod(shape)
  flat = jnp.reshape(views.to_canonical(view, xs), (num, dim))
  eye = jnp.eye(dim, dtype=bool)
  ones = jnp.ones((num, dim), flat.dtype)
  plus = _replace_coordinate(flat, ones, eye)  # (N, D, D)
  minus = _replace_coordinate(flat, jnp.zeros_like(ones), eye)
  perturbed = jnp.reshape(jnp.stack([plus, minus], axis=1), (num, 2, dim) + shape)  # (N, 2, D, *shape)
  fs = sampling.evaluate_batched(f, views.to_sample(view, perturbed), 3)  # (N, 2, D)
  grad = jnp.mean(fs[:, 0] - fs[:, 1], axis=0)
  # f(b) is one of the two sides of coordinate 0: no extra evaluation.
  value = jnp.mean(jnp.where(flat[:, 0] != 0, fs[:, 0, 0], fs[:, 1, 0]))
  return value, probs, jnp.reshape(grad, shape)


def _categorical(f, view, xs):
  """``d/dp_jk = E[f(x; x_j = k) - f(x)]``; returns ``(value, probs, gradients in probs)``."""
  probs = jax.nn.softmax(view.logits, axis=-1)  # Differentiable in params: carries the chain rule.
  shape, num_categories, num = view.variables_shape, view.num_categories, xs.shape[0]
  dim = math.prod(shape)
  flat = jnp.reshape(views.to_canonical(view, xs), (num, dim))
  categories = jnp.broadcast_to(jnp.arange(num_categories, dtype=flat.dtype), (num, dim, num_categories))
  eye = jnp.eye(dim, dtype=bool)
  # [n, j, k, i] = k if i == j else x[n, i].
  perturbed = jnp.where(eye[None, :, None, :], categories[..., None], flat[:, None, None, :])  # (N, D, K, D)
  perturbed = jnp.reshape(perturbed, (num, dim, num_categories) + shape)
  fs = sampling.evaluate_batched(f, views.to_sample(view, perturbed), 3)  # (N, D, K)
  # f(x) is the evaluation with x_j set to its own value; taking it per j makes g_{j, x_j} exactly zero.
  index = jnp.reshape(flat, (num, dim, 1)).astype(jnp.int32)
  f_at_x = jnp.take_along_axis(fs, index, axis=2)  # (N, D, 1)
  grad = jnp.mean(fs - f_at_x, axis=0)
  value = jnp.mean(f_at_x[:, 0, 0])
  return value, probs, jnp.reshape(grad, shape + (num_categories,))


def measure_valued(coupling: bool = True) -> types.Estimator:
  r"""The measure-valued derivative estimator (weak derivatives; Pflug 1989, Mohamed et al. 2020, Sec. 6).

  For each coordinate :math:`j` of the natural parameters the derivative of the density is a scaled difference
  of two distributions, :math:`\partial_{\theta_j} E_{p_\theta}[f] = c_j (E_{p^+_j}[f] - E_{p^-_j}[f])`,
  where :math:`p^\pm_j` change coordinate :math:`j` of the sample only. With :math:`x` a base sample of the
  distribution and :math:`x^{(j \leftarrow v)}` the sample with coordinate :math:`j` set to :math:`v`:

  * Gaussian with independent coordinates (``Normal`` and ``MultivariateNormalDiag`` of distrax and TFP,
    numpyro's ``Normal``, and ``Independent`` wrappers; mean :math:`\mu_j` and standard deviation
    :math:`\sigma_j` per coordinate):

    .. math::
       \hat g_{\mu_j} = \frac{f(x^{(j \leftarrow \mu_j + \sigma_j W)})
                              - f(x^{(j \leftarrow \mu_j - \sigma_j W)})}{\sqrt{2\pi}\,\sigma_j}, \qquad
       \hat g_{\sigma_j} = \frac{f(x^{(j \leftarrow \mu_j + \sigma_j M)})
                                 - f(x^{(j \leftarrow \mu_j + \sigma_j M U)})}{\sigma_j},

    with :math:`W` Weibull (density :math:`w e^{-w^2/2}`), :math:`M` double-sided Maxwell (density
    :math:`m^2 e^{-m^2/2}/\sqrt{2\pi}`) and :math:`U \sim \mathrm{Uniform}(0, 1)`, so :math:`MU \sim N(0, 1)`.
  * Bernoulli (distrax, TFP, numpyro; probabilities :math:`p_j`):
    :math:`\hat g_{p_j} = f(x^{(j \leftarrow 1)}) - f(x^{(j \leftarrow 0)})`.
  * Categorical and OneHotCategorical (distrax, TFP, numpyro; probabilities :math:`p_{jk}`):
    :math:`\hat g_{p_{jk}} = f(x^{(j \leftarrow k)}) - f(x)`: the positive part is the point mass at
    :math:`k`, the negative part :math:`p_j` itself. The subtracted :math:`f(x)` is constant in :math:`k`, so
    it changes nothing along the simplex (the softmax of ``logits``, or distrax's normalisation of ``probs``,
    removes it exactly, sample by sample).

  Gradients with respect to ``params`` follow by the chain rule (autodiff through ``dist_builder``), so
  ``Normal(loc, jnp.exp(log_scale))`` or ``Bernoulli(logits=...)`` work as they are.

  * Needs of the distribution: one of the families above (any other raises a ``TypeError`` at trace time;
    a correlated Gaussian such as ``MultivariateNormalTri`` has no weak derivative per coordinate and is
    refused). ``f`` is only evaluated, never differentiated: it may be non-differentiable, or a black box.
    ``f`` receives samples in the distribution's own encoding (indices, or one-hot vectors).
  * Bias: none.
  * Variance: with ``coupling=True`` (the default) the plus and minus sides share the base sample for the
    other coordinates, the same :math:`W` for ``mu`` and :math:`M` for ``sigma``; this lowers the variance
    in ``sigma`` always and in ``mu`` when ``f`` is mostly even around ``mu`` (the derivations page of the
    documentation compares both on a quadratic). ``coupling=False`` draws every side independently.
    Estimates are bounded when ``f`` is.
  * Cost: ``num_samples`` counts evaluations of ``f``, as for every estimator, and each base sample costs a
    group of them: ``4 D`` for a Gaussian (2 per coordinate for ``loc`` and 2 for ``scale``), ``2 D`` for a
    Bernoulli and ``D K`` for a categorical (the evaluation at ``x`` itself is among them), with ``D`` the
    number of coordinates of one sample and ``K`` the number of categories. ``num_samples`` must be a multiple
    of the group, and the estimate averages over ``N = num_samples / group`` base samples. Memory grows as
    ``N D^2``.
  * Derivative order: first. The surrogate is linear in the natural parameters, so a second derivative in
    ``params`` raises :class:`sfe_jax.HigherOrderError`; mixed derivatives in ``params`` and in what ``f``
    closes over are the measure-valued estimates of the gradient of :math:`E[\partial f]`.

  The surrogate is :math:`\hat F + \sum_j \hat g_j\,(\eta_j - \bot\eta_j)` (``⊥`` = stop_gradient,
  :math:`\eta` the natural parameters, differentiable in ``params``). :math:`\hat F` is the mean of the
  evaluations that are distributed as the distribution itself (the ``sigma`` minus sides for a Gaussian,
  :math:`f(x)` at the base samples otherwise), so the value is an unbiased Monte Carlo estimate of
  :math:`E[f]` and the gradient with respect to anything ``f`` closes over is that of the Monte Carlo average.

  Args:
    coupling: whether the plus and minus sides share their random numbers (see Variance).

  Returns:
    An :class:`sfe_jax.Estimator` (stateless).

  Examples:
    >>> import jax, jax.numpy as jnp, distrax, sfe_jax as sfe
    >>> params = {"loc": jnp.zeros(2), "scale": jnp.ones(2)}
    >>> dist_builder = lambda p: distrax.Normal(p["loc"], p["scale"])
    >>> f = lambda x: jnp.sum(x ** 2)
    >>> value, grads, _ = sfe.value_and_grad(sfe.measure_valued(), f, dist_builder, params,
    ...                                      jax.random.key(0), num_samples=800)  # 100 base samples of 4 D = 8
    >>> jax.tree.map(jnp.shape, grads)
    {'loc': (2,), 'scale': (2,)}

  References:
    Pflug, Sampling derivatives of probabilities, Computing 1989. Heidergott and Vázquez-Abad, Measure-valued
    differentiation for Markov chains, 2008. Mohamed, Rosca, Figurnov and Mnih, Monte Carlo gradient
    estimation in machine learning, JMLR 2020, Section 6.
  """
  if not isinstance(coupling, bool):
    raise TypeError(f"`coupling` must be a bool; got {type(coupling).__name__} {coupling!r}.")

  def surrogate(f, dist_builder, params, key, num_samples, state):
    dist = checks.build_distribution(dist_builder, params)
    family = _family(dist)
    num = num_samples // family.evaluations
    if family.gaussian is not None:
      nat = family.gaussian  # Differentiable in params: carries the chain rule.
      value, grads = _gaussian(f, nat, key, num, coupling)
    else:  # Base samples from the distribution's own sampler (no gradient flows through them).
      view = family.view
      assert view is not None  # _family returns a Gaussian or a discrete view
      xs = jax.lax.stop_gradient(sampling.sample(dist, key, num))
      if view.kind == views.BERNOULLI:
        value, nat, grads = _bernoulli(f, view, xs)
      else:
        value, nat, grads = _categorical(f, view, xs)
    return value + differentiation.linear_surrogate(nat, grads), state

  name = "sfe.measure_valued()" if coupling else "sfe.measure_valued(coupling=False)"
  return types.Estimator(types.empty_init, surrogate, name=name, sample_count=_sample_count, chunking="independent")
