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
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sfe_jax._src.core import checks, differentiation, finite, sampling, types
from sfe_jax._src.discrete import views

Array = jax.Array
ControlFn = Callable[[Any, Array], Array]


class RelaxState(NamedTuple):
  """The state of :func:`relax` and :func:`rebar`.

  Attributes:
    control_params: the control variate's parameters (for :func:`rebar`, ``{"log_temperature", "scale"}``).
    opt_state: the state of the optimizer that trains them.

    skipped: the number of calls whose control update was not finite (f or the control gave NaN or inf on the
      batch); such an update is skipped, leaving ``control_params`` and ``opt_state`` as they were.

  Set ``control_params`` by hand (``state._replace(control_params=...)``) to estimate with any control; the
  estimator stays unbiased.
  """

  control_params: Any
  opt_state: Any
  skipped: Any = np.zeros((), np.int32)


# ----------------------------------------------------------------------------------------------------------
# The estimator shared by relax() and rebar().
# ----------------------------------------------------------------------------------------------------------


def _check_optimizer(optimizer: Any, who: str) -> optax.GradientTransformation:
  if optimizer is None:
    return optax.adam(1e-3)
  if not isinstance(optimizer, optax.GradientTransformation):
    raise TypeError(
      f"{who}: `optimizer` must be an optax.GradientTransformation (e.g. optax.adam(1e-3), or "
      f"optax.set_to_zero() to freeze the control) or None; got {type(optimizer).__name__}."
    )
  return optimizer


def _check_control_params(control_params: Any, who: str) -> None:
  for path, leaf in jax.tree_util.tree_leaves_with_path(control_params):
    dtype = jnp.result_type(leaf)
    if not jnp.issubdtype(dtype, jnp.floating):
      raise TypeError(
        f"{who}: `control_params` leaves must be floating-point arrays (they are trained by gradient); "
        f"the leaf control_params{jax.tree_util.keystr(path)} has dtype {dtype}."
      )


def _check_control_output(
  control: ControlFn, control_params: Any, view: views.DiscreteView, who: str, what: str
) -> None:
  """Raises unless ``control(control_params, z)`` is a real scalar for one sample ``z``; ``what`` names it."""
  z = jax.ShapeDtypeStruct(view.logits.shape, view.logits.dtype)
  try:
    out = jax.eval_shape(control, control_params, z)
  except Exception as e:  # The user's function failed: say where, keep the cause.
    raise TypeError(
      f"{who}: {what} raised {type(e).__name__}: {e}. It is called with the control params in the state and "
      f"ONE noisy-logit sample z of shape {tuple(view.logits.shape)} (see the traceback above for the "
      "failing line)."
    ) from e
  if not hasattr(out, "shape") or out.shape != () or not jnp.issubdtype(out.dtype, jnp.floating):
    got = f"shape {out.shape} and dtype {out.dtype}" if hasattr(out, "shape") else type(out).__name__
    raise ValueError(
      f"{who}: {what} must return a real floating-point scalar for one sample z of shape "
      f"{tuple(view.logits.shape)}; it returned {got}. Reduce the output (e.g. with jnp.sum)."
    )


def _tree_sum_of_squares(tree: Any) -> Array:
  return sum((jnp.sum(jnp.square(leaf)) for leaf in jax.tree.leaves(tree)), jnp.zeros(()))


def _estimator(
  *,
  name: str,
  initial_control_params: Callable[[], Any],
  make_control: Callable[[Callable[[Array], Array], views.DiscreteView], ControlFn],
  control_description: str,
  relaxed_f: bool,
  evaluations: int,
  optimizer: optax.GradientTransformation,
) -> types.Estimator:
  """RELAX with the control ``make_control(f, view)``, which evaluates ``f`` relaxed when ``relaxed_f``.

  ``f`` sees the distribution's own encoding; ``evaluations`` is the number of evaluations of ``f`` per sample.
  """

  def init(params):
    del params
    control_params = initial_control_params()
    return RelaxState(control_params, optimizer.init(control_params), jnp.zeros((), jnp.int32))

  def surrogate(f, dist_builder, params, key, num_samples, state):
    control_params = state.control_params
    _check_control_params(control_params, name)
    params0 = differentiation.stop_gradient(params)
    split, diff0 = differentiation.split_params(params0)
    view0 = views.discrete_view(checks.build_distribution(dist_builder, params0), who=name)
    if relaxed_f:
      views.require_relaxable(view0, name)
    noise, v = views.draw_noise(view0, key, num_samples // evaluations)
    z0 = jax.lax.stop_gradient(view0.logits)[None] + noise
    hard = views.hard_from_noisy(view0, z0)
    f_values = sampling.evaluate(f, views.to_sample(view0, hard))
    f_coefficients = jax.lax.stop_gradient(f_values)

    control = make_control(f, view0)
    _check_control_output(control, control_params, view0, name, control_description)
    control_batch = jax.vmap(control, in_axes=(None, 0))
    control_value_and_grad = jax.vmap(jax.value_and_grad(control, argnums=1), in_axes=(None, 0))

    def relax_surrogate(d, cp):
      # Per sample: (f(b) - c(z~)) log p(b) + c(z) - c(z~), averaged. Its gradient in p is the RELAX estimate;
      # the coefficient c(z~) is constant in p but not in cp.
      view = views.discrete_view(checks.build_distribution(dist_builder, split.merge(d)), who=name)
      # The value of z0 exactly, the derivative of logits + noise.
      z = z0 + (view.logits - jax.lax.stop_gradient(view.logits))[None]
      z_tilde = views.conditional_noisy_logits(view, hard, v)
      # c(z~) and its z-gradient at the stopped z~, once: c(z~) + <dc/dz(z~), z~ - stop(z~)> has the value
      # c(z~), the p-gradient dc/dz(z~) dz~/dp and keeps its dependence on cp (both terms).
      c_tilde, dc_tilde = control_value_and_grad(cp, jax.lax.stop_gradient(z_tilde))
      axes = tuple(range(1, z_tilde.ndim))
      c_tilde_path = c_tilde + jnp.sum(dc_tilde * (z_tilde - jax.lax.stop_gradient(z_tilde)), axis=axes)
      log_p = jax.vmap(lambda b: views.log_prob(view, b))(hard)
      per_sample = (f_coefficients - c_tilde) * log_p + control_batch(cp, z) - c_tilde_path
      return jnp.mean(per_sample)

    def variance_objective(cp):
      g = jax.grad(relax_surrogate)(diff0, cp)
      return _tree_sum_of_squares(g), g

    (_, grads), control_grads = jax.value_and_grad(variance_objective, has_aux=True)(control_params)
    updates, opt_state = optimizer.update(control_grads, state.opt_state, control_params)
    (new_control_params, opt_state), skipped = finite.update_if_finite(
      (control_params, state.opt_state), (optax.apply_updates(control_params, updates), opt_state), state.skipped
    )
    new_state = RelaxState(new_control_params, opt_state, skipped)
    # Zero in value and in its params-gradient; its derivative in what f closes over, then in params, is the
    # score-function estimate of that mixed derivative (the control terms have zero mean for every f).
    view = views.discrete_view(checks.build_distribution(dist_builder, params), who=name)
    log_p = jax.vmap(lambda b: views.log_prob(view, b))(hard)
    mixed = jnp.mean((f_values - f_coefficients) * (log_p - jax.lax.stop_gradient(log_p)))
    out = (
      jnp.mean(f_values) + differentiation.linear_surrogate(params, jax.lax.stop_gradient(split.grads(grads))) + mixed
    )
    return out, jax.lax.stop_gradient(new_state)

  count = types.fixed_count(
    multiple=evaluations,
    minimum=evaluations,
    reason=(f" (num_samples counts evaluations of f, {evaluations} per sample)" if evaluations > 1 else ""),
  )
  return types.Estimator(init, surrogate, name=name, sample_count=count)


# ----------------------------------------------------------------------------------------------------------
# Public constructors.
# ----------------------------------------------------------------------------------------------------------


def relax(
  control_fn: ControlFn, control_params: Any, optimizer: optax.GradientTransformation | None = None
) -> types.Estimator:
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
    the closed forms of ``views.conditional_noisy_logits``, stable for logits of any size.
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
  * Control training: after each estimate, one ``optimizer`` step on the single-estimate variance
    :math:`\sum \hat g^2`, which has the gradient of :math:`\mathrm{Var}[\hat g]` because :math:`\hat g` is
    unbiased for every :math:`\phi`; ``control_fn`` must be twice differentiable (mixed in ``z`` and
    ``control_params``). The derivations page of the documentation has the argument.
  * Cost per sample: one evaluation of ``f`` (never differentiated) and two of ``control_fn`` (at ``z`` and at
    ``z~``) with their gradients in ``z``; the control update adds a second-order pass through the
    control and through ``dist_builder`` (a backward pass over the gradient in ``params``). ``num_samples``
    counts evaluations of ``f``.

  First order: a second derivative in ``params`` raises :class:`sfe_jax.HigherOrderError`; mixed derivatives
  (once in ``params``, once in what ``f`` closes over) are unbiased score-function estimates.

  The estimator trains its control as it goes: each call returns the updated control parameters in its
  state (a ``RelaxState(control_params, opt_state)``), so one jitted training step is one
  :func:`sfe_jax.value_and_grad` call (see the example). Any control parameters are unbiased: pass
  ``state=est.init(params)._replace(control_params=...)`` to set them, and ``optimizer=optax.set_to_zero()``
  to keep them fixed.

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
  name = "sfe.relax()"
  if not callable(control_fn):
    raise TypeError(
      f"{name}: `control_fn` must be a callable (control_params, z) -> scalar; got {type(control_fn).__name__}."
    )
  _check_control_params(control_params, name)
  optimizer = _check_optimizer(optimizer, name)
  # Strongly typed arrays, so that a jitted training step is not retraced when the updated state comes back.
  initial = jax.tree.map(lambda x: jnp.asarray(x, dtype=jnp.asarray(x).dtype), control_params)
  return _estimator(
    name=name,
    initial_control_params=lambda: initial,
    make_control=lambda f, view: control_fn,
    control_description="`control_fn(control_params, z)`",
    relaxed_f=False,
    evaluations=1,
    optimizer=optimizer,
  )


def _check_real(value: Any, name: str, who: str, positive: bool) -> float:
  if isinstance(value, jax.core.Tracer):
    raise TypeError(
      f"{who}: `{name}` must be a concrete Python number (it sets the initial control); got a "
      "traced value. Call the constructor outside jax.jit."
    )
  if isinstance(value, bool) or not (
    isinstance(value, numbers.Real)
    or (
      isinstance(value, (np.ndarray, jax.Array))
      and np.shape(value) == ()
      and jnp.issubdtype(jnp.result_type(value), jnp.floating)
    )
  ):
    raise TypeError(f"{who}: `{name}` must be a real number; got {type(value).__name__} {value!r}.")
  value = float(value)
  if not math.isfinite(value) or (positive and value <= 0):
    wanted = "a finite positive number" if positive else "a finite number"
    raise ValueError(f"{who}: `{name}` must be {wanted}; got {value!r}.")
  return value


def rebar(
  temperature: float = 0.5, scale: float = 1.0, optimizer: optax.GradientTransformation | None = None
) -> types.Estimator:
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
    :mod:`sfe_jax._src.discrete.relaxations`).
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
  name = "sfe.rebar()"
  temperature = _check_real(temperature, "temperature", name, positive=True)
  scale = _check_real(scale, "scale", name, positive=False)
  optimizer = _check_optimizer(optimizer, name)

  def initial_control_params():
    return {
      "log_temperature": jnp.asarray(math.log(temperature), jnp.float32),
      "scale": jnp.asarray(scale, jnp.float32),
    }

  def make_control(f, view):
    def control(cp, z):
      soft = views.soften(view, z, jnp.exp(cp["log_temperature"]).astype(z.dtype))
      return cp["scale"].astype(z.dtype) * f(views.relaxed_input(view, soft))

    return control

  return _estimator(
    name=name,
    initial_control_params=initial_control_params,
    make_control=make_control,
    control_description=(
      "the control scale * f(soften(z, temperature)) (f on relaxed input: floats in [0, 1] "
      "for Bernoulli, simplex points of shape variables_shape + (K,) for categoricals)"
    ),
    relaxed_f=True,
    evaluations=3,
    optimizer=optimizer,
  )
