#!/usr/bin/env bash
# The GPU benchmarks in one call: `python -m benchmarks throughput` and `scale` with --device gpu.
#
# Meant for a machine that has a CUDA build of JAX but not this project's other dependencies (the `device`
# tool's GPU machines have jax, optax, chex, numpyro, matplotlib and tqdm, not distrax or tfp-nightly):
#
#   make gpu-wheels                      # here, once: distrax and tfp-nightly wheels for Python 3.12 into .whl/
#   bash benchmarks/gpu.sh [OUT] [MODE]  # there: installs .whl/*.whl into /tmp/site, runs both suites
#
# OUT (default: $OUT if set, else bench-results/gpu) receives throughput.{jsonl,md,csv,json,png} and
# scale.{jsonl,md,csv,json,png}; MODE is --quick (default) or --full. The code path is the CPU one: only the
# device differs. With `pip install -e ".[cuda12]"` on a machine of your own, skip the wheels and run
# `python -m benchmarks throughput --device gpu` directly.
set -euo pipefail
cd "$(dirname "$0")/.."
dest="${1:-${OUT:-bench-results/gpu}}"
mode="${2:---quick}"
python="${PYTHON:-python3}"
if compgen -G ".whl/*.whl" >/dev/null; then
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
"$python" -c 'import jax; print("jax", jax.__version__, jax.devices())'
nvidia-smi --query-gpu=name,memory.total,clocks.max.memory --format=csv || true
"$python" -m benchmarks throughput "$mode" --device gpu --out "$dest"
"$python" -m benchmarks scale "$mode" --device gpu --out "$dest"
