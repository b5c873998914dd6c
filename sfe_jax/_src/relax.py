r"""REBAR and RELAX: score-function estimators with a learned, reparameterized control variate.

For a discrete variable ``b = H(z)`` that is a deterministic function of a continuous *noisy-logit* variable
``z`` (``z = logits + logistic noise`` and ``b = 1[z > 0]`` for Bernoulli variables; ``z = logits + Gumbel
noise`` and ``b = argmax z`` for categoricals), and any differentiable control ``c(z)``,

.. math::
   \nabla_\theta E_{p_\theta(b)}[f(b)] = E\big[(f(b) - c(\tilde z))\, \nabla_\theta \log p_\theta(b)
   + \nabla_\theta c(z) - \nabla_\theta c(\tilde z)\big],
   \qquad z \sim p_\theta(z),\ b = H(z),\ \tilde z \sim p_\theta(z \mid b),

with ``z`` and ``z~`` both reparameterized by the logits (Grathwohl et al. 2018, eq. 8). The identity holds
for every ``c``, so the estimator is unbiased whatever the control's parameters are; they are trained during
estimation to minimise the estimator's variance, and a good control makes the variance far smaller than the
score function's.

:func:`relax` takes any control ``control_fn(control_params, z)``; :func:`rebar` is the special case
``c(z) = scale * f(soften(z, temperature))`` of Tucker et al. (2017), with the scale and the temperature learned.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sfe_jax._src import base
from sfe_jax._src import discrete

sg = jax.lax.stop_gradient
Array = jax.Array
ControlFn = Callable[[Any, Array], Array]


class RelaxState(NamedTuple):
  """The state of :func:`relax` and :func:`rebar`.

  Attributes:
    control_params: the control variate's parameters (for :func:`rebar`, ``{"log_temperature", "scale"}``).
    opt_state: the state of the optimizer that trains them.

  Set ``control_params`` by hand (``state._replace(control_params=...)``) to estimate with any control; the
  estimator stays unbiased.
  """

  control_params: Any
  opt_state: Any


# ----------------------------------------------------------------------------------------------------------
# The noisy logits z, and the conditional relaxation z~ ~ p(z | b). Candidates for discrete.py.
# ----------------------------------------------------------------------------------------------------------


def _draw_noise(view: discrete.DiscreteView, key: Array, num_samples: int) -> tuple[Array, Array]:
  """The noise of ``z`` (logistic or Gumbel) and the uniforms ``v`` of ``z~``; both ``(N,) + logits.shape``."""
  key_z, key_v = jax.random.split(key)
  zero_view = view._replace(logits=jnp.zeros_like(view.logits))
  noise = discrete.noisy_logits(zero_view, key_z, num_samples)
  dtype = view.logits.dtype
  # v in [tiny, 1): log(v) and log(-log(v)) stay finite.
  v = jax.random.uniform(key_v, noise.shape, dtype=dtype, minval=jnp.finfo(dtype).tiny, maxval=1.0)
  return noise, v


def conditional_noisy_logits(view: discrete.DiscreteView, hard: Array, v: Array) -> Array:
  r"""``z~ ~ p(z | H(z) = hard)``, reparameterized by ``view.logits`` through the uniforms ``v``.

  Bernoulli, with :math:`\sigma = 2b - 1` and :math:`\phi` the logit: the noisy logit given ``b = 1`` is
  :math:`\phi - \mathrm{logit}(v\, \mathrm{sigmoid}(\phi))`, given ``b = 0`` it is
  :math:`\phi + \mathrm{logit}(v\, \mathrm{sigmoid}(-\phi))`; both equal

  .. math:: \tilde z = \sigma\, [\mathrm{softplus}(\sigma \phi + \log(1 - v)) - \log v],

  a form in which every term is finite for any logit and ``sign(z~) = sigma`` exactly.

  Categorical, with normalised log-probabilities :math:`\theta` (so the maximum of ``z`` is standard Gumbel)
  and ``b`` the argmax (Grathwohl et al. 2018, Appendix):
  :math:`\tilde z_b = -\log(-\log v_b)` and, for :math:`k \ne b`,
  :math:`\tilde z_k = -\log(-\log v_k\, e^{-\theta_k} - \log v_b)`
  (a Gumbel with location :math:`\theta_k` truncated below :math:`\tilde z_b`), computed with ``logaddexp``.

  Args:
    view: the :class:`~sfe_jax._src.discrete.DiscreteView`; its logits may be traced (differentiated).
    hard: canonical hard values, shape ``(N,) + variables_shape``.
    v: uniforms in ``(0, 1)``, shape ``(N,) + logits.shape``.

  Returns:
    ``z~``, shape ``(N,) + logits.shape``.
  """
  logits = view.logits
  if view.kind == discrete.BERNOULLI:
    sign = 2.0 * hard.astype(logits.dtype) - 1.0
    return sign * (jax.nn.softplus(sign * logits + jnp.log1p(-v)) - jnp.log(v))
  log_neg_log_v = jnp.log(-jnp.log(v))
  top = jnp.take_along_axis(log_neg_log_v, hard[..., None].astype(jnp.int32), axis=-1)
  others = -jnp.logaddexp(log_neg_log_v - logits, top)
  return jnp.where(discrete.one_hot(view, hard) > 0.5, -top, others)


# ----------------------------------------------------------------------------------------------------------
# The estimator shared by relax() and rebar().
# ----------------------------------------------------------------------------------------------------------


def _check_optimizer(optimizer: Any, who: str) -> optax.GradientTransformation:
  if optimizer is None:
    return optax.adam(1e-3)
  if not isinstance(optimizer, optax.GradientTransformation):
    raise TypeError(
        f"{who}: `optimizer` must be an optax.GradientTransformation (e.g. optax.adam(1e-3), or "
        f"optax.set_to_zero() to freeze the control) or None; got {type(optimizer).__name__}.")
  return optimizer


def _check_control_params(control_params: Any, who: str) -> None:
  for path, leaf in jax.tree_util.tree_leaves_with_path(control_params):
    dtype = jnp.result_type(leaf)
    if not jnp.issubdtype(dtype, jnp.floating):
      raise TypeError(
          f"{who}: `control_params` leaves must be floating-point arrays (they are trained by gradient); "
          f"the leaf control_params{jax.tree_util.keystr(path)} has dtype {dtype}.")


def _check_control_output(control: ControlFn, control_params: Any, view: discrete.DiscreteView, who: str,
                          what: str) -> None:
  """Raises unless ``control(control_params, z)`` is a real scalar for one sample ``z``; ``what`` names it."""
  z = jax.ShapeDtypeStruct(view.logits.shape, view.logits.dtype)
  try:
    out = jax.eval_shape(control, control_params, z)
  except Exception as e:  # The user's function failed: say where, keep the cause.
    raise TypeError(
        f"{who}: {what} raised {type(e).__name__}: {e}. It is called with the control params in the state and "
        f"ONE noisy-logit sample z of shape {tuple(view.logits.shape)} (see the traceback above for the "
        "failing line).") from e
  if not hasattr(out, "shape") or out.shape != () or not jnp.issubdtype(out.dtype, jnp.floating):
    got = f"shape {out.shape} and dtype {out.dtype}" if hasattr(out, "shape") else type(out).__name__
    raise ValueError(
        f"{who}: {what} must return a real floating-point scalar for one sample z of shape "
        f"{tuple(view.logits.shape)}; it returned {got}. Reduce the output (e.g. with jnp.sum).")


def _tree_sum_of_squares(tree: Any) -> Array:
  return sum((jnp.sum(jnp.square(leaf)) for leaf in jax.tree.leaves(tree)), jnp.zeros(()))


def _estimator(
    *,
    who: str,
    name: str,
    initial_control_params: Callable[[], Any],
    make_control: Callable[[Callable[[Array], Array], discrete.DiscreteView], ControlFn],
    control_description: str,
    relaxed_f: bool,
    evaluations: int,
    optimizer: optax.GradientTransformation,
) -> base.Estimator:
  """RELAX with the control ``make_control(f, view)``, which evaluates ``f`` relaxed when ``relaxed_f``.

  ``f`` sees the distribution's own encoding; ``evaluations`` is the number of evaluations of ``f`` per sample.
  """

  def init(params):
    del params
    control_params = initial_control_params()
    return RelaxState(control_params, optimizer.init(control_params))

  def surrogate(f, dist_builder, params, key, num_samples, state):
    control_params = state.control_params
    _check_control_params(control_params, who)
    params0 = base.stop_gradient(params)
    split, diff0 = base.split_params(params0)
    view0 = discrete.discrete_view(base.build_distribution(dist_builder, params0), who=who)
    if relaxed_f:
      discrete.require_relaxable(view0, who)
    noise, v = _draw_noise(view0, key, num_samples // evaluations)
    z0 = sg(view0.logits) + noise
    hard = discrete.hard_from_noisy(view0, z0)
    f_values = base.evaluate(f, discrete.to_sample(view0, hard))
    f_coefficients = sg(f_values)

    control = make_control(f, view0)
    _check_control_output(control, control_params, view0, who, control_description)
    control_batch = jax.vmap(control, in_axes=(None, 0))
    control_value_and_grad = jax.vmap(jax.value_and_grad(control, argnums=1), in_axes=(None, 0))

    def relax_surrogate(d, cp):
      # Per sample: (f(b) - c(z~)) log p(b) + c(z) - c(z~), averaged. Its gradient in p is the RELAX estimate;
      # the coefficient c(z~) is constant in p but not in cp.
      view = discrete.discrete_view(base.build_distribution(dist_builder, split.merge(d)), who=who)
      z = z0 + (view.logits - sg(view.logits))  # the value of z0 exactly, the derivative of logits + noise
      z_tilde = conditional_noisy_logits(view, hard, v)
      # c(z~) and its z-gradient at the stopped z~, once: c(z~) + <dc/dz(z~), z~ - stop(z~)> has the value
      # c(z~), the p-gradient dc/dz(z~) dz~/dp and keeps its dependence on cp (both terms).
      c_tilde, dc_tilde = control_value_and_grad(cp, sg(z_tilde))
      axes = tuple(range(1, z_tilde.ndim))
      c_tilde_path = c_tilde + jnp.sum(dc_tilde * (z_tilde - sg(z_tilde)), axis=axes)
      log_p = jax.vmap(lambda b: discrete.log_prob(view, b))(hard)
      per_sample = (f_coefficients - c_tilde) * log_p + control_batch(cp, z) - c_tilde_path
      return jnp.mean(per_sample)

    def variance_objective(cp):
      g = jax.grad(relax_surrogate)(diff0, cp)
      return _tree_sum_of_squares(g), g

    (_, grads), control_grads = jax.value_and_grad(variance_objective, has_aux=True)(control_params)
    updates, opt_state = optimizer.update(control_grads, state.opt_state, control_params)
    new_state = RelaxState(optax.apply_updates(control_params, updates), opt_state)
    # Zero in value and in its params-gradient; its derivative in what f closes over, then in params, is the
    # score-function estimate of that mixed derivative (the control terms have zero mean for every f).
    view = discrete.discrete_view(base.build_distribution(dist_builder, params), who=who)
    log_p = jax.vmap(lambda b: discrete.log_prob(view, b))(hard)
    mixed = jnp.mean((f_values - f_coefficients) * (log_p - sg(log_p)))
    out = jnp.mean(f_values) + base.linear_surrogate(params, sg(split.grads(grads))) + mixed
    return out, jax.tree.map(sg, new_state)

  count = base.fixed_count(multiple=evaluations, minimum=evaluations, reason=(
      f" (num_samples counts evaluations of f, {evaluations} per sample)" if evaluations > 1 else ""))
  return base.Estimator(init, surrogate, name=name, sample_count=count)


# ----------------------------------------------------------------------------------------------------------
# Public constructors.
# ----------------------------------------------------------------------------------------------------------



def relax(control_fn: ControlFn, control_params: Any, optimizer: optax.GradientTransformation | None = None
          ) -> base.Estimator:
  r"""RELAX (Grathwohl et al. 2018): a score-function estimator with a learned reparameterized control.

  With ``z`` the noisy logits of ONE joint sample, ``b = H(z)`` the sample, ``z~ ~ p(z | b)`` the conditional
  relaxation and :math:`c_\phi` = ``control_fn(control_params, .)``, each of the ``N = num_samples`` samples
  gives

  .. math::
     \hat g = \big(f(b) - c_\phi(\tilde z)\big)\, \nabla_\theta \log p_\theta(b)
     + \nabla_\theta c_\phi(z) - \nabla_\theta c_\phi(\tilde z),

  where ``z`` and ``z~`` are differentiated through the logits (reparameterization) and
  :math:`\log p_\theta(b)` is summed over all the distribution's variables; the estimate is the average over
  the ``N`` samples, and the value is the Monte Carlo mean of :math:`f(b)`.

  * ``z`` (what ``control_fn`` receives, one sample, no leading axis): Bernoulli: ``logits + logistic noise``
    with the shape of one sample, ``b = 1[z > 0]``. Categorical: normalised log-probabilities plus Gumbel
    noise, shape ``variables_shape + (K,)``, ``b = argmax(z, -1)``. ``z~`` is drawn from ``p(z | b)`` with
    the closed forms of :func:`conditional_noisy_logits`, stable for logits of any size.
  * Distributions: Bernoulli (any shape), Categorical and OneHotCategorical (any batch shape) of distrax, TFP's
    JAX substrate or numpyro, optionally in ``Independent``. ``f`` receives the distribution's own sample
    encoding (as under :func:`sfe_jax.score_function`) and is never differentiated by the estimator (only
    ``control_fn`` is); for a REBAR-like term close over ``f`` inside ``control_fn``, e.g.
    ``lambda cp, z: cp["scale"] * f(jax.nn.sigmoid(z / cp["t"])) + mlp(cp["mlp"], z)`` (``f`` must then
    accept relaxed input).
  * Bias: none, for ANY control parameters (the control may be trained on the same samples because it is
    updated only after the estimate is made). ``control_fn`` must be differentiable in ``z``.
  * Variance: that of the score function with the sample-dependent baseline :math:`c(\tilde z)`, plus the
    reparameterized correction; zero if :math:`c(z) = f(H(z))` could be matched, and in practice far below
    the score function's once the control is trained.
  * Control training: after the estimate, the control parameters take one ``optimizer`` step on the
    single-estimate variance objective :math:`\sum \hat g^2` (summed over every leaf of ``params``): since
    :math:`\hat g` is unbiased for every :math:`\phi`, :math:`\nabla_\phi E[\hat g^2] = \nabla_\phi
    \mathrm{Var}[\hat g]`. :math:`\nabla_\phi \hat g` is a second-order derivative (in :math:`\phi` of a
    gradient in :math:`\theta`), so ``control_fn`` must be twice differentiable (mixed in ``z`` and
    ``control_params``).
  * Cost per sample: one evaluation of ``f`` (never differentiated) and two of ``control_fn`` (at ``z`` and at
    ``z~``) with their gradients in ``z``; the control update adds a second-order pass through the
    control and through ``dist_builder`` (a backward pass over the gradient in ``params``). ``num_samples``
    counts evaluations of ``f``.

  The surrogate is ``mean f(b) + <stop_gradient(g), params - stop_gradient(params)>``: its gradient in
  ``params`` is the RELAX estimate :math:`\bar g` and its gradient in anything ``f`` closes over is the
  ordinary gradient of the Monte Carlo mean. It is a first-order estimator: a second derivative in ``params``
  raises :class:`sfe_jax.HigherOrderError`. Mixed derivatives (once in ``params``, once in what ``f`` closes
  over) are the score-function estimate of that derivative: unbiased, without the control's variance
  reduction.

  Training the model and the control in one jitted step: the estimator updates its control parameters each
  time it is called and returns them in the new state, so a user's training step is ONE call::

      @jax.jit
      def step(params, opt_state, est_state, key):
        value, grads, est_state = sfe.value_and_grad(est, f, dist_builder, params, key, num_samples=1,
                                                     state=est_state)
        updates, opt_state = opt.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state, est_state, value

  The state is a ``RelaxState(control_params, opt_state)``; to estimate with given control parameters, pass
  ``state=est.init(params)._replace(control_params=...)`` (any value is unbiased), and use
  ``optax.set_to_zero()`` as ``optimizer`` to keep them fixed.

  Args:
    control_fn: ``control_fn(control_params, z) -> scalar`` for ONE noisy-logit sample ``z`` (shape above).
    control_params: the initial control parameters, a pytree of floating-point arrays (may be empty).
    optimizer: an ``optax.GradientTransformation`` that trains the control parameters; default
      ``optax.adam(1e-3)``; ``optax.set_to_zero()`` freezes them.

  Returns:
    An :class:`sfe_jax.Estimator` whose state is a ``RelaxState``.

  Examples:
    >>> import jax, jax.numpy as jnp, distrax, optax, sfe_jax as sfe
    >>> f = lambda b: jnp.sum((b - 0.499) ** 2)
    >>> dist_builder = lambda p: distrax.Bernoulli(logits=p["logits"])
    >>> mlp = lambda cp, z: jnp.sum(jnp.tanh(z[..., None] * cp["w1"] + cp["b1"]) @ cp["w2"])
    >>> cp = {"w1": 0.1 * jnp.ones(10), "b1": jnp.zeros(10), "w2": 0.1 * jnp.ones(10)}
    >>> est = sfe.relax(mlp, cp, optimizer=optax.adam(1e-2))
    >>> params = {"logits": jnp.zeros(3)}
    >>> opt = optax.adam(1e-2)
    >>> opt_state, est_state = opt.init(params), est.init(params)
    >>> @jax.jit
    ... def step(params, opt_state, est_state, key):
    ...   value, grads, est_state = sfe.value_and_grad(est, f, dist_builder, params, key, num_samples=1,
    ...                                                state=est_state)
    ...   updates, opt_state = opt.update(grads, opt_state)
    ...   return optax.apply_updates(params, updates), opt_state, est_state, value
    >>> for i in range(3):
    ...   params, opt_state, est_state, value = step(params, opt_state, est_state, jax.random.key(i))
    >>> est_state.control_params["w1"].shape
    (10,)

  References:
    Grathwohl, Choi, Wu, Roeder and Duvenaud, Backpropagation through the void: optimizing control variates
    for black-box gradient estimation, ICLR 2018 (eq. 8 and Appendix B for the conditional Gumbel).
    Tucker, Mnih, Maddison, Lawson and Sohl-Dickstein, REBAR: low-variance, unbiased gradient estimates for
    discrete latent variable models, NeurIPS 2017.
  """
  who = "sfe.relax()"
  if not callable(control_fn):
    raise TypeError(f"{who}: `control_fn` must be a callable (control_params, z) -> scalar; got "
                    f"{type(control_fn).__name__}.")
  _check_control_params(control_params, who)
  optimizer = _check_optimizer(optimizer, who)
  # Strongly typed arrays, so that a jitted training step is not retraced when the updated state comes back.
  initial = jax.tree.map(lambda x: jnp.asarray(x, dtype=jnp.asarray(x).dtype), control_params)
  return _estimator(
      who=who, name="RELAX", initial_control_params=lambda: initial,
      make_control=lambda f, view: control_fn, control_description="`control_fn(control_params, z)`",
      relaxed_f=False, evaluations=1, optimizer=optimizer)


def _check_real(value: Any, name: str, who: str, positive: bool) -> float:
  if isinstance(value, jax.core.Tracer):
    raise TypeError(f"{who}: `{name}` must be a concrete Python number (it sets the initial control); got a "
                    "traced value. Call the constructor outside jax.jit.")
  if isinstance(value, bool) or not (isinstance(value, numbers.Real) or (
      isinstance(value, (np.ndarray, jax.Array)) and np.shape(value) == ()
      and jnp.issubdtype(jnp.result_type(value), jnp.floating))):
    raise TypeError(f"{who}: `{name}` must be a real number; got {type(value).__name__} {value!r}.")
  value = float(value)
  if not math.isfinite(value) or (positive and value <= 0):
    wanted = "a finite positive number" if positive else "a finite number"
    raise ValueError(f"{who}: `{name}` must be {wanted}; got {value!r}.")
  return value


def rebar(temperature: float = 0.5, scale: float = 1.0, optimizer: optax.GradientTransformation | None = None
          ) -> base.Estimator:
  r"""REBAR (Tucker et al. 2017): RELAX whose control is the Concrete relaxation of ``f`` itself.

  .. math::
     c_{\eta, \lambda}(z) = \eta\, f(\mathrm{soften}(z, \lambda)), \qquad
     \hat g = \big(f(b) - c(\tilde z)\big)\, \nabla_\theta \log p_\theta(b)
     + \nabla_\theta c(z) - \nabla_\theta c(\tilde z),

  with ``soften(z, t) = sigmoid(z / t)`` (Bernoulli) or ``softmax(z / t, -1)`` (categorical), ``z`` the
  noisy logits, ``b = H(z)`` and ``z~ ~ p(z | b)`` (see :func:`relax`). The scale :math:`\eta` and the
  temperature :math:`\lambda` are the control parameters ``{"log_temperature": log(temperature),
  "scale": scale}``, trained to minimise the variance.

  * Distributions: Bernoulli (any shape) and OneHotCategorical (any batch shape) with a floating-point dtype
    (distrax, TFP), optionally in ``Independent``: the relaxed values must be in the distribution's own
    encoding, so an index-valued Categorical or an integer dtype is refused with the fix (see
    :mod:`sfe_jax._src.relaxations`).
  * ``f`` must accept relaxed input and be twice differentiable in it: Bernoulli: floats in [0, 1] with the
    shape of one sample; one-hot categorical: points of the simplex. The hard sample is given to ``f`` in the
    distribution's own encoding.
  * Bias: none, for every temperature and scale (trained or not).
  * Variance: lower than the score function's when the relaxation is close to ``f``; the learned scale can
    switch the control off (scale 0 gives REINFORCE), so training does not make it worse than REINFORCE.
  * Control training: see :func:`relax`; the update differentiates ``f`` twice (the temperature gradient of
    the reparameterized term).
  * Cost per sample: three evaluations of ``f``: one on the hard sample and two relaxed (at ``z`` and ``z~``),
    the relaxed ones with their gradients; the control update adds a second-order pass. ``num_samples``
    counts evaluations of ``f``, so it must be a multiple of 3 (``num_samples = 3 N`` for ``N`` samples).
  * Derivative order: first (as :func:`relax`).

  Training: as for :func:`relax`, one jitted call of ``sfe.value_and_grad`` with ``state=est_state`` updates
  both the control (in the returned state, a ``RelaxState``) and gives the model gradient (example below). To
  estimate with given control parameters, pass ``state=est.init(params)._replace(control_params=
  {"log_temperature": ..., "scale": ...})``; ``optax.set_to_zero()`` as ``optimizer`` keeps them fixed.

  Args:
    temperature: the initial temperature of the relaxation, a positive number.
    scale: the initial scale of the control, a real number.
    optimizer: an ``optax.GradientTransformation`` that trains ``{"log_temperature", "scale"}``; default
      ``optax.adam(1e-3)``; ``optax.set_to_zero()`` freezes them.

  Returns:
    An :class:`sfe_jax.Estimator` whose state is a ``RelaxState``.

  Examples:
    >>> import jax, jax.numpy as jnp, distrax, optax, sfe_jax as sfe
    >>> f = lambda b: jnp.sum((b - 0.45) ** 2)
    >>> dist_builder = lambda p: distrax.Bernoulli(logits=p["logits"], dtype=jnp.float32)
    >>> est = sfe.rebar(temperature=0.5, optimizer=optax.adam(1e-2))
    >>> params = {"logits": jnp.zeros(3)}
    >>> opt = optax.adam(1e-2)
    >>> opt_state, est_state = opt.init(params), est.init(params)
    >>> @jax.jit
    ... def step(params, opt_state, est_state, key):
    ...   value, grads, est_state = sfe.value_and_grad(est, f, dist_builder, params, key, num_samples=3,
    ...                                                state=est_state)
    ...   updates, opt_state = opt.update(grads, opt_state)
    ...   return optax.apply_updates(params, updates), opt_state, est_state, value
    >>> for i in range(3):
    ...   params, opt_state, est_state, value = step(params, opt_state, est_state, jax.random.key(i))
    >>> sorted(est_state.control_params)
    ['log_temperature', 'scale']

  References:
    Tucker, Mnih, Maddison, Lawson and Sohl-Dickstein, REBAR: low-variance, unbiased gradient estimates for
    discrete latent variable models, NeurIPS 2017. Grathwohl, Choi, Wu, Roeder and Duvenaud, Backpropagation
    through the void, ICLR 2018 (Section 3.2: REBAR as a special case of RELAX). Maddison, Mnih and Teh, The
    Concrete distribution, ICLR 2017; Jang, Gu and Poole, Categorical reparameterization with Gumbel-softmax,
    ICLR 2017.
  """
  who = "sfe.rebar()"
  temperature = _check_real(temperature, "temperature", who, positive=True)
  scale = _check_real(scale, "scale", who, positive=False)
  optimizer = _check_optimizer(optimizer, who)

  def initial_control_params():
    return {"log_temperature": jnp.asarray(math.log(temperature), jnp.float32),
            "scale": jnp.asarray(scale, jnp.float32)}

  def make_control(f, view):
    def control(cp, z):
      soft = discrete.soften(view, z, jnp.exp(cp["log_temperature"]).astype(z.dtype))
      return cp["scale"].astype(z.dtype) * f(discrete.relaxed_input(view, soft))
    return control

  return _estimator(
      who=who, name="REBAR", initial_control_params=initial_control_params, make_control=make_control,
      control_description=("the control scale * f(soften(z, temperature)) (f on relaxed input: floats in [0, 1] "
                           "for Bernoulli, simplex points of shape variables_shape + (K,) for categoricals)"),
      relaxed_f=True, evaluations=3, optimizer=optimizer)
