"""The scale suite's report (Markdown) and plot, built from its records alone."""

from __future__ import annotations

from typing import Any

from benchmarks import report
from benchmarks.scale.problems import ESTIMATORS, ScaleConfig


def _gib(value: Any) -> str:
  return "" if value is None else f"{float(value) / 2**30:.2f}"


def best_chunk_sizes(records: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
  """The fastest measured cell per (estimator, N)."""
  best: dict[tuple[str, int], dict[str, Any]] = {}
  for r in records:
    if r.get("status") != "ok":
      continue
    k = (r["estimator"], int(r["num_samples"]))
    if k not in best or float(r["seconds"]) < float(best[k]["seconds"]):
      best[k] = r
  return best


def to_markdown(records: list[dict[str, Any]], config: ScaleConfig, env: dict[str, Any]) -> str:
  """The report: one row per cell (time, memory, compile time apart), then the fastest chunk size per N."""
  lines = [
    "# Scale: memory and time per gradient against num_samples",
    "",
    f"`sfe.value_and_grad`, jitted, on a diagonal Gaussian with D = {config.dim}, `f(x) = sum((x - 0.5)^2)`. "
    "Each cell is a fresh process; peak RSS includes the Python process and JAX (the baseline column, measured "
    "after importing JAX). XLA temp is the compiled gradient's temporary buffers. The gradient is compiled "
    "ahead of time (compile s, apart) and run once before the timed runs, so no timed figure holds a "
    "compilation (JAX's compilation events during the timed runs are counted: compilations_while_timed in the "
    f"CSV/JSON, 0). An unchunked cell is skipped where 8 x the samples exceed "
    f"{config.max_unchunked_bytes / 2**30:.0f} GiB.",
    "",
    report.environment_markdown(env),
    "",
  ]
  rows = []
  order = sorted(
    records, key=lambda r: (r["estimator"], int(r["num_samples"]), -1 if r["chunk_size"] is None else r["chunk_size"])
  )
  for r in order:
    chunk = "unchunked" if r["chunk_size"] is None else f"{int(r['chunk_size']):,}"
    if r.get("status") != "ok":
      rows.append([r["estimator"], f"{int(r['num_samples']):.0e}", chunk, r.get("status"), "", "", "", "", ""])
      continue
    rows.append(
      [
        r["estimator"],
        f"{int(r['num_samples']):.0e}",
        chunk,
        report.format_number(r["seconds"]),
        report.format_number(r["ns_per_sample"]),
        _gib(r["peak_rss_bytes"]),
        _gib(r["baseline_rss_bytes"]),
        _gib(r["xla_temp_bytes"]),
        report.format_number(r["compile_seconds"]),
      ]
    )
  lines.append(
    report.markdown_table(
      [
        "estimator",
        "N",
        "chunk_size",
        "seconds per gradient",
        "ns per sample",
        "peak RSS (GiB)",
        "baseline RSS (GiB)",
        "XLA temp (GiB)",
        "compile s",
      ],
      rows,
    )
  )
  lines += ["", "## Fastest chunk size per (estimator, N)", ""]
  best = best_chunk_sizes(records)
  lines.append(
    report.markdown_table(
      ["estimator", "N", "fastest", "seconds", "peak RSS (GiB)"],
      [
        [
          e,
          f"{n:.0e}",
          "unchunked" if r["chunk_size"] is None else f"{int(r['chunk_size']):,}",
          report.format_number(r["seconds"]),
          _gib(r["peak_rss_bytes"]),
        ]
        for (e, n), r in sorted(best.items())
      ],
    )
  )
  return "\n".join(lines) + "\n"


def plot(records: list[dict[str, Any]], config: ScaleConfig, out_dir: str) -> list[str]:
  """``scale.png``: seconds per gradient and peak RSS against N, one line per chunk size."""
  plt = report.pyplot(out_dir)
  ok = [r for r in records if r.get("status") == "ok"]
  names = [e for e in ESTIMATORS if any(r["estimator"] == e for r in ok)]
  fig, axes = plt.subplots(2, max(len(names), 1), figsize=(5 * max(len(names), 1), 7), squeeze=False)
  for j, name in enumerate(names):
    chunks = sorted({r["chunk_size"] for r in ok if r["estimator"] == name}, key=lambda c: -1 if c is None else c)
    for i, c in enumerate(chunks):
      rows = sorted((r for r in ok if r["estimator"] == name and r["chunk_size"] == c), key=lambda r: r["num_samples"])
      label = "unchunked" if c is None else f"chunk {c:,}"
      ns = [r["num_samples"] for r in rows]
      axes[0][j].plot(ns, [r["seconds"] for r in rows], "o-", color=f"C{i}", label=label)
      axes[1][j].plot(ns, [r["peak_rss_bytes"] / 2**30 for r in rows], "o-", color=f"C{i}", label=label)
    for ax, ylabel in zip((axes[0][j], axes[1][j]), ("seconds per gradient", "peak RSS (GiB)")):
      ax.set_xscale("log")
      ax.set_yscale("log")
      ax.set_xlabel("num_samples")
      ax.set_ylabel(ylabel)
      ax.set_title(f"{name}, D={config.dim}")
      ax.legend(fontsize=8)
  fig.tight_layout()
  return report.save_figure(fig, out_dir, "scale.png", dpi=110)
