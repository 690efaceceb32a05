"""The ``bauxite`` command: serve, check-config, fleet, demo, and each capability's own subcommands."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from . import __version__
from .settings import ConfigError, Settings, load_settings


def port_number(text: str) -> int:
    """argparse type for a TCP port: 1-65535, or 0 for any free port (the range ``server.port`` accepts)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is outside 1-65535 (0 picks any free port)")
    return port


def workers_number(text: str) -> int:
    """argparse type for ``--workers``: 1 to ``MAX_WORKERS``, or ``auto``."""
    from .workers.supervisor import worker_count

    try:
        return worker_count(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--workers must be ")) from None


def _serve_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", required=True, metavar="FILE", help="enterprise.yaml to load")
    parser.add_argument("--host", help="listen address (default: server.host, 127.0.0.1)")
    parser.add_argument(
        "--port",
        type=port_number,
        help="listen port, 1-65535 or 0 for any free one (default: server.port, 8080)",
    )
    parser.add_argument(
        "--workers",
        default=1,
        type=workers_number,
        metavar="N",
        help="gateway processes sharing the port (SO_REUSEPORT) under one supervisor, plus one process "
        "serving /metrics and reports for all of them; 1-256, or 'auto' = one per CPU (default 1: a single "
        "process)",
    )
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="default INFO"
    )


def _load(path: str) -> Settings | None:
    try:
        return load_settings(path)
    except ConfigError as exc:
        print(f"configuration error:\n{exc}", file=sys.stderr)
        return None


def _checked(path: str, heading: str) -> Settings | None:
    """Load and check a config exactly as both ``serve`` and ``check-config`` must (they agree on what is
    valid): notes become warnings; problems are printed under ``heading`` and give None."""
    from .checks import check_settings

    settings = _load(path)
    if settings is None:
        return None
    problems, notes = check_settings(settings, path)
    for note in notes:
        print(f"warning: {note}", file=sys.stderr)
    if problems:
        print(heading, file=sys.stderr)
        for problem in problems:
            print(problem, file=sys.stderr)
        return None
    return settings


def cmd_serve(args: argparse.Namespace) -> int:
    from .server import serve
    from .workers.supervisor import serve_workers, usable_cpus

    workers: int = args.workers
    cpus = usable_cpus()
    if workers > cpus:
        print(
            f"warning: --workers {workers} is more than the {cpus} CPUs this process may use; the extra "
            "workers only compete for them (--workers auto starts one per CPU)",
            file=sys.stderr,
        )
    settings = _checked(args.config, "refusing to start: configuration error:")
    if settings is None:
        return 2
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if workers == 1:
        return _refusing_unsafe(lambda: serve(settings, host=args.host, port=args.port))
    host = args.host or settings.server.host
    port = args.port if args.port is not None else settings.server.port
    return _refusing_unsafe(lambda: serve_workers(settings, host, port, workers))


def _refusing_unsafe(start: Callable[[], int]) -> int:
    """Start-up refusals that depend on the environment, not the file, are reported without a traceback."""
    from .telemetry.config import TelemetryConfigError

    try:
        return start()
    except TelemetryConfigError as exc:
        print(f"refusing to start: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # typically the port is taken
        print(f"cannot start: {exc}", file=sys.stderr)
        return 1


def cmd_check_config(args: argparse.Namespace) -> int:
    from .checks import simulation_file_message

    message = simulation_file_message(args.file)
    if message is not None:
        print(message, file=sys.stderr)
        return 2
    settings = _checked(args.file, "configuration error:")
    if settings is None:
        return 2
    print(f"{args.file}: OK ({len(settings.clusters)} clusters, {len(settings.model_names())} models)")
    return 0


def cmd_fleet(args: argparse.Namespace) -> int:
    from .demo import run_fleet

    settings = _load(args.config)
    if settings is None:
        return 2
    if settings.fleet is None or not settings.fleet.clusters:
        print(
            f"{args.config}: fleet: no simulated clusters configured (add a 'fleet.clusters' list)",
            file=sys.stderr,
        )
        return 2
    fleet = settings.fleet
    return _refusing_unsafe(lambda: run_fleet(fleet, zero_delay=args.zero_delay))


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    settings = _load(args.config) if args.config else None
    if args.config and settings is None:
        return 2
    if settings is not None and (settings.fleet is None or not settings.fleet.clusters):
        # The demo is offline by promise: without simulated clusters it would call the file's real hosts.
        print(
            f"{args.config}: the demo needs a 'fleet:' section with simulated clusters (`bauxite init` "
            "writes demo.yaml, which has one); to run this file against its real clusters use "
            f"`bauxite serve --config {args.config}`",
            file=sys.stderr,
        )
        return 2
    return _refusing_unsafe(lambda: run_demo(port=args.port, settings=settings))


def cmd_init(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .starter import write_starter

    directory = Path(args.directory)
    try:
        written = write_starter(directory, force=args.force)
    except OSError as exc:  # FileExistsError included: nothing was written
        print(f"bauxite init: {exc}", file=sys.stderr)
        return 2
    for path in written:
        print(f"wrote {path}")
    config = directory / "enterprise.yaml"
    print(
        f"\nNext: edit {config} (clusters, keys, regions), then\n"
        f"  bauxite check-config {config}\n  bauxite serve --config {config}\n"
        f"or try everything offline first:  bauxite demo --config {directory / 'demo.yaml'}"
    )
    return 0


Register = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]


def _plugin_commands() -> list[Register]:
    """Subcommands owned by capability packages, each registering its own parser."""
    from .energy.cli import add_parser as estimate
    from .intensity.cli import add_parser as intensity
    from .simulate.cli import add_parser as simulate

    return [estimate, intensity, simulate]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bauxite",
        description="OpenAI-compatible LLM gateway that measures the energy and carbon of every request "
        "and routes to the greenest cluster that meets its latency requirement.",
    )
    parser.add_argument("--version", action="version", version=f"bauxite {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the gateway", description="Run the gateway from a config file.")
    _serve_args(serve)
    serve.set_defaults(func=cmd_serve)

    check = sub.add_parser(
        "check-config",
        help="validate a config file without starting",
        description="Validate FILE; exit 0 when valid, else print file, key path and expectation and exit 2.",
    )
    check.add_argument("file", metavar="FILE")
    check.set_defaults(func=cmd_check_config)

    fleet = sub.add_parser(
        "fleet",
        help="run simulated vLLM clusters",
        description="Serve the simulated clusters of the config's 'fleet:' section on 127.0.0.1.",
    )
    fleet.add_argument("--config", "-c", required=True, metavar="FILE")
    fleet.add_argument("--zero-delay", action="store_true", help="answer at once (for benchmarks)")
    fleet.set_defaults(func=cmd_fleet)

    demo = sub.add_parser(
        "demo",
        help="three-region simulated fleet plus the gateway, offline",
        description="Start a simulated three-region fleet and the gateway in front of it on 127.0.0.1. "
        "No keys and no network needed. Ctrl-C stops everything.",
    )
    demo.add_argument(
        "--port", type=port_number, default=8080, help="gateway port, 0 for any free one (default 8080)"
    )
    demo.add_argument(
        "--config",
        metavar="FILE",
        help="use this config (it must have a 'fleet:' section) instead of the embedded demo",
    )
    demo.set_defaults(func=cmd_demo)

    init = sub.add_parser(
        "init",
        help="write starter config, examples and the Grafana dashboard into a folder",
        description="Copy the examples shipped in the package (enterprise.yaml, demo.yaml, simulate.yaml, "
        "Prometheus and Grafana files, the Grafana dashboard) into DIRECTORY. Refuses to overwrite.",
    )
    init.add_argument(
        "directory", nargs="?", default=".", metavar="DIRECTORY", help="default: current folder"
    )
    init.add_argument("--force", action="store_true", help="overwrite files that already exist")
    init.set_defaults(func=cmd_init)

    for register in _plugin_commands():
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from .console import silence_broken_pipe

    args = build_parser().parse_args(argv)
    try:
        result: int = args.func(args)
        sys.stdout.flush()  # a closed pipe shows up here at the latest, while we can still end quietly
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `bauxite … --json | head`: the reader left; not an error worth a traceback
        return silence_broken_pipe()
    return result


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
