"""The streaming half of the proxy: hold the client's response until the upstream's first event, then relay
events byte-for-byte, and decide how the stream ended (complete, truncated, in-band error, client gone).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from .clusters import ClusterState
from .dialects import DIALECTS
from .errors import ReadTimeout, TransportError
from .records import Capture
from .sse import SseEvent
from .transport import UpstreamResponse
from .usage import ApiDialect, SseRelay

_SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
CLIENT_CLOSED = 499  # the de-facto status for "client closed request"


@dataclass
class AttemptFailed(Exception):
    """The cluster failed before any byte reached the client; another cluster may take the request."""

    cause: str  # short, safe to log and show: "HTTP 502", "connect failed (refused)", "read time-out"
    error_type: str  # recorded: "upstream_502", "upstream_429", "timeout", "upstream_closed", …
    retry: bool = True
    cooldown_s: float | None = None  # a cool-down the upstream asked for (Retry-After)
    answer: web.Response | None = None  # what the client gets if this was the last attempt
    timeout: bool = False

    def __post_init__(self) -> None:
        super().__init__(self.cause)


class StreamRelay:
    """One streaming exchange. After ``run``, ``failure`` names a cause to count against the cluster."""

    def __init__(
        self,
        capture: Capture,
        cluster: ClusterState,
        dialect: ApiDialect,
        route_headers: Callable[[Capture], dict[str, str]],
        on_usage: Callable[[SseEvent], bytes] | None = None,
    ) -> None:
        self._capture = capture
        self._cluster = cluster
        self._relay = SseRelay(capture, strip_usage=not capture.client_usage, dialect=dialect)
        self._relay.on_usage = on_usage  # replaces the usage-bearing event (the bauxite_carbon extension)
        self._route_headers = route_headers
        self._response: web.StreamResponse | None = None
        self.failure = ""

    async def run(self, request: web.Request, resp: UpstreamResponse, choices: int) -> web.StreamResponse:
        try:
            response = await self._pump(request, resp)
        except (ConnectionResetError, asyncio.CancelledError) as exc:
            self._client_gone()
            if isinstance(exc, asyncio.CancelledError):
                raise
            return self._response or web.Response(status=CLIENT_CLOSED)
        except TransportError as exc:
            if self._response is None:  # nothing reached the client: a retryable failure
                if isinstance(exc, ReadTimeout):
                    raise AttemptFailed(exc.cause, "timeout", timeout=True) from None
                raise AttemptFailed(exc.cause, "upstream_closed") from None
            return await self._fail(exc.cause, "upstream_stream_error")
        return await self._finish(response, choices)

    async def _pump(self, request: web.Request, resp: UpstreamResponse) -> web.StreamResponse:
        relay = self._relay
        held: list[bytes] = []
        response = self._response
        async for chunk in resp.chunks():
            out = relay.feed(chunk)
            if response is None:
                if out:
                    held.append(out)
                if not relay.started:
                    continue
                if relay.state.error:  # the upstream failed before a token: retry elsewhere
                    raise AttemptFailed(f"error event ({relay.state.error})", "upstream_error_event")
                response = await self._commit(request)
                out = b"".join(held)
            if out:
                await response.write(out)
        tail = relay.flush()
        if response is None:
            raise AttemptFailed("stream closed before its first event", "upstream_closed")
        if tail:
            await response.write(tail)
        return response

    async def _commit(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            status=200, headers={**_SSE_HEADERS, **self._route_headers(self._capture)}
        )
        self._capture.http_status = 200
        self._response = response
        await response.prepare(request)
        return response

    async def _finish(self, response: web.StreamResponse, choices: int) -> web.StreamResponse:
        relay, capture = self._relay, self._capture
        if relay.state.error:  # relayed as the upstream sent it; the request failed
            capture.error_type = "upstream_error_event"
            capture.http_status = 502
            self.failure = f"error event in stream ({relay.state.error})"
            relay.estimate_missing_usage()
            await _close(response)
            return response
        if not relay.complete(choices):
            return await self._fail("the upstream closed the stream early", "upstream_stream_truncated")
        relay.estimate_missing_usage()
        capture.status = "ok"
        await _close(response)
        return response

    async def _fail(self, cause: str, error_type: str) -> web.StreamResponse:
        """End a stream that already reached the client with an error event, and record the error."""
        assert self._response is not None
        capture = self._capture
        capture.error_type = error_type
        capture.http_status = 502
        self.failure = cause
        self._relay.estimate_missing_usage()
        message = f"upstream cluster {self._cluster.name!r} failed mid-stream: {cause}"
        event = DIALECTS[capture.endpoint].stream_error_event(
            502, message, "upstream_error", self._relay.forwarded
        )
        with contextlib.suppress(ConnectionResetError):
            await self._response.write(event)
        await _close(self._response)
        return self._response

    def _client_gone(self) -> None:
        capture = self._capture
        capture.status = "cancelled"
        capture.error_type = "client_disconnect"
        capture.http_status = CLIENT_CLOSED
        self._relay.estimate_missing_usage()


async def _close(response: web.StreamResponse) -> None:
    with contextlib.suppress(ConnectionResetError):
        await response.write_eof()


def itl_s(capture: Capture) -> float | None:
    """Mean time between output tokens of a finished stream, seconds; None with fewer than two tokens."""
    if capture.ttft_s is None or capture.completion_tokens < 2:
        return None
    return max(time.monotonic() - capture.started_mono - capture.ttft_s, 0.0) / (
        capture.completion_tokens - 1
    )
