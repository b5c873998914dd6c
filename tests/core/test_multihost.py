"""Multi-controller JAX: two processes on this machine (CPU collectives through gloo, localhost), each with 2 host
devices, shard one estimate's sample axis over the 4 global devices; each process gets the single-process
estimate. This is the README's multi-host recipe, run."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import distrax
import jax
import jax.numpy as jnp
import numpy as np

import sfe_jax as sfe

WORKER = textwrap.dedent(
  """
  import json, os, sys
  process_id, port = int(sys.argv[1]), sys.argv[2]
  os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
  import jax
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=2, process_id=process_id)
  import distrax, jax.numpy as jnp, numpy as np
  from jax.sharding import Mesh, NamedSharding, PartitionSpec
  import sfe_jax as sfe

  assert jax.device_count() == 4 and jax.local_device_count() == 2
  samples_split = NamedSharding(Mesh(np.array(jax.devices()), ("samples",)), PartitionSpec("samples"))
  params = {"loc": jnp.array([0.3, -0.5, 1.0]), "scale": jnp.array([1.0, 0.5, 2.0])}
  f = lambda x: jnp.sum(jnp.sin(x) + (x - 0.2) ** 2)
  build = lambda p: distrax.Normal(p["loc"], p["scale"])
  est = sfe.score_function(sfe.baselines.leave_one_out())
  # Params and key are the same on every process: closed over, they are replicated constants of the program.
  value, grads, _ = jax.jit(
    lambda: sfe.value_and_grad(est, f, build, params, jax.random.key(0), num_samples=64, sample_sharding=samples_split)
  )()
  local = lambda x: np.asarray(x.addressable_shards[0].data).tolist()  # replicated: any local shard is the whole
  print("RESULT", json.dumps([local(value), local(grads["loc"]), local(grads["scale"])]), flush=True)
  jax.distributed.shutdown()
  """
)


def _free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_two_processes_share_one_estimate(tmp_path):
  script = tmp_path / "worker.py"
  script.write_text(WORKER)
  port = str(_free_port())
  workers = [
    subprocess.Popen(
      [sys.executable, str(script), str(i), port],
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
      env=dict(os.environ),
    )
    for i in range(2)
  ]
  outputs = []
  for w in workers:
    with w:
      out, err = w.communicate(timeout=300)
      assert w.returncode == 0, err[-3000:]
    (line,) = [l for l in out.splitlines() if l.startswith("RESULT")]
    outputs.append(json.loads(line.removeprefix("RESULT ")))
  params = {"loc": jnp.array([0.3, -0.5, 1.0]), "scale": jnp.array([1.0, 0.5, 2.0])}
  value, grads, _ = jax.jit(
    lambda: sfe.value_and_grad(
      sfe.score_function(sfe.baselines.leave_one_out()),
      lambda x: jnp.sum(jnp.sin(x) + (x - 0.2) ** 2),
      lambda p: distrax.Normal(p["loc"], p["scale"]),
      params,
      jax.random.key(0),
      num_samples=64,
    )
  )()
  for got in outputs:
    np.testing.assert_allclose(got[0], value, rtol=1e-6)
    np.testing.assert_allclose(got[1], grads["loc"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[2], grads["scale"], rtol=1e-5, atol=1e-6)
