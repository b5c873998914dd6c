"""``python -m benchmarks compare``: two tiny result folders written through the store, side by side."""

from __future__ import annotations

import dataclasses
import functools

import pytest

from benchmarks import compare, store, suite


@dataclasses.dataclass(frozen=True)
class TinyConfig(suite.SuiteConfig):
  label: str = "tiny"


def _write(folder, name: str, cells: dict[str, list[dict]], config: TinyConfig = TinyConfig()) -> None:
  """Stores ``cells`` (cell id -> its records) as the results of suite ``name`` in ``folder``, as a run would."""
  measured = [(cell, functools.partial(list, records)) for cell, records in cells.items()]
  store.run_suite(name, config, measured, lambda records, config, env: "", None, str(folder), log=lambda line: None)


def _throughput(aa: float, sfe: float, hand: float) -> list[dict]:
  return [
    {"estimator": "pathwise", "dim": 4, "sfe_seconds": sfe, "hand_seconds": hand, "hand_copy_over_hand_paired": aa},
    {"estimator": "rebar", "dim": 4, "sfe_seconds": 2 * sfe, "hand_seconds": None, "hand_copy_over_hand_paired": None},
  ]


def _variance(variance: float, se: float, seconds: float) -> list[dict]:
  return [
    {"estimator": "SF", "param": p, "k": 1.0, "variance": variance, "variance_se": se, "exact_variance": 1.0}
    | {"seconds_per_estimate": seconds, "work_normalised_variance": variance * seconds, "mean_ok": True}
    for p in ("mu", "sigma")
  ]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
  a, b = tmp_path_factory.mktemp("a"), tmp_path_factory.mktemp("b")
  # Throughput: A/A noise of 2% in A and 3% in B, so times are flagged beyond 5%.
  _write(a, "throughput", {"N=16": _throughput(1.02, 1.00, 1.00), "N=32": _throughput(1.0, 1.0, 1.0)})
  _write(b, "throughput", {"N=16": _throughput(0.97, 1.04, 1.20), "N=64": _throughput(1.0, 1.0, 1.0)})
  # Variance: standard errors; B's variance 4 combined SE above A's; its time 30% slower (no noise: 10%).
  _write(a, "variance", {"cos": _variance(10.0, 0.5, 1.0)})
  _write(b, "variance", {"cos": _variance(10.0 + 4 * 0.5 * 2**0.5, 0.5, 1.3)})
  _write(a, "scale", {"N=1e5": [{"estimator": "pathwise", "seconds": 1.0}]})
  return str(a), str(b)


def _rows(text: str) -> dict[tuple[str, str, str], list[str]]:
  """The comparison table rows by (cell, record, figure)."""
  rows = {}
  for line in text.splitlines():
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if len(cells) == 8 and cells[0] not in ("cell", "---"):
      rows[tuple(cells[:3])] = cells[3:]
  return rows


def test_ratios_and_flags(folders):
  text = compare.compare(*folders)
  rows = _rows(text)
  # A/A noise 2% + 3% = 5%: +4% is within it, +20% is not; the whole cell shares the noise.
  assert rows[("N=16", "estimator=pathwise", "sfe_seconds")] == ["1", "1.04", "1.04", "A/A 5.0%", ""]
  assert rows[("N=16", "estimator=pathwise", "hand_seconds")] == ["1", "1.2", "1.2", "A/A 5.0%", "**slower**"]
  assert rows[("N=16", "estimator=rebar", "sfe_seconds")][2:] == ["1.04", "A/A 5.0%", ""]
  # hand_seconds is None in both rebar records: not a figure there.
  assert ("N=16", "estimator=rebar", "hand_seconds") not in rows
  # Variances with standard errors: 4 combined SE > 3.
  variance = rows[("cos", "param=mu", "variance")]
  assert variance[2:] == ["1.283", "3 SE = 2.121", "**higher**"]
  # No noise measured: the 10% threshold; exact_variance, variance_se and mean_ok are not compared.
  assert rows[("cos", "param=sigma", "seconds_per_estimate")][2:] == ["1.3", "10%", "**slower**"]
  assert rows[("cos", "param=sigma", "work_normalised_variance")][3:] == ["10%", "**higher**"]
  assert not any(figure in ("exact_variance", "variance_se", "mean_ok") for _, _, figure in rows)


def test_one_sided_cells_and_suites(folders):
  text = compare.compare(*folders)
  assert "Cells only in A (1):" in text and "/N=32" in text
  assert "Cells only in B (1):" in text and "/N=64" in text
  assert "Suites only in A: scale." in text
  summary = _table_row(text, "throughput")
  assert summary[:5] == ["1", "1", "1", "3", "1"]  # matched, only in A, only in B, figures, flagged


def _table_row(text: str, first: str) -> list[str]:
  for line in text.splitlines():
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if cells[0] == first:
      return cells[1:]
  raise AssertionError(first)


def test_cells_of_other_configurations_pair_by_their_base_id(tmp_path):
  a, b = tmp_path / "a", tmp_path / "b"
  # Two records with the same identity: told apart by their order in the cell.
  _write(a, "scale", {"N=1e5": [{"estimator": "pathwise", "seconds": 1.0}, {"estimator": "pathwise", "seconds": 2.0}]})
  b_records = [{"estimator": "pathwise", "seconds": 0.5}, {"estimator": "pathwise", "seconds": 2.1}]
  _write(b, "scale", {"N=1e5": b_records}, TinyConfig(label="full"))
  rows = _rows(compare.compare(str(a), str(b)))
  assert rows[("N=1e5", "—", "seconds")] == ["1", "0.5", "0.5", "10%", "**faster**"]
  assert rows[("N=1e5", "— (#2)", "seconds")] == ["2", "2.1", "1.05", "10%", ""]


def test_main_writes_markdown_and_only_changed(folders, tmp_path, capsys):
  out = tmp_path / "compare.md"
  assert compare.main([*folders, "--out", str(out), "--only-changed"]) == 0
  printed = capsys.readouterr().out
  assert printed == out.read_text()
  rows = _rows(printed)
  assert rows and all(flag for *_, flag in rows.values())
  assert compare.main([folders[0], str(tmp_path / "missing")]) == 2
  assert "not a folder" in capsys.readouterr().err


def test_figure_kinds():
  assert [compare.figure_kind(n) for n in ("sfe_seconds", "ns_per_sample", "seconds_per_estimate")] == ["time"] * 3
  assert compare.figure_kind("work_normalised_variance") == "variance"
  for name in ("variance_se", "exact_variance", "variance_z", "variance_ok", "estimates_per_second", "sfe_over_hand"):
    assert compare.figure_kind(name) is None, name
