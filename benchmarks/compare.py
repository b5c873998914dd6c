"""Two result folders side by side: ``python -m benchmarks compare A B``.

Like ``asv compare``: for every suite whose ``<suite>.jsonl`` is in both folders (two commits, CPU against GPU,
quick against full), the records of the same cell are matched and every figure that is a time (a field whose
name says ``seconds``, or ``_ms``/``_us``/``_ns``) or a variance (``variance`` in the name, not its standard
error, z-score, exact or expected value) is printed for A and B with the ratio ``B / A`` and a flag where the
change exceeds the noise. Cells found in one folder only are listed.

Matching. A stored cell id is ``<platform>/<config hash>/<cell>`` (:func:`benchmarks.store.run_cells`). Cells
with the same full id are paired first; the rest are paired by ``<cell>`` alone when each folder has exactly
one of them left (a CPU run against a GPU run, or two configurations), and listed as one-sided otherwise.
Within a cell a record is identified by its text fields (estimator, problem, kind, ...) and its sizes
(:data:`IDENTITY_NUMBERS`) that are present, minus the provenance fields (:data:`PROVENANCE`, package versions),
and by its rank among the records of the cell with the same identity (cells store their records in a fixed
order).

Noise, in order of preference:

1. the A/A control that a suite records (:data:`AA_FIELDS`: the throughput suite times a second compiled copy of
   its hand-written function and records the median ratio of the two, whose distance from 1 is the timing noise
   of that run): a time is flagged where ``|B/A - 1|`` exceeds the A/A noise of A plus that of B (the largest
   in the cell; at least :data:`MIN_AA_NOISE`);
2. the figures' own standard errors where both records carry them (``<figure>_se``, ``<figure>_std_error``):
   flagged where ``|B - A| > Z_THRESHOLD * sqrt(se_A^2 + se_B^2)``;
3. else a fixed threshold, ``--threshold`` (default 10%), on ``B/A``.

Figures that are lists (per coordinate) are compared through their mean; figures nested in dictionaries or
lists of dictionaries (training curves) are left out.
"""

from __future__ import annotations

import argparse
import glob
import math
import os
import re
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

from benchmarks import report, store

PROVENANCE = frozenset(
  {"cell", "suite", "device", "platform", "seed", "config_hash", "git_commit", "git_dirty", "written", "commit"}
)
"""Fields that say where, when and by which code a record was measured: never part of its identity."""
IDENTITY_NUMBERS = ("dim", "num_samples", "k", "p", "chunk_size", "batch_size", "num_data")
"""Numeric fields that identify a record (its problem or size) rather than measure something."""
AA_FIELDS = ("hand_copy_over_hand_paired",)
"""A/A controls: ratios of two timings of the same program, whose distance from 1 is the timing noise."""
MIN_AA_NOISE = 0.01
Z_THRESHOLD = 3.0
DEFAULT_THRESHOLD = 0.10
_TIME = re.compile(r"seconds|(^|_)(ms|us|ns)(_|$)")
_NOT_VARIANCE = ("_se", "std_error", "stderr", "_z", "_ok", "exact", "expected", "tolerance", "source", "allowance")
_SE_SUFFIXES = ("_se", "_std_error", "_stderr")


def figure_kind(name: str) -> str | None:
  """``"time"``, ``"variance"`` or ``None`` (not compared) for a record field ``name``.

  Compile times are not compared: they are reported apart from the timed figures, and swing with the load and
  XLA's caches far beyond any noise estimate the records carry.
  """
  if "compile" in name:
    return None
  if _TIME.search(name):
    return "time"
  if "variance" in name and not any(tag in name for tag in _NOT_VARIANCE):
    return "variance"
  return None


def figure_value(value: Any) -> float | None:
  """A number from a field: a number, a non-finite float stored as text, or the mean of a list of numbers."""
  if isinstance(value, bool) or value is None:
    return None
  if isinstance(value, list):
    numbers = [n for v in value if (n := figure_value(v)) is not None]
    return math.fsum(numbers) / len(numbers) if numbers and len(numbers) == len(value) else None
  return report.number(value)


def _is_text(value: Any) -> bool:
  return isinstance(value, str) and report.number(value) is None


def identity(record: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
  """What identifies ``record`` within its cell: text fields and :data:`IDENTITY_NUMBERS`, minus provenance."""
  items = []
  for name, value in record.items():
    if name in PROVENANCE or name.endswith("_version"):
      continue
    if _is_text(value) or (name in IDENTITY_NUMBERS and report.number(value) is not None):
      items.append((name, value))
  return tuple(sorted(items))


def base_cell(record: dict[str, Any]) -> str:
  """The cell id without its ``<platform>/<config hash>/`` prefix."""
  cell = str(record["cell"])
  for field in ("platform", "config_hash"):
    prefix = f"{record.get(field)}/"
    if record.get(field) is not None and cell.startswith(prefix):
      cell = cell[len(prefix) :]
  return cell


def load(folder: str, log: Callable[[str], None]) -> dict[str, list[dict[str, Any]]]:
  """Every ``<suite>.jsonl`` of ``folder``, read through :class:`benchmarks.store.Store`: ``{suite: records}``."""
  if not os.path.isdir(folder):
    raise FileNotFoundError(f"{folder} is not a folder of benchmark results.")
  out = {}
  for path in sorted(glob.glob(os.path.join(folder, "*.jsonl"))):
    with store.Store(path, log=log) as results:
      out[os.path.splitext(os.path.basename(path))[0]] = list(results.records)
  if not out:
    raise FileNotFoundError(f"{folder} has no <suite>.jsonl results file.")
  return out


def _cells(records: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
  cells: dict[str, list[dict[str, Any]]] = defaultdict(list)
  for r in records:
    cells[str(r["cell"])].append(r)
  return dict(cells)


def pair_cells(
  a: dict[str, list[dict[str, Any]]], b: dict[str, list[dict[str, Any]]]
) -> tuple[list[tuple[str, str]], list[str], list[str]]:
  """``(pairs of full cell ids, ids only in a, ids only in b)``: same full id first, then the same base id."""
  pairs = [(cell, cell) for cell in a if cell in b]
  left_a = [cell for cell in a if cell not in b]
  left_b = [cell for cell in b if cell not in a]
  by_base_a, by_base_b = defaultdict(list), defaultdict(list)
  for cell in left_a:
    by_base_a[base_cell(a[cell][0])].append(cell)
  for cell in left_b:
    by_base_b[base_cell(b[cell][0])].append(cell)
  only_a, only_b = [], []
  for base, cells in by_base_a.items():
    if len(cells) == 1 and len(by_base_b.get(base, ())) == 1:
      pairs.append((cells[0], by_base_b[base][0]))
    else:
      only_a.extend(cells)
  paired_b = {cell_b for _, cell_b in pairs}
  only_b = [cell for cell in left_b if cell not in paired_b]
  return pairs, only_a, only_b


def _keyed(records: list[dict[str, Any]]) -> dict[tuple, dict[str, Any]]:
  """The records of one cell by ``(identity, rank among those with that identity)``."""
  seen: dict[tuple, int] = defaultdict(int)
  out = {}
  for r in records:
    ident = identity(r)
    out[(ident, seen[ident])] = r
    seen[ident] += 1
  return out


def aa_noise(records: Iterable[dict[str, Any]]) -> float | None:
  """The largest A/A deviation ``|ratio - 1|`` among ``records``; ``None`` when none records an A/A control."""
  values = [abs(v - 1.0) for r in records for f in AA_FIELDS if (v := report.number(r.get(f))) is not None]
  return max(values) if values else None


def _first(*values: float | None) -> float | None:
  """The first value that is not ``None`` (the cell's own A/A noise, else the suite's)."""
  return next((v for v in values if v is not None), None)


def _standard_error(record: dict[str, Any], field: str) -> float | None:
  for suffix in _SE_SUFFIXES:
    se = figure_value(record.get(field + suffix))
    if se is not None:
      return se
  return None


def compare_figure(
  kind: str,
  a: float,
  b: float,
  se: tuple[float | None, float | None],
  aa: tuple[float | None, float | None],
  threshold: float,
) -> tuple[float | None, str, str]:
  """``(B / A, noise, flag)`` for one figure (the module docstring's rules); flag is ``""`` within the noise."""
  finite = math.isfinite(a) and math.isfinite(b)
  ratio = b / a if a != 0 and finite else None
  up, down = ("slower", "faster") if kind == "time" else ("higher", "lower")
  if kind == "time" and (aa[0] is not None or aa[1] is not None):
    known = [n for n in aa if n is not None]
    noise = max(sum(known) if len(known) == 2 else 2 * known[0], MIN_AA_NOISE)
    label = f"A/A {100 * noise:.1f}%"
    changed = ratio is not None and abs(ratio - 1.0) > noise
  elif se[0] is not None and se[1] is not None:
    combined = math.hypot(se[0], se[1])
    label = f"{Z_THRESHOLD:g} SE = {report.format_number(Z_THRESHOLD * combined)}"
    changed = finite and abs(b - a) > Z_THRESHOLD * combined
  else:
    label = f"{100 * threshold:g}%"
    changed = ratio is not None and (ratio > 1.0 + threshold or ratio < 1.0 / (1.0 + threshold))
  if not finite or a == 0:  # No ratio: any difference is a change (nan against nan is none).
    changed = a != b and not (math.isnan(a) and math.isnan(b))
  return ratio, label, (f"**{up if b > a else down}**" if changed else "")


def _labeller(keys: Iterable[tuple]) -> Callable[[tuple], str]:
  """Labels for the record keys of one cell: the identity fields that differ between its records, and the rank."""
  keys = list(keys)
  values: dict[str, set] = defaultdict(set)
  for ident, _ in keys:
    for name, value in ident:
      values[name].add(repr(value))
  varying = {name for name, seen in values.items() if len(seen) > 1 or any(name not in dict(k[0]) for k in keys)}

  def label(key: tuple) -> str:
    ident, rank = key
    text = ", ".join(f"{k}={v}" for k, v in ident if k in varying) or "—"
    return text + (f" (#{rank + 1})" if rank else "")

  return label


def _runs(records: list[dict[str, Any]]) -> str:
  """Where and by which code ``records`` were measured, in a few words."""

  def values(field: str) -> str:
    found = sorted({str(r.get(field)) for r in records if r.get(field) is not None})
    return ", ".join(v[:12] if field == "git_commit" else v for v in found) or "unknown"

  written = sorted(str(r["written"]) for r in records if r.get("written"))
  when = f"{written[0]} to {written[-1]}" if written else "unknown"
  return (
    f"device {values('device')}; commit {values('git_commit')}; jax {values('jax_version')}; "
    f"configuration {values('config_hash')}; written {when}"
  )


def compare_suite(
  records_a: list[dict[str, Any]], records_b: list[dict[str, Any]], threshold: float, only_changed: bool
) -> tuple[list[str], dict[str, Any]]:
  """The Markdown lines of one suite and its counts (cells matched and one-sided, figures, flagged, times)."""
  cells_a, cells_b = _cells(records_a), _cells(records_b)
  pairs, only_a, only_b = pair_cells(cells_a, cells_b)
  noise_a, noise_b = aa_noise(records_a), aa_noise(records_b)
  rows, log_ratios, flagged, figures = [], [], 0, 0
  for cell_a, cell_b in pairs:
    ra, rb = _keyed(cells_a[cell_a]), _keyed(cells_b[cell_b])
    aa = (_first(aa_noise(cells_a[cell_a]), noise_a), _first(aa_noise(cells_b[cell_b]), noise_b))
    cell = base_cell(cells_a[cell_a][0])
    keys = list(ra) + [k for k in rb if k not in ra]
    labeller = _labeller(keys)
    for key in keys:
      label = labeller(key)
      if key not in ra or key not in rb:
        side = "A" if key in ra else "B"
        rows.append([cell, label, "—", "", "", "", "", f"record only in {side}"])
        continue
      a, b = ra[key], rb[key]
      for field in list(a) + [f for f in b if f not in a]:
        kind = figure_kind(field)
        if kind is None or field in PROVENANCE:
          continue
        va, vb = figure_value(a.get(field)), figure_value(b.get(field))
        if va is None and vb is None:
          continue
        figures += 1
        if va is None or vb is None:
          rows.append([cell, label, field, va, vb, None, "", f"only in {'A' if vb is None else 'B'}"])
          continue
        se = (_standard_error(a, field), _standard_error(b, field))
        ratio, noise, flag = compare_figure(kind, va, vb, se, aa, threshold)
        if kind == "time" and ratio is not None and ratio > 0:
          log_ratios.append(math.log(ratio))
        flagged += bool(flag)
        if flag or not only_changed:
          rows.append([cell, label, field, va, vb, None if ratio is None else round(ratio, 3), noise, flag])
  lines = [f"A: {_runs(records_a)}.", f"B: {_runs(records_b)}."]
  if rows:
    lines.append(report.markdown_table(["cell", "record", "figure", "A", "B", "B / A", "noise", "flag"], rows))
  elif pairs:
    lines.append("No figure changed beyond the noise." if only_changed else "No time or variance figures.")
  for side, cells in (("A", only_a), ("B", only_b)):
    if cells:
      listed = "\n".join(f"* {c}" for c in cells)
      lines.append(f"Cells only in {side} ({len(cells)}):\n\n{listed}")
  counts = {
    "matched": len(pairs),
    "only_a": len(only_a),
    "only_b": len(only_b),
    "figures": figures,
    "flagged": flagged,
    "time_geomean": math.exp(math.fsum(log_ratios) / len(log_ratios)) if log_ratios else None,
  }
  return lines, counts


def compare(
  folder_a: str,
  folder_b: str,
  threshold: float = DEFAULT_THRESHOLD,
  only_changed: bool = False,
  suites: Iterable[str] | None = None,
  log: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
) -> str:
  """The Markdown comparison of two result folders (the module docstring says what is compared and flagged)."""
  results_a, results_b = load(folder_a, log), load(folder_b, log)
  wanted = None if suites is None else set(suites)
  names = [s for s in results_a if s in results_b and (wanted is None or s in wanted)]
  parts = [
    f"# Benchmarks compared: A = {folder_a}, B = {folder_b}",
    "Every time (seconds) and variance figure of the records of the same cell, A beside B, with B / A. Flags: "
    f"**slower**/**faster** (times), **higher**/**lower** (variances) where the change exceeds the noise: the A/A "
    f"control of the suite where it records one (`{'`, `'.join(AA_FIELDS)}`: A's noise plus B's, at least "
    f"{100 * MIN_AA_NOISE:g}%), else {Z_THRESHOLD:g} combined standard errors where both records carry them, else "
    f"a change of {100 * threshold:g}% (`--threshold`). List figures are compared through their mean.",
  ]
  summary, sections = [], []
  for name in names:
    lines, counts = compare_suite(results_a[name], results_b[name], threshold, only_changed)
    summary.append(
      [
        name,
        counts["matched"],
        counts["only_a"],
        counts["only_b"],
        counts["figures"],
        counts["flagged"],
        None if counts["time_geomean"] is None else round(counts["time_geomean"], 3),
      ]
    )
    sections.append("\n\n".join([f"## {name}", *lines]))
  columns = ["suite", "cells matched", "only in A", "only in B", "figures", "flagged", "times: geometric mean B / A"]
  parts.append(report.markdown_table(columns, summary) if summary else "No suite is in both folders.")
  for side, mine, other in (("A", results_a, results_b), ("B", results_b, results_a)):
    alone = [s for s in mine if s not in other and (wanted is None or s in wanted)]
    if alone:
      parts.append(f"Suites only in {side}: {', '.join(alone)}.")
  return "\n\n".join(parts + sections) + "\n"


def main(argv: list[str]) -> int:
  """``python -m benchmarks compare A B [--out FILE] [--threshold X] [--only-changed] [--suite NAME ...]``."""
  parser = argparse.ArgumentParser(
    prog="python -m benchmarks compare",
    description="Two benchmark result folders side by side (two commits, CPU against GPU, quick against full): "
    "every time and variance figure of the cells both have, the ratio B / A and a flag where the change exceeds "
    "the noise (the suite's A/A control, the figures' standard errors, or --threshold); cells in one folder only "
    "are listed. Markdown on standard output.",
  )
  parser.add_argument("a", metavar="A", help="the first results folder (the reference)")
  parser.add_argument("b", metavar="B", help="the second results folder")
  parser.add_argument("--out", metavar="FILE", default=None, help="also write the Markdown to FILE")
  parser.add_argument(
    "--threshold",
    type=float,
    default=DEFAULT_THRESHOLD,
    metavar="X",
    help="relative change flagged where a figure has no measured noise (default: %(default)g, i.e. 10%%)",
  )
  parser.add_argument("--only-changed", action="store_true", help="list only the flagged figures")
  parser.add_argument(
    "--suite", action="append", default=None, metavar="NAME", help="compare only this suite (repeatable)"
  )
  args = parser.parse_args(argv)
  if not args.threshold > 0:
    parser.error(f"--threshold must be positive; got {args.threshold}.")
  try:
    text = compare(args.a, args.b, args.threshold, args.only_changed, args.suite)
  except (FileNotFoundError, ValueError, store.StoreError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  sys.stdout.write(text)
  if args.out:
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as fh:
      fh.write(text)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
