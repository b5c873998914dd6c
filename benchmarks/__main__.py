"""Command line.

``python -m benchmarks {SUITE,all} [--quick|--full] [--out DIR] [--device cpu|gpu] [suite options]`` runs the
suites of :data:`benchmarks.suite.REGISTRY`; ``python -m benchmarks compare A B`` compares two result folders.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import textwrap
import time

HEADER = """\
Benchmarks of sfe_jax. Each suite shows a progress bar and stores every finished cell (one estimator on one
problem at one size) in <suite>.jsonl in --out at once, one line per cell with the configuration's hash, the
device, the versions and the git commit; a re-run with the same --out and the same preset resumes where an
interrupted one stopped (nothing finished is recomputed; delete the .jsonl to start over). The reports are
rebuilt from the JSON lines: <suite>.md (the summary), <suite>.csv (one line per measurement), <suite>.json
(configuration, environment and measurements) and <suite>.png (plots).

`python -m benchmarks compare A B` puts two result folders side by side (see its --help).
"""


def description() -> str:
  """The ``--help`` text: the header, then every registered suite's summary."""
  from benchmarks import suite as suite_lib  # noqa: PLC0415

  lines = [HEADER, "suites:"]
  for name in suite_lib.REGISTRY:
    summary = textwrap.fill(
      " ".join(suite_lib.load(name).SUMMARY.split()), width=110, initial_indent=" " * 14, subsequent_indent=" " * 14
    )
    lines.append(f"  {name:<11}" + summary[13:])
  lines.append(f"  {'all':<12}All {len(suite_lib.REGISTRY)}, in this order.")
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else list(argv)
  if argv[:1] == ["compare"]:
    from benchmarks import compare  # noqa: PLC0415

    return compare.main(argv[1:])

  from benchmarks import suite as suite_lib  # noqa: PLC0415

  parser = argparse.ArgumentParser(
    prog="python -m benchmarks", description=description(), formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument("suite", choices=(*suite_lib.REGISTRY, "all"), help="which benchmark to run")
  mode = parser.add_mutually_exclusive_group()
  mode.add_argument(
    "--quick",
    dest="mode",
    action="store_const",
    const="quick",
    help="the default: every suite's quick preset (a few minutes at most per suite on 2 CPU cores)",
  )
  mode.add_argument(
    "--full",
    dest="mode",
    action="store_const",
    const="full",
    help="every suite's full preset: more repeats, larger sizes, tighter intervals; several times slower",
  )
  parser.add_argument(
    "--out",
    default="bench-results",
    metavar="DIR",
    help="folder for the results and reports (created if missing; default: %(default)s)",
  )
  parser.add_argument(
    "--device",
    choices=("cpu", "gpu"),
    default=None,
    help="run on the CPU or on the GPU (needs a CUDA build of jaxlib, e.g. "
    "pip install 'jax[cuda12]'); default: JAX's default device",
  )
  owners: dict[str, list[tuple[str, suite_lib.Option]]] = {}
  for name in suite_lib.REGISTRY:
    for option in suite_lib.load(name).OPTIONS:
      owners.setdefault(option.flag, []).append((name, option))
  for flag, users in owners.items():
    names = ", ".join(name for name, _ in users)
    parser.add_argument(flag, default=None, metavar=users[0][1].metavar, help=f"({names}) {users[0][1].help}")
  args = parser.parse_args(argv)
  mode = args.mode or "quick"
  select_device(args.device)

  suites = tuple(suite_lib.REGISTRY) if args.suite == "all" else (args.suite,)
  start = time.perf_counter()
  outside = 0
  for name in suites:
    print(f"[{name}] {mode} mode, writing into {os.path.abspath(args.out)}", flush=True)
    log = lambda line: print(line, flush=True)  # noqa: E731
    module = suite_lib.load(name)
    config = module.PRESETS[mode]
    settings = {o.field: getattr(args, o.flag.lstrip("-").replace("-", "_")) for o in module.OPTIONS}
    settings = {field: value for field, value in settings.items() if value is not None}
    if settings:
      config = dataclasses.replace(config, **settings)
    result = module.run(config, args.out, log=log)
    outside += result["meta"].get("outside", 0)
    print(result["markdown"], flush=True)
    print(f"[{name}] done in {result['meta']['seconds']:.1f} s: " + ", ".join(result["paths"].values()), flush=True)
  print(f"total {time.perf_counter() - start:.1f} s", flush=True)
  if outside:
    print(f"WARNING: {outside} variance measurements are outside their intervals (see the reports).", flush=True)
  return 0


def select_device(device: str | None) -> None:
  """Makes ``device`` JAX's default device; a clear error if there is none of that kind."""
  if device is None:
    return
  import jax  # noqa: PLC0415

  platform = {"cpu": "cpu", "gpu": "gpu"}[device]
  try:
    devices = jax.devices(platform)
  except RuntimeError as e:
    raise SystemExit(
      f"--device {device}: JAX has no {device.upper()} backend here ({e}). For a GPU install a CUDA build of "
      "jaxlib, for example pip install 'jax[cuda12]'."
    ) from e
  jax.config.update("jax_default_device", devices[0])
  print(f"device: {devices[0]}", flush=True)


if __name__ == "__main__":
  sys.exit(main())
