"""Every example in the library's docstrings runs and prints what it says (doctest, module by module)."""

import doctest
import importlib
import pkgutil

import pytest

import sfe_jax
import sfe_jax._src

MODULES = sorted(
  ["sfe_jax"]
  + [f"sfe_jax.{m.name}" for m in pkgutil.iter_modules(sfe_jax.__path__) if not m.name.startswith("_")]
  + [m.name for m in pkgutil.walk_packages(sfe_jax._src.__path__, "sfe_jax._src.")]
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
  result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
  assert result.failed == 0


def test_every_public_estimator_has_an_example():
  estimators = [
    n
    for n in sfe_jax.__all__
    if n[0].islower()
    and callable(getattr(sfe_jax, n))
    and n not in ("expectation", "value_and_grad", "is_reparameterizable", "register_reparameterizable")
  ]
  missing = [n for n in estimators if ">>>" not in (getattr(sfe_jax, n).__doc__ or "")]
  assert not missing, f"public functions without a docstring example: {missing}"
