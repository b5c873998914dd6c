"""The library's rules for non-finite values and low precision, in one place (the README's NaN/inf policy).

* **NaN in, NaN out.** A NaN in a differentiated parameter, or a distribution parameter out of its domain
  (:func:`sfe_jax._src.core.distributions.out_of_domain`), makes the value and every derivative NaN
  (:func:`poison` on the value, :func:`poison_derivatives` on the parameters' tangents): the estimators'
  arithmetic would otherwise turn it into a plausible finite number (a NaN logit samples one value
  deterministically, a pathwise gradient never evaluates the density).
* **Infinite parameters are valid** where the distribution allows them (a logit of ``-inf`` masks a category):
  the discrete view replaces them by a finite stand-in with a zero derivative.
* **State survives a bad batch.** A stateful piece (a moving-average baseline, the controls of REBAR/RELAX)
  keeps its previous state when the update is not finite and counts the skipped update
  (:func:`update_if_finite`), as ``optax.apply_if_finite`` does for parameters.
* **Low precision.** float16/bfloat16 parameters are computed in float32 (:func:`upcast`): their uniforms would
  have 8 to 11 bits, and their Monte Carlo means drift. Gradients come back in the parameters' own dtype.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sfe_jax._src.core.types import Array

#: The smallest floating-point width the estimators compute in.
MIN_COMPUTE_BITS = 32


def is_float(leaf: Any) -> bool:
  return hasattr(leaf, "dtype") and jnp.issubdtype(leaf.dtype, jnp.floating)


def all_finite(tree: Any) -> Array:
  """A boolean scalar: whether every floating-point leaf of ``tree`` is finite (True for a tree without any)."""
  checks = [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree) if is_float(leaf)]
  return jnp.all(jnp.stack(checks)) if checks else jnp.asarray(True)


def any_nan(tree: Any) -> Array:
  """A boolean scalar: whether any floating-point leaf of ``tree`` holds a NaN."""
  checks = [jnp.any(jnp.isnan(leaf)) for leaf in jax.tree.leaves(tree) if is_float(leaf)]
  return jnp.any(jnp.stack(checks)) if checks else jnp.asarray(False)


def update_if_finite(old: Any, new: Any, skipped: Array) -> tuple[Any, Array]:
  """``(new, skipped)`` if every float leaf of ``new`` is finite, else ``(old, skipped + 1)``; jittable."""
  ok = all_finite(new)
  kept = jax.tree.map(lambda n, o: jnp.where(ok, n, jnp.asarray(o, jnp.result_type(n))), new, old)
  return kept, jnp.where(ok, skipped, skipped + 1).astype(np.int32)


def poison(value: Array, bad: Array) -> Array:
  """``value`` where ``bad`` is False, NaN where it is True: ``value * (1 + nan_if_bad)``, a constant factor.

  Derivatives of the product carry the factor too, except where an estimator routes them through a
  ``jnp.where``; :func:`poison_derivatives` covers those.
  """
  factor = jnp.where(bad, jnp.asarray(np.nan, jnp.result_type(value)), jnp.asarray(0, jnp.result_type(value)))
  return value * (1 + jax.lax.stop_gradient(factor))


@jax.custom_jvp
def _poison_tangent(x: Array, bad: Array) -> Array:
  return x


@_poison_tangent.defjvp
def _poison_tangent_jvp(primals, tangents):
  x, bad = primals
  factor = jnp.where(bad, jnp.asarray(np.nan, x.dtype), jnp.asarray(1, x.dtype))
  return x, tangents[0] * jax.lax.stop_gradient(factor)


def poison_derivatives(tree: Any, bad: Array) -> Any:
  """The float leaves of ``tree`` unchanged, with every derivative through them NaN when ``bad`` is True.

  :func:`poison` alone does not reach a gradient that an estimator routes through a ``jnp.where`` (the select's
  transpose gives an exact 0, not ``0 * nan``); multiplying the tangent of the parameters themselves does.
  """
  return jax.tree.map(lambda leaf: _poison_tangent(leaf, bad) if is_float(leaf) else leaf, tree)


def upcast(tree: Any) -> Any:
  """Floating-point leaves narrower than 32 bits cast to float32 (differentiably); other leaves unchanged.

  The cast's transpose casts the cotangent back, so ``jax.grad`` returns the gradient in the leaf's dtype.
  """

  def cast(leaf):
    if is_float(leaf) and jnp.finfo(leaf.dtype).bits < MIN_COMPUTE_BITS:
      return jnp.asarray(leaf).astype(jnp.float32)
    return leaf

  return jax.tree.map(cast, tree)
