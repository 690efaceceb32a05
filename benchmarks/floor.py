"""The floor for gateway overhead: the least a Python pass-through proxy can do per request.

A bare aiohttp server on uvloop that forwards every POST under ``/v1/`` to one upstream through one shared
keep-alive client session and relays the response: whole bodies as one write, streams chunk by chunk as they
arrive. No parsing, no routing, no accounting, no error shaping. Whatever Bauxite spends above this per
request is the price of what it adds; ``benchmarks/overhead.py`` reports the ratio.

    python benchmarks/floor.py --upstream http://127.0.0.1:9001 --port 9100
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys

import aiohttp
import uvloop
from aiohttp import web

_HOP_BY_HOP = {"content-length", "transfer-encoding", "connection", "keep-alive"}
SESSION = web.AppKey("session", aiohttp.ClientSession)
UPSTREAM = web.AppKey("upstream", str)


async def relay(request: web.Request) -> web.StreamResponse:
    session = request.app[SESSION]
    body = await request.read()
    headers = {"Content-Type": request.headers.get("Content-Type", "application/json")}
    async with session.post(request.app[UPSTREAM] + request.path, data=body, headers=headers) as upstream:
        out_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP}
        if upstream.headers.get("Content-Type", "").startswith("text/event-stream"):
            response = web.StreamResponse(status=upstream.status, headers=out_headers)
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response
        return web.Response(status=upstream.status, body=await upstream.read(), headers=out_headers)


async def serve(upstream: str, host: str, port: int) -> None:
    app = web.Application()
    app[UPSTREAM] = upstream.rstrip("/")
    app.router.add_post("/v1/{tail:.*}", relay)
    app.router.add_get("/health", lambda _: _ok())
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), auto_decompress=False)
    app[SESSION] = session
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, backlog=1024).start()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        await session.close()


async def _ok() -> web.Response:
    return web.Response(text="ok")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--upstream", required=True, help="upstream base URL without /v1, e.g. http://127.0.0.1:9001"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(serve(args.upstream, args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
