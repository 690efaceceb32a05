"""``bauxite simulate --config FILE [--json] [--plot DIR]``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..console import interactive, progress
from ..intensity.traces import TraceError
from .bound import BoundError
from .config import SimConfigError, load_sim_config
from .engine import simulate
from .report import table


def add_parser(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Register the subcommand on the main CLI's ``add_subparsers()`` object."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "simulate",
        help="replay a workload over hourly grid-intensity traces and compare routing policies",
        description="Compare routing policies (latency, round_robin, low_carbon, balanced, and the greedy "
        "hindsight baseline) against a provable LP lower bound on carbon, on a simulated fleet over hourly "
        "grid-intensity traces. Config format: docs/routing.md.",
    )
    parser.add_argument(
        "--config", required=True, type=Path, help="simulation YAML file (example: examples/simulate.yaml)"
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object instead of a table (no progress bar)"
    )
    parser.add_argument(
        "--plot",
        type=Path,
        metavar="DIR",
        help="write PNG charts into DIR (created if missing; needs matplotlib)",
    )
    parser.set_defaults(func=run)


def plot_problem(directory: Path | None) -> str | None:
    """Why ``--plot DIR`` cannot work, found before a long simulation runs; None when it can."""
    if directory is None:
        return None
    if directory.exists() and not directory.is_dir():
        return f"--plot takes a directory, and {directory} is an existing file"
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return "--plot needs matplotlib: .venv/bin/pip install 'bauxite[plot]' (or pip install matplotlib)"
    return None


def run(args: argparse.Namespace) -> int:
    problem = plot_problem(args.plot)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        config = load_sim_config(args.config)
    except SimConfigError as exc:
        print(f"configuration error:\n{exc}", file=sys.stderr)
        return 2
    steps = (*config.policies, "oracle", "bound")
    try:
        with progress(steps, enabled=interactive() and not args.json) as advance:
            result = simulate(config, advance)
    except TraceError as exc:
        print(f"configuration error:\n{args.config}: {exc}", file=sys.stderr)
        return 2
    except BoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result.as_json(), indent=2))
    else:
        print(table(result))
    if args.plot is not None:
        from .plot import write_plots

        for path in write_plots(result, args.plot):
            print(f"wrote {path}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the subcommand on its own (``python -m bauxite.simulate.cli``)."""
    parser = argparse.ArgumentParser(prog="bauxite")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["simulate", *(argv if argv is not None else sys.argv[1:])])
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
