"""``bauxite simulate --config FILE [--json] [--plot DIR]``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..intensity.traces import TraceError
from .config import SimConfigError, load_sim_config
from .engine import simulate
from .report import table


def add_parser(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Register the subcommand on the main CLI's ``add_subparsers()`` object."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "simulate",
        help="replay a workload over hourly grid-intensity traces and compare routing policies",
        description="Compare routing policies (latency, round_robin, low_carbon, balanced, oracle) on a "
        "simulated fleet over hourly grid-intensity traces. Config format: docs/routing.md.",
    )
    parser.add_argument("--config", required=True, type=Path, help="simulation YAML file")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--plot", type=Path, metavar="DIR", help="write PNG charts into DIR")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        config = load_sim_config(args.config)
        result = simulate(config)
    except (SimConfigError, TraceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result.as_json(), indent=2))
    else:
        print(table(result))
    if args.plot is not None:
        try:
            from .plot import write_plots

            paths = write_plots(result, args.plot)
        except ImportError:
            print("error: --plot needs matplotlib (pip install 'bauxite[plot]')", file=sys.stderr)
            return 2
        for path in paths:
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
