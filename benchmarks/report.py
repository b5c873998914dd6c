"""Writing benchmark results: Markdown tables, CSV and JSON, plus the environment they were measured in."""

from __future__ import annotations

import csv
import importlib
import json
import math
import os
import platform
import zlib
from collections.abc import Sequence
from typing import Any

import jax


def number(value: Any) -> float | None:
  """A float from a record field read back from JSON ("nan" and "inf" are stored as strings); else ``None``."""
  if value is None or isinstance(value, (list, dict)):
    return None
  try:
    return float(value)
  except (TypeError, ValueError):
    return None


def milliseconds(value: Any) -> float | None:
  """A record's seconds as milliseconds; ``None`` where the field is missing or not a number."""
  seconds = number(value)
  return None if seconds is None else 1e3 * seconds


def cell_key(seed: int, cell_id: str) -> jax.Array:
  """The PRNG key of a cell: ``fold_in(key(seed), crc32(cell id))``, the same whatever other cells run."""
  return jax.random.fold_in(jax.random.key(seed), zlib.crc32(cell_id.encode()) & 0x7FFFFFFF)


def check_subset(requested: Sequence[str], available: Sequence[str], what: str) -> None:
  """Raises a ``ValueError`` naming the entries of ``requested`` that are not in ``available``."""
  unknown = [name for name in requested if name not in available]
  if unknown:
    raise ValueError(f"unknown {what} {unknown}; expected a subset of {tuple(available)}.")


def environment() -> dict[str, Any]:
  """The software and hardware a result was measured on."""
  device = jax.devices()[0]
  return {
    **versions(),
    "platform": device.platform,
    "device_kind": device.device_kind,
    "device_count": jax.device_count(),
    "cpu_count": os.cpu_count(),
    "python": platform.python_version(),
    "machine": platform.machine(),
    "x64": bool(jax.config.jax_enable_x64),
    # Other processes compete for the CPU: timings taken under load are noisier (and slower).
    "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
  }


VERSIONED = ("jax", "jaxlib", "distrax", "optax", "numpy", "sfe_jax")
"""The packages whose versions every record and report carries."""


def versions() -> dict[str, str | None]:
  """``{"<package>_version": version}`` for :data:`VERSIONED`, imported so that it is the version in use (``None``
  when a package is not importable)."""
  out = {}
  for name in VERSIONED:
    try:
      out[f"{name}_version"] = str(importlib.import_module(name).__version__)
    except Exception:  # noqa: BLE001 (missing, or broken: the version is unknown, the run goes on)
      out[f"{name}_version"] = None
  return out


def format_number(value: Any, digits: int = 4) -> str:
  """A compact human-readable number: 4 significant digits, scientific notation when very large or small."""
  if value is None:
    return "—"
  if isinstance(value, str):
    return value
  if isinstance(value, bool):
    return str(value)
  if isinstance(value, int):
    return str(value)
  value = float(value)
  if math.isnan(value):
    return "nan"
  if math.isinf(value):
    return "inf" if value > 0 else "-inf"
  if value == 0:
    return "0"
  if 1e-3 <= abs(value) < 1e5:
    return f"{value:.{digits}g}"
  return f"{value:.{digits - 1}e}"


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
  """A GitHub-flavoured Markdown table; cells are formatted with :func:`format_number`."""
  lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
  for row in rows:
    lines.append("| " + " | ".join(format_number(cell) for cell in row) + " |")
  return "\n".join(lines)


def environment_markdown(env: dict[str, Any]) -> str:
  return (
    f"jax {env['jax_version']} (jaxlib {env['jaxlib_version']}), distrax {env['distrax_version']}, "
    f"sfe_jax {env['sfe_jax_version']}; device: {env['platform']} / {env['device_kind']} "
    f"(x{env['device_count']}), {env['cpu_count']} CPU cores, Python {env['python']}; load average "
    f"{format_number(env.get('load_average_1min'))} when the run started."
  )


def plain(value: Any) -> Any:
  """JSON-safe: floats that are not finite become strings, numpy/jax scalars become Python numbers."""
  if isinstance(value, dict):
    return {k: plain(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [plain(v) for v in value]
  if hasattr(value, "item") and getattr(value, "shape", None) == ():
    value = value.item()
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)
  return value


def write_outputs(
  out_dir: str, name: str, *, markdown: str, records: Sequence[dict[str, Any]], meta: dict[str, Any]
) -> dict[str, str]:
  """Writes ``name.md``, ``name.csv`` (one line per record) and ``name.json`` (meta + records) into ``out_dir``.

  Returns:
    The paths written, by format.
  """
  os.makedirs(out_dir, exist_ok=True)
  paths = {fmt: os.path.join(out_dir, f"{name}.{fmt}") for fmt in ("md", "csv", "json")}
  with open(paths["md"], "w") as fh:
    fh.write(markdown.rstrip() + "\n")
  fields: list[str] = []
  for record in records:
    fields.extend(k for k in record if k not in fields)
  with open(paths["csv"], "w", newline="") as fh:
    writer = csv.DictWriter(fh, fieldnames=fields)
    writer.writeheader()
    for record in records:
      writer.writerow({k: plain(v) for k, v in record.items()})
  with open(paths["json"], "w") as fh:
    json.dump(plain({"meta": meta, "records": list(records)}), fh, indent=1)
    fh.write("\n")
  return paths


def pyplot(out_dir: str):
  """``matplotlib.pyplot`` on the non-interactive Agg backend, with ``out_dir`` created (bench extra)."""
  import matplotlib  # noqa: PLC0415 (optional dependency, in the bench extra)

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # noqa: PLC0415

  os.makedirs(out_dir, exist_ok=True)
  return plt


def save_figure(fig, out_dir: str, name: str, keep: bool = True, dpi: int = 100) -> list[str]:
  """Writes ``fig`` to ``out_dir/name`` if ``keep`` and closes it; returns the paths written (0 or 1)."""
  import matplotlib.pyplot as plt  # noqa: PLC0415

  paths = []
  if keep:
    paths.append(os.path.join(out_dir, name))
    fig.savefig(paths[0], dpi=dpi, bbox_inches="tight")
  plt.close(fig)
  return paths
