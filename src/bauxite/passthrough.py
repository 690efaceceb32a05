"""Requests that do no generation, passed to the right cluster and relayed as they come back.

- ``GET``/``DELETE /v1/responses/{id}``, ``GET /v1/responses/{id}/input_items`` and
  ``POST /v1/responses/{id}/cancel`` reach the cluster that created the response (the stored response lives
  there); an id this process did not route is looked for on each cluster serving the Responses API.
- ``POST /v1/messages/count_tokens`` reaches a cluster serving the model through the Messages API.

Nothing here is accounted as a request: no tokens are generated. Bodies are relayed byte for byte.
"""

from __future__ import annotations

import time
from dataclasses import replace

import orjson
from aiohttp import web

from .api import Api
from .auth import AuthError
from .clusters import ClusterState, Fleet
from .dialects import error_response
from .errors import TransportError, clip
from .proxy import Upstream
from .records import Endpoint

_PASSED_RESPONSE_HEADERS = ("Content-Type", "Cache-Control")


class Passthrough:
    def __init__(self, api: Api, fleet: Fleet, upstream: Upstream) -> None:
        self._api = api
        self._fleet = fleet
        self._upstream = upstream

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/v1/responses/{response_id}", self.stored_response)
        app.router.add_delete("/v1/responses/{response_id}", self.stored_response)
        app.router.add_get("/v1/responses/{response_id}/input_items", self.stored_response)
        app.router.add_post("/v1/responses/{response_id}/cancel", self.stored_response)
        app.router.add_post("/v1/messages/count_tokens", self.count_tokens)

    async def stored_response(self, request: web.Request) -> web.StreamResponse:
        try:
            self._api.department(request)
        except AuthError as exc:
            return error_response("responses", 401, str(exc), "invalid_api_key")
        response_id = request.match_info["response_id"]
        name = self._api.response_ids.cluster(response_id)
        owner = self._fleet.by_name.get(name) if name else None
        # An id this process did not see (a restart, another worker or replica, or forgotten) is looked for
        # on each cluster serving the Responses API in turn: retrieval, deletion and cancellation are safe to
        # ask of a cluster that does not hold the response (it answers 404).
        candidates = [owner] if owner is not None else self._responses_clusters()
        tail = request.rel_url.path_qs[len("/v1") :]  # the path after /v1, query included (stream, …)
        for cluster in candidates:
            answer = await self._relay(request, "responses", cluster, tail, None, pass_404=owner is None)
            if answer is not None:
                if owner is None and answer.status < 400:
                    self._api.response_ids.remember(response_id, cluster.name)
                return answer
        return error_response(
            "responses",
            404,
            "no cluster serving the Responses API holds this response id",
            "response_not_found",
        )

    def _responses_clusters(self) -> list[ClusterState]:
        now = time.monotonic()
        return [c for c in self._fleet.clusters if "responses" in c.settings.endpoints and c.available(now)]

    async def count_tokens(self, request: web.Request) -> web.StreamResponse:
        try:
            self._api.department(request)
            raw = await request.read()  # the same size limit as every request (server.max_body_bytes)
            doc = orjson.loads(raw)
        except AuthError as exc:
            return error_response("messages", 401, str(exc), "invalid_api_key")
        except orjson.JSONDecodeError:
            return error_response("messages", 400, "request body is not valid JSON", "invalid_json")
        model = doc.get("model") if isinstance(doc, dict) else None
        if not isinstance(model, str) or not model:
            return error_response("messages", 400, "you must provide a model parameter", "missing_model")
        if model not in self._fleet.by_model:
            message = f"the model {clip(model)!r} does not exist or is not served here"
            return error_response("messages", 404, message, "model_not_found")
        now = time.monotonic()
        candidates = [c for c in self._fleet.serving(model, "messages") if c.available(now)]
        if not candidates:
            return error_response(
                "messages", 503, "no available cluster serves this model", "no_available_cluster"
            )
        cluster = min(candidates, key=lambda c: c.in_flight)
        upstream_model = cluster.routes[model].upstream_name
        if upstream_model != model:
            raw = orjson.dumps({**doc, "model": upstream_model})
        answer = await self._relay(request, "messages", cluster, "/messages/count_tokens", raw)
        assert answer is not None  # only a pass_404 relay answers None
        return answer

    async def _relay(
        self,
        request: web.Request,
        endpoint: Endpoint,
        cluster: ClusterState,
        tail: str,
        body: bytes | None,
        pass_404: bool = False,
    ) -> web.StreamResponse | None:
        """Relay the cluster's answer as it comes; None (nothing sent) when it is a 404 and ``pass_404``."""
        headers = self._upstream.client_headers(cluster.name, endpoint, request)
        upstream_request = replace(
            self._upstream.request(cluster, tail, body or b"", headers), method=request.method
        )
        route_headers = {"x-bauxite-cluster": cluster.name, "x-bauxite-region": cluster.region}
        out: web.StreamResponse | None = None
        try:
            async with self._upstream.transport.send(upstream_request) as resp:
                if resp.status == 404 and pass_404:
                    return None
                out = web.StreamResponse(status=resp.status, headers=route_headers)
                for name in _PASSED_RESPONSE_HEADERS:
                    if name in resp.headers:
                        out.headers[name] = resp.headers[name]
                await out.prepare(request)
                async for chunk in resp.chunks():
                    await out.write(chunk)
                await out.write_eof()
                return out
        except (TransportError, ConnectionResetError) as exc:
            if out is not None and out.prepared:
                return out  # bytes already reached the client: nothing more can be said
            if pass_404:
                return None  # another cluster may still hold it
            cause = exc.cause if isinstance(exc, TransportError) else "client gone"
            message = f"upstream cluster {cluster.name!r} failed: {cause}"
            return error_response(endpoint, 502, message, "upstream_error", headers=route_headers)
