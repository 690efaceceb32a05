"""Gateway overhead of this source tree against a base tree (e.g. main), interleaved in one run.

On a shared, noisy machine two separate benchmark runs differ by far more than a few percent, so both
gateways run side by side against the same zero-delay simulated cluster and every round measures
direct, base and this tree back to back. Two figures per cell: the throughput ratio this/base, and the
gateway processes' own CPU time per request (user + system, from /proc), which contention from other
processes on the machine barely affects.

    git archive main src | tar -x -C /tmp/base          # any tree with a bauxite package under src/
    python benchmarks/overhead_ab.py --base-src /tmp/base/src [--seconds 2] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from overhead import CONCURRENCY, Target, free_port, measure, start, wait_ready, write_configs


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` and its children so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


async def run(targets: list[Target], pids: dict[str, int], seconds: float, rounds: int) -> None:
    columns = [("mode", -7), ("conc", 5), ("direct/s", 10), ("base/s", 9), ("this/s", 9), ("this/base", 10)]
    columns += [
        ("base +p50", 10),
        ("this +p50", 10),
        ("base us/req", 12),
        ("this us/req", 12),
        ("cpu ratio", 10),
    ]
    print("".join(f"{name:<{-w}}" if w < 0 else f"{name:>{w}}" for name, w in columns))
    for stream in (False, True):
        for concurrency in CONCURRENCY:
            ratios: list[float] = []
            runs: dict[str, list[dict[str, float]]] = {t.name: [] for t in targets}
            cpu: dict[str, list[float]] = {"base": [], "this": []}
            for _ in range(rounds):
                for target in targets:
                    before = cpu_s(pids[target.name]) if target.name in pids else 0.0
                    result = await measure(target, stream, concurrency, seconds)
                    if target.name in pids:
                        spent = cpu_s(pids[target.name]) - before
                        cpu[target.name].append(spent / (result["n"] + min(concurrency, 8)) * 1e6)
                    runs[target.name].append(result)
                ratios.append(runs["this"][-1]["rps"] / runs["base"][-1]["rps"])
            cpu_med = {name: statistics.median(values) for name, values in cpu.items()}
            med = {n: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for n, rs in runs.items()}
            added = {n: med[n]["p50_ms"] - med["direct"]["p50_ms"] for n in ("base", "this")}
            print(
                f"{'stream' if stream else 'plain':<7}{concurrency:>5}{med['direct']['rps']:>10.0f}"
                f"{med['base']['rps']:>9.0f}{med['this']['rps']:>9.0f}{statistics.median(ratios):>9.2f}x"
                f"{added['base']:>10.2f}{added['this']:>10.2f}{cpu_med['base']:>12.0f}{cpu_med['this']:>12.0f}"
                f"{cpu_med['this'] / cpu_med['base']:>9.2f}x"
            )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base-src", required=True, type=Path, help="src/ directory of the base tree")
    parser.add_argument("--this-src", type=Path, help="src/ directory to compare (default: this checkout)")
    parser.add_argument("--seconds", type=float, default=2.0, help="per cell, target and round (default 2)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds; medians are reported (default 5)")
    args = parser.parse_args()
    if not (args.base_src / "bauxite" / "cli.py").is_file():
        parser.error(f"{args.base_src} has no bauxite package")
    procs: list[subprocess.Popen[bytes]] = []
    tmp = Path(tempfile.mkdtemp(prefix="bauxite-ab-"))
    try:
        fleet_ports = [free_port(), free_port()]
        config = write_configs(tmp, fleet_ports)["bauxite"]
        cli = [sys.executable, "-m", "bauxite.cli"]
        procs.append(start([*cli, "fleet", "--config", str(config), "--zero-delay"]))
        targets = [Target("direct", f"http://127.0.0.1:{fleet_ports[0]}/v1")]
        waits = [f"http://127.0.0.1:{fleet_ports[0]}/health"]
        this_env = {"PYTHONPATH": str(args.this_src.resolve())} if args.this_src else {}
        pids: dict[str, int] = {}
        for name, env in (("base", {"PYTHONPATH": str(args.base_src.resolve())}), ("this", this_env)):
            port = free_port()
            serve = [*cli, "serve", "--config", str(config), "--port", str(port), "--log-level", "WARNING"]
            procs.append(start(serve, env=env, log=tmp / f"{name}.log"))
            pids[name] = procs[-1].pid
            targets.append(Target(name, f"http://127.0.0.1:{port}/v1"))
            waits.append(f"http://127.0.0.1:{port}/healthz")
        for url in waits:
            asyncio.run(wait_ready(url, 120))
        print(
            f"{os.cpu_count()} CPUs; median of {args.rounds} interleaved rounds x {args.seconds:g} s per cell"
        )
        asyncio.run(run(targets, pids, args.seconds, args.rounds))
    finally:
        for proc in procs:
            try:
                os.killpg(proc.pid, signal.SIGINT)
                proc.wait(timeout=15)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
