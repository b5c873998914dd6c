"""Results as JSON lines: every finished cell is on disk at once, and a re-run resumes where one stopped.

A *cell* is the smallest unit of benchmark work (one estimator on one problem at one size). Its records are
appended to ``<out>/<suite>.jsonl`` as soon as it finishes, flushed and synced, in one write, so an interrupted
run loses at most the cell it was computing. On the next run :class:`Store` reads the file back and the
runners skip every cell already there: nothing finished is lost or recomputed.

Every record carries the ``cell`` id, the suite, the device, the JAX version, the seed and the time it was
written (added by :meth:`Store.add`), besides its own fields (estimator, problem, sizes, figures).

Reading is strict: a line that is not a JSON object raises a ``ValueError`` naming the file and line, because
a report built from a damaged file would be silently wrong. The one exception is a last line without its
newline: that is a write cut short by an interruption, so it is dropped (and the file truncated to the last
complete record) with a note.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

import jax

from benchmarks import report


def common_fields(seed: int) -> dict[str, Any]:
  """What every record says about where and how it was measured."""
  device = jax.devices()[0]
  return {
    "device": f"{device.platform}:{device.device_kind}",
    "platform": device.platform,
    "jax_version": jax.__version__,
    "seed": seed,
  }


class Store:
  """The JSON-lines file of one suite: read on creation, appended to cell by cell.

  Args:
    path: the ``.jsonl`` file (created, with its folder, on the first write); ``None`` keeps the records in
      memory only (tests, or a run without an output folder).
    log: where notes go (a dropped incomplete last line).
  """

  def __init__(self, path: str | None, log: Callable[[str], None] = print):
    self.path = path
    self.records: list[dict[str, Any]] = []
    self._cells: set[str] = set()
    if path is not None and os.path.exists(path):
      self._read(log)

  def _read(self, log: Callable[[str], None]) -> None:
    with open(self.path, "rb") as fh:
      data = fh.read()
    lines = data.split(b"\n")
    complete, tail = lines[:-1], lines[-1]
    for number, line in enumerate(complete, start=1):
      if not line.strip():
        continue
      self._add_parsed(self._parse(line, number))
    if tail.strip():  # The last line has no newline: a write that was interrupted.
      try:
        record = json.loads(tail)
        if not isinstance(record, dict) or "cell" not in record:
          raise ValueError
      except ValueError:
        log(f"note: {self.path}: dropping an incomplete last line (an interrupted write); its cell will be run again.")
        with open(self.path, "r+b") as fh:
          fh.truncate(len(data) - len(tail))
      else:  # A complete record that only lacks its newline.
        self._add_parsed(record)
        with open(self.path, "ab") as fh:
          fh.write(b"\n")

  def _parse(self, line: bytes, number: int) -> dict[str, Any]:
    try:
      record = json.loads(line)
    except ValueError as e:
      raise ValueError(
        f"{self.path}, line {number}: not a JSON record ({e}): {line[:80]!r}. The results file is damaged; "
        "delete that line (its cell will be run again) or the whole file."
      ) from e
    if not isinstance(record, dict) or "cell" not in record:
      raise ValueError(f"{self.path}, line {number}: expected a JSON object with a 'cell' field; got {line[:80]!r}.")
    return record

  def _add_parsed(self, record: dict[str, Any]) -> None:
    self.records.append(record)
    self._cells.add(record["cell"])

  def done(self, cell: str) -> bool:
    """Whether ``cell`` has records already."""
    return cell in self._cells

  def cell_records(self, cell: str) -> list[dict[str, Any]]:
    return [r for r in self.records if r["cell"] == cell]

  def add(self, cell: str, records: Iterable[dict[str, Any]], common: dict[str, Any]) -> list[dict[str, Any]]:
    """Appends the records of a finished cell, with ``cell``, ``common`` fields and a timestamp, in one write."""
    stamp = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    full = [{"cell": cell, **common, **record, "written": stamp} for record in records]
    full = [report.plain(r) for r in full]
    if self.path is None:
      for record in full:
        self._add_parsed(record)
      return full
    text = "".join(json.dumps(r) + "\n" for r in full)
    os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
    with open(self.path, "a") as fh:
      fh.write(text)
      fh.flush()
      os.fsync(fh.fileno())
    for record in full:
      self._add_parsed(record)
    return full


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
    common: fields added to every record (see :func:`common_fields`).
    description: the progress bar's label.
    log: where one line per finished cell goes.
  """
  # The device is part of a cell's identity: a run on a GPU into the same folder does not reuse CPU cells.
  cells = [(f"{common['platform']}/{cell}", measure) for cell, measure in cells]
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

  The Markdown, CSV and JSON reports and the PNG plots are rebuilt from every record of the suite's cells, so
  a resumed run reports the cells of the interrupted run too.

  Args:
    name: the suite's name (the file names).
    config: the suite's configuration, a dataclass with a ``seed``; recorded in the meta data.
    cells: ``(cell id, measure)`` pairs (see :func:`run_cells`).
    to_markdown: ``(records, config, environment) -> str``.
    plot: ``(records, config, out_dir) -> [PNG paths]``, or ``None``.
    out_dir: where the files go; ``None`` keeps everything in memory.
    log: where progress lines go.
    meta: extra meta data.

  Returns:
    ``{"records": [...], "markdown": str, "meta": {...}, "paths": {...}}``.
  """
  store = Store(os.path.join(out_dir, f"{name}.jsonl") if out_dir else None, log)
  env = report.environment()
  start = time.perf_counter()
  records = run_cells(store, cells, common_fields(config.seed), name, log)
  markdown = to_markdown(records, config, env)
  meta = {
    "suite": name,
    "environment": env,
    "seconds": time.perf_counter() - start,
    "config": dataclasses.asdict(config),
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
