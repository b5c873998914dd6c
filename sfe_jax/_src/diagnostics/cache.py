"""A bounded cache of jitted computations keyed on their static arguments (used by the diagnostics).

``cached_jit(fn, *static)`` returns ``jax.jit(functools.partial(fn, *static))``, the same function object for
equal static arguments while it is cached, so that a second eager call of a diagnostic with the same estimator,
``f``, ``dist_builder`` and sizes runs the computation compiled by the first instead of compiling again.
"""

from __future__ import annotations

import collections
import functools
import threading
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from sfe_jax._src.core.differentiation import ParamsSplit

CACHE_SIZE = 64
"""How many compiled computations are kept (the least recently used one goes first)."""


class _Unhashable(Exception):
  """A static argument that cannot be part of a cache key."""


class _Key:
  """Static arguments as a cache key.

  Two keys are equal when their functions and objects are equal (functions by identity) and, for a
  :class:`ParamsSplit`, the leaves of params that are not differentiated are equal in value: Python objects by
  ``==`` (and type), arrays that are not differentiated (integer arrays, PRNG keys) by dtype, shape and bytes,
  so a cached computation never runs with a stale constant.
  """

  __slots__ = ("_hash", "_key")

  def __init__(self, key: tuple[Any, ...]):
    self._key = key
    self._hash = hash(key)

  def __hash__(self) -> int:
    return self._hash

  def __eq__(self, other: object) -> bool:
    if not isinstance(other, _Key):
      return NotImplemented
    try:
      return self._hash == other._hash and bool(self._key == other._key)
    except Exception:  # An __eq__ that does not give a truth value: not the same arguments.
      return False


def _part(arg: Any) -> Any:
  """The hashable stand-in of one static argument."""
  if isinstance(arg, ParamsSplit):
    return (arg.treedef, arg.mask, tuple(_leaf(leaf) for leaf in arg.static))
  hash(arg)  # TypeError if unhashable
  return arg


def _leaf(leaf: Any) -> Any:
  """A hashable stand-in for a leaf of params that is not differentiated, equal when the leaves are equal."""
  if leaf is None:
    return None
  if isinstance(leaf, jax.core.Tracer):
    raise _Unhashable  # Only under an outer transformation, where the inner jit is inlined anyway.
  if isinstance(leaf, (jax.Array, np.ndarray)):
    if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
      data = np.asarray(jax.random.key_data(leaf))
      return ("key", str(leaf.dtype), data.shape, data.tobytes())
    data = np.asarray(leaf)
    return (type(leaf).__name__, data.dtype.str, data.shape, data.tobytes())
  hash(leaf)  # TypeError if unhashable
  return (type(leaf), leaf)


_cache: collections.OrderedDict[_Key, Callable[..., Any]] = collections.OrderedDict()
_lock = threading.Lock()


def cached_jit(fn: Callable[..., Any], *static: Any) -> Callable[..., Any]:
  """``jax.jit(functools.partial(fn, *static))``, the same object for equal ``static`` while it is cached.

  A bounded cache of separate ``jax.jit`` functions, not one jit with static arguments: JAX keeps a function's
  compilations while the function lives, so an evicted entry frees its executable and what ``f`` closes over.
  Where a static argument cannot be hashed (or is a tracer), the call gets a fresh, uncached jit.
  """
  jitted = lambda: jax.jit(functools.partial(fn, *static))  # noqa: E731
  try:
    key = _Key((fn, *(_part(arg) for arg in static)))
  except Exception:  # Unhashable (TypeError), a tracer, an array that cannot be read back: do not cache.
    return jitted()
  with _lock:
    run = _cache.get(key)
    if run is None:
      run = _cache[key] = jitted()
      while len(_cache) > CACHE_SIZE:
        _cache.popitem(last=False)
    else:
      _cache.move_to_end(key)
    return run
