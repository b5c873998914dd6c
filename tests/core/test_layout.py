"""The shape of the library, as the README's Layout section describes it.

Each group of ``sfe_jax/_src`` imports only the groups below it, so the tree reads bottom-up: ``core`` first,
then the discrete view, the baselines and DiCE, then the estimators, then RL. Modules stay small enough to read
in one sitting.
"""

import ast
import pathlib

import pytest

SRC = pathlib.Path(__file__).resolve().parents[2] / "sfe_jax" / "_src"
ALLOWED = {
  "core": set(),
  "discrete": {"core"},
  "objectives": {"core"},
  "variance": {"core"},
  "diagnostics": {"core"},
  "estimators": {"core", "discrete", "objectives", "variance"},
  "rl": {"core", "objectives", "variance"},
}
MAX_LINES = 450


def _imported_groups(path):
  groups = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sfe_jax._src."):
      groups.add(node.module.split(".")[2])
  return groups


def test_every_module_belongs_to_a_group():
  assert {p.name for p in SRC.iterdir() if p.is_dir() and not p.name.startswith("__")} == set(ALLOWED)
  assert [p.name for p in SRC.glob("*.py")] == ["__init__.py"]


@pytest.mark.parametrize("group", sorted(ALLOWED))
def test_groups_import_only_the_groups_below_them(group):
  for path in sorted((SRC / group).glob("*.py")):
    extra = _imported_groups(path) - ALLOWED[group] - {group}
    assert not extra, f"{path.relative_to(SRC)} imports {sorted(extra)}, outside {sorted(ALLOWED[group])}"


def test_modules_stay_readable():
  long = {str(p.relative_to(SRC)): n for p in SRC.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES}
  assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_no_private_stop_gradient_aliases():
  aliases = [str(p.relative_to(SRC)) for p in SRC.rglob("*.py") if "= jax.lax.stop_gradient\n" in p.read_text()]
  assert not aliases, f"use jax.lax.stop_gradient directly: {aliases}"
