"""What is differentiated, and how many times.

``params`` is split into its floating-point array leaves, which are differentiated, and every other leaf
(functions and flags of an equinox Module, integer arrays, PRNG keys), which is passed through, as equinox's
filtered transformations do. The derivative-order guard :func:`first_order` lets a first-order estimator be
differentiated once in ``params`` and raises :class:`HigherOrderError` at trace time on a second derivative.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sfe_jax._src.core.types import Array, Params


class HigherOrderError(TypeError):
  """Raised at trace time when a first-order estimator is differentiated a second time in its parameters."""


def is_differentiable(leaf: Any) -> bool:
  """Whether a params leaf is differentiated: a JAX or NumPy array with a floating-point dtype."""
  if not isinstance(leaf, (jax.Array, np.ndarray, np.generic)):
    return False
  dtype = leaf.dtype
  return jnp.issubdtype(dtype, jnp.floating) and not jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


class ParamsSplit(NamedTuple):
  """The leaves of a params pytree, split into those differentiated and those passed through."""

  treedef: Any
  mask: tuple[bool, ...]
  static: tuple[Any, ...]

  def merge(self, diff: list[Any]) -> Params:
    """The params pytree with the differentiable leaves ``diff`` (``None`` at the other positions)."""
    leaves = [d if m else s for d, s, m in zip(diff, self.static, self.mask)]
    return self.treedef.unflatten(leaves)

  def grads(self, diff_grads: list[Any]) -> Params:
    """Gradients with the structure of params: ``None`` at the leaves that are not differentiated."""
    return self.treedef.unflatten([g if m else None for g, m in zip(diff_grads, self.mask)])


def split_params(params: Params) -> tuple[ParamsSplit, list[Any]]:
  """``(split, diff)``: ``diff`` lists the leaves of ``params``, ``None`` where a leaf is not differentiated."""
  leaves, treedef = jax.tree.flatten(params)
  mask = tuple(is_differentiable(leaf) for leaf in leaves)
  static = tuple(None if m else leaf for leaf, m in zip(leaves, mask))
  diff = [leaf if m else None for leaf, m in zip(leaves, mask)]
  return ParamsSplit(treedef, mask, static), diff


def stop_gradient(tree: Any) -> Any:
  """``jax.lax.stop_gradient`` on the differentiable leaves of ``tree``; other leaves pass through."""
  return jax.tree.map(lambda x: jax.lax.stop_gradient(x) if is_differentiable(x) else x, tree)


def linear_surrogate(params: Params, grads: Params) -> Array:
  """``sum(g * (p - stop_gradient(p)))``: zero in value, gradient ``g`` with respect to params.

  ``grads`` has the structure of ``params`` (``None`` at leaves that are not differentiated). ``g`` is not
  stop-gradient-ed: it must not depend on ``params`` (samples are), but may depend on what ``f`` closes over,
  so that the mixed derivative in ``params`` and in those is the derivative of the estimate.

  An infinite parameter (a logit of -inf masking a category) contributes exactly 0 in value, not
  ``inf - inf = NaN``, and no gradient; a NaN parameter still propagates.
  """
  leaves, treedef = jax.tree.flatten(params)
  grad_leaves = treedef.flatten_up_to(grads)  # type: ignore[attr-defined]  # jaxlib stubs lack it
  terms = [
    jnp.sum(g * jnp.where(jnp.isinf(p), jnp.zeros_like(p), p - jax.lax.stop_gradient(p)))
    for p, g in zip(leaves, grad_leaves)
    if g is not None and is_differentiable(p)
  ]
  return sum(terms, jnp.zeros(()))


# ----------------------------------------------------------------------------------------------------------
# The derivative-order guard. ``first_order(params, name)`` is ``params`` in value and in its first
# derivative; a second derivative with respect to the same params (jax.hessian, grad of grad, jacfwd of grad,
# in any order of forward and reverse mode) raises HigherOrderError while the outer transformation traces.
# Mixed derivatives in params and in what f closes over stay available, since they differentiate params once.
# ----------------------------------------------------------------------------------------------------------

HIGHER_ORDER_ESTIMATORS = (
  "sfe.score_function() (with any baseline), sfe.pathwise(), sfe.enumerate(), sfe.with_control_variate() of "
  "these, and the objective sfe.objectives.iwae()"
)


def _higher_order_message(name: str) -> str:
  return (
    f"{name} gives first-order gradients only, and it was differentiated a second time with respect to the "
    "distribution's parameters (jax.hessian, jax.grad of jax.grad, jax.jacfwd of jax.grad, ...): its second "
    "derivative would not be an estimate of the Hessian. Estimators whose every derivative is unbiased: "
    f"{HIGHER_ORDER_ESTIMATORS}. Derivatives with respect to what f closes over, and mixed ones (once in "
    "the parameters), are allowed."
  )


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _one(x: Array, name: str) -> Array:
  del name
  return jnp.ones_like(x)


@_one.defjvp
def _one_jvp(name, primals, tangents):
  del primals, tangents
  raise HigherOrderError(_higher_order_message(name))


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _first_order_leaf(x: Array, name: str) -> Array:
  del name
  return x


@_first_order_leaf.defjvp
def _first_order_leaf_jvp(name, primals, tangents):
  (x,), (t,) = primals, tangents
  # The tangent is t times a one whose own derivative raises: differentiating this rule, which is what a
  # second derivative in x does, calls _one_jvp.
  return x, t * _one(x, name)


def first_order(params: Params, name: str) -> Params:
  """``params``, differentiable once: a second derivative in them raises :class:`HigherOrderError`."""
  return jax.tree.map(lambda x: _first_order_leaf(x, name) if is_differentiable(x) else x, params)
