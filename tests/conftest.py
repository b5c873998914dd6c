"""Test configuration. `tests` is a package mirroring the library's groups; shared helpers are in
`tests/helpers.py` (`from tests import helpers`) and `tests/gaussian_reference.py`.

The suite is dominated by compiling hundreds of small jitted programs, each once, so it trades run time for
compile time: `jax_disable_most_optimizations`, and XLA:CPU's older, cheaper code generation
(`--xla_cpu_use_fusion_emitters=false`, one LLVM module per program), which together compile about four times
faster. The XLA flags are probed once in a subprocess (an unknown flag aborts XLA) and inherited by the xdist
workers. Benchmarks, which measure run time, never set either.
"""

import os
import subprocess
import sys

_FAST_COMPILE_FLAGS = "--xla_cpu_use_fusion_emitters=false --xla_cpu_parallel_codegen_split_count=1"

if "SFE_TEST_XLA_FLAGS" not in os.environ:  # the controller; xdist workers inherit both variables
  _probe = subprocess.run(
    [sys.executable, "-c", "import jax; jax.devices()"],
    env={**os.environ, "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} {_FAST_COMPILE_FLAGS}"},
    capture_output=True,
    check=False,
  )
  os.environ["SFE_TEST_XLA_FLAGS"] = _FAST_COMPILE_FLAGS if _probe.returncode == 0 else ""
  os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {os.environ['SFE_TEST_XLA_FLAGS']}".strip()

import jax  # noqa: E402  (XLA reads XLA_FLAGS when the backend starts, after this import)

jax.config.update("jax_disable_most_optimizations", True)
