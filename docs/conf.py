"""Sphinx configuration of the sfe_jax documentation (`make docs`; built with warnings as errors by the tests).

Sphinx + autodoc renders every public name from its docstring (napoleon reads the Google-style sections,
MathJax renders the ``.. math::`` blocks and ``:math:`` roles); MyST-NB renders the tutorials from their stored
outputs (never re-executed here: ``notebooks/run.py`` executes them) and includes the README as the guide.
"""

from __future__ import annotations

import importlib.metadata
import pathlib
import shutil

project = "sfe_jax"
author = "sfe_jax developers"
copyright = "2026, sfe_jax developers"  # noqa: A001 (Sphinx's name)
release = importlib.metadata.version("sfe_jax")

extensions = [
  "sphinx.ext.autodoc",
  "sphinx.ext.napoleon",
  "sphinx.ext.mathjax",
  "sphinx.ext.viewcode",
  "myst_nb",
]

# Two generated inputs, not tracked: the tutorials are copied from ../notebooks (their stored .ipynb, outputs
# included) into docs/notebooks/, and the README into docs/guide.md with its links to docs/ made relative, so that
# the README's links (`notebooks/NN_name.ipynb`, `docs/images/...`) resolve in the guide as they do on GitHub.
_here = pathlib.Path(__file__).resolve().parent
(_here / "notebooks").mkdir(exist_ok=True)
for _stale in (_here / "notebooks").glob("*.ipynb"):
  _stale.unlink()
for _notebook in sorted((_here.parent / "notebooks").glob("[0-9][0-9]_*.ipynb")):
  shutil.copy2(_notebook, _here / "notebooks" / _notebook.name)
_readme = (_here.parent / "README.md").read_text()
(_here / "guide.md").write_text(_readme.replace("](docs/", "]("))
exclude_patterns = ["_build"]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}

# Tutorials are shown with the outputs committed with them (their full-mode run), never executed by Sphinx.
nb_execution_mode = "off"
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": False}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

html_theme = "furo"
html_title = f"sfe_jax {release}"


def _skip_namedtuple_fields(app, what, name, obj, skip, options):
  """NamedTuple fields are documented by their class's ``Attributes:`` section; skip their generated stubs."""
  if (getattr(obj, "__doc__", None) or "").startswith("Alias for field number"):
    return True
  return skip


def setup(app):
  app.connect("autodoc-skip-member", _skip_namedtuple_fields)
