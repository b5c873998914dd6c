"""Execute the tutorials from a clean kernel and store them with their outputs.

Each tutorial's source is a jupytext "percent" script, ``notebooks/NN_name.py``, the file to review and edit.
This script writes the paired ``NN_name.ipynb`` with the outputs of a run from a fresh kernel::

  python notebooks/run.py                 # every tutorial, full settings (the committed outputs)
  python notebooks/run.py 03 05           # the tutorials whose names start with 03 or 05
  python notebooks/run.py --quick 01      # quick settings, nothing written unless --write
  python notebooks/run.py --prose 02      # only Markdown changed: update it in the .ipynb, keep the outputs

A tutorial reads ``SFE_JAX_NOTEBOOK_QUICK`` (``1``: quick settings, the ones the test suite runs). The
``.ipynb`` records the mode and the run time in its metadata (``metadata["sfe_jax"]``); the test suite checks
that the stored notebook matches its script cell for cell and was executed in full mode, and executes every
script in quick mode.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pathlib
import sys
import time

import jupytext
import nbclient
import nbformat

HERE = pathlib.Path(__file__).resolve().parent
QUICK_ENV = "SFE_JAX_NOTEBOOK_QUICK"
KERNEL = "python3"


def sources() -> list[pathlib.Path]:
  """The tutorial scripts, in order (``NN_name.py``)."""
  return sorted(p for p in HERE.glob("[0-9][0-9]_*.py"))


def load(script: pathlib.Path) -> nbformat.NotebookNode:
  """The notebook of a jupytext percent script, without outputs."""
  return jupytext.read(script)


# A quick run is dominated by compiling many small programs once each: like the test suite (tests/conftest.py),
# it trades run time for compile time (notebook 07: 2.5x less CPU). Only XLA's optimisation level differs, so
# results agree up to floating-point rounding; the assertions hold under both settings.
QUICK_JAX_ENV = {"JAX_DISABLE_MOST_OPTIMIZATIONS": "true"}


@contextlib.contextmanager
def _environment(quick: bool):
  """The kernel inherits this process's environment: set the mode (and the quick compile settings) for it."""
  settings = {QUICK_ENV: "1" if quick else "0", **(QUICK_JAX_ENV if quick else {})}
  old = {name: os.environ.get(name) for name in settings}
  os.environ.update(settings)
  try:
    yield
  finally:
    for name, value in old.items():
      if value is None:
        del os.environ[name]
      else:
        os.environ[name] = value


def execute(script: pathlib.Path, *, quick: bool, timeout: int = 3600) -> nbformat.NotebookNode:
  """Runs ``script`` as a notebook in a fresh kernel (working directory: ``notebooks/``) and returns it.

  A cell that raises stops the run with ``nbclient.exceptions.CellExecutionError`` naming the cell.
  """
  nb = load(script)
  nb.metadata["kernelspec"] = {"name": KERNEL, "display_name": "Python 3", "language": "python"}
  start = time.perf_counter()
  with _environment(quick):
    client = nbclient.NotebookClient(
      nb, timeout=timeout, kernel_name=KERNEL, record_timing=False, resources={"metadata": {"path": str(HERE)}}
    )
    client.execute()
  nb.metadata["sfe_jax"] = {"mode": "quick" if quick else "full", "seconds": round(time.perf_counter() - start, 1)}
  return nb


def update_prose(script: pathlib.Path) -> nbformat.NotebookNode:
  """The stored notebook with its Markdown cells replaced by the script's, outputs kept.

  Only for edits of prose: the code cells of the script must equal the stored ones, source for source (outputs
  depend on code alone), else a ``ValueError`` asks for a run.
  """
  stored = nbformat.read(script.with_suffix(".ipynb"), as_version=4)
  nb = load(script)
  code = [c.source for c in nb.cells if c.cell_type == "code"]
  if code != [c.source for c in stored.cells if c.cell_type == "code"]:
    raise ValueError(f"{script.name}: its code changed since the stored run; run it (without --prose).")
  outputs = iter([c for c in stored.cells if c.cell_type == "code"])
  nb.cells = [next(outputs) if c.cell_type == "code" else c for c in nb.cells]
  nb.metadata = stored.metadata
  return nb


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("names", nargs="*", help="prefixes of the tutorials to run (default: all)")
  parser.add_argument("--quick", action="store_true", help="quick settings (as the test suite runs them)")
  parser.add_argument("--write", action="store_true", help="with --quick: write the .ipynb anyway")
  parser.add_argument("--prose", action="store_true", help="only Markdown changed: update it, keep the outputs")
  args = parser.parse_args(argv)
  scripts = [s for s in sources() if not args.names or any(s.name.startswith(n) for n in args.names)]
  if not scripts:
    parser.error(f"no tutorial matches {args.names}; there are {[s.stem for s in sources()]}")
  for script in scripts:
    if args.prose:
      jupytext.write(update_prose(script), script.with_suffix(".ipynb"), fmt="ipynb")
      print(f"{script.stem}: prose updated, outputs kept", flush=True)
      continue
    nb = execute(script, quick=args.quick)
    seconds = nb.metadata["sfe_jax"]["seconds"]
    if not args.quick or args.write:
      jupytext.write(nb, script.with_suffix(".ipynb"), fmt="ipynb")
    print(f"{script.stem}: {nb.metadata['sfe_jax']['mode']} run in {seconds:.1f} s", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
