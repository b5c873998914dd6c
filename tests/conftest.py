"""Test configuration. `tests` is a package mirroring the library's groups; shared helpers are in
`tests/helpers.py` (`from tests import helpers`) and `tests/gaussian_reference.py`.

The suite is dominated by XLA compilation (hundreds of small jitted estimators, each compiled once), so it
runs with `jax_disable_most_optimizations`: the same programs, compiled about twice as fast. Benchmarks,
which measure run time, never set it.
"""

import jax

jax.config.update("jax_disable_most_optimizations", True)
