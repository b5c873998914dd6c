"""The result store: atomic cells, one run per file, configuration hashes, provenance and clear errors."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pytest

from benchmarks import store

COMMON = {"platform": "cpu", "seed": 0}
RECORDS_PER_CELL = 3
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def toy_cells(calls: list[int], count: int = 4, on_measure=None):
  """``count`` cells of three records each (about 300 bytes apiece); ``calls`` collects the cells measured."""

  def cell(i):
    def measure():
      calls.append(i)
      if on_measure is not None:
        on_measure(i)
      return [{"estimator": f"e{i}", "part": j, "value": float(i), "padding": "x" * 300} for j in range(3)]

    return (f"toy/{i}", measure)

  return [cell(i) for i in range(count)]


def _quiet(line: str) -> None:
  del line


def _run(path, calls, count=4, log=_quiet):
  with store.Store(path, log) as results:
    return store.run_cells(results, toy_cells(calls, count), COMMON, "toy", log=_quiet)


def _values(records):
  return sorted((r["value"], r["part"]) for r in records)


ALL_VALUES = [(float(i), j) for i in range(4) for j in range(RECORDS_PER_CELL)]


# ----------------------------------------------------------------------------------------------------------
# Atomic cells: a write cut mid-cell loses nothing; the cell is run again.
# ----------------------------------------------------------------------------------------------------------


def test_a_cell_cut_mid_write_is_run_again(tmp_path):
  path = str(tmp_path / "toy.jsonl")
  _run(path, [], count=3)
  three_cells = os.path.getsize(path)
  _run(path, [], count=4)
  # Cut the file in the middle of the fourth cell's data, as a full disk would.
  with open(path, "r+b") as fh:
    fh.truncate((three_cells + os.path.getsize(path)) // 2)
  notes, calls = [], []
  records = _run(path, calls, log=notes.append)
  assert calls == [3], "the cut cell must be run again, and only it"
  assert any("incomplete last line" in note and path in note for note in notes), notes
  assert _values(records) == ALL_VALUES
  with store.Store(path) as again:
    assert _values(again.records) == ALL_VALUES


_CUT_BY_THE_LIMIT = """
import resource, sys
from benchmarks import store
from tests.benchmarks import test_store
limit = int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))  # ulimit -f
with store.Store(sys.argv[1]) as results:
  store.run_cells(results, test_store.toy_cells([]), test_store.COMMON, "toy", log=print)
"""


def test_a_write_cut_by_the_file_size_limit_is_run_again(tmp_path):
  path = str(tmp_path / "toy.jsonl")
  _run(path, [], count=2)
  two_cells = os.path.getsize(path)
  limit = two_cells + two_cells // 4  # half-way through the third cell
  process = subprocess.run(
    [sys.executable, "-c", _CUT_BY_THE_LIMIT, path, str(limit)], cwd=ROOT, capture_output=True, text=True, timeout=300
  )
  assert process.returncode != 0 and "File too large" in process.stderr, process.stderr[-2000:]
  assert os.path.getsize(path) == limit
  notes, calls = [], []
  records = _run(path, calls, log=notes.append)
  assert calls == [2, 3]
  assert _values(records) == ALL_VALUES


# ----------------------------------------------------------------------------------------------------------
# One run per file, and a cell stored twice is read once.
# ----------------------------------------------------------------------------------------------------------


def test_a_second_run_on_the_same_file_fails_at_once(tmp_path):
  path = str(tmp_path / "toy.jsonl")
  calls = []
  with store.Store(path):
    with pytest.raises(store.StoreError, match=r"toy\.jsonl.*another run is writing it"):
      store.Store(path)
    with pytest.raises(store.StoreError, match=r"another run is writing it"):
      store.run_suite("toy", Toy(), toy_cells(calls), _markdown, None, str(tmp_path), log=_quiet)
  assert calls == [], "no cell may be computed before the lock is taken"
  _run(path, calls)  # released at the end of the first run
  assert calls == [0, 1, 2, 3]


def test_a_cell_stored_twice_is_read_once_with_a_note(tmp_path):
  path = tmp_path / "toy.jsonl"
  _run(str(path), [])
  lines = path.read_text().splitlines(keepends=True)
  path.write_text("".join(lines + lines))  # two runs that each stored every cell
  notes = []
  with store.Store(str(path), log=notes.append) as results:
    assert _values(results.records) == ALL_VALUES
  assert len(notes) == 4 and all(str(path) in note and "twice" in note for note in notes), notes
  assert all(f"cpu/toy/{i}" in note for i, note in enumerate(notes))


# ----------------------------------------------------------------------------------------------------------
# A cell's identity includes the configuration; records say which code measured them.
# ----------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Toy:
  size: int = 1
  names: tuple[str, ...] = ("a", "b")
  seed: int = 0


def _markdown(records, config, env):
  del config, env
  return f"{len(records)} records"


def _suite(tmp_path, config, calls):
  return store.run_suite("toy", config, toy_cells(calls), _markdown, None, str(tmp_path), log=_quiet)


def test_a_changed_configuration_recomputes_every_cell(tmp_path):
  quick, calls = _suite(tmp_path, Toy(), []), []
  full = _suite(tmp_path, Toy(size=2), calls)
  assert calls == [0, 1, 2, 3], "cells of another configuration must not be reused"
  assert _values(full["records"]) == ALL_VALUES and full["markdown"] == f"{len(ALL_VALUES)} records"
  (quick_hash,) = {r["config_hash"] for r in quick["records"]}
  (full_hash,) = {r["config_hash"] for r in full["records"]}
  assert quick_hash != full_hash and full["meta"]["config_hash"] == full_hash
  assert all(full_hash in r["cell"] for r in full["records"])
  with store.Store(str(tmp_path / "toy.jsonl")) as results:
    assert len(results.records) == 2 * len(ALL_VALUES), "the other configuration's records stay in the file"
  calls.clear()
  assert _suite(tmp_path, Toy(), calls)["records"] == quick["records"] and calls == []


def test_the_configuration_hash_is_stable_and_covers_every_field():
  assert store.config_hash(Toy()) == store.config_hash(Toy(size=1, names=("a", "b"), seed=0))
  hashes = {store.config_hash(c) for c in (Toy(), Toy(size=2), Toy(names=("a",)), Toy(seed=1))}
  assert len(hashes) == 4 and all(len(h) == 12 and int(h, 16) >= 0 for h in hashes)


def test_records_carry_the_commit_and_the_package_versions(tmp_path):
  records = _suite(tmp_path, Toy(), [])["records"]
  fields = ("jax_version", "jaxlib_version", "distrax_version", "optax_version", "numpy_version", "sfe_jax_version")
  for r in records:
    assert r["suite"] == "toy" and r["seed"] == 0 and r["device"] and r["cell"].startswith(r["platform"])
    assert all(r[f] for f in fields), r
  git = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False)
  if git.returncode == 0:
    assert {r["git_commit"] for r in records} == {git.stdout.strip()}
    assert {type(r["git_dirty"]) for r in records} == {bool}


def test_no_git_gives_no_commit(tmp_path, monkeypatch):
  assert store.git_revision(str(tmp_path)) == (None, None)  # not a checkout
  monkeypatch.setenv("PATH", str(tmp_path))  # no git program
  assert store.git_revision(ROOT) == (None, None)
  assert store.common_fields(seed=0)["git_commit"] is None


# ----------------------------------------------------------------------------------------------------------
# Clear errors, naming the file, before any cell is computed where possible.
# ----------------------------------------------------------------------------------------------------------


def test_a_file_deleted_during_the_run_is_not_recreated(tmp_path):
  path = tmp_path / "toy.jsonl"

  def delete(i):
    if i == 2:
      path.unlink()

  with store.Store(str(path)) as results:
    with pytest.raises(store.StoreError, match=r"toy\.jsonl was deleted or replaced"):
      store.run_cells(results, toy_cells([], on_measure=delete), COMMON, "toy", log=_quiet)
  assert not path.exists(), "a new file without the earlier cells must not appear"


def test_a_read_only_folder_fails_before_any_cell(tmp_path, monkeypatch):
  folder = tmp_path / "out"
  folder.mkdir()
  _run(str(folder / "toy.jsonl"), [])
  folder.chmod(0o555)
  if os.geteuid() == 0:  # root writes anywhere: pretend it could not
    monkeypatch.setattr(os, "access", lambda path, mode: os.path.abspath(path) != str(folder))
  calls = []
  try:
    with pytest.raises(store.StoreError, match=r"out is not writable"):
      store.run_suite("toy", Toy(), toy_cells(calls), _markdown, None, str(folder), log=_quiet)
  finally:
    folder.chmod(0o755)
  assert calls == []


def test_a_folder_in_place_of_the_file(tmp_path):
  (tmp_path / "toy.jsonl").mkdir()
  with pytest.raises(store.StoreError, match=r"toy\.jsonl is a directory"):
    store.Store(str(tmp_path / "toy.jsonl"))


@pytest.mark.parametrize(
  ("line", "message"),
  [
    ({"cell": "a", "x": 1}, r"line 2: expected .* 'records' field"),
    ({"records": []}, r"line 2: expected .* 'cell' field"),
    ({"cell": "a", "records": [1, 2]}, r"line 2: expected .* 'records' field"),
    ([1, 2], r"line 2: expected a JSON object"),
  ],
)
def test_a_line_missing_a_field_is_refused(tmp_path, line, message):
  path = tmp_path / "toy.jsonl"
  path.write_text(json.dumps({"cell": "b", "records": [{"cell": "b"}]}) + "\n" + json.dumps(line) + "\n")
  with pytest.raises(ValueError, match=r"toy\.jsonl, " + message):
    store.Store(str(path))


def test_a_damaged_line_is_refused(tmp_path):
  path = tmp_path / "toy.jsonl"
  path.write_text('{"cell": "b", "records": []}\nnot json at all\n{"cell": "c", "records": []}\n')
  with pytest.raises(ValueError, match=r"toy\.jsonl, line 2: not a JSON record"):
    store.Store(str(path))
