"""The suite protocol and the registry of suites.

A *suite* is one benchmark: a package ``benchmarks/<module>/`` split into

* ``problems``: what is measured (cost functions, models, environments, closed forms), and the suite's
  configuration (a :class:`SuiteConfig`) with its ``PRESETS``;
* ``measure``: the cells (:data:`Cell`), each a function returning its records;
* ``render``: the Markdown report and the plots, built from records alone (so a resumed run reports every cell);

and a package ``__init__`` that satisfies :class:`Suite` (a module can satisfy a Protocol). The command line
(``python -m benchmarks``) lists and runs the suites of :data:`REGISTRY`, in its order; a new suite is one entry
there plus its package. :func:`run` is what every suite's ``run`` does: check the configuration, run (or resume)
the cells through the result store, write the reports.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

import jax

from benchmarks import report

Record = dict[str, Any]
Cell = tuple[str, Callable[[], list[Record]]]
"""``(cell id, measure)``: ``measure()`` computes the cell and returns its records."""
Log = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class SuiteConfig:
  """The base of every suite's configuration: a frozen dataclass whose fields are every setting of a run.

  Every field takes part in the cells' identity (the result store hashes the whole configuration), so two runs
  share results only when every setting agrees.

  Attributes:
    seed: the PRNG seed; a cell's key is :meth:`key` of its id, the same whatever other cells run.
  """

  seed: int = dataclasses.field(default=0, kw_only=True)

  def key(self, cell_id: str) -> jax.Array:
    """The PRNG key of the cell ``cell_id``."""
    return report.cell_key(self.seed, cell_id)

  def check(self) -> None:
    """Raises a ``ValueError`` naming the first setting that is out of range (suites extend it)."""
    if not isinstance(self.seed, int) or isinstance(self.seed, bool):
      raise ValueError(f"seed must be an integer; got {self.seed!r}.")

  def require_subset(self, field: str, available: Sequence[str]) -> None:
    """Checks that the tuple ``field`` only names entries of ``available``."""
    report.check_subset(getattr(self, field), available, field.replace("_", " "))

  def require_at_least(self, minimum: int, *fields: str) -> None:
    """Checks that every integer ``field`` is at least ``minimum``."""
    for field in fields:
      value = getattr(self, field)
      if value < minimum:
        raise ValueError(f"{field} must be at least {minimum}; got {value}.")

  def require_multiple(self, field: str, of: str) -> None:
    """Checks that ``field`` is a positive multiple of ``of``."""
    value, unit = getattr(self, field), getattr(self, of)
    if value < 1 or unit < 1 or value % unit:
      raise ValueError(f"{field} ({value}) must be a positive multiple of {of} ({unit}).")


ConfigT = TypeVar("ConfigT", bound=SuiteConfig)


@dataclasses.dataclass(frozen=True)
class Option:
  """A suite-specific command-line option that sets one configuration field (e.g. the VAE's ``--data``)."""

  flag: str
  field: str
  help: str
  metavar: str = "VALUE"


class Suite(Protocol):
  """What a suite module provides (see the module docstring for the layout)."""

  SUITE: str
  """The suite's name: its command-line name and the stem of its files (``<SUITE>.jsonl``, ``.md``, ...)."""
  SUMMARY: str
  """What it measures, for ``python -m benchmarks --help``."""
  PRESETS: Mapping[str, SuiteConfig]
  """``"quick"`` (the default; ``make bench``) and ``"full"`` (``make bench-full``) configurations."""
  OPTIONS: tuple[Option, ...]
  """Extra command-line options."""

  def cells(self, config: Any) -> list[Cell]: ...

  def to_markdown(self, records: list[Record], config: Any, env: dict[str, Any]) -> str: ...

  def plot(self, records: list[Record], config: Any, out_dir: str) -> list[str]: ...

  def run(self, config: Any, out_dir: str | None = None, log: Log = print) -> dict[str, Any]: ...


REGISTRY: dict[str, str] = {
  "variance": "benchmarks.gaussian",
  "throughput": "benchmarks.throughput",
  "bernoulli": "benchmarks.bernoulli",
  "logistic": "benchmarks.logistic",
  "vae": "benchmarks.vae",
  "rl": "benchmarks.rl",
  "scale": "benchmarks.scale",
  "peers": "benchmarks.peers",
}
"""Suite name -> module, in the order ``python -m benchmarks all`` runs them."""


def load(name: str) -> Suite:
  """The suite module registered as ``name``."""
  if name not in REGISTRY:
    raise ValueError(f"unknown suite {name!r}; expected one of {tuple(REGISTRY)}.")
  module: Any = importlib.import_module(REGISTRY[name])
  return module


def run(
  suite: str,
  config: SuiteConfig,
  cells: Callable[[Any], list[Cell]],
  to_markdown: Callable[[list[Record], Any, dict[str, Any]], str],
  plot: Callable[[list[Record], Any, str], list[str]] | None,
  out_dir: str | None,
  log: Log = print,
  meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
  """Checks ``config``, runs (or resumes) the suite's cells through the store and writes its reports."""
  from benchmarks import store  # noqa: PLC0415 (the store imports report, which this module imports too)

  config.check()
  return store.run_suite(suite, config, cells(config), to_markdown, plot, out_dir, log, meta=meta)


K = TypeVar("K", bound=Hashable)


def index(
  records: Iterable[Record], suite: str, key: Callable[[Record], K], kind: str | None = None
) -> dict[K, Record]:
  """The records of ``suite`` (of ``kind`` when given) by ``key(record)``; a later record replaces an earlier."""
  out: dict[K, Record] = {}
  for r in records:
    if r.get("suite", suite) != suite or (kind is not None and r.get("kind") != kind):
      continue
    out[key(r)] = r
  return out
