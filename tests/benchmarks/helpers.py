"""Shared helpers of the benchmark tests."""

from __future__ import annotations

from typing import Any

from benchmarks import suite as suite_lib


def measure_cells(cells: list[suite_lib.Cell]) -> dict[str, dict[str, Any]]:
  """Runs ``cells`` in memory (no store) and returns ``{cell id: its one record}``.

  Checks what every suite promises of its cells: unique ids, and one record per training or variance cell.
  """
  ids = [cid for cid, _ in cells]
  assert len(ids) == len(set(ids)), ids
  records = {}
  for cid, measure in cells:
    out = measure()
    assert isinstance(out, list) and len(out) == 1, (cid, out)
    records[cid] = out[0]
  return records
