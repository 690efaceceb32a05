"""Running the gateway: an aiohttp runner on uvloop with clean shutdown on SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Callable, Coroutine
from typing import Any

from aiohttp import web

from .app import GATEWAY, create_app
from .http_server import GatewayRunner, raise_fd_limit
from .settings import Settings

log = logging.getLogger("bauxite.server")
SHUTDOWN_TIMEOUT_S = 10.0


def loop_factory(use_uvloop: bool) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if not use_uvloop:
        return None
    try:
        import uvloop
    except ImportError:  # uvloop is optional on platforms without it
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, int], use_uvloop: bool = True) -> int:
    with asyncio.Runner(loop_factory=loop_factory(use_uvloop)) as runner:
        return runner.run(main)


async def wait_for_signal() -> None:
    """Block until SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def bind_socket(host: str, port: int, backlog: int = 1024, *, reuse_port: bool = False) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: any free port; ``reuse_port``: share the port with
    sibling worker processes through ``SO_REUSEPORT``); raises ``OSError`` when it cannot."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


async def start_site(
    app: web.Application,
    host: str,
    port: int,
    shutdown_timeout_s: float = SHUTDOWN_TIMEOUT_S,
    *,
    reuse_port: bool = False,
    sock: socket.socket | None = None,
) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on ``host:port`` (``reuse_port``: share the port with sibling worker processes) or on
    an already listening ``sock``; on cleanup, in-flight requests get ``shutdown_timeout_s`` to finish."""
    # Bind first: a taken port or a bad address fails here, before any service (meters, intensity feeds,
    # telemetry windows) has started, so a failed start leaves nothing behind and reports nothing.
    if sock is None:
        sock = bind_socket(host, port, reuse_port=reuse_port)
    # handler_cancellation: a client that hangs up cancels its handler, which aborts the upstream request.
    runner = GatewayRunner(
        app,
        access_log=None,
        handle_signals=False,
        shutdown_timeout=shutdown_timeout_s,
        handler_cancellation=True,
    )
    try:
        await runner.setup()
        site = web.SockSite(runner, sock)
        await site.start()
    except BaseException:
        sock.close()
        await runner.cleanup()
        raise
    bound = next((a[1] for a in runner.addresses if isinstance(a, tuple)), port)
    return runner, int(bound)


async def start_gateway(
    app: web.Application, host: str, port: int, sock: socket.socket | None = None
) -> tuple[list[web.AppRunner], int]:
    """Serve the gateway app, plus the telemetry listener when one is configured. Runners: stop in order."""
    runner, bound = await start_site(app, host, port, sock=sock)
    runners = [runner]
    admin = app[GATEWAY].telemetry.admin_app()
    if admin is not None:
        app[GATEWAY].intensity.add_routes(admin)
        telemetry = app[GATEWAY].settings.telemetry
        assert telemetry.listen_port is not None
        admin_runner, admin_port = await start_site(admin, telemetry.listen_host, telemetry.listen_port)
        runners.insert(0, admin_runner)
        log.info(
            "metrics, carbon reports and the dashboard (/dashboard) on http://%s:%d",
            telemetry.listen_host,
            admin_port,
        )
    return runners, bound


async def serve_async(settings: Settings, host: str, port: int) -> int:
    if settings.server.raise_fd_limit:
        before, after = raise_fd_limit()
        if after != before:
            log.info("open-files limit raised from %d to %d", before, after)
    app = create_app(settings)
    runners, bound = await start_gateway(app, host, port)
    log.info("bauxite gateway listening on http://%s:%d (%d clusters)", host, bound, len(settings.clusters))
    if settings.telemetry.listen_port is None:
        log.info("carbon dashboard: http://%s:%d/dashboard", host, bound)
    try:
        await wait_for_signal()
    finally:
        for runner in runners:
            await runner.cleanup()
    return 0


def serve(settings: Settings, host: str | None = None, port: int | None = None) -> int:
    return run(
        serve_async(
            settings, host or settings.server.host, port if port is not None else settings.server.port
        ),
        settings.server.use_uvloop,
    )
