"""The gateway's HTTP server edge: malformed requests never reach logs or error bodies, slow clients time
out, and the open-files limit is raised so load is not mistaken for upstream failure.

aiohttp's own handling of an unparseable request logs the exception with the raw bytes it choked on (an
``Authorization`` header with a control byte, an over-long header line, a prompt in a broken chunked body)
at ERROR level, and echoes them in the plain-text 400 body. ``SafeRequestHandler`` replaces that path: the
log line names the kind of problem only, and the body is an OpenAI-shaped error with a fixed message.
"""

from __future__ import annotations

import logging
import resource
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from .errors import error_response

log = logging.getLogger("bauxite.http")


def handler_args(header_timeout_s: float) -> dict[str, Any]:
    """Per-connection settings. aiohttp's keep-alive timer also runs from the moment a connection opens
    and closes it if no complete request head has arrived, so it doubles as the header time-out."""
    return {"access_log": None, "keepalive_timeout": header_timeout_s, "logger": log}


class SafeRequestHandler(RequestHandler):
    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        kind = type(exc).__name__ if exc is not None else "error"
        if status >= 500:
            log.error("error serving a request from %s (%s)", request.remote, kind)
        else:
            log.info("rejected a malformed HTTP request from %s (%s)", request.remote, kind)
        if request.writer.output_size > 0:  # a response already started: only closing is left
            raise ConnectionError("response already started; closing the connection")
        if status == 400:
            response = error_response(400, f"malformed HTTP request ({kind})", "bad_http_request")
        elif status == 504:
            response = error_response(504, "request handling timed out", "upstream_timeout")
        else:
            response = error_response(status, "internal gateway error", "internal_error")
        response.force_close()
        return response


class _GatewayServer(web.Server):
    def __call__(self) -> RequestHandler:
        return SafeRequestHandler(self, loop=self._loop, **self._kwargs)


class GatewayRunner(web.AppRunner):
    """An ``AppRunner`` whose connections use ``SafeRequestHandler``."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # aiohttp offers no hook for the per-connection handler class: the server object built by the
        # application is re-classed to a subclass that differs only in which handler it creates.
        server.__class__ = _GatewayServer
        return server


def raise_fd_limit() -> tuple[int, int]:
    """Raise the soft open-files limit to the hard limit (where the OS allows); returns (before, after).

    Each client connection and each upstream connection holds a descriptor; at the common default of
    1,024 a busy gateway runs out and every new upstream connect fails locally."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft, soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        return soft, soft
    return soft, target
