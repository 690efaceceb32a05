"""Forwarding one request to a cluster: retry-once failover, byte-for-byte pass-through, usage capture.

One shared keep-alive ``aiohttp.ClientSession`` serves every cluster. Response bodies are never
re-serialised; streaming events are relayed as they arrive and only the usage chunk the gateway itself
asked for is dropped.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import replace
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from .accounting import Accountant
from .clusters import ClusterState
from .errors import GatewayError, error_body
from .records import Capture
from .routing.router import NoRouteError, Router, RouteRequest
from .usage import SseRelay, usage_from_body

UPSTREAM_PATHS = {"chat": "/chat/completions", "completion": "/completions", "embedding": "/embeddings"}
_SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}


class _Retryable(Exception):
    """The cluster failed before any byte reached the client: another cluster may take the request."""


class Upstream:
    """Owns the shared client session and per-cluster timeouts and headers."""

    # The client's own Authorization header is never forwarded: each cluster gets its configured key.
    def __init__(self, clusters: list[ClusterState]) -> None:
        self._session: aiohttp.ClientSession | None = None
        self.timeouts = {
            c.name: aiohttp.ClientTimeout(
                total=c.settings.timeouts.total_s,
                connect=c.settings.timeouts.connect_s,
                sock_read=c.settings.timeouts.read_s,
            )
            for c in clusters
        }
        self.headers: dict[str, dict[str, str]] = {}
        for c in clusters:
            headers = {"Content-Type": "application/json"}
            key = c.settings.api_key()
            if key:
                headers["Authorization"] = f"Bearer {key}"
            self.headers[c.name] = headers

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("upstream session used before start()")
        return self._session

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=30)
        self._session = aiohttp.ClientSession(connector=connector, auto_decompress=True)

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class Forwarder:
    """Runs the attempt loop for one parsed request."""

    def __init__(self, upstream: Upstream, router: Router, accountant: Accountant) -> None:
        self._upstream = upstream
        self._router = router
        self._accountant = accountant

    async def forward(
        self, request: web.Request, capture: Capture, body: dict[str, Any], raw: bytes, route: RouteRequest
    ) -> web.StreamResponse:
        exclude: set[str] = set()
        failure = ""
        while True:
            try:
                decision = self._router.choose(
                    replace(route, exclude=frozenset(exclude)) if exclude else route
                )
            except NoRouteError as exc:
                if failure:  # the only candidate just failed: report that, not the empty candidate list
                    raise GatewayError(503, failure, "upstream_error") from None
                raise GatewayError(exc.status, str(exc), "no_available_cluster") from None
            cluster = decision.cluster
            capture.cluster, capture.region, capture.route_reason = (
                cluster.name,
                cluster.region,
                decision.reason,
            )
            capture.counterfactual_cluster = decision.counterfactual.name if decision.counterfactual else ""
            capture.attempts += 1
            cluster.in_flight += 1
            try:
                return await self._attempt(request, capture, cluster, body, raw, last=bool(exclude))
            except _Retryable as exc:
                cluster.record_failure()
                exclude.add(cluster.name)
                failure = f"upstream cluster {cluster.name!r} failed: {exc}"
                if capture.attempts >= 2:
                    raise GatewayError(503, failure, "upstream_error") from None
            finally:
                cluster.in_flight -= 1

    async def _attempt(
        self,
        request: web.Request,
        capture: Capture,
        cluster: ClusterState,
        body: dict[str, Any],
        raw: bytes,
        last: bool,
    ) -> web.StreamResponse:
        url = cluster.settings.url + UPSTREAM_PATHS[capture.endpoint]
        payload = _upstream_body(cluster, capture, body, raw)
        session = self._upstream.session
        try:
            async with session.post(
                url,
                data=payload,
                headers=self._upstream.headers[cluster.name],
                timeout=self._upstream.timeouts[cluster.name],
            ) as resp:
                if resp.status >= 500:
                    detail = f"HTTP {resp.status}"
                    if not last:
                        raise _Retryable(detail)
                    cluster.record_failure()
                    raise GatewayError(
                        503, f"upstream cluster {cluster.name!r} failed: {detail}", "upstream_error"
                    )
                if capture.stream and resp.status == 200:
                    return await self._relay_stream(request, capture, cluster, resp)
                return await self._relay_body(capture, cluster, resp)
        except (
            aiohttp.ClientConnectorError,
            aiohttp.ServerDisconnectedError,
            aiohttp.ClientOSError,
            aiohttp.ClientPayloadError,
        ) as exc:
            # Nothing reached the client yet (streams catch their own errors once started).
            raise _Retryable(type(exc).__name__) from None
        except TimeoutError:
            capture.error_type = "timeout"
            raise GatewayError(
                504, f"upstream cluster {cluster.name!r} timed out", "upstream_timeout"
            ) from None

    async def _relay_body(
        self, capture: Capture, cluster: ClusterState, resp: aiohttp.ClientResponse
    ) -> web.Response:
        data = await resp.read()
        capture.http_status = resp.status
        headers = self.route_headers(capture)
        if resp.status == 200:
            usage_from_body(capture, data)
            capture.status = "ok"
            capture.duration_s = time.monotonic() - capture.started_mono
            cluster.record_success(None, None)
            estimate = self._accountant.response_estimate(capture)
            if estimate is not None:
                headers["x-bauxite-energy-wh"] = f"{estimate[0]:.6g}"
                headers["x-bauxite-carbon-grams"] = f"{estimate[1]:.6g}"
        else:
            capture.error_type = f"upstream_{resp.status}"
        return web.Response(
            status=resp.status,
            body=data,
            headers=headers,
            content_type=resp.content_type or "application/json",
        )

    async def _relay_stream(
        self, request: web.Request, capture: Capture, cluster: ClusterState, resp: aiohttp.ClientResponse
    ) -> web.StreamResponse:
        response = web.StreamResponse(status=200, headers={**_SSE_HEADERS, **self.route_headers(capture)})
        capture.http_status = 200
        await response.prepare(request)
        relay = SseRelay(capture, strip_usage=not capture.client_usage)
        try:
            async for chunk in resp.content.iter_any():
                out = relay.feed(chunk)
                if out:
                    await response.write(out)
        except (
            aiohttp.ClientPayloadError,
            aiohttp.ServerDisconnectedError,
            aiohttp.ClientOSError,
            TimeoutError,
        ):
            return await self._fail_stream(capture, relay, response, "upstream_stream_error")
        except ConnectionResetError:
            _client_gone(capture, relay)
            return response
        if not relay.saw_done:
            return await self._fail_stream(capture, relay, response, "upstream_stream_truncated")
        _fill_missing_usage(capture, relay)
        capture.status = "ok"
        itl = _itl_s(capture)
        cluster.record_success(capture.ttft_s, itl)
        with contextlib.suppress(ConnectionResetError):
            await response.write_eof()
        return response

    async def _fail_stream(
        self, capture: Capture, relay: SseRelay, response: web.StreamResponse, cause: str
    ) -> web.StreamResponse:
        capture.error_type = cause
        capture.http_status = 502
        _fill_missing_usage(capture, relay)
        event = (
            b"data: " + error_body(502, f"the upstream cluster ended the stream early ({cause})") + b"\n\n"
        )
        with contextlib.suppress(ConnectionResetError):
            await response.write(event)
            await response.write_eof()
        return response

    def route_headers(self, capture: Capture) -> dict[str, str]:
        g_per_kwh = self._accountant.grid_intensity(capture.region)
        return {
            "x-bauxite-cluster": capture.cluster,
            "x-bauxite-region": capture.region,
            "x-bauxite-route-reason": capture.route_reason,
            "x-bauxite-grid-intensity": f"{g_per_kwh:.1f}",
        }


def _client_gone(capture: Capture, relay: SseRelay) -> None:
    capture.error_type = "client_disconnect"
    capture.http_status = 499  # the de-facto code for "client closed request"
    _fill_missing_usage(capture, relay)


def _upstream_body(cluster: ClusterState, capture: Capture, body: dict[str, Any], raw: bytes) -> bytes:
    """The raw request bytes, unless the cluster's model name differs or usage must be requested."""
    upstream_model = cluster.routes[capture.model].upstream_name
    if upstream_model == capture.model and not capture.stream:
        return raw
    patched = dict(body)
    patched["model"] = upstream_model
    if capture.stream:
        options = patched.get("stream_options")
        patched["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
    return orjson.dumps(patched)


def _fill_missing_usage(capture: Capture, relay: SseRelay) -> None:
    """An aborted stream never sends usage: count what was relayed so accounting still sees the work."""
    if not capture.usage_reported:
        capture.completion_tokens = relay.content_events
        capture.prompt_tokens = capture.prompt_tokens or capture.prompt_tokens_est


def _itl_s(capture: Capture) -> float | None:
    if capture.ttft_s is None or capture.completion_tokens < 2:
        return None
    return max(time.monotonic() - capture.started_mono - capture.ttft_s, 0.0) / (
        capture.completion_tokens - 1
    )
