"""The input checks of every entry point.

All of them run at trace time (on shapes, dtypes and Python values), so they are free under jit and give an
error that names the argument, what was expected and what was given.
"""

from __future__ import annotations

import functools
import math
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sfe_jax._src.core import distributions, sampling
from sfe_jax._src.core.differentiation import HigherOrderError, ParamsSplit, split_params
from sfe_jax._src.core.types import DistBuilder, Estimator, InitFn, Objective, Params, SampleCount, State


def check_key(key: Any, name: str = "key") -> None:
  """Raises unless ``key`` is a JAX PRNG key (new-style ``jax.random.key`` or a legacy uint32[2] key)."""
  if isinstance(key, (bool, int, np.integer)):
    raise TypeError(
      f"`{name}` must be a JAX PRNG key such as jax.random.key(0); got the integer {key!r}. "
      "sfe_jax never takes integer seeds: pass jax.random.key(seed)."
    )
  if not hasattr(key, "dtype") or not hasattr(key, "shape"):
    raise TypeError(f"`{name}` must be a JAX PRNG key such as jax.random.key(0); got {type(key).__name__}.")
  if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
    if key.shape != ():
      raise ValueError(
        f"`{name}` must be a single PRNG key of shape (); got a key array of shape {key.shape}. "
        "To use several keys, jax.vmap over them."
      )
    return
  if key.dtype == jnp.uint32 and key.shape == (2,):
    return  # A legacy raw key from jax.random.PRNGKey.
  raise TypeError(
    f"`{name}` must be a JAX PRNG key such as jax.random.key(0); got an array of dtype {key.dtype} and "
    f"shape {key.shape}. sfe_jax never takes integer seeds: pass jax.random.key(seed)."
  )


def check_static_int(value: Any, name: str, minimum: int, why: str = "") -> int:
  """Checks that argument ``name`` is a static Python int of at least ``minimum``; returns it as an int."""
  if isinstance(value, jax.core.Tracer):
    raise TypeError(
      f"`{name}` must be a static Python int (it fixes array shapes); got a traced value. Under "
      f"jax.jit, mark it static (static_argnames=('{name}',)) or close over it."
    )
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    raise TypeError(f"`{name}` must be a Python int; got {type(value).__name__} {value!r}.")
  if value < minimum:
    raise ValueError(f"`{name}` must be at least {minimum}{why}; got {int(value)}.")
  return int(value)


def check_num_samples(num_samples: Any, count: SampleCount, name: str) -> int:
  """Checks ``num_samples`` (evaluations of ``f``) against ``count``; returns it as an int.

  This is the one place where every sample count of the library is validated.
  """
  if num_samples is None:
    if count.default is None:
      raise TypeError(
        f"`num_samples` is required for {name}: pass the number of evaluations of f as a static Python int."
      )
    return count.default
  who = f" for {name}{count.reason}"
  if count.maximum is not None and count.minimum == count.maximum:
    num_samples = check_static_int(num_samples, "num_samples", 1)
    if num_samples != count.minimum:
      raise ValueError(f"`num_samples` must be {count.minimum} (or None){who}; got {num_samples}.")
    return num_samples
  num_samples = check_static_int(num_samples, "num_samples", count.minimum, who)
  if count.maximum is not None and num_samples > count.maximum:
    raise ValueError(f"`num_samples` must be at most {count.maximum}{who}; got {num_samples}.")
  if num_samples % count.multiple:
    raise ValueError(f"`num_samples` must be a multiple of {count.multiple}{who}; got {num_samples}.")
  return num_samples


#: Bytes of working memory per byte of the samples an estimate draws: the measured peak of the jitted score
#: function (8.0x at D=100 on CPU, the same as a hand-written one; the pathwise estimator needs 4.0x).
WORKING_SET_FACTOR = 8


@functools.cache
def device_memory() -> int | None:
  """The memory of JAX's default device: its allocator's limit on an accelerator, the physical memory on CPU.

  Asked once per process (it is read on every trace of an entry point).
  """
  stats = jax.local_devices()[0].memory_stats()
  if stats and "bytes_limit" in stats:
    return int(stats["bytes_limit"])
  try:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
  except (AttributeError, ValueError, OSError):  # a platform without sysconf: no limit
    return None


def check_memory(
  dist: Any, num_samples: int, max_memory: Any, name: str, chunk_size: int | None = None, shards: int = 1
) -> None:
  """Refuses an estimate whose working set would exceed ``max_memory`` bytes (``None``: the device's memory).

  The estimate, ``WORKING_SET_FACTOR * (chunk_size or num_samples) * sample bytes / shards`` (float32 at least;
  ``shards`` devices share the sample axis), is a lower bound per device: what ``f`` allocates for its own
  intermediates comes on top.
  """
  limit = device_memory() if max_memory is None else check_static_int(max_memory, "max_memory", 1)
  if limit is None:
    return
  one = distributions.one_sample(dist)
  itemsize = max(jnp.dtype(one.dtype).itemsize, 4)
  sample_bytes = math.prod(one.shape) * itemsize
  need = WORKING_SET_FACTOR * (chunk_size or num_samples) * sample_bytes // shards
  if need > limit:
    where = "the default device's memory" if max_memory is None else "max_memory"
    chunks = "" if chunk_size is None else f" in chunks of chunk_size={chunk_size}"
    chunks += "" if shards == 1 else f" over {shards} devices"
    raise ValueError(
      f"{name} with num_samples={num_samples}{chunks}, samples of shape {tuple(one.shape)} "
      f"({sample_bytes} bytes each), "
      f"needs about {_size(need)} of working memory ({WORKING_SET_FACTOR} x the samples), more than {where} "
      f"({_size(limit)}). Pass chunk_size= to draw and evaluate the samples in chunks, use fewer samples, or "
      "pass a larger max_memory (in bytes) if you know it fits."
    )


def check_sample_sharding(sharding: Any, num_samples: int, chunk_size: int | None) -> Any:
  """Checks ``sample_sharding``; returns ``None`` or a ``NamedSharding`` that splits only the leading axis.

  Every chunk (the last, smaller one included) must split evenly over the devices of the sample axis.
  """
  if sharding is None:
    return None
  if not isinstance(sharding, jax.sharding.NamedSharding):
    raise TypeError(
      "`sample_sharding` must be a jax.sharding.NamedSharding of the sample axis, e.g. "
      f"NamedSharding(mesh, PartitionSpec('samples')); got {type(sharding).__name__}."
    )
  spec = tuple(sharding.spec)
  if any(axis is not None for axis in spec[1:]):
    raise ValueError(
      "`sample_sharding` must split only the leading (sample) axis, e.g. PartitionSpec('samples'); got "
      f"{sharding.spec}."
    )
  sharding = jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec(*spec[:1]))  # any rank
  shards = sampling.num_shards(sharding)
  sizes = [("`num_samples`", num_samples)] if chunk_size is None else [("`chunk_size`", chunk_size)]
  if chunk_size is not None and num_samples % chunk_size:
    sizes.append(("the last chunk (num_samples % chunk_size)", num_samples % chunk_size))
  for what, size in sizes:
    if size % shards:
      raise ValueError(
        f"{what} ({size}) must be a multiple of the {shards} devices that `sample_sharding` splits the "
        "sample axis over."
      )
  return sharding


def _size(num_bytes: int) -> str:
  for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
    if num_bytes >= scale:
      return f"{num_bytes / scale:.1f} {unit}"
  return f"{num_bytes} bytes"


def check_estimator(estimator: Any) -> None:
  if isinstance(estimator, Objective):
    raise TypeError(
      f"`estimator` is {estimator.name}, a multi-sample objective: its value is {estimator.value_name}, not "
      "an estimate of E[f], and the function it takes is a log-joint. Use "
      "sfe.objectives.value_and_grad(...) or sfe.objectives.surrogate(...); estimator combinators and "
      "baselines do not apply to it."
    )
  if not isinstance(estimator, Estimator):
    raise TypeError(
      "`estimator` must be an sfe_jax Estimator built by a constructor such as sfe.score_function() or "
      f"sfe.pathwise(); got {type(estimator).__name__}."
    )


def check_objective(objective: Any) -> None:
  if isinstance(objective, Estimator):
    raise TypeError(
      f"`objective` is {objective.name}, an estimator of E[f]: use sfe.value_and_grad or sfe.expectation. "
      "sfe.objectives takes the multi-sample objectives sfe.objectives.iwae(), dreg() and vimco()."
    )
  if not isinstance(objective, Objective):
    raise TypeError(
      f"`objective` must be an sfe_jax Objective such as sfe.objectives.iwae(); got {type(objective).__name__}."
    )


def check_params(params: Params) -> tuple[ParamsSplit, list[Any]]:
  """Splits ``params``; raises unless it has at least one floating-point array leaf to differentiate."""
  split, diff = split_params(params)
  if not any(split.mask):
    leaves = jax.tree_util.tree_leaves_with_path(params)
    found = ", ".join(f"params{jax.tree_util.keystr(path)}: {_describe_leaf(leaf)}" for path, leaf in leaves[:4])
    raise TypeError(
      "`params` must hold at least one floating-point array leaf (those are the leaves that are "
      f"differentiated; others are passed through); it has none ({found or 'no leaves'}). Python floats are "
      "not differentiated, as in equinox's filtered transformations: wrap them with jnp.asarray."
    )
  return split, diff


def _describe_leaf(leaf: Any) -> str:
  if hasattr(leaf, "dtype") and hasattr(leaf, "shape"):
    return f"array of dtype {leaf.dtype}"
  return type(leaf).__name__


def check_state(state: State, init: InitFn, split: ParamsSplit, diff: list[Any], name: str) -> State:
  """``init(params)`` when ``state`` is ``None``; otherwise checks that ``state`` has its structure and shapes."""
  params = split.merge(diff)
  if state is None:
    return init(params)
  expected = jax.eval_shape(lambda d: init(split.merge(d)), diff)
  expected_def, got_def = jax.tree.structure(expected), jax.tree.structure(state)
  hint = "Pass the state returned by estimator.init(params) or by the previous call with this estimator, or state=None."
  if expected_def != got_def:  # type: ignore[operator]  # PyTreeDef is unresolved in the stubs
    raise TypeError(
      f"`state` does not match {name}: expected the structure of estimator.init(params), {expected_def}; "
      f"got {got_def}. {hint}"
    )
  for (path, want), got in zip(jax.tree_util.tree_leaves_with_path(expected), jax.tree.leaves(state)):
    if not (hasattr(got, "shape") or isinstance(got, (int, float, complex, np.generic))):
      raise TypeError(f"`state`{jax.tree_util.keystr(path)} must be an array; got {type(got).__name__}. {hint}")
    if tuple(jnp.shape(got)) != tuple(want.shape):
      raise TypeError(
        f"`state`{jax.tree_util.keystr(path)} must have shape {tuple(want.shape)} for {name}; got shape "
        f"{tuple(jnp.shape(got))}. {hint}"
      )
  return state


def build_distribution(dist_builder: DistBuilder, params: Params, *, probe: bool = False) -> Any:
  """Calls ``dist_builder(params)`` and checks that the result is a distribution.

  With ``probe`` (the entry points' first build) the distribution's shapes are computed too: distrax checks
  parameter shapes lazily, and a mismatch is reported here. The estimators' own builds skip it (distrax's
  generic ``batch_shape`` traces the sampler once more).
  """
  if not callable(dist_builder):
    raise TypeError(f"`dist_builder` must be a callable params -> distribution; got {type(dist_builder).__name__}.")
  try:
    dist = dist_builder(params)
    if probe:
      getattr(dist, "batch_shape", None)
      getattr(dist, "event_shape", None)
  except HigherOrderError:
    raise
  except Exception as e:  # The user's function failed: say where, keep the cause.
    raise TypeError(
      f"`dist_builder(params)` raised {type(e).__name__}: {e}. `params` must be the pytree that "
      "`dist_builder` expects, with compatible shapes (see the traceback above for the failing line)."
    ) from e
  if not (callable(getattr(dist, "sample", None)) and callable(getattr(dist, "log_prob", None))):
    raise TypeError(
      "`dist_builder(params)` must return a distribution with `sample` and `log_prob` (distrax, TFP's JAX "
      f"substrate or numpyro); got {type(dist).__name__}."
    )
  return dist
