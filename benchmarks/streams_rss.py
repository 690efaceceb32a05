"""Gateway memory with many concurrent streams: resident set size of ``bauxite serve`` idle and while
``--streams`` (default 1,000) streaming chat completions are open at once.

The upstream is a minimal OpenAI-format SSE server in this process (one chunk every ``--gap-ms``, then the
usage chunk and ``[DONE]``), so the streams stay open long enough to be counted together. RSS comes from
/proc (VmRSS, summed over the gateway's processes). Target: at most 100 MB with 1,000 streams.

    .venv/bin/python benchmarks/streams_rss.py [--streams 1000] [--chunks 40] [--gap-ms 250] [--workers 1]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import orjson
import overhead  # the sibling benchmark's process helpers (this directory is on sys.path when run)
import yaml
from aiohttp import web

MODEL = "tiny-8b"
TARGET_MB = 100.0


def upstream_app(chunks: int, gap_s: float) -> web.Application:
    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        base = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 0, "model": MODEL}
        for _ in range(chunks):
            delta = {**base, "choices": [{"index": 0, "delta": {"content": "tok "}, "finish_reason": None}]}
            await response.write(b"data: " + orjson.dumps(delta) + b"\n\n")
            await asyncio.sleep(gap_s)
        if body.get("stream_options", {}).get("include_usage"):
            usage = {
                **base,
                "choices": [],
                "usage": {"prompt_tokens": 8, "completion_tokens": chunks, "total_tokens": 8 + chunks},
            }
            await response.write(b"data: " + orjson.dumps(usage) + b"\n\n")  # fmt: skip
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    return app


def rss_mb(sid: int) -> float:
    """VmRSS of every process in session ``sid`` (the gateway and, with --workers, its children)."""
    total_kib = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_bytes()
            if int(stat[stat.rindex(b")") + 2 :].split()[3]) != sid:
                continue
            for line in Path(f"/proc/{entry.name}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kib += int(line.split()[1])
        except (OSError, ValueError):
            continue
    return total_kib / 1024


async def open_streams(url: str, count: int, sid: int) -> tuple[float, int, int]:
    """Open ``count`` streams; returns (peak RSS MB while all were open, streams completed, failures)."""
    opened = 0
    all_open = asyncio.Event()
    done = failed = 0
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True}

    async def one(session: aiohttp.ClientSession) -> None:
        nonlocal opened, done, failed
        try:
            async with session.post(url, json=body) as resp:
                await resp.content.readany()
                opened += 1
                if opened == count:
                    all_open.set()
                async for _ in resp.content.iter_any():
                    pass
                done += resp.status == 200
        except aiohttp.ClientError:
            failed += 1

    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        tasks = [asyncio.create_task(one(session)) for _ in range(count)]
        peak = 0.0
        while not all(t.done() for t in tasks):
            if all_open.is_set():
                peak = max(peak, rss_mb(sid))
            await asyncio.sleep(0.2)
        await asyncio.gather(*tasks)
    return peak, done, failed


async def run(args: argparse.Namespace) -> int:
    upstream = web.AppRunner(upstream_app(args.chunks, args.gap_ms / 1000))
    await upstream.setup()
    port = overhead.free_port()
    await web.TCPSite(upstream, "127.0.0.1", port, backlog=4096).start()
    tmp = Path(tempfile.mkdtemp(prefix="bauxite-rss-"))
    config = {
        "auth": {"allow_anonymous": True},
        "latency": {"stats_scrape": False},
        "clusters": [{"name": "sim", "region": "us-east-1", "url": f"http://127.0.0.1:{port}/v1",
                      "models": [MODEL], "timeouts": {"total_s": "10m"}}],
    }  # fmt: skip
    (tmp / "bauxite.yaml").write_text(yaml.safe_dump(config))
    gateway_port = overhead.free_port()
    cmd = [sys.executable, "-m", "bauxite.cli", "serve", "--config", str(tmp / "bauxite.yaml")]
    cmd += ["--port", str(gateway_port), "--workers", args.workers, "--log-level", "WARNING"]
    gateway = overhead.start(cmd, log=tmp / "gateway.log")
    try:
        await asyncio.to_thread(
            overhead.wait_ready, f"http://127.0.0.1:{gateway_port}/healthz", 60, gateway, tmp / "gateway.log"
        )
        await asyncio.sleep(1.0)
        idle = rss_mb(gateway.pid)
        started = time.monotonic()
        url = f"http://127.0.0.1:{gateway_port}/v1/chat/completions"
        peak, done, failed = await open_streams(url, args.streams, gateway.pid)
        elapsed = time.monotonic() - started
        print(f"{os.cpu_count()} CPUs; gateway --workers {args.workers}; {args.streams} concurrent streams "
              f"of {args.chunks} chunks, one every {args.gap_ms} ms ({elapsed:.1f} s in all)")  # fmt: skip
        print(f"\n{'streams':>8}{'completed':>11}{'failed':>8}{'RSS idle MB':>13}{'RSS peak MB':>13}"
              f"{'per stream KB':>15}{'target MB':>11}")  # fmt: skip
        per_stream = (peak - idle) * 1024 / max(args.streams, 1)
        verdict = "met" if peak <= TARGET_MB else "NOT met"
        print(f"{args.streams:>8}{done:>11}{failed:>8}{idle:>13.1f}{peak:>13.1f}{per_stream:>15.1f}"
              f"{TARGET_MB:>11.0f}  ({verdict})")  # fmt: skip
    finally:
        overhead.stop_all([gateway])
        await upstream.cleanup()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--streams", type=int, default=1000, help="concurrent streams (default 1000)")
    parser.add_argument("--chunks", type=int, default=40, help="chunks per stream (default 40)")
    parser.add_argument("--gap-ms", type=int, default=250, help="ms between chunks (default 250)")
    parser.add_argument("--workers", default="1", help="bauxite serve --workers (default 1)")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = 4 * args.streams + 256  # client, gateway (two each) and upstream sockets, inherited by the child
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
