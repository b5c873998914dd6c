"""The scale benchmark (benchmarks/scale/): a tiny sweep end to end, each cell in its own process."""

import dataclasses
import re

import pytest

from benchmarks import scale

TINY = dataclasses.replace(
  scale.PRESETS["quick"], dim=4, sample_sizes=(2_000,), chunk_sizes=(None, 500), repeats=1, estimators=("pathwise",)
)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  out = tmp_path_factory.mktemp("scale")
  return out, scale.run(TINY, str(out), log=lambda line: None)


def test_records_measure_time_and_memory(tiny_run):
  _, result = tiny_run
  records = result["records"]
  assert [(r["num_samples"], r["chunk_size"]) for r in records] == [(2_000, None), (2_000, 500)]
  for r in records:
    assert r["status"] == "ok", r
    assert r["seconds"] > 0 and r["compile_seconds"] > 0 and r["ns_per_sample"] > 0
    assert r["peak_rss_bytes"] >= r["baseline_rss_bytes"] > 0 and r["xla_temp_bytes"] >= 0
    assert r["compilations_while_timed"] == 0
    # E[sum (x - 0.5)^2] = D (0.25 + 1) = 5; the mean gradients are about -1 (loc) and 2 (scale).
    assert abs(r["value"] - 5.0) < 0.5 and abs(r["grad_loc_mean"] + 1.0) < 0.2 and abs(r["grad_scale_mean"] - 2) < 0.3
  unchunked, chunked = records
  assert chunked["xla_temp_bytes"] < unchunked["xla_temp_bytes"]


def test_report_names_the_fastest_chunk_size(tiny_run):
  out, result = tiny_run
  md = result["markdown"]
  fastest = md.split("## Fastest chunk size per (estimator, N)")[1]
  assert re.search(r"\| pathwise \| 2e\+03 \| (unchunked|500) \|", fastest), fastest
  assert sorted(p.name for p in out.iterdir()) == ["scale.csv", "scale.json", "scale.jsonl", "scale.md", "scale.png"]


def test_cells_skip_what_does_not_fit_or_is_unchunked():
  config = dataclasses.replace(TINY, sample_sizes=(1_000, 10**9), chunk_sizes=(None, 1_000, 10**5))
  ids = [cell for cell, _ in scale.cells(config)]
  assert [i.split("/")[3:5] for i in ids] == [
    ["N=1000", "chunk=None"],
    ["N=1000000000", "chunk=1000"],
    [
      "N=1000000000",
      "chunk=100000",
    ],
  ]


def test_peak_memory_is_the_cells_own_not_its_parents():
  # ru_maxrss survives fork + exec on Linux: a cell spawned by a large process would report the parent's size.
  ballast = bytearray(600 * 2**20)  # this process grows by 600 MiB (one byte written per page) first
  ballast[::4096] = b"\x01" * len(range(0, len(ballast), 4096))
  ((record,),) = [scale.measure_cell(TINY, "pathwise", 2_000, None)]
  del ballast
  assert record["status"] == "ok" and record["baseline_rss_bytes"] < 500 * 2**20, record


def test_a_failing_cell_is_recorded_not_raised():
  record = scale.measure_cell(dataclasses.replace(TINY, estimators=("pathwise",)), "no_such_estimator", 10, None)
  assert record[0]["status"].startswith("failed: ") and "KeyError" in record[0]["status"]


def test_timed_figures_exclude_compilation():
  # Two identical measurements in one process (the cell's worker, called here): each timed figure is the run
  # alone, far below the compilation recorded apart, no compilation happens while it is timed, and the first
  # is not much slower than the second (a one-off cost inside the first one's timed runs would show).
  args = {"estimator": "pathwise", "dim": 4, "num_samples": 2_000, "chunk_size": 500, "repeats": 3, "seed": 0}
  first, second = (scale.measure_in_process(**args) for _ in range(2))
  for r in (first, second):
    assert r["compilations_while_timed"] == 0 and r["compile_seconds"] > 0
    assert r["seconds"] < 0.5 * r["compile_seconds"]
  assert first["seconds"] < 3 * second["seconds"] + 0.01  # the first is not much slower (10 ms of noise allowed)
  assert first["value"] == second["value"]  # the same keys: the same estimate
