"""Results as JSON lines: every finished cell is on disk at once, and a re-run resumes where one stopped.

A *cell* is the smallest unit of benchmark work (one estimator on one problem at one size). The file
``<out>/<suite>.jsonl`` holds one line per finished cell, ``{"cell": id, "records": [...]}``, written in one
append, flushed and synced as soon as the cell finishes. On the next run :class:`Store` reads the file back and
the runners skip every cell already there: nothing finished is lost or recomputed. The guarantees:

* **Atomic cells.** A cell is stored whole or not at all: a write cut short (an interruption, a full disk, a
  file-size limit) leaves a last line without its newline, which the next run drops (with a note, truncating
  the file to its complete lines), so the cell is run again with all of its records.
* **One run per file.** A run holds an exclusive lock (``flock``) on the file from reading it to writing the
  reports; a second run into the same folder fails at once with a :class:`StoreError` instead of storing every
  cell twice. A cell found twice anyway (files concatenated by hand) is read once, the first, with a note.
* **The configuration is part of a cell's id** (``<platform>/<config hash>/<cell>``): :func:`config_hash` hashes
  every field of the suite's configuration, so cells measured under other settings (``--quick`` and ``--full``
  share a folder), or on another device, are never reused. They stay in the file; reports take the cells they
  want.
* **Provenance.** Every record carries the ``cell`` id, the suite, the device, the seed, the configuration
  hash, the git commit of this repository and whether the work tree had changes (``None`` outside a git
  checkout), the versions of the packages that matter (:func:`benchmarks.report.versions`) and the time it was
  written (see :func:`common_fields`), besides its own fields (estimator, problem, sizes, figures).

Errors name the file, and the line where there is one, and come before any cell is computed where they can: a
line that is not a JSON object with a ``cell`` and a ``records`` list raises a ``ValueError`` (a report built
from a damaged file would be silently wrong); a folder that is not writable, a directory in place of the file
and a file held by another run raise a :class:`StoreError`, as does the file vanishing during the run (the
next cell is not written to a new file that lacks the earlier ones).
"""

from __future__ import annotations

import dataclasses
import datetime
import fcntl
import hashlib
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterable
from typing import Any

import jax

from benchmarks import report

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
"""The checkout the benchmarks run from, whose git commit the records carry."""


class StoreError(RuntimeError):
  """The results file cannot be used: another run holds it, it cannot be written, or it vanished mid-run."""


def config_hash(config: Any) -> str:
  """12 hex digits of the SHA-256 of ``config`` (a dataclass) as canonical JSON: every field, nested ones too."""
  text = json.dumps(report.plain(dataclasses.asdict(config)), sort_keys=True, separators=(",", ":"), default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:12]


def git_revision(directory: str = REPOSITORY) -> tuple[str | None, bool | None]:
  """The commit checked out at ``directory`` and whether the work tree differs from it (``git status --porcelain``
  says anything); ``(None, None)`` outside a git checkout or without git."""

  def git(*args: str) -> str:
    # --no-optional-locks: a status taken while other git commands run must not take (or wait on) the index lock.
    command = ["git", "--no-optional-locks", *args]
    return subprocess.run(command, cwd=directory, capture_output=True, text=True, check=True, timeout=60).stdout

  try:
    return git("rev-parse", "HEAD").strip(), bool(git("status", "--porcelain").strip())
  except (OSError, subprocess.SubprocessError):
    return None, None


def common_fields(seed: int, config_hash: str | None = None) -> dict[str, Any]:
  """What every record says about where, how and by which code it was measured."""
  device = jax.devices()[0]
  commit, dirty = git_revision()
  return {
    "device": f"{device.platform}:{device.device_kind}",
    "platform": device.platform,
    "seed": seed,
    "config_hash": config_hash,
    "git_commit": commit,
    "git_dirty": dirty,
    **report.versions(),
  }


class Store:
  """The JSON-lines file of one suite: locked and read on creation, appended to cell by cell.

  Use it as a context manager (or call :meth:`close`) to release the file for the next run.

  Args:
    path: the ``.jsonl`` file (created, with its folder, if missing); ``None`` keeps the records in memory only
      (tests, or a run without an output folder).
    log: where notes go (a dropped incomplete last line, a cell stored twice).

  Raises:
    StoreError: the folder is not writable, ``path`` is a directory, or another run holds the file.
    ValueError: a line of the file is damaged.
  """

  def __init__(self, path: str | None, log: Callable[[str], None] = print):
    self._file = None
    self.path = path
    self.records: list[dict[str, Any]] = []
    """Every record of every stored cell, in the order stored (each with its ``cell`` and common fields)."""
    self._cells: set[str] = set()
    if path is None:
      return
    self._file = self._open_locked()
    try:
      self._read(log)
    except BaseException:
      self.close()
      raise

  def _open_locked(self):
    folder = os.path.dirname(os.path.abspath(self.path))
    if os.path.isdir(self.path):
      raise StoreError(f"{self.path} is a directory, not a results file: move it away or choose another folder.")
    try:
      os.makedirs(folder, exist_ok=True)
    except OSError as e:
      raise StoreError(f"{self.path}: cannot create its folder ({e}).") from e
    if not os.access(folder, os.W_OK):
      raise StoreError(f"{folder} is not writable: {self.path} and the reports could not be written there.")
    try:
      file = open(self.path, "a+b", buffering=0)  # noqa: SIM115 (held, and locked, until close())
    except OSError as e:
      raise StoreError(f"{self.path}: cannot open the results file for writing ({e}).") from e
    try:
      fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as e:
      file.close()
      raise StoreError(
        f"{self.path} is locked: another run is writing it (two runs into one folder would store every cell "
        "twice). Wait for that run to finish, or write into another folder."
      ) from e
    return file

  def close(self) -> None:
    """Closes the file, which releases its lock; :attr:`records` stay."""
    if self._file is not None:
      self._file.close()
      self._file = None

  __del__ = close

  def __enter__(self) -> Store:
    return self

  def __exit__(self, *exc_info: object) -> None:
    self.close()

  def _read(self, log: Callable[[str], None]) -> None:
    self._file.seek(0)
    data = self._file.readall()
    *lines, tail = data.split(b"\n")  # tail: what follows the last newline, b"" in a complete file
    cut = bool(tail.strip()) and not _is_json(tail)  # A cell whose write was interrupted.
    if not cut:
      lines.append(tail)  # Empty, or a complete cell that only lacks its newline.
    for number, line in enumerate(lines, start=1):
      if line.strip():
        self._add_entry(self._parse(line, number), number, log)
    if cut:
      log(
        f"note: {self.path}: dropping an incomplete last line, line {len(lines) + 1} (a write cut short); its cell "
        "will be run again."
      )
      self._file.truncate(len(data) - len(tail))
    elif tail.strip():
      self._file.write(b"\n")

  def _parse(self, line: bytes, number: int) -> dict[str, Any]:
    try:
      entry = json.loads(line)
    except ValueError as e:
      raise ValueError(
        f"{self.path}, line {number}: not a JSON record ({e}): {line[:80]!r}. The results file is damaged; "
        "delete that line (its cell will be run again) or the whole file."
      ) from e
    if not (
      isinstance(entry, dict)
      and isinstance(entry.get("cell"), str)
      and isinstance(entry.get("records"), list)
      and all(isinstance(r, dict) for r in entry["records"])
    ):
      older = " (a record of an older version, one per line?)" if isinstance(entry, dict) and "cell" in entry else ""
      raise ValueError(
        f"{self.path}, line {number}: expected a JSON object with a 'cell' field and a 'records' field (a list of "
        f"objects); got {line[:80]!r}{older}. Delete that line (its cell will be run again) or the whole file."
      )
    return entry

  def _add_entry(self, entry: dict[str, Any], number: int, log: Callable[[str], None]) -> None:
    if entry["cell"] in self._cells:
      log(
        f"note: {self.path}, line {number}: cell {entry['cell']} is stored twice (two runs wrote this file?); "
        "keeping the first."
      )
      return
    self._cells.add(entry["cell"])
    self.records.extend(entry["records"])

  def done(self, cell: str) -> bool:
    """Whether ``cell`` has records already."""
    return cell in self._cells

  def cell_records(self, cell: str) -> list[dict[str, Any]]:
    return [r for r in self.records if r["cell"] == cell]

  def add(self, cell: str, records: Iterable[dict[str, Any]], common: dict[str, Any]) -> list[dict[str, Any]]:
    """Stores the records of a finished cell, with ``cell``, ``common`` fields and a timestamp, as one line.

    Raises:
      StoreError: the file was deleted or replaced since this store opened it.
    """
    stamp = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    full = [{"cell": cell, **common, **record, "written": stamp} for record in records]
    entry = report.plain({"cell": cell, "records": full})
    if self.path is not None:
      self._append((json.dumps(entry) + "\n").encode())
    self._cells.add(cell)
    self.records.extend(entry["records"])
    return entry["records"]

  def _append(self, data: bytes) -> None:
    if self._file is None:
      raise StoreError(f"{self.path}: this store is closed; open a new one to add cells.")
    try:
      same = os.path.samestat(os.stat(self.path), os.fstat(self._file.fileno()))
    except FileNotFoundError:
      same = False
    if not same:
      raise StoreError(
        f"{self.path} was deleted or replaced during the run, and with it the cells stored before; stopping rather "
        "than write a file without them. Run again to recompute them."
      )
    view = memoryview(data)
    while view:  # An unbuffered write may write part of the data.
      view = view[self._file.write(view) :]
    os.fsync(self._file.fileno())


def _is_json(line: bytes) -> bool:
  try:
    json.loads(line)
  except ValueError:
    return False
  return True


def progress(total: int, description: str):
  """A progress bar over ``total`` cells (tqdm when installed, on stderr; a no-op object otherwise)."""
  try:
    from tqdm.auto import tqdm  # noqa: PLC0415 (optional dependency, in the bench extra)
  except ImportError:  # pragma: no cover
    return _NoBar()
  return tqdm(total=total, desc=description, unit="cell", leave=False, dynamic_ncols=True)


class _NoBar:
  def update(self, n: int = 1) -> None:
    del n

  def set_postfix_str(self, text: str) -> None:
    del text

  def close(self) -> None:
    pass


def run_cells(
  store: Store,
  cells: list[tuple[str, Callable[[], list[dict[str, Any]]]]],
  common: dict[str, Any],
  description: str,
  log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
  """Runs the cells that ``store`` does not have yet, storing each as it finishes; returns all their records.

  Args:
    store: the suite's results file.
    cells: ``(cell id, measure)`` pairs; ``measure()`` returns the cell's records.
    common: fields added to every record (see :func:`common_fields`); its ``platform`` and ``config_hash`` (when
      not ``None``) prefix the cell ids.
    description: the progress bar's label.
    log: where one line per finished cell goes.
  """
  # The device and the configuration are part of a cell's identity: a run on a GPU, or with other settings, into
  # the same folder does not reuse these cells.
  prefix = "/".join(str(part) for part in (common["platform"], common.get("config_hash")) if part is not None)
  cells = [(f"{prefix}/{cell}", measure) for cell, measure in cells]
  todo = [(cell, measure) for cell, measure in cells if not store.done(cell)]
  skipped = len(cells) - len(todo)
  if skipped:
    log(f"  resuming: {skipped} of {len(cells)} cells already in {store.path}")
  bar = progress(len(todo), description)
  try:
    for cell, measure in todo:
      bar.set_postfix_str(cell[-40:])
      records = measure()
      store.add(cell, records, common)
      log(f"  done {cell}")
      bar.update(1)
  finally:
    bar.close()
  wanted = {cell for cell, _ in cells}
  return [r for r in store.records if r["cell"] in wanted]


def run_suite(
  name: str,
  config: Any,
  cells: list[tuple[str, Callable[[], list[dict[str, Any]]]]],
  to_markdown: Callable[[list[dict[str, Any]], Any, dict[str, Any]], str],
  plot: Callable[[list[dict[str, Any]], Any, str], list[str]] | None,
  out_dir: str | None,
  log: Callable[[str], None] = print,
  meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
  """Runs (or resumes) a suite through ``<out_dir>/<name>.jsonl`` and writes its reports from the records.

  The file stays locked until the reports are written. The Markdown, CSV and JSON reports and the PNG plots are
  rebuilt from every record of the suite's cells under this configuration, so a resumed run reports the cells of
  the interrupted run too (and never those of another configuration).

  Args:
    name: the suite's name (the file names; the ``suite`` field of the records).
    config: the suite's configuration, a dataclass with a ``seed``; hashed into the cell ids (see
      :func:`config_hash`) and recorded in the meta data.
    cells: ``(cell id, measure)`` pairs (see :func:`run_cells`).
    to_markdown: ``(records, config, environment) -> str``.
    plot: ``(records, config, out_dir) -> [PNG paths]``, or ``None``.
    out_dir: where the files go; ``None`` keeps everything in memory.
    log: where progress lines go.
    meta: extra meta data.

  Returns:
    ``{"records": [...], "markdown": str, "meta": {...}, "paths": {...}}``.
  """
  digest = config_hash(config)
  with Store(os.path.join(out_dir, f"{name}.jsonl") if out_dir else None, log) as store:
    env = report.environment()
    start = time.perf_counter()
    common = {"suite": name, **common_fields(config.seed, digest)}
    records = run_cells(store, cells, common, name, log)
    markdown = to_markdown(records, config, env)
    meta = {
      "suite": name,
      "environment": env,
      "seconds": time.perf_counter() - start,
      "config": dataclasses.asdict(config),
      "config_hash": digest,
      "git_commit": common["git_commit"],
      "git_dirty": common["git_dirty"],
      **(meta or {}),
    }
    paths: dict[str, Any] = {}
    if out_dir:
      paths = report.write_outputs(out_dir, name, markdown=markdown, records=records, meta=meta)
      paths["jsonl"] = store.path
      if plot is not None:
        for i, path in enumerate(plot(records, config, out_dir)):
          paths[f"png{i}"] = path
  return {"records": records, "markdown": markdown, "meta": meta, "paths": paths}
