"""Test configuration: helpers live in tests/helpers.py (importable as `helpers`).

The suite is dominated by XLA compilation (hundreds of small jitted estimators, each compiled once), so it
runs with `jax_disable_most_optimizations`: the same programs, compiled about twice as fast. Benchmarks,
which measure run time, never set it.
"""

import os
import sys

import jax

sys.path.insert(0, os.path.dirname(__file__))
jax.config.update("jax_disable_most_optimizations", True)
