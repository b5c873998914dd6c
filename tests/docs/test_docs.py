"""`make docs`: the Sphinx site builds with warnings as errors and documents every public name."""

from __future__ import annotations

import importlib
import pathlib
import subprocess
import sys
import zlib

ROOT = pathlib.Path(__file__).resolve().parents[2]
NAMESPACES = ["sfe_jax", "sfe_jax.baselines", "sfe_jax.control_variates", "sfe_jax.diagnostics"]
NAMESPACES += ["sfe_jax.objectives", "sfe_jax.rl"]


def public_names() -> list[str]:
  names = [f"{ns}.{name}" for ns in NAMESPACES for name in importlib.import_module(ns).__all__]
  return names + ["sfe_jax.enumerate"]  # public, kept out of __all__ so that `import *` leaves the builtin alone


def inventory_names(path: pathlib.Path) -> set[str]:
  """The object names of a Sphinx ``objects.inv`` (version 2: four header lines, then zlib-compressed lines
  ``name domain:role priority uri display-name``)."""
  raw = path.read_bytes()
  header_end = 0
  for _ in range(4):
    header_end = raw.index(b"\n", header_end) + 1
  lines = zlib.decompress(raw[header_end:]).decode().splitlines()
  return {line.split(" ", 1)[0] for line in lines if line}


def test_docs_build_without_warnings_and_document_every_public_name(tmp_path):
  out = tmp_path / "html"
  # -W: a warning (a broken docstring, a missing page, a notebook that does not render) fails the build.
  cmd = [sys.executable, "-m", "sphinx", "-b", "html", "-W", "--keep-going", "-q", "docs", str(out)]
  build = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert build.returncode == 0, build.stderr[-4000:]
  documented = inventory_names(out / "objects.inv")
  missing = [name for name in public_names() if name not in documented]
  assert not missing, f"public names without an API entry: {missing}"
  for page in ["guide", "derivations"] + [f"notebooks/{p.stem}" for p in sorted((ROOT / "notebooks").glob("*.ipynb"))]:
    assert (out / f"{page}.html").exists(), page
  guide = (out / "guide.html").read_text()
  assert "Support matrix" in guide and "<table" in guide, "the README's estimator tables are in the guide"
