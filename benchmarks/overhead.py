"""Gateway overhead, side by side in one run on the same zero-delay upstream.

Targets: direct calls to the simulated vLLM cluster, Bauxite (green routing off and on), and LiteLLM's
proxy (``litellm[proxy]==1.108.6`` in a separate venv, started offline with one worker). For each of
non-streaming and streaming at concurrency 1, 8 and 32 it prints requests/s and the p50/p99 latency
added over direct calls, plus throughput ratios. All servers listen on 127.0.0.1 only.

    python benchmarks/overhead.py [--seconds 2] [--rounds 3] [--no-litellm] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml

ROOT = Path(__file__).resolve().parent.parent
BENCH_VENV = ROOT / ".bench-venv"
LITELLM_PIN = "litellm[proxy]==1.108.6"
MODEL = "tiny-8b"
STREAM_TOKENS = 16
CONCURRENCY = (1, 8, 32)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Target:
    name: str
    url: str  # base URL ending in /v1
    key: str = "bench"


def write_configs(tmp: Path, fleet_ports: list[int]) -> dict[str, Path]:
    clusters = [
        {"name": f"sim-{i}", "region": region, "url": f"http://127.0.0.1:{port}/v1", "models": [MODEL]}
        for i, (port, region) in enumerate(zip(fleet_ports, ("us-east-1", "us-west-2"), strict=True))
    ]
    fleet = {
        "time_scale": 0.0,
        "clusters": [
            {"name": f"sim-{i}", "port": port, "models": [MODEL], "default_output_tokens": STREAM_TOKENS}
            for i, port in enumerate(fleet_ports)
        ],
    }
    base: dict[str, Any] = {"auth": {"allow_anonymous": True}, "clusters": clusters, "fleet": fleet}
    paths = {}
    for name, green in (("bauxite", False), ("bauxite-green", True)):
        doc = dict(base, enterprise={"green_routing": {"enabled": green, "priority": "low_carbon"}})
        paths[name] = tmp / f"{name}.yaml"
        paths[name].write_text(yaml.safe_dump(doc))
    return paths


def start(
    cmd: list[str], env: dict[str, str] | None = None, log: Path | None = None
) -> subprocess.Popen[bytes]:
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 - lives as long as the process
    return subprocess.Popen(
        cmd, env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
    )


async def wait_ready(url: str, timeout_s: float, headers: dict[str, str] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(url, headers=headers) as resp:
                    if resp.status < 500:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.25)
    raise RuntimeError(f"{url} did not come up within {timeout_s:.0f}s")


def ensure_litellm() -> Path | None:
    exe = BENCH_VENV / "bin" / "litellm"
    if exe.exists():
        return exe
    print(f"setting up {BENCH_VENV.name} with {LITELLM_PIN} (one time)…", file=sys.stderr)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(BENCH_VENV)], check=True)
        subprocess.run([str(BENCH_VENV / "bin" / "pip"), "install", "-q", LITELLM_PIN], check=True)
    except (subprocess.CalledProcessError, OSError) as exc:
        print(f"LiteLLM unavailable ({exc}); its column is left out", file=sys.stderr)
        shutil.rmtree(BENCH_VENV, ignore_errors=True)
        return None
    return exe


def litellm_config(tmp: Path, upstream_port: int) -> Path:
    doc = {
        "model_list": [
            {
                "model_name": MODEL,
                "litellm_params": {
                    "model": f"openai/{MODEL}",
                    "api_base": f"http://127.0.0.1:{upstream_port}/v1",
                    "api_key": "none",
                },
            }
        ]
    }
    path = tmp / "litellm.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


async def one_request(session: aiohttp.ClientSession, target: Target, stream: bool) -> float:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": STREAM_TOKENS}
    if stream:
        body["stream"] = True
    started = time.perf_counter()
    async with session.post(
        target.url + "/chat/completions",
        data=orjson.dumps(body),
        headers={"Authorization": f"Bearer {target.key}", "Content-Type": "application/json"},
    ) as resp:
        if resp.status != 200:
            raise RuntimeError(f"{target.name}: HTTP {resp.status}: {(await resp.read())[:200]!r}")
        async for _ in resp.content.iter_any():
            pass
    return time.perf_counter() - started


async def measure(target: Target, stream: bool, concurrency: int, seconds: float) -> dict[str, float]:
    latencies: list[float] = []
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(min(concurrency, 8)):  # warm the connection pool and the server
            await one_request(session, target, stream)
        stop_at = time.perf_counter() + seconds

        async def worker() -> None:
            while time.perf_counter() < stop_at:
                latencies.append(await one_request(session, target, stream))

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        "n": float(len(latencies)),
    }


def print_table(results: dict[str, dict[str, dict[str, float]]], names: list[str]) -> None:
    print(
        f"\n{'mode':<10}{'conc':>5}  {'target':<14}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'+p50 ms':>9}{'+p99 ms':>9}{'vs litellm':>11}{'vs bauxite':>11}"
    )
    for key, row in results.items():
        mode, conc = key.split("@")
        direct = row["direct"]
        for name in names:
            cell = row.get(name)
            if cell is None:
                continue
            added50 = cell["p50_ms"] - direct["p50_ms"]
            added99 = cell["p99_ms"] - direct["p99_ms"]
            vs_lite = cell["rps"] / row["litellm"]["rps"] if "litellm" in row else float("nan")
            vs_baux = cell["rps"] / row["bauxite"]["rps"]
            print(
                f"{mode:<10}{conc:>5}  {name:<14}{cell['rps']:>9.0f}"
                f"{cell['p50_ms']:>9.2f}{cell['p99_ms']:>9.2f}"
                f"{added50:>9.2f}{added99:>9.2f}{vs_lite:>10.1f}x{vs_baux:>10.2f}x"
            )


async def run_all(
    targets: list[Target], seconds: float, rounds: int
) -> dict[str, dict[str, dict[str, float]]]:
    """Each cell is measured ``rounds`` times, targets interleaved within a round so machine noise hits all
    of them alike; the reported figures are the per-cell medians over rounds."""
    results: dict[str, dict[str, dict[str, float]]] = {}
    for stream in (False, True):
        for concurrency in CONCURRENCY:
            key = f"{'stream' if stream else 'plain'}@{concurrency}"
            samples: dict[str, list[dict[str, float]]] = {t.name: [] for t in targets}
            for _ in range(rounds):
                for target in targets:
                    samples[target.name].append(await measure(target, stream, concurrency, seconds))
            results[key] = {
                name: {field: statistics.median(s[field] for s in runs) for field in runs[0]}
                for name, runs in samples.items()
            }
    return results


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--seconds", type=float, default=2.0, help="measuring time per cell and round (default 2)"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds per cell; medians are reported (default 3)"
    )
    parser.add_argument("--no-litellm", action="store_true", help="leave LiteLLM out")
    parser.add_argument("--json", action="store_true", help="also print the raw results as JSON")
    args = parser.parse_args()

    procs: list[subprocess.Popen[bytes]] = []
    tmp = Path(tempfile.mkdtemp(prefix="bauxite-bench-"))
    try:
        fleet_ports = [free_port(), free_port()]
        configs = write_configs(tmp, fleet_ports)
        bauxite = [sys.executable, "-m", "bauxite.cli"]
        procs.append(start([*bauxite, "fleet", "--config", str(configs["bauxite"]), "--zero-delay"]))
        targets = [Target("direct", f"http://127.0.0.1:{fleet_ports[0]}/v1")]
        waits = [f"http://127.0.0.1:{fleet_ports[0]}/health"]
        for name in ("bauxite", "bauxite-green"):
            port = free_port()
            procs.append(
                start(
                    [
                        *bauxite,
                        "serve",
                        "--config",
                        str(configs[name]),
                        "--port",
                        str(port),
                        "--log-level",
                        "WARNING",
                    ],
                    log=tmp / f"{name}.log",
                )
            )
            targets.append(Target(name, f"http://127.0.0.1:{port}/v1"))
            waits.append(f"http://127.0.0.1:{port}/healthz")
        exe = None if args.no_litellm else ensure_litellm()
        if exe is not None:
            port, key = free_port(), "sk-" + secrets.token_hex(24)
            env = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_MASTER_KEY": key}
            cmd = [
                str(exe),
                "--config",
                str(litellm_config(tmp, fleet_ports[0])),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--num_workers",
                "1",
            ]
            procs.append(start(cmd, env=env, log=tmp / "litellm.log"))
            targets.append(Target("litellm", f"http://127.0.0.1:{port}/v1", key))
            waits.append(f"http://127.0.0.1:{port}/health/liveliness")
        for url in waits:
            asyncio.run(wait_ready(url, 120))
        print(
            f"{os.cpu_count()} CPUs; median of {args.rounds} rounds x {args.seconds:.0f} s per cell; "
            f"zero-delay upstream, {STREAM_TOKENS} output tokens per request"
        )
        results = asyncio.run(run_all(targets, args.seconds, args.rounds))
        print_table(results, [t.name for t in targets])
        if args.json:
            print(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())
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
