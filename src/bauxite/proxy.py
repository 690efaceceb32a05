"""Forwarding one request to a cluster: failover before the first byte, byte-for-byte relay, usage capture.

The failure semantics (what is retried, what cools a cluster down, what the client sees and what is
recorded) are documented in ``docs/failures.md``; in short:

* Nothing reaches the client until the upstream has answered with a body (non-streaming) or its first
  data event (streaming), so any failure before that point — refused or timed-out connection, read
  time-out, 5xx, 429, a connection closed right after its 200, an in-band error as the first event — is
  retried once on another cluster, and the failing cluster is cooled down (for ``Retry-After`` on a 429).
* After the first byte a failure ends the stream with an error event and is recorded as an error.
* The gateway's own resource exhaustion (file descriptors) is a 503 ``gateway_overloaded``; it never
  counts against a cluster.
* A client that hangs up cancels the upstream request; the record says ``cancelled``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

import orjson
from aiohttp import web

from .accounting import Accountant
from .bodies import set_members
from .clusters import ClusterState
from .dialects import DIALECTS
from .errors import (
    GatewayOverloaded,
    LocalResourceError,
    NoCluster,
    ReadTimeout,
    TransportError,
    UpstreamFailed,
    UpstreamTimeout,
)
from .records import Capture, Endpoint
from .relay import AttemptFailed, StreamRelay, itl_s
from .retry_after import retry_after_s
from .routing.router import Decision, NoRouteError, Outcome, Router, RouteRequest
from .sse import SseEvent
from .transport import AiohttpTransport, UpstreamRequest, UpstreamResponse, UpstreamTransport, content_type

log = logging.getLogger("bauxite.proxy")

# Client headers that select Anthropic API behaviour; forwarded on Messages requests (never the client's key).
ANTHROPIC_HEADERS = ("anthropic-version", "anthropic-beta")
MAX_CLUSTERS_TRIED = 2  # per request: the first choice and one failover
ERROR_BODY_LIMIT = 64 * 1024  # bytes of an upstream error body relayed to the client
RESPONSE_LIMIT = 256 * 1024 * 1024  # a complete (non-streaming) upstream answer larger than this is refused
# Upstream headers a client needs to back off correctly; relayed with error answers.
_PASSED_HEADERS = ("retry-after", "x-request-id")
_PASSED_PREFIXES = ("x-ratelimit-",)


class _StreamOptionsRejected(Exception):
    """The upstream refused ``stream_options`` with a 400: it does not implement it."""


class Upstream:
    """Per-cluster request headers, time-outs and capabilities, over one ``UpstreamTransport``."""

    # The client's own Authorization header is never forwarded: each cluster gets its configured key.
    def __init__(self, clusters: list[ClusterState], transport: UpstreamTransport | None = None) -> None:
        self.transport: UpstreamTransport = transport or AiohttpTransport()
        self.headers: dict[str, dict[str, str]] = {}
        self.anthropic_headers: dict[str, dict[str, str]] = {}  # Messages: Anthropic's own key header too
        self.hosts: dict[str, str] = {}
        # Clusters that reject ``stream_options``: set from config, and learned on the first rejection.
        self.no_stream_options: set[str] = set()
        for c in clusters:
            headers = {"Content-Type": "application/json"}
            key = c.settings.api_key()
            if key:
                headers["Authorization"] = f"Bearer {key}"
            self.headers[c.name] = headers
            self.anthropic_headers[c.name] = {**headers, "x-api-key": key} if key else headers
            self.hosts[c.name] = urlsplit(c.settings.url).netloc
            if not c.settings.stream_options:
                self.no_stream_options.add(c.name)

    async def start(self) -> None:
        await self.transport.start()

    async def stop(self) -> None:
        await self.transport.stop()

    def client_headers(self, cluster: str, endpoint: Endpoint, request: web.Request) -> dict[str, str]:
        """Headers for one upstream request: the cluster's own key, plus Anthropic's version headers."""
        if endpoint != "messages":
            return self.headers[cluster]
        headers = dict(self.anthropic_headers[cluster])
        for name in ANTHROPIC_HEADERS:
            value = request.headers.get(name)
            if value is not None:
                headers[name] = value
        return headers

    def request(
        self, cluster: ClusterState, path: str, body: bytes, headers: dict[str, str] | None = None
    ) -> UpstreamRequest:
        t = cluster.settings.timeouts
        return UpstreamRequest(
            cluster.name,
            cluster.settings.url + path,
            body,
            headers if headers is not None else self.headers[cluster.name],
            t.connect_s,
            t.read_s,
            t.total_s,
        )


class Forwarder:
    """Runs the attempt loop for one parsed request."""

    def __init__(self, upstream: Upstream, router: Router, accountant: Accountant) -> None:
        self._upstream = upstream
        self._router = router
        self._accountant = accountant

    async def forward(
        self,
        request: web.Request,
        capture: Capture,
        body: dict[str, Any],
        raw: bytes,
        route: RouteRequest,
        pinned: ClusterState | None = None,
    ) -> web.StreamResponse:
        """Route and relay one request. ``pinned``: the cluster that must serve it (it holds the state the
        request refers to, such as a Responses API ``previous_response_id``); no failover then."""
        exclude: set[str] = set()
        failure: AttemptFailed | None = None
        while True:
            try:
                if pinned is None:
                    decision = self._router.choose(
                        replace(route, exclude=frozenset(exclude)) if exclude else route
                    )
                elif failure is None:
                    decision = Decision(pinned, "response_state")
                else:
                    return self._final(capture, failure)
            except NoRouteError as exc:
                if failure is not None:  # the only candidate just failed: report that failure
                    return self._final(capture, failure)
                raise NoCluster(str(exc), exc.status) from None
            cluster = decision.cluster
            capture.cluster, capture.region, capture.route_reason = (
                cluster.name,
                cluster.region,
                decision.reason,
            )
            capture.counterfactual_cluster = decision.counterfactual.name if decision.counterfactual else ""
            capture.attempts += 1
            self._router.dispatched(cluster.name)
            self._accountant.begin(capture)
            try:
                return await self._attempt(request, capture, cluster, body, raw)
            except AttemptFailed as exc:
                self._cluster_failed(cluster, exc.cause, exc.cooldown_s)
                exclude.add(cluster.name)
                failure = exc
                if not exc.retry or capture.attempts >= MAX_CLUSTERS_TRIED:
                    return self._final(capture, failure)
            finally:
                self._feedback(capture)

    def _feedback(self, capture: Capture) -> None:
        """Tell the router how the attempt ended (its in-flight count, cool-down and latency learning)."""
        if capture.status == "ok" and capture.ttft_s is not None and capture.attempts <= 1:
            self._router.first_token(capture.cluster, capture.ttft_s * 1000.0, capture.prompt_tokens)
        self._router.finished(capture.cluster, Outcome.from_capture(capture, itl_s(capture)))

    def _final(self, capture: Capture, failure: AttemptFailed) -> web.Response:
        capture.error_type = failure.error_type
        message = f"upstream cluster {capture.cluster!r} failed: {failure.cause}"
        if failure.answer is None:
            raise UpstreamTimeout(message) if failure.timeout else UpstreamFailed(message)
        capture.http_status = failure.answer.status
        failure.answer.headers.update(self.route_headers(capture))
        return failure.answer

    def _cluster_failed(self, cluster: ClusterState, cause: str, cooldown_s: float | None = None) -> None:
        """Count a failure against the cluster's health (cool-down), and log it once."""
        log.warning(
            "upstream cluster %s (%s) failed: %s", cluster.name, self._upstream.hosts[cluster.name], cause
        )
        self._router.failed(cluster.name, cooldown_s)

    async def _attempt(
        self, request: web.Request, capture: Capture, cluster: ClusterState, body: dict[str, Any], raw: bytes
    ) -> web.StreamResponse:
        want_usage = capture.stream and not capture.client_usage
        if want_usage and cluster.name not in self._upstream.no_stream_options:
            try:
                return await self._exchange(request, capture, cluster, body, raw, ask_usage=True)
            except _StreamOptionsRejected:
                log.warning(
                    "upstream cluster %s rejects stream_options; streams there are estimated", cluster.name
                )
                self._upstream.no_stream_options.add(cluster.name)
        return await self._exchange(request, capture, cluster, body, raw, ask_usage=False)

    async def _exchange(
        self,
        request: web.Request,
        capture: Capture,
        cluster: ClusterState,
        body: dict[str, Any],
        raw: bytes,
        ask_usage: bool,
    ) -> web.StreamResponse:
        payload = _upstream_body(cluster, capture, body, raw, ask_usage)
        headers = self._upstream.client_headers(cluster.name, capture.endpoint, request)
        upstream_request = self._upstream.request(cluster, DIALECTS[capture.endpoint].path, payload, headers)
        try:
            async with self._upstream.transport.send(upstream_request) as resp:
                status = resp.status
                if status == 429 or status >= 500:
                    raise await self._failed_answer(capture, cluster, resp)
                if status == 400 and ask_usage:
                    data = await resp.read(ERROR_BODY_LIMIT)
                    if b"stream_options" in data:
                        raise _StreamOptionsRejected
                    return self._passthrough_error(capture, cluster, resp, data)
                if capture.stream and status == 200 and content_type(resp.headers) == "text/event-stream":
                    return await self._relay_stream(request, capture, cluster, resp, _choices(body))
                return await self._relay_body(capture, cluster, resp)
        except LocalResourceError as exc:
            raise GatewayOverloaded(f"the gateway is out of local resources: {exc.cause}") from None
        except ReadTimeout as exc:
            raise AttemptFailed(exc.cause, "timeout", timeout=True) from None
        except TransportError as exc:
            raise AttemptFailed(exc.cause, _transport_error_type(exc)) from None

    async def _failed_answer(
        self, capture: Capture, cluster: ClusterState, resp: UpstreamResponse
    ) -> AttemptFailed:
        data = await resp.read(ERROR_BODY_LIMIT)
        answer = self._passthrough_error(capture, cluster, resp, data)
        cooldown = retry_after_s(resp.headers.get("Retry-After")) if resp.status == 429 else None
        return AttemptFailed(
            f"HTTP {resp.status}", f"upstream_{resp.status}", cooldown_s=cooldown, answer=answer
        )

    def _passthrough_error(
        self, capture: Capture, cluster: ClusterState, resp: UpstreamResponse, data: bytes
    ) -> web.Response:
        """The upstream's error answer for the client: its JSON as is, anything else (an HTML page from a
        load balancer) as an OpenAI-shaped error; the status and back-off headers kept."""
        capture.http_status = resp.status
        capture.error_type = f"upstream_{resp.status}"
        headers = {k: v for k, v in resp.headers.items() if _passed(k)}
        if _is_json_object(data):
            return web.Response(
                status=resp.status, body=data, headers=headers, content_type="application/json"
            )
        message = f"upstream cluster {cluster.name!r} answered HTTP {resp.status} without a JSON error body"
        body = DIALECTS[capture.endpoint].error_body(resp.status, message, "upstream_error", None)
        return web.Response(status=resp.status, body=body, headers=headers, content_type="application/json")

    async def _relay_body(
        self, capture: Capture, cluster: ClusterState, resp: UpstreamResponse
    ) -> web.StreamResponse:
        if resp.status != 200:
            return self._passthrough_error(capture, cluster, resp, await resp.read(ERROR_BODY_LIMIT))
        data = await resp.read(RESPONSE_LIMIT + 1)
        if len(data) > RESPONSE_LIMIT:
            raise AttemptFailed(
                f"answer larger than {RESPONSE_LIMIT} bytes", "upstream_too_large", retry=False
            )
        self._accountant.leave(capture)  # the whole answer is in: the request no longer holds the cluster
        capture.http_status = 200
        DIALECTS[capture.endpoint].account_body(capture, data)
        capture.status = "ok"
        capture.duration_s = time.monotonic() - capture.started_mono
        headers = self.route_headers(capture)
        estimate = self._accountant.response_estimate(capture)
        if estimate is not None:
            headers["x-bauxite-energy-wh"] = f"{estimate[0]:.6g}"
            headers["x-bauxite-carbon-grams"] = f"{estimate[1]:.6g}"
        if capture.include_carbon:  # re-serialised only when the client asked for the carbon object
            data = self._with_carbon(capture, data)
        ctype = resp.headers.get("Content-Type") or "application/json"
        return web.Response(status=200, body=data, headers={**headers, "Content-Type": ctype})

    async def _relay_stream(
        self,
        request: web.Request,
        capture: Capture,
        cluster: ClusterState,
        resp: UpstreamResponse,
        choices: int,
    ) -> web.StreamResponse:
        on_usage = (lambda event: self._carbon_event(capture, event)) if capture.include_carbon else None
        stream = StreamRelay(capture, cluster, DIALECTS[capture.endpoint], self.route_headers, on_usage)
        response = await stream.run(request, resp, choices)
        if stream.failure:
            self._cluster_failed(cluster, stream.failure)
        return response

    def _with_carbon(self, capture: Capture, data: bytes) -> bytes:
        doc = _json_object(data)
        carbon = self._accountant.carbon_extension(capture) if doc is not None else None
        if doc is None or carbon is None:
            return data
        DIALECTS[capture.endpoint].with_carbon(doc, carbon, event=False)
        return orjson.dumps(doc)

    def _carbon_event(self, capture: Capture, event: SseEvent) -> bytes:
        """The final usage event with the ``bauxite_carbon`` object added (the client asked for it)."""
        capture.duration_s = time.monotonic() - capture.started_mono  # the estimate uses the time so far
        doc = _json_object(event.data)
        carbon = self._accountant.carbon_extension(capture) if doc is not None else None
        if doc is None or carbon is None:
            return event.raw
        DIALECTS[capture.endpoint].with_carbon(doc, carbon, event=True)
        head = b"" if event.event == "message" else b"event: " + event.event.encode() + b"\n"
        if event.id is not None:
            head += b"id: " + event.id.encode() + b"\n"
        return head + b"data: " + orjson.dumps(doc) + b"\n\n"

    def route_headers(self, capture: Capture) -> dict[str, str]:
        g_per_kwh = self._accountant.grid_intensity(capture.region)
        return {
            "x-bauxite-cluster": capture.cluster,
            "x-bauxite-region": capture.region,
            "x-bauxite-route-reason": capture.route_reason,
            "x-bauxite-grid-intensity": f"{g_per_kwh:.1f}",
        }


def _passed(header: str) -> bool:
    name = header.lower()
    return name in _PASSED_HEADERS or name.startswith(_PASSED_PREFIXES)


def _json_object(data: bytes | None) -> dict[str, Any] | None:
    try:
        doc = orjson.loads(data) if data is not None else None
    except orjson.JSONDecodeError:
        return None
    return doc if isinstance(doc, dict) else None


def _is_json_object(data: bytes) -> bool:
    try:
        return isinstance(orjson.loads(data), dict)
    except orjson.JSONDecodeError:
        return False


def _choices(body: dict[str, Any]) -> int:
    n = body.get("n")
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1


def _transport_error_type(exc: TransportError) -> str:
    return "connect_failed" if exc.retry_safe else "upstream_closed"


def _upstream_body(
    cluster: ClusterState, capture: Capture, body: dict[str, Any], raw: bytes, ask_usage: bool
) -> bytes:
    """The client's bytes, with only the members that must change spliced in: the cluster's own model
    name, and ``stream_options.include_usage`` when the gateway needs usage the client did not ask for."""
    changes: dict[str, bytes] = {}
    upstream_model = cluster.routes[capture.model].upstream_name
    if upstream_model != capture.model:
        changes["model"] = orjson.dumps(upstream_model)
    if ask_usage:
        options = body.get("stream_options")
        merged = {**(options if isinstance(options, dict) else {}), "include_usage": True}
        try:
            changes["stream_options"] = orjson.dumps(merged)
        except TypeError:  # an unencodable client option (nested too deep): ask with the flag alone
            changes["stream_options"] = b'{"include_usage":true}'
    return set_members(raw, changes) if changes else raw
