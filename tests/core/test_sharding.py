"""The sample axis across devices (``sample_sharding=``), on 4 forced CPU host devices in a subprocess.

For the score function (with and without a baseline), pathwise (chunked, and with RQMC points), measure-valued, ARM
and DisARM: the
sharded estimate equals the single-device one for the same key (value and gradients, up to the order of the
final sum), the compiled program runs on 4 devices and reduces across them, and gradients in replicated params
come out once (not 4 x, the trap of a naive ``pmean`` after ``shard_map``). Also the RL losses with the batch
of environments sharded."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import sfe_jax as sfe

SCRIPT = textwrap.dedent(
  """
  import jax, jax.numpy as jnp, distrax, numpy as np
  from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
  import sfe_jax as sfe

  jax.config.update("jax_disable_most_optimizations", True)  # as tests/conftest.py: compile quickly
  assert jax.device_count() == 4, jax.devices()
  mesh = Mesh(np.array(jax.devices()), ("samples",))
  sharding = NamedSharding(mesh, P("samples"))
  key = jax.random.key(0)
  normal = lambda p: distrax.Normal(p["loc"], p["scale"])
  gauss = {"loc": jnp.array([0.3, -0.5, 1.0]), "scale": jnp.array([1.0, 0.5, 2.0])}
  f = lambda x: jnp.sum(jnp.sin(x) + (x - 0.2) ** 2)
  bits = lambda p: distrax.Bernoulli(logits=p["logits"], dtype=jnp.float32)
  logits = {"logits": jnp.array([0.3, -1.2, 2.0])}
  g = lambda b: jnp.sum((b - jnp.array([0.6, 0.51, 0.48])) ** 2)
  cases = {
    "sf": (sfe.score_function(), normal, gauss, f, 64, None),
    "sf-loo": (sfe.score_function(sfe.baselines.leave_one_out()), normal, gauss, f, 64, None),
    "pathwise-chunked": (sfe.pathwise(), normal, gauss, f, 64, 16),
    "mvd": (sfe.measure_valued(), normal, gauss, f, 48, None),
    "arm": (sfe.arm(), bits, logits, g, 64, None),
    "disarm": (sfe.disarm(), bits, logits, g, 64, None),
    "pathwise-rqmc-chunked": (sfe.pathwise(), normal, gauss, f, 64, 16, "rqmc"),
  }
  for name, (est, build, params, fn, n, chunk, *sampler) in cases.items():
    def run(p, k, s=None):
      return sfe.value_and_grad(
        est, fn, build, p, k, num_samples=n, chunk_size=chunk, sample_sharding=s, sampler=(sampler or ["iid"])[0]
      )[:2]
    plain = jax.jit(run)(params, key)
    compiled = jax.jit(lambda p, k: run(p, k, sharding)).lower(params, key).compile()
    sharded = compiled(params, key)
    np.testing.assert_allclose(sharded[0], plain[0], rtol=2e-6, atol=1e-6, err_msg=name)
    for a, b in zip(jax.tree.leaves(sharded[1]), jax.tree.leaves(plain[1])):
      np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-5, err_msg=name)
    hlo = compiled.as_text()
    assert "num_partitions=4" in hlo and "all-reduce" in hlo, name
    print("ok", name)

  # RL: a batch of 8 environments sharded over the devices; the loss's gradient is the unsharded one.
  lp = jax.random.normal(jax.random.key(1), (8, 5)); rewards = jax.random.normal(jax.random.key(2), (8, 5))
  mask = jnp.ones((8, 5))
  loss = lambda lp, r, m: sfe.rl.reinforce_loss(lp, r, m, 0.9, baseline=sfe.baselines.leave_one_out())
  plain = jax.jit(jax.grad(loss))(lp, rewards, mask)
  batch = NamedSharding(mesh, P("samples"))
  sharded = jax.jit(jax.grad(loss))(*(jax.device_put(x, batch) for x in (lp, rewards, mask)))
  np.testing.assert_allclose(sharded, plain, rtol=1e-6, atol=1e-7)
  assert len(sharded.sharding.device_set) == 4
  print("ok rl")

  for n, chunk, message in [(6, None, "`num_samples` (6)"), (22, 8, "the last chunk (num_samples % chunk_size) (6)")]:
    try:
      sfe.value_and_grad(sfe.pathwise(), f, normal, gauss, key, num_samples=n, chunk_size=chunk,
                         sample_sharding=sharding)
      raise AssertionError("not refused")
    except ValueError as e:
      assert f"{message} must be a multiple of the 4 devices" in str(e), e
  print("ok divisibility")

  # The memory check counts one device's share of the samples; a trailing None in the spec is accepted.
  big = lambda s: jax.eval_shape(lambda p: sfe.value_and_grad(
    sfe.pathwise(), f, normal, p, key, num_samples=10**6, max_memory=60 * 10**6, sample_sharding=s)[:2], gauss)
  try:
    big(None)
    raise AssertionError("not refused")
  except ValueError as e:
    assert "max_memory" in str(e)
  big(NamedSharding(mesh, P("samples", None)))  # 96 MB over 4 devices: 24 MB each
  print("ok memory")
  """
)


def test_sharded_estimates_equal_the_single_device_ones():
  flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=4".strip()
  done = subprocess.run(
    [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env={**os.environ, "XLA_FLAGS": flags}, timeout=600
  )
  assert done.returncode == 0, done.stderr[-3000:]
  assert done.stdout.count("ok ") == 10, done.stdout


def _normal(p):
  import distrax  # noqa: PLC0415

  return distrax.Normal(p, 1.0)


@pytest.mark.parametrize(
  "sharding, error, match",
  [
    ("samples", TypeError, r"`sample_sharding` must be a jax\.sharding\.NamedSharding .*got str"),
    (
      NamedSharding(Mesh(jax.devices()[:1], ("s",)), P(None, "s")),
      ValueError,
      r"must split only the leading \(sample\) axis",
    ),
  ],
  ids=["string", "second-axis"],
)
def test_bad_sample_sharding_is_refused(sharding, error, match):
  with pytest.raises(error, match=match):
    sfe.value_and_grad(
      sfe.pathwise(), jnp.sum, _normal, jnp.zeros(2), jax.random.key(0), num_samples=4, sample_sharding=sharding
    )


def test_one_device_sharding_is_the_plain_call():
  sharding = NamedSharding(Mesh(jax.devices()[:1], ("samples",)), P("samples"))

  def run(s):
    vg = lambda k: sfe.value_and_grad(
      sfe.pathwise(), jnp.sum, _normal, jnp.zeros(2), k, num_samples=6, sample_sharding=s
    )[:2]
    return jax.jit(vg)(jax.random.key(0))

  a, b = run(None), run(sharding)
  assert float(a[0]) == float(b[0]) and bool(jnp.all(a[1] == b[1]))
