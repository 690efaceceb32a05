"""HTTP handlers for the OpenAI-compatible surface, health and readiness.

Handlers do the cheap checks (key, body size, JSON, model) and hand over to the forwarder. Parsing uses
orjson into plain dicts: no validation models on the hot path.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from aiohttp import web

from .accounting import Accountant
from .auth import Authenticator, AuthError
from .clusters import Fleet
from .errors import (
    BadRequest,
    GatewayError,
    NotFound,
    PayloadTooLarge,
    RequestTimeout,
    clip,
    error_response,
    from_exception,
)
from .proxy import Forwarder
from .records import Capture, Endpoint
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
    ) -> None:
        self._state: SharedState = state or LocalState()
        self._auth = auth
        self._fleet = fleet
        self._forwarder = forwarder
        self._accountant = accountant
        self._department_header = department_header
        self._body_timeout_s = body_timeout_s
        self._model_bodies = {
            name: orjson.dumps({"id": name, "object": "model", "created": 0, "owned_by": "bauxite"})
            for name in fleet.by_model
        }
        self._models_body = b'{"object":"list","data":[' + b",".join(self._model_bodies.values()) + b"]}"

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/v1/embeddings", self.embeddings)
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

    async def models(self, request: web.Request) -> web.Response:
        try:
            self._department(request)
        except AuthError as exc:
            return error_response(401, str(exc), "invalid_api_key")
        return web.Response(body=self._models_body, content_type="application/json")

    async def model(self, request: web.Request) -> web.Response:
        try:
            self._department(request)
        except AuthError as exc:
            return error_response(401, str(exc), "invalid_api_key")
        name = request.match_info["model"]
        body = self._model_bodies.get(name)
        if body is None:
            return from_exception(_unknown_model(name))
        return web.Response(body=body, content_type="application/json")

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        now = time.monotonic()
        available = [c.name for c in self._fleet.clusters if c.available(now)]
        status = 200 if available else 503
        body = {"ready": bool(available), "available_clusters": available, "state": self._state.detail()}
        return web.json_response(body, status=status)

    def _department(self, request: web.Request) -> str:
        header = request.headers.get(self._department_header) if self._department_header else None
        return self._auth.authenticate(request.headers.get("Authorization"), header)

    async def _proxy(self, request: web.Request, endpoint: Endpoint) -> web.StreamResponse:
        started_mono = time.monotonic()
        try:
            department = self._department(request)
        except AuthError as exc:
            return error_response(401, str(exc), "invalid_api_key")
        try:
            raw = await self._read_body(request)
            body, route = self._parse(request, raw)
        except GatewayError as exc:
            return from_exception(exc)
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
        capture.include_carbon = request.headers.get(INCLUDE_CARBON_HEADER, "").strip().lower() == "true"
        options = body.get("stream_options")
        capture.client_usage = isinstance(options, dict) and options.get("include_usage") is True
        try:
            return await self._forwarder.forward(request, capture, body, raw, route)
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
            return from_exception(exc, self._forwarder.route_headers(capture) if capture.cluster else None)
        finally:
            capture.duration_s = time.monotonic() - started_mono
            self._accountant.finish(capture)

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

    def _parse(self, request: web.Request, raw: bytes) -> tuple[dict[str, Any], RouteRequest]:
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
        return body, RouteRequest(
            model=model,
            max_latency_ms=_max_latency_ms(request),
            prefix_key=prefix_key(body, self._state.hash_key),
            prompt_tokens=len(raw) // 4,  # rough, used only until the upstream reports usage
            max_tokens=_max_tokens(body),
        )


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


def _unknown_model(name: str) -> NotFound:
    return NotFound(f"the model {clip(name)!r} does not exist or is not served here")


def _max_tokens(body: dict[str, Any]) -> int:
    value = body.get("max_completion_tokens", body.get("max_tokens"))
    return value if isinstance(value, int) and value > 0 else 0


def prefix_key(body: dict[str, Any], key: bytes) -> int:
    """A hash of the prompt prefix that a KV cache could reuse: the system prompt, or the conversation so far.

    Keyed BLAKE2b (``routing.affinity.prefix_hash``): the same on every replica sharing ``key``, one-way, and
    it groups requests without keeping any text. 0 when there is no reusable prefix, and for a prefix too
    deeply nested to encode (no affinity rather than an error).
    """
    try:
        return _prefix_key(body, key)
    except TypeError:  # orjson: recursion limit
        return 0


def _prefix_key(body: dict[str, Any], key: bytes) -> int:
    messages = body.get("messages")
    if isinstance(messages, list) and messages:
        first = messages[0]
        if isinstance(first, dict) and first.get("role") in ("system", "developer"):
            return prefix_hash(orjson.dumps(first), key)
        if len(messages) > 1:
            return prefix_hash(orjson.dumps(messages[:-1]), key)
        return 0
    prompt = body.get("prompt")
    if isinstance(prompt, str) and len(prompt) >= 256:
        return prefix_hash(prompt[:256].encode(), key)
    return 0
