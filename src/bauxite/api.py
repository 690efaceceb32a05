"""HTTP handlers for the OpenAI-compatible surface, the Responses and Anthropic Messages APIs, health and
readiness.

Handlers do the cheap checks (key, body size, JSON, model, endpoint) and hand over to the forwarder. Parsing
uses orjson into plain dicts: no validation models on the hot path. Every API answers errors in its own shape.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from aiohttp import web

from .accounting import Accountant
from .auth import Authenticator, AuthError
from .clusters import ClusterState, Fleet
from .dialects import DIALECTS, error_response, from_exception
from .errors import (
    BadRequest,
    GatewayError,
    NotFound,
    PayloadTooLarge,
    RequestTimeout,
    clip,
)
from .proxy import Forwarder
from .records import Capture, Endpoint
from .response_ids import ResponseIds
from .routing.affinity import prefix_hash
from .routing.router import RouteRequest
from .state.base import LocalState, SharedState

MAX_LATENCY_HEADER = "x-bauxite-max-latency-ms"
INCLUDE_CARBON_HEADER = "x-bauxite-include-carbon"  # "true": add the bauxite_carbon object to the response


class Api:
    def __init__(
        self,
        auth: Authenticator,
        fleet: Fleet,
        forwarder: Forwarder,
        accountant: Accountant,
        department_header: str | None,
        body_timeout_s: float = 60.0,
        state: SharedState | None = None,
        response_ids: ResponseIds | None = None,
    ) -> None:
        self._state: SharedState = state or LocalState()
        self._auth = auth
        self._fleet = fleet
        self._forwarder = forwarder
        self._accountant = accountant
        self._department_header = department_header
        self._body_timeout_s = body_timeout_s
        self.response_ids = response_ids or ResponseIds()
        self._model_bodies = {name: orjson.dumps(_model_entry(fleet, name)) for name in fleet.by_model}
        self._models_body = b'{"object":"list","data":[' + b",".join(self._model_bodies.values()) + b"]}"

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/v1/embeddings", self.embeddings)
        app.router.add_post("/v1/responses", self.responses)
        app.router.add_post("/v1/messages", self.messages)
        app.router.add_get("/v1/models", self.models)
        # Model ids may contain "/" and ":" (e.g. "meta-llama/Llama-3.1-8B", "llama3:8b").
        app.router.add_get("/v1/models/{model:.+}", self.model)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._proxy(request, "chat")

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._proxy(request, "completion")

    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        return await self._proxy(request, "embedding")

    async def responses(self, request: web.Request) -> web.StreamResponse:
        return await self._proxy(request, "responses")

    async def messages(self, request: web.Request) -> web.StreamResponse:
        return await self._proxy(request, "messages")

    async def models(self, request: web.Request) -> web.Response:
        try:
            self.department(request)
        except AuthError as exc:
            return error_response("chat", 401, str(exc), "invalid_api_key")
        return web.Response(body=self._models_body, content_type="application/json")

    async def model(self, request: web.Request) -> web.Response:
        try:
            self.department(request)
        except AuthError as exc:
            return error_response("chat", 401, str(exc), "invalid_api_key")
        name = request.match_info["model"]
        body = self._model_bodies.get(name)
        if body is None:
            return from_exception("chat", _unknown_model(name))
        return web.Response(body=body, content_type="application/json")

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        now = time.monotonic()
        available = [c.name for c in self._fleet.clusters if c.available(now)]
        status = 200 if available else 503
        body = {"ready": bool(available), "available_clusters": available, "state": self._state.detail()}
        return web.json_response(body, status=status)

    def department(self, request: web.Request, charged: bool = False) -> str:
        """The caller's department, or ``AuthError``. The key comes as ``Authorization: Bearer <key>``
        (OpenAI) or ``x-api-key: <key>`` (Anthropic); either is accepted on every endpoint. ``charged``: the
        request is accounted, so the department header counts (``BadRequest``/``Forbidden`` when the key
        may not use it); otherwise (listing models, stored responses) it is ignored."""
        wanted = self._department_header if charged else None
        header = request.headers.get(wanted) if wanted else None
        authorization = request.headers.get("Authorization")
        if not authorization and "x-api-key" in request.headers:
            authorization = "Bearer " + request.headers["x-api-key"]
        return self._auth.authenticate(authorization, header)

    async def _proxy(self, request: web.Request, endpoint: Endpoint) -> web.StreamResponse:
        started_mono = time.monotonic()
        try:
            department = self.department(request, charged=True)
        except AuthError as exc:
            return error_response(endpoint, 401, str(exc), "invalid_api_key")
        except GatewayError as exc:  # a department header the key may not use, or a malformed one
            return from_exception(endpoint, exc)
        try:
            raw = await self._read_body(request)
            body, route, pinned = self._parse(request, raw, endpoint)
            include_carbon = _include_carbon(request)
        except GatewayError as exc:
            return from_exception(endpoint, exc)
        capture = Capture(
            model=route.model,
            department=department,
            endpoint=endpoint,
            started_at=time.time(),
            started_mono=started_mono,
            stream=body.get("stream") is True,
            prompt_tokens_est=route.prompt_tokens,
            prefix_key=route.prefix_key,
        )
        capture.client_usage = DIALECTS[endpoint].client_wants_usage(body)
        capture.include_carbon = include_carbon
        try:
            return await self._forwarder.forward(request, capture, body, raw, route, pinned)
        except asyncio.CancelledError:
            # The client hung up (aiohttp cancels the handler): leaving ``forward`` closed the upstream
            # exchange, so the cluster stops generating too.
            if capture.status != "cancelled":
                capture.status, capture.error_type, capture.http_status = (
                    "cancelled",
                    "client_disconnect",
                    499,
                )
            raise
        except GatewayError as exc:
            capture.http_status = exc.status
            capture.error_type = capture.error_type or exc.code or "error"
            # Say which cluster failed or timed out, when one was chosen.
            headers = self._forwarder.route_headers(capture) if capture.cluster else None
            return from_exception(endpoint, exc, headers)
        finally:
            capture.duration_s = time.monotonic() - started_mono
            if capture.upstream_id and capture.status == "ok":
                self.response_ids.remember(capture.upstream_id, capture.cluster)
            self._accountant.finish(capture)

    def _pinned(self, body: dict[str, Any], endpoint: Endpoint) -> ClusterState | None:
        """The cluster holding the state a Responses request continues (``previous_response_id``)."""
        previous = body.get("previous_response_id") if endpoint == "responses" else None
        if not isinstance(previous, str):
            return None
        name = self.response_ids.cluster(previous)
        if name is None:  # not created through this gateway (or forgotten): any cluster may know it
            return None
        return self._fleet.by_name.get(name)

    async def _read_body(self, request: web.Request) -> bytes:
        """The whole body within ``body_timeout_s`` (a slow sender cannot hold a handler forever)."""
        try:
            if request.content.is_eof():  # the usual case: it arrived with the head; no timer needed
                return await request.read()
            async with asyncio.timeout(self._body_timeout_s):
                return await request.read()
        except TimeoutError:
            raise RequestTimeout(f"request body not received within {self._body_timeout_s:g}s") from None
        except web.HTTPRequestEntityTooLarge as exc:
            raise PayloadTooLarge(f"request body too large ({exc.text})") from None

    def _parse(
        self, request: web.Request, raw: bytes, endpoint: Endpoint
    ) -> tuple[dict[str, Any], RouteRequest, ClusterState | None]:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            # orjson's message names the position only, never the body's text.
            code = "json_too_deep" if "depth limit" in str(exc) else "invalid_json"
            raise BadRequest(f"request body is not valid JSON: {exc}", code) from None
        if not isinstance(body, dict):
            raise BadRequest("request body must be a JSON object", "invalid_body")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise BadRequest("you must provide a model parameter", "missing_model", "model")
        if model not in self._fleet.by_model:
            raise _unknown_model(model)
        if not self._fleet.serving(model, endpoint):
            raise NotFound(
                f"no cluster serves the model {clip(model)!r} through {request.path}", "endpoint_not_served"
            )
        route = RouteRequest(
            model=model,
            max_latency_ms=_max_latency_ms(request),
            prefix_key=prefix_key(body, self._state.hash_key, endpoint),
            prompt_tokens=len(raw) // 4,  # rough, used only until the upstream reports usage
            max_tokens=DIALECTS[endpoint].max_tokens(body),
            endpoint=endpoint,
        )
        return body, route, self._pinned(body, endpoint)


def _max_latency_ms(request: web.Request) -> float | None:
    value = request.headers.get(MAX_LATENCY_HEADER)
    if value is None:
        return None
    try:
        parsed = float(value)
    except ValueError:
        parsed = -1.0
    if not parsed > 0:
        raise BadRequest(f"{MAX_LATENCY_HEADER} must be a positive number of milliseconds", "invalid_header")
    return parsed


_BOOLEAN_WORDS = {"true": True, "1": True, "false": False, "0": False}


def _include_carbon(request: web.Request) -> bool:
    """The include-carbon header as a boolean: true/false (any case) or 1/0; absent is false. Anything
    else is a 400: a client that misspells it would otherwise silently get no carbon object."""
    value = request.headers.get(INCLUDE_CARBON_HEADER)
    if value is None:
        return False
    parsed = _BOOLEAN_WORDS.get(value.strip().lower())
    if parsed is None:
        raise BadRequest(f"{INCLUDE_CARBON_HEADER} must be true or false (or 1 / 0)", "invalid_header")
    return parsed


def _unknown_model(name: str) -> NotFound:
    return NotFound(f"the model {clip(name)!r} does not exist or is not served here")


def prefix_key(body: dict[str, Any], key: bytes, endpoint: Endpoint = "chat") -> int:
    """A hash of the prompt prefix that a KV cache could reuse: the system prompt, or the conversation so far.

    Keyed BLAKE2b (``routing.affinity.prefix_hash``): the same on every replica sharing ``key``, one-way, and
    it groups requests without keeping any text. 0 when there is no reusable prefix, and for a prefix too
    deeply nested to encode (no affinity rather than an error).
    """
    prefix = DIALECTS[endpoint].prefix(body)
    if prefix is None:
        return 0
    try:
        return prefix_hash(prefix.encode() if isinstance(prefix, str) else orjson.dumps(prefix), key)
    except TypeError:  # orjson: recursion limit
        return 0


def _model_entry(fleet: Fleet, model: str) -> dict[str, Any]:
    """One ``/v1/models`` entry; ``bauxite_endpoints`` lists the APIs some cluster serves it through, and
    ``bauxite_clusters`` which cluster serves which."""
    clusters = fleet.by_model[model]
    served = [e for e in DIALECTS if any(e in c.settings.endpoints for c in clusters)]
    return {
        "id": model,
        "object": "model",
        "created": 0,
        "owned_by": "bauxite",
        "bauxite_endpoints": served,
        "bauxite_clusters": [
            {"name": c.name, "region": c.region, "endpoints": list(c.settings.endpoints)} for c in clusters
        ],
    }
