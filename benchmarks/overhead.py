"""Gateway overhead, side by side in one run on the same zero-delay upstream.

Targets, all on 127.0.0.1:
  direct         the simulated vLLM cluster itself (answers at once)
  floor          a bare aiohttp+uvloop pass-through (benchmarks/floor.py): the least any Python proxy costs
  bauxite        ``bauxite serve``, green routing off
  bauxite-green  ``bauxite serve``, green routing on
  litellm        LiteLLM's proxy (``litellm[proxy]==1.108.6`` in .bench-venv, offline, one worker)

Load comes from ``wrk`` (C, one thread, keep-alive), so the generator is not the bottleneck. Each cell
(workload x concurrency) is measured ``--rounds`` times; the target order rotates between rounds so slow
drift on a shared machine does not always hit the same target, and every target gets a warm-up run before
each measured run. Besides req/s and latency it reports the CPU time the target's processes spent per
request (user+system from /proc, every process in the target's session): on a noisy machine req/s moves
with the neighbours, CPU per request much less. ``xfloor`` is CPU per request over the floor's.

    .venv/bin/python benchmarks/overhead.py [--seconds 2] [--rounds 3] [--concurrency 1,8,32]
                                            [--workers 1] [--no-litellm] [--json]

More endpoints or targets: add a ``Workload`` to ``WORKLOADS`` (a path and a body; targets that do not
serve it are listed in ``Target.skips``) or a ``Target`` in ``start_targets``.
"""

from __future__ import annotations

import argparse
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
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml

ROOT = Path(__file__).resolve().parent.parent
BENCH_VENV = ROOT / ".bench-venv"
LITELLM_PIN = "litellm[proxy]==1.108.6"
MODEL = "tiny-8b"
STREAM_TOKENS = 16
CONCURRENCY = (1, 8, 32)
WARMUP_S = 1  # wrk takes whole seconds
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Workload:
    """One row kind: a POST of ``body`` to ``path`` under the target's ``/v1``."""

    name: str
    path: str
    body: dict[str, Any]


WORKLOADS: list[Workload] = [
    Workload(
        "chat",
        "/chat/completions",
        {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": STREAM_TOKENS},
    ),
    Workload(
        "chat-stream",
        "/chat/completions",
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": STREAM_TOKENS,
            "stream": True,
        },
    ),
    # The OpenAI Responses and Anthropic Messages APIs (the fleet speaks both in vLLM's wire format).
    Workload("responses", "/responses", {"model": MODEL, "input": "hi", "max_output_tokens": STREAM_TOKENS}),
    Workload(
        "responses-stream",
        "/responses",
        {"model": MODEL, "input": "hi", "max_output_tokens": STREAM_TOKENS, "stream": True},
    ),
    Workload(
        "messages",
        "/messages",
        {"model": MODEL, "max_tokens": STREAM_TOKENS, "messages": [{"role": "user", "content": "hi"}]},
    ),
    Workload(
        "messages-stream",
        "/messages",
        {
            "model": MODEL,
            "max_tokens": STREAM_TOKENS,
            "messages": [{"role": "user", "content": "hi"}],
            "stream": True,
        },
    ),
]


@dataclass
class Target:
    name: str
    base: str  # http://127.0.0.1:PORT (paths get /v1 prepended)
    proc: subprocess.Popen[bytes]  # session leader: CPU is summed over its whole session
    key: str = "bench"
    skips: frozenset[str] = field(default_factory=frozenset)  # workload names it does not serve


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def session_cpu_s(sid: int) -> float:
    """User+system CPU seconds of every live process in session ``sid`` (threads included, from /proc)."""
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue  # exited meanwhile
        fields = stat[stat.rindex(b")") + 2 :].split()
        if int(fields[3]) == sid:  # fields after the name: state ppid pgrp session ...
            total += int(fields[11]) + int(fields[12])  # utime stime, in clock ticks
    return total / CLOCK_TICKS


# Servers ---------------------------------------------------------------------------------------------


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


def wait_ready(url: str, timeout_s: float, proc: subprocess.Popen[bytes], log: Path | None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
            raise RuntimeError(f"{url}: the server exited with status {proc.returncode}\n{tail}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError as exc:
            if exc.code < 500:
                return
        except OSError:
            pass
        time.sleep(0.25)
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


def start_targets(tmp: Path, args: argparse.Namespace) -> tuple[list[Target], list[subprocess.Popen[bytes]]]:
    """Start the upstream fleet and every target; returns (targets, every process started)."""
    fleet_ports = [free_port(), free_port()]
    configs = write_configs(tmp, fleet_ports)
    py = [sys.executable]
    fleet_cmd = [*py, "-m", "bauxite.cli", "fleet", "--config", str(configs["bauxite"]), "--zero-delay"]
    fleet = start(fleet_cmd, log=tmp / "fleet.log")
    upstream = f"http://127.0.0.1:{fleet_ports[0]}"
    targets = [Target("direct", upstream, fleet)]
    pending = [(f"{upstream}/health", fleet, tmp / "fleet.log")]

    port = free_port()
    floor_cmd = [*py, str(ROOT / "benchmarks" / "floor.py"), "--upstream", upstream, "--port", str(port)]
    floor = start(floor_cmd, log=tmp / "floor.log")
    targets.append(Target("floor", f"http://127.0.0.1:{port}", floor))
    pending.append((f"http://127.0.0.1:{port}/health", floor, tmp / "floor.log"))

    for name in ("bauxite", "bauxite-green"):
        port = free_port()
        cmd = [*py, "-m", "bauxite.cli", "serve", "--config", str(configs[name]), "--port", str(port)]
        if args.workers != "1":
            cmd += ["--workers", str(args.workers)]
        proc = start([*cmd, "--log-level", "WARNING"], log=tmp / f"{name}.log")
        targets.append(Target(name, f"http://127.0.0.1:{port}", proc))
        pending.append((f"http://127.0.0.1:{port}/healthz", proc, tmp / f"{name}.log"))

    exe = None if args.no_litellm else ensure_litellm()
    if exe is not None:
        port, key = free_port(), "sk-" + secrets.token_hex(24)
        env = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_MASTER_KEY": key}
        cmd = [str(exe), "--config", str(litellm_config(tmp, fleet_ports[0]))]
        cmd += ["--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"]
        proc = start(cmd, env=env, log=tmp / "litellm.log")
        # Compared on Chat Completions only: for an OpenAI-compatible upstream LiteLLM translates the other
        # APIs into chat calls, which is not the same work.
        agent_apis = frozenset({"responses", "responses-stream", "messages", "messages-stream"})
        targets.append(Target("litellm", f"http://127.0.0.1:{port}", proc, key, skips=agent_apis))
        pending.append((f"http://127.0.0.1:{port}/health/liveliness", proc, tmp / "litellm.log"))
    for url, proc, log in pending:
        wait_ready(url, 180, proc, log)
    return targets, [t.proc for t in targets]


# Load -------------------------------------------------------------------------------------------------

WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {key}"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "\\nRESULT {{\\"requests\\": %d, \\"duration_us\\": %d, \\"errors\\": %d, "
    .. "\\"p50_us\\": %d, \\"p99_us\\": %d}}\\n",
    summary.requests, summary.duration, e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def lua_string(text: str) -> str:
    return "[==[" + text + "]==]"  # a Lua long string: no escaping needed for JSON


def write_script(tmp: Path, target: Target, work: Workload) -> Path:
    """The wrk Lua script posting ``work``'s body with ``target``'s key."""
    path = tmp / f"{target.name}-{work.name}.lua"
    body = orjson.dumps(work.body).decode()
    path.write_text(WRK_SCRIPT.format(body=lua_string(body), key=target.key))
    return path


def run_wrk(script: Path, url: str, concurrency: int, seconds: int) -> dict[str, float]:
    cmd = ["wrk", "-t1", f"-c{concurrency}", f"-d{max(seconds, 1)}s", "--timeout", "10s"]
    out = subprocess.run([*cmd, "-s", str(script), url], capture_output=True, text=True, check=True).stdout
    line = next((x for x in out.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result for {url}:\n{out}")
    raw = orjson.loads(line[len("RESULT ") :])
    return {k: float(v) for k, v in raw.items()}


def measure(target: Target, work: Workload, script: Path, conc: int, seconds: int) -> dict[str, float]:
    url = target.base + "/v1" + work.path
    run_wrk(script, url, conc, WARMUP_S)
    cpu_before = session_cpu_s(target.proc.pid)
    raw = run_wrk(script, url, conc, seconds)
    cpu_s = session_cpu_s(target.proc.pid) - cpu_before
    done = max(raw["requests"], 1.0)
    return {
        "rps": raw["requests"] / (raw["duration_us"] / 1e6),
        "p50_ms": raw["p50_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "cpu_us": cpu_s / done * 1e6,
        "errors": raw["errors"],
        "n": raw["requests"],
    }


def run_all(
    targets: list[Target], tmp: Path, args: argparse.Namespace
) -> dict[str, dict[str, dict[str, float]]]:
    """Per cell, the per-target medians over rounds; the target order rotates by one each round."""
    results: dict[str, dict[str, dict[str, float]]] = {}
    for work in WORKLOADS:
        scripts = {t.name: write_script(tmp, t, work) for t in targets}
        serving = [t for t in targets if work.name not in t.skips]
        for conc in args.concurrency:
            samples: dict[str, list[dict[str, float]]] = {t.name: [] for t in serving}
            for r in range(args.rounds):
                shift = r % len(serving)
                for t in serving[shift:] + serving[:shift]:
                    samples[t.name].append(measure(t, work, scripts[t.name], conc, args.seconds))
            results[f"{work.name}@{conc}"] = {
                name: {f: statistics.median(s[f] for s in runs) for f in runs[0]}
                for name, runs in samples.items()
            }
    return results


# Report -----------------------------------------------------------------------------------------------


def _ratio(a: dict[str, float] | None, b: dict[str, float] | None, key: str) -> str:
    if a is None or b is None or not b[key]:
        return "-"
    return f"{a[key] / b[key]:.2f}x"


def print_table(results: dict[str, dict[str, dict[str, float]]], names: list[str]) -> None:
    head = f"{'workload':<14}{'conc':>5}  {'target':<14}{'req/s':>8}{'p50 ms':>8}{'p99 ms':>8}"
    print(f"\n{head}{'CPU us/req':>11}{'xfloor':>8}{'rps/litellm':>12}{'errors':>7}")
    for key, row in results.items():
        work, conc = key.split("@")
        for name in names:
            cell = row.get(name)
            if cell is None:
                continue
            xfloor = _ratio(cell, row.get("floor"), "cpu_us") if name != "direct" else "-"
            vs_lite = _ratio(cell, row.get("litellm"), "rps")
            print(
                f"{work:<14}{conc:>5}  {name:<14}{cell['rps']:>8.0f}{cell['p50_ms']:>8.2f}"
                f"{cell['p99_ms']:>8.2f}{cell['cpu_us']:>11.0f}{xfloor:>8}{vs_lite:>12}{cell['errors']:>7.0f}"
            )
    print("\nratios of CPU per request (target: bauxite/floor <= 1.40, green/plain <= 1.05):")
    checks: list[tuple[str, Callable[[dict[str, dict[str, float]]], str]]] = [
        ("bauxite/floor", lambda row: _ratio(row.get("bauxite"), row.get("floor"), "cpu_us")),
        ("green/floor", lambda row: _ratio(row.get("bauxite-green"), row.get("floor"), "cpu_us")),
        ("green/plain", lambda row: _ratio(row.get("bauxite-green"), row.get("bauxite"), "cpu_us")),
        ("litellm/bauxite", lambda row: _ratio(row.get("litellm"), row.get("bauxite"), "cpu_us")),
    ]
    for key, row in results.items():
        print(f"  {key:<20}" + "  ".join(f"{label} {fn(row)}" for label, fn in checks))


def _concurrency(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("concurrency levels must be positive integers")
    return values


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=2, help="measuring time per run, whole s (default 2)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per cell; medians reported (default 3)")
    parser.add_argument(
        "--concurrency", type=_concurrency, default=list(CONCURRENCY), help="levels, default 1,8,32"
    )
    parser.add_argument("--workers", default="1", help="bauxite serve --workers (default 1)")
    parser.add_argument("--no-litellm", action="store_true", help="leave LiteLLM out")
    parser.add_argument("--json", action="store_true", help="also print the raw results as JSON")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is needed as the load generator: apt-get install wrk", file=sys.stderr)
        return 2

    procs: list[subprocess.Popen[bytes]] = []
    tmp = Path(tempfile.mkdtemp(prefix="bauxite-bench-"))
    try:
        targets, procs = start_targets(tmp, args)
        print(
            f"{os.cpu_count()} CPUs; median of {args.rounds} rounds x {args.seconds} s per cell "
            f"(+{WARMUP_S:g} s warm-up each); wrk, 1 thread; zero-delay upstream, "
            f"{STREAM_TOKENS} output tokens per request; CPU = user+system of the target's processes"
        )
        results = run_all(targets, tmp, args)
        print_table(results, [t.name for t in targets])
        if args.json:
            print(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())
    finally:
        stop_all(procs)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        try:
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)


if __name__ == "__main__":
    sys.exit(main())
