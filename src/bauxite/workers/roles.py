"""What each forked process runs under ``bauxite serve --workers N``.

Worker: the full gateway on the shared port (``SO_REUSEPORT``: the kernel spreads connections over the
workers), writing telemetry records into its own region of the shared buffer and counting its in-flight API
requests there, so the supervisor knows how many a crash lost. Its router scrapes no cluster: it applies the
hub's readings from the scrape board (``scrapes.py``). ``GET /metrics`` and ``/v1/carbon/reports``
are passed to the hub, so every scrape sees the same totals whichever worker accepted the connection.

Hub: the one process that scrapes the clusters' ``/metrics`` (publishing each reading on the scrape board),
drains every region into the running totals and answers ``/metrics``, the reports and
``/v1/carbon/intensity`` (on an internal loopback socket for the workers, and on ``telemetry.listen_port``
when one is configured).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Middleware

from ..app import GATEWAY, Handler, create_app
from ..server import start_gateway, start_site, wait_for_signal
from ..settings import Settings
from ..tasks import cancel
from .board import InFlightBoard
from .feeds import FeedBoard, HubFeeds, WorkerFeeds
from .scrapes import ScrapeBoard, hub_scrapes, worker_scrapes
from .shm import Region, RegionWriter, SharedRings

HUB_PATHS = frozenset({"/metrics", "/v1/carbon/reports"})
HUB_SESSION = web.AppKey("hub_session", aiohttp.ClientSession)
_HUB_HEADERS = ("Content-Type", "Cache-Control")
_ASKED_HEADERS = ("Authorization", "Accept")


async def run_worker(
    settings: Settings,
    shared: SharedRings,
    board: InFlightBoard,
    feeds: FeedBoard,
    scrapes: ScrapeBoard,
    index: int,
    host: str,
    port: int,
    hub: str,
) -> int:
    """Serve the gateway until SIGTERM/SIGINT; ``hub`` is the hub's base URL (http://127.0.0.1:PORT)."""
    writer = RegionWriter(shared, index)
    # Without a state store, intensity comes from the hub (one provider call per refresh for the host).
    state = WorkerFeeds(feeds) if settings.state.resolved_url() is None else None
    # Cluster readings too: the hub scrapes, this worker's router applies them (one scrape for the host).
    app = create_app(settings, ring=writer, state=state, scrapes=worker_scrapes(scrapes))
    app[GATEWAY].telemetry.reports.log_windows = False  # the hub logs the host's carbon_report lines
    app.middlewares.append(count_in_flight(shared.regions[index]))
    app.cleanup_ctx.append(_board_task(board, index))
    if settings.telemetry.listen_port is None:  # else the hub alone serves the telemetry listener
        app.middlewares.append(to_hub(hub))
        app.cleanup_ctx.append(_hub_session)
    runner, _ = await start_site(app, host, port, reuse_port=True)
    try:
        await wait_for_signal()
    finally:
        await runner.cleanup()
    return 0


async def run_hub(
    settings: Settings, shared: SharedRings, feeds: FeedBoard, scrapes: ScrapeBoard, sock: socket.socket
) -> int:
    """Drain the shared buffer, fetch intensity and scrape clusters for the host, serve telemetry until
    SIGTERM/SIGINT."""
    state = HubFeeds(feeds) if settings.state.resolved_url() is None else None
    app = create_app(settings, ring=shared.reader(), state=state, scrapes=hub_scrapes(scrapes))
    runners, _ = await start_gateway(app, "127.0.0.1", 0, sock=sock)
    try:
        await wait_for_signal()
    finally:
        for runner in runners:
            await runner.cleanup()
    return 0


def count_in_flight(region: Region) -> Middleware:
    """Count API requests between arrival and the end of their handler in the worker's shared header."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method != "POST" or not request.path.startswith("/v1/"):
            return await handler(request)
        region.set_in_flight(region.in_flight + 1)
        try:
            return await handler(request)
        finally:
            region.set_in_flight(region.in_flight - 1)

    return middleware


def to_hub(hub: str) -> Middleware:
    """Pass telemetry reads to the hub (after any token check, which runs first)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method != "GET" or request.path not in HUB_PATHS:
            return await handler(request)
        session = request.app[HUB_SESSION]
        try:
            asked = {k: request.headers[k] for k in _ASKED_HEADERS if k in request.headers}
            async with session.get(hub + request.path_qs, headers=asked) as resp:
                body = await resp.read()
                headers = {k: resp.headers[k] for k in _HUB_HEADERS if k in resp.headers}
                return web.Response(status=resp.status, body=body, headers=headers)
        except (aiohttp.ClientError, TimeoutError):
            return web.json_response(
                {"error": {"message": "telemetry is restarting; retry shortly", "type": "server_error",
                           "param": None, "code": "telemetry_unavailable"}},
                status=503,
            )  # fmt: skip

    return middleware


def _board_task(board: InFlightBoard, index: int) -> Callable[[web.Application], AsyncIterator[None]]:
    async def run(app: web.Application) -> AsyncIterator[None]:
        gateway = app[GATEWAY]

        def shared_elsewhere() -> bool:
            return gateway.state.kind != "local" and gateway.state.up

        task = asyncio.create_task(
            board.run(index, gateway.fleet, gateway.router, shared_elsewhere), name="in-flight-board"
        )
        yield
        await cancel(task)

    return run


async def _hub_session(app: web.Application) -> AsyncIterator[None]:
    timeout = aiohttp.ClientTimeout(total=30, connect=2)
    async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as session:
        app[HUB_SESSION] = session
        yield
