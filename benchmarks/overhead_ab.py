"""Gateway overhead of this source tree against a base tree (e.g. main), interleaved in one run.

On a shared, noisy machine two separate benchmark runs differ by far more than a few percent, so both
gateways run side by side against the same zero-delay simulated cluster and every round measures
direct, base and this tree back to back. Two figures per cell: the throughput ratio this/base, and the
gateway processes' own CPU time per request (user + system, from /proc), which contention from other
processes on the machine barely affects.

    git archive main src | tar -x -C /tmp/base          # any tree with a bauxite package under src/
    .venv/bin/python benchmarks/overhead_ab.py --base-src /tmp/base/src [--seconds 2] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from overhead import (
    CONCURRENCY,
    WORKLOADS,
    Target,
    free_port,
    measure,
    start,
    stop_all,
    wait_ready,
    write_configs,
    write_script,
)


def run(targets: list[Target], tmp: Path, seconds: int, rounds: int) -> None:
    """Each cell: ``rounds`` interleaved runs of direct, base and this tree (wrk load, CPU from /proc)."""
    columns = [("workload", -12), ("conc", 5), ("direct/s", 10), ("base/s", 9), ("this/s", 9)]
    columns += [("this/base", 10), ("base +p50", 10), ("this +p50", 10), ("base us/req", 12)]
    columns += [("this us/req", 12), ("cpu ratio", 10)]
    print("".join(f"{name:<{-w}}" if w < 0 else f"{name:>{w}}" for name, w in columns))
    for work in WORKLOADS:
        scripts = {t.name: write_script(tmp, t, work) for t in targets}
        for concurrency in CONCURRENCY:
            runs: dict[str, list[dict[str, float]]] = {t.name: [] for t in targets}
            ratios: list[float] = []
            for _ in range(rounds):
                for target in targets:
                    runs[target.name].append(
                        measure(target, work, scripts[target.name], concurrency, seconds)
                    )
                ratios.append(runs["this"][-1]["rps"] / runs["base"][-1]["rps"])
            med = {n: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for n, rs in runs.items()}
            added = {n: med[n]["p50_ms"] - med["direct"]["p50_ms"] for n in ("base", "this")}
            print(
                f"{work.name:<12}{concurrency:>5}{med['direct']['rps']:>10.0f}"
                f"{med['base']['rps']:>9.0f}{med['this']['rps']:>9.0f}{statistics.median(ratios):>9.2f}x"
                f"{added['base']:>10.2f}{added['this']:>10.2f}{med['base']['cpu_us']:>12.0f}"
                f"{med['this']['cpu_us']:>12.0f}{med['this']['cpu_us'] / med['base']['cpu_us']:>9.2f}x"
            )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base-src", required=True, type=Path, help="src/ directory of the base tree")
    parser.add_argument("--this-src", type=Path, help="src/ directory to compare (default: this checkout)")
    parser.add_argument(
        "--seconds", type=int, default=2, help="per cell, target and round, whole s (default 2)"
    )
    parser.add_argument("--rounds", type=int, default=5, help="rounds; medians are reported (default 5)")
    args = parser.parse_args()
    if not (args.base_src / "bauxite" / "cli.py").is_file():
        parser.error(f"{args.base_src} has no bauxite package")
    if shutil.which("wrk") is None:
        parser.error("wrk is needed as the load generator: apt-get install wrk")
    procs: list[subprocess.Popen[bytes]] = []
    tmp = Path(tempfile.mkdtemp(prefix="bauxite-ab-"))
    try:
        fleet_ports = [free_port(), free_port()]
        config = write_configs(tmp, fleet_ports)["bauxite"]
        cli = [sys.executable, "-m", "bauxite.cli"]
        fleet = start([*cli, "fleet", "--config", str(config), "--zero-delay"])
        procs.append(fleet)
        upstream = f"http://127.0.0.1:{fleet_ports[0]}"
        targets = [Target("direct", upstream, fleet)]
        waits: list[tuple[str, subprocess.Popen[bytes], Path | None]] = [(f"{upstream}/health", fleet, None)]
        this_env = {"PYTHONPATH": str(args.this_src.resolve())} if args.this_src else {}
        for name, env in (("base", {"PYTHONPATH": str(args.base_src.resolve())}), ("this", this_env)):
            port = free_port()
            serve = [*cli, "serve", "--config", str(config), "--port", str(port), "--log-level", "WARNING"]
            procs.append(start(serve, env=env, log=tmp / f"{name}.log"))
            targets.append(Target(name, f"http://127.0.0.1:{port}", procs[-1]))
            waits.append((f"http://127.0.0.1:{port}/healthz", procs[-1], tmp / f"{name}.log"))
        for url, proc, log in waits:
            wait_ready(url, 120, proc, log)
        print(
            f"{os.cpu_count()} CPUs; median of {args.rounds} interleaved rounds x {args.seconds} s per cell"
        )
        run(targets, tmp, args.seconds, args.rounds)
    finally:
        stop_all(procs)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
