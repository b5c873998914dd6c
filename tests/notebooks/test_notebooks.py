"""The tutorials in ``notebooks/``: each runs from a clean kernel in quick mode, and each stored ``.ipynb`` is its
script's notebook executed in full mode (so the outputs a reader browses are the current code's)."""

from __future__ import annotations

import importlib.util
import json
import pathlib
import re

import nbformat
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("notebooks_run", ROOT / "notebooks" / "run.py")
run = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run)

TUTORIALS = [
  "01_log_derivative_trick",
  "02_choosing_an_estimator",
  "03_discrete_latent_variables",
  "04_policy_gradients",
  "05_off_policy_evaluation",
  "06_model_based_gradients",
  "07_variational_inference",
  "08_in_your_own_model",
  "09_scaling_up",
]


def test_the_tutorials_are_the_documented_ones():
  assert [s.stem for s in run.sources()] == TUTORIALS


@pytest.mark.parametrize("name", TUTORIALS)
def test_stored_notebook_is_its_script_executed_in_full_mode(name):
  script = ROOT / "notebooks" / f"{name}.py"
  stored_path = script.with_suffix(".ipynb")
  assert stored_path.exists(), f"{stored_path} is missing: run `python notebooks/run.py {name[:2]}`"
  stored = json.loads(stored_path.read_text())
  source = run.load(script)
  regenerate = f"the stored notebook is stale: run `python notebooks/run.py {name[:2]}`"
  assert [c.cell_type for c in source.cells] == [c["cell_type"] for c in stored["cells"]], regenerate
  for i, (want, got) in enumerate(zip(source.cells, stored["cells"])):
    got_source = "".join(got["source"]) if isinstance(got["source"], list) else got["source"]
    assert want.source == got_source, f"cell {i}: {regenerate}"
  assert stored["metadata"].get("sfe_jax", {}).get("mode") == "full", "the stored outputs must come from full mode"
  code = [c for c in stored["cells"] if c["cell_type"] == "code"]
  assert [c["execution_count"] for c in code] == list(range(1, len(code) + 1)), "cells must run once, in order"
  errors = [o for c in code for o in c["outputs"] if o["output_type"] == "error"]
  assert not errors, f"the stored run raised: {errors[0].get('ename')}: {errors[0].get('evalue')}"
  assert any(o["output_type"] == "display_data" and "image/png" in o["data"] for c in code for o in c["outputs"]), (
    "a tutorial shows at least one plot"
  )


@pytest.mark.parametrize("name", TUTORIALS)
def test_notebook_runs_from_a_clean_kernel_in_quick_mode(name):
  # Every assertion cell (the numbers the prose states) runs here; a failing cell raises CellExecutionError.
  nb = run.execute(ROOT / "notebooks" / f"{name}.py", quick=True, timeout=600)
  assert nb.metadata["sfe_jax"]["mode"] == "quick"


def test_readme_links_every_tutorial():
  readme = (ROOT / "README.md").read_text()
  linked = re.findall(r"\(notebooks/(\d\d_\w+)\.ipynb\)", readme)
  assert linked == TUTORIALS


def test_prose_update_keeps_outputs_and_refuses_changed_code(tmp_path):
  script = tmp_path / "05_copy.py"
  source = (ROOT / "notebooks" / "05_off_policy_evaluation.py").read_text()
  (tmp_path / "05_copy.ipynb").write_text((ROOT / "notebooks" / "05_off_policy_evaluation.ipynb").read_text())
  script.write_text(source.replace("# ## A small MDP with exact values", "# ## A small MDP, exact values", 1))
  nb = run.update_prose(script)
  stored = nbformat.read(tmp_path / "05_copy.ipynb", as_version=4)
  assert any("A small MDP, exact values" in c.source for c in nb.cells if c.cell_type == "markdown")
  assert [c.outputs for c in nb.cells if c.cell_type == "code"] == [
    c.outputs for c in stored.cells if c.cell_type == "code"
  ]
  script.write_text(source.replace("QUICK = ", "QUICK  = ", 1))
  with pytest.raises(ValueError, match="code changed"):
    run.update_prose(script)
