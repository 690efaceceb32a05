"""HTTP face of the simulated fleet: vLLM's OpenAI wire format, its /metrics names and DCGM's power names."""

from __future__ import annotations

import asyncio
import hmac
import os
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .config import FleetSettings, SimClusterSettings
from .responses_wire import ResponsesWire
from .sim import SimCluster, count_tokens
from .wire import ChatWire, MessagesWire, Usage, Wire, new_id, prompt_text

STORED_RESPONSES = 1000  # finished Responses API answers kept for retrieval, oldest dropped first


class SimMetrics(Collector):
    """vLLM and DCGM exporter series computed from the simulator's state at scrape time."""

    def __init__(self, sim: SimCluster) -> None:
        self._sim = sim

    def collect(self) -> Iterable[Metric]:
        sim = self._sim
        sim.meter.advance(time.monotonic())
        name = sim.settings.models[0]
        for metric, value in (
            ("vllm:num_requests_running", sim.running),
            ("vllm:num_requests_waiting", sim.waiting),
            ("vllm:kv_cache_usage_perc", sim.kv_cache_usage()),
        ):
            gauge = GaugeMetricFamily(metric, metric, labels=["model_name"])
            gauge.add_metric([name], float(value))
            yield gauge
        for metric, total in (
            ("vllm:prompt_tokens", sim.prompt_tokens_total),
            ("vllm:generation_tokens", sim.generation_tokens_total),
            ("vllm:prefix_cache_queries", sim.prefix_queries_total),
            ("vllm:prefix_cache_hits", sim.prefix_hits_total),
        ):
            counter = Metric(metric, metric, "counter")
            counter.add_sample(metric + "_total", {"model_name": name}, float(total))
            yield counter
        yield from self._dcgm()

    def _dcgm(self) -> Iterable[Metric]:
        sim = self._sim
        power = Metric("DCGM_FI_DEV_POWER_USAGE", "Power draw (in W).", "gauge")
        energy = Metric(
            "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "Total energy consumption since boot (in mJ).", "counter"
        )
        for gpu in range(sim.settings.gpu_count):
            labels = {
                "gpu": str(gpu),
                "UUID": f"GPU-{sim.settings.name}-{gpu}",
                "modelName": f"NVIDIA {sim.settings.gpu_type}",
                "Hostname": sim.settings.name,
            }
            power.add_sample("DCGM_FI_DEV_POWER_USAGE", labels, sim.meter.power_w())
            energy.add_sample("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", labels, sim.meter.energy_mj)
        yield power
        yield energy


MAX_BODY_BYTES = 64 * 1024 * 1024
"""Largest request body a simulated cluster reads. vLLM's server has no body cap of its own (the model's
context length bounds a prompt), so this sits far above any gateway's limit: aiohttp's 1 MiB default would
refuse long prompts a real cluster serves."""


class SimServer:
    """The aiohttp application of one simulated cluster."""

    def __init__(self, sim: SimCluster, max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self.sim = sim
        self.max_body_bytes = max_body_bytes
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(SimMetrics(sim))
        key_env = sim.settings.api_key_env
        self._key = os.environ.get(key_env) if key_env else None
        self.stored: OrderedDict[str, bytes] = OrderedDict()

    def app(self) -> web.Application:
        app = web.Application(handler_args={"access_log": None}, client_max_size=self.max_body_bytes)
        served = self.sim.settings.endpoints
        for endpoint, method, path, handler in (
            ("chat", "POST", "/v1/chat/completions", self.chat),
            ("completion", "POST", "/v1/completions", self.completions),
            ("embedding", "POST", "/v1/embeddings", self.embeddings),
            ("responses", "POST", "/v1/responses", self.responses),
            ("responses", "GET", "/v1/responses/{response_id}", self.retrieve_response),
            ("messages", "POST", "/v1/messages", self.messages),
            ("messages", "POST", "/v1/messages/count_tokens", self.count_tokens),
        ):
            if endpoint in served:  # like a vLLM build or model without that API: the route is absent (404)
                app.router.add_route(method, path, handler)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/health", self.health)
        app.router.add_post("/fleet/faults", self.set_faults)
        return app

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(text="")

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self._registry), content_type="text/plain", charset="utf-8")

    async def set_faults(self, request: web.Request) -> web.Response:
        data = orjson.loads(await request.read())
        self.sim.faults.refuse = int(data.get("refuse", 0))
        self.sim.faults.die_mid_stream = int(data.get("die_mid_stream", 0))
        self.sim.faults.error_mid_stream = int(data.get("error_mid_stream", 0))
        return web.json_response({"ok": True})

    async def models(self, request: web.Request) -> web.Response:
        data = [
            {"id": m, "object": "model", "created": 0, "owned_by": "vllm"} for m in self.sim.settings.models
        ]
        return web.json_response({"object": "list", "data": data})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, "chat")

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, "completion")

    async def responses(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, "responses")

    async def messages(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, "messages")

    async def count_tokens(self, request: web.Request) -> web.StreamResponse:
        body, problem = await self._checked_body(request, "messages")
        if problem is not None:
            return problem
        tokens = count_tokens(prompt_text(body, "messages"))
        return web.json_response(
            {"input_tokens": tokens, "context_management": {"original_input_tokens": tokens}}
        )

    def _authorized(self, request: web.Request) -> bool:
        """Like vLLM's --api-key: every /v1 request must carry the key as a bearer token."""
        if self._key is None:
            return True
        given = request.headers.get("Authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {self._key}".encode())

    async def retrieve_response(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return _error(401, "Unauthorized")
        stored = self.stored.get(request.match_info["response_id"])
        if stored is None:
            return _error(404, f"Response with id '{request.match_info['response_id']}' not found.")
        return web.Response(body=stored, content_type="application/json")

    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        body, problem = await self._checked_body(request, "embedding")
        if problem is not None:
            return problem
        inputs = body.get("input")
        texts = inputs if isinstance(inputs, list) else [inputs]
        tokens = sum(count_tokens(str(t)) for t in texts)
        self.sim.prompt_tokens_total += tokens
        data = [
            {"object": "embedding", "index": i, "embedding": _vector(str(t))} for i, t in enumerate(texts)
        ]
        usage = {"prompt_tokens": tokens, "total_tokens": tokens, "completion_tokens": 0}
        doc = {"object": "list", "data": data, "model": body["model"], "usage": usage, "id": new_id("embd")}
        return web.Response(body=orjson.dumps(doc), content_type="application/json")

    async def _checked_body(
        self, request: web.Request, kind: str
    ) -> tuple[dict[str, Any], web.Response | None]:
        shape = _anthropic_error if kind == "messages" else _error
        if not self._authorized(request):
            return {}, shape(401, "Unauthorized")
        if self.sim.faults.refuse > 0:
            self.sim.faults.refuse -= 1
            return {}, shape(503, "simulated overload")
        try:
            body = orjson.loads(await request.read())
        except web.HTTPRequestEntityTooLarge:
            limit = self.max_body_bytes
            return {}, shape(413, f"Request body is larger than the server accepts ({limit} bytes).")
        except orjson.JSONDecodeError:
            return {}, shape(400, "invalid JSON")
        if not isinstance(body, dict) or body.get("model") not in self.sim.settings.models:
            return {}, shape(
                404, f"The model `{body.get('model') if isinstance(body, dict) else ''}` does not exist."
            )
        return body, None

    async def _generate(self, request: web.Request, kind: str) -> web.StreamResponse:
        body, problem = await self._checked_body(request, kind)
        if problem is not None:
            return problem
        prompt = prompt_text(body, kind)
        prompt_tokens = count_tokens(prompt)
        limit = body.get("max_output_tokens" if kind == "responses" else "max_completion_tokens")
        limit = limit or body.get("max_tokens")
        output_tokens = limit if isinstance(limit, int) and limit > 0 else None
        output_tokens = output_tokens or self.sim.settings.default_output_tokens
        wire = _wire(kind, body, prompt_tokens)
        job = _Job(self.sim, wire, str(body["model"]), prompt, prompt_tokens, output_tokens)
        if body.get("stream") is True:
            response = await job.stream(request)
        else:
            response = await job.complete()
        if isinstance(job.wire, ResponsesWire) and body.get("store") is not False and job.finished:
            self._store(job)
        return response

    def _store(self, job: _Job) -> None:
        """Keep a finished response for GET /v1/responses/{id}, as vLLM does with its response store."""
        assert isinstance(job.wire, ResponsesWire)
        self.stored[job.wire.id] = orjson.dumps(job.wire.body(job.usage(), job.output_tokens))
        while len(self.stored) > STORED_RESPONSES:
            self.stored.popitem(last=False)


def _wire(kind: str, body: dict[str, Any], prompt_tokens: int) -> Wire:
    model = str(body["model"])
    if kind == "responses":
        return ResponsesWire(model, body)
    if kind == "messages":
        return MessagesWire(model, prompt_tokens)
    options = body.get("stream_options")
    return ChatWire(kind, model, isinstance(options, dict) and options.get("include_usage") is True)


class _Job:
    """One generation request moving through admission, prefill and decode."""

    def __init__(
        self, sim: SimCluster, wire: Wire, model: str, prompt: str, prompt_tokens: int, output_tokens: int
    ) -> None:
        self.sim, self.wire, self.model = sim, wire, model
        self.prompt, self.prompt_tokens, self.output_tokens = prompt, prompt_tokens, output_tokens
        self.cached_tokens = 0
        self.finished = False

    async def _tokens(self) -> AsyncIterator[int]:
        sim, name = self.sim, self.model
        seq = await sim.admit(name, self.prompt_tokens)
        produced = 0
        try:
            self.cached_tokens = sim.lookup_prefix(self.prompt, self.prompt_tokens)
            sim.prompt_tokens_total += self.prompt_tokens
            ttft_s = sim.ttft_s(self.prompt_tokens, self.cached_tokens, name)
            prefill_s = min(sim.prefill_s(self.prompt_tokens, self.cached_tokens, name), ttft_s)
            # Paced against a schedule, not by sleeping each gap: sleep overshoot must not accumulate, or
            # tokens would come slower than the model (and its power) says.
            due_s = time.monotonic() + prefill_s
            await _sleep(due_s - time.monotonic())
            sim.meter.prefill_done(seq)
            due_s += ttft_s - prefill_s
            await _sleep(due_s - time.monotonic())
            for index in range(self.output_tokens):
                if index:
                    due_s += sim.itl_s(name)
                    await _sleep(due_s - time.monotonic())
                sim.generation_tokens_total += 1
                produced += 1
                yield index
        finally:
            sim.release(seq, produced)

    def usage(self) -> Usage:
        return Usage(self.prompt_tokens, self.output_tokens, self.cached_tokens)

    async def complete(self) -> web.Response:
        count = 0
        async for _ in self._tokens():
            count += 1
        self.finished = True
        return web.Response(
            body=orjson.dumps(self.wire.body(self.usage(), count)), content_type="application/json"
        )

    async def stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        faults = self.sim.faults
        die_after = 3 if faults.die_mid_stream > 0 else -1
        if die_after > 0:
            faults.die_mid_stream -= 1
        error_after = 3 if faults.error_mid_stream > 0 and die_after < 0 else -1
        if error_after > 0:
            faults.error_mid_stream -= 1
        for event in self.wire.start():
            await response.write(event)
        async for index in self._tokens():
            if index == die_after:
                assert request.transport is not None
                request.transport.abort()  # the connection drops without a final chunk
                return response
            if index == error_after:
                await response.write(self.wire.in_band_error("simulated failure during generation"))
                await response.write_eof()
                return response
            await response.write(self.wire.delta(index))
        for event in self.wire.finish(self.usage(), self.output_tokens):
            await response.write(event)
        self.finished = True
        await response.write_eof()
        return response


async def _sleep(seconds: float) -> None:
    if seconds > 0:
        await asyncio.sleep(seconds)


def _error(status: int, message: str) -> web.Response:
    doc = {
        "object": "error",
        "message": message,
        "type": "BadRequestError" if status < 500 else "ServiceUnavailable",
        "param": None,
        "code": status,
    }
    return web.Response(status=status, body=orjson.dumps(doc), content_type="application/json")


def _anthropic_error(status: int, message: str) -> web.Response:
    kind = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error"}
    doc = {"type": "error", "error": {"type": kind.get(status, "api_error"), "message": message}}
    return web.Response(status=status, body=orjson.dumps(doc), content_type="application/json")


def _vector(text: str, dims: int = 16) -> list[float]:
    seed = hash(text)
    return [((seed >> (i * 3)) & 0xFF) / 255.0 for i in range(dims)]


class FleetRunner:
    """Starts every simulated cluster of a fleet config on its own port, in the current event loop."""

    def __init__(self, settings: FleetSettings) -> None:
        self.settings = settings
        self.servers = [SimServer(SimCluster(c, settings.time_scale)) for c in settings.clusters]
        self._runners: list[web.AppRunner] = []
        self.ports: dict[str, int] = {}

    async def start(self) -> None:
        for server in self.servers:
            # Cancel a handler when its client goes away, as vLLM aborts a request whose caller left.
            runner = web.AppRunner(
                server.app(), access_log=None, handler_cancellation=True, shutdown_timeout=1.0
            )
            await runner.setup()
            site = web.TCPSite(runner, self.settings.host, server.sim.settings.port)
            await site.start()
            self._runners.append(runner)
            self.ports[server.sim.settings.name] = _bound_port(runner)

    async def stop(self) -> None:
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()

    def url(self, name: str) -> str:
        return f"http://{self.settings.host}:{self.ports[name]}/v1"

    def sim(self, name: str) -> SimCluster:
        return next(s.sim for s in self.servers if s.sim.settings.name == name)


def _bound_port(runner: web.AppRunner) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple):
            return int(address[1])
    raise RuntimeError("simulated cluster did not bind a TCP port")


__all__ = ["FleetRunner", "SimClusterSettings", "SimServer"]
