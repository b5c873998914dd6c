"""The memory check of the entry points: an estimate that cannot fit is refused at trace time, not OOM-killed.

D=1000, N=1e6 grew memory until the OOM killer stopped the process (eager), and under jit asked XLA for about
32 GB. The working set is estimated from shapes only (``jax.eval_shape``), as 8 x the samples: the measured peak
of the jitted score function, checked here against XLA's own memory analysis.
"""

import distrax
import jax
import jax.numpy as jnp
import pytest

import sfe_jax as sfe
from sfe_jax._src.core import checks

KEY = jax.random.key(0)
BUILD = lambda p: distrax.Normal(p, 1.0)


def test_an_estimate_larger_than_the_device_is_refused_before_anything_is_drawn():
  params = jnp.zeros(1000)
  with pytest.raises(ValueError, match=r"num_samples=1000000, samples of shape \(1000,\).*GiB.*default device"):
    jax.eval_shape(
      lambda p: sfe.value_and_grad(sfe.score_function(), jnp.sum, BUILD, p, KEY, num_samples=10**6), params
    )
  with pytest.raises(ValueError, match=r"sfe\.pathwise\(\).*more than the default device"):
    sfe.expectation(sfe.pathwise(), jnp.sum, BUILD, params, KEY, num_samples=10**6)


def test_max_memory_sets_the_limit_in_bytes():
  params = jnp.zeros(10)  # 40 bytes per sample: 320 bytes of working memory per sample
  value, _, _ = sfe.value_and_grad(sfe.pathwise(), jnp.sum, BUILD, params, KEY, num_samples=100, max_memory=32_000)
  assert jnp.isfinite(value)
  with pytest.raises(ValueError, match=r"needs about 31\.6 KiB.*more than max_memory \(31\.2 KiB\)"):
    sfe.value_and_grad(sfe.pathwise(), jnp.sum, BUILD, params, KEY, num_samples=101, max_memory=32_000)
  with pytest.raises(TypeError, match="max_memory"):
    sfe.value_and_grad(sfe.pathwise(), jnp.sum, BUILD, params, KEY, num_samples=100, max_memory=1.5)


@pytest.mark.parametrize("est", [sfe.score_function(), sfe.pathwise()], ids=lambda e: e.name)
def test_the_working_set_factor_bounds_xla_s_temporaries(est):
  n, d = 20_000, 100
  fn = jax.jit(lambda p, k: sfe.value_and_grad(est, lambda x: jnp.sum(x**2), BUILD, p, k, num_samples=n)[:2])
  analysis = fn.lower(jnp.zeros(d), KEY).compile().memory_analysis()
  assert analysis.temp_size_in_bytes <= checks.WORKING_SET_FACTOR * n * d * 4 * 1.05
