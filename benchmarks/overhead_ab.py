"""Gateway overhead of this source tree against a base tree (e.g. main), interleaved in one run.

On a shared, noisy machine two separate benchmark runs differ by far more than a few percent, so both
gateways run side by side against the same zero-delay simulated cluster and every round measures
direct, base and this tree back to back; the ratio this/base per cell is the figure to read.

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


async def run(targets: list[Target], seconds: float, rounds: int) -> None:
    print(f"{'mode':<7}{'conc':>5}{'direct/s':>10}{'base/s':>9}{'this/s':>9}{'this/base':>10}"
          f"{'base +p50':>10}{'this +p50':>10}")  # fmt: skip
    for stream in (False, True):
        for concurrency in CONCURRENCY:
            ratios: list[float] = []
            runs: dict[str, list[dict[str, float]]] = {t.name: [] for t in targets}
            for _ in range(rounds):
                for target in targets:
                    runs[target.name].append(await measure(target, stream, concurrency, seconds))
                ratios.append(runs["this"][-1]["rps"] / runs["base"][-1]["rps"])
            med = {n: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for n, rs in runs.items()}
            added = {n: med[n]["p50_ms"] - med["direct"]["p50_ms"] for n in ("base", "this")}
            print(
                f"{'stream' if stream else 'plain':<7}{concurrency:>5}{med['direct']['rps']:>10.0f}"
                f"{med['base']['rps']:>9.0f}{med['this']['rps']:>9.0f}{statistics.median(ratios):>9.2f}x"
                f"{added['base']:>10.2f}{added['this']:>10.2f}"
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
        for name, env in (("base", {"PYTHONPATH": str(args.base_src.resolve())}), ("this", this_env)):
            port = free_port()
            serve = [*cli, "serve", "--config", str(config), "--port", str(port), "--log-level", "WARNING"]
            procs.append(start(serve, env=env, log=tmp / f"{name}.log"))
            targets.append(Target(name, f"http://127.0.0.1:{port}/v1"))
            waits.append(f"http://127.0.0.1:{port}/healthz")
        for url in waits:
            asyncio.run(wait_ready(url, 120))
        print(
            f"{os.cpu_count()} CPUs; median of {args.rounds} interleaved rounds x {args.seconds:g} s per cell"
        )
        asyncio.run(run(targets, args.seconds, args.rounds))
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
