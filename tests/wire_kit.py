"""A real gateway on 127.0.0.1 whose clusters are played by ``ScriptedTransport`` (no upstream sockets).

The client side is a real aiohttp client over loopback, so what the client receives is checked byte for
byte; the upstream side is scripted per cluster, so any wire behaviour can be reproduced exactly.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson
from aiohttp import web

from bauxite.app import GATEWAY, Gateway, create_app
from bauxite.records import Capture
from bauxite.server import start_site
from bauxite.settings import settings_from_mapping
from harness import RecordTap

if TYPE_CHECKING:
    from bauxite.transport import UpstreamTransport

MODEL = "tiny-8b"
REGIONS = {"a": "us-east-1", "b": "us-west-2", "c": "eu-west-1"}


def chunk(text: str = "hi", index: int = 0, finish: str | None = None) -> bytes:
    doc = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "model": MODEL,
        "choices": [{"index": index, "delta": {"content": text}, "finish_reason": finish}],
    }
    return b"data: " + orjson.dumps(doc) + b"\n\n"


def usage_chunk(prompt: int = 7, completion: int = 3) -> bytes:
    doc = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "choices": [],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }
    return b"data: " + orjson.dumps(doc) + b"\n\n"


DONE = b"data: [DONE]\n\n"
VLLM_ERROR = (
    b'data: {"error":{"object":"error","message":"engine died","type":"InternalServerError",'
    b'"param":null,"code":500}}\n\n'
)


def completion_body(usage: bool = True, text: str = "hello there") -> bytes:
    doc: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": MODEL,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
    }
    if usage:
        doc["usage"] = {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}
    return orjson.dumps(doc)


def config(
    clusters: tuple[str, ...] = ("a",), urls: Mapping[str, str] | None = None, **cluster_extra: Any
) -> dict[str, Any]:
    return {
        "auth": {"allow_anonymous": True},
        "enterprise": {"green_routing": {"enabled": False}},
        "clusters": [
            {
                "name": name,
                "region": REGIONS[name],
                "url": (urls or {}).get(name, f"http://{name}.upstream.test:8000/v1"),
                "models": [MODEL],
                **cluster_extra,
            }
            for name in clusters
        ],
    }


class WireGateway:
    """``async with WireGateway(transport, config()) as gw``: serve, then ``await gw.post(...)``."""

    def __init__(self, transport: UpstreamTransport | None, cfg: dict[str, Any]) -> None:
        self.transport = transport
        self.settings = settings_from_mapping(cfg, "<wire test>")
        self.tap = RecordTap()
        self.captures: list[Capture] = []  # every finished request's capture (error_type lives only here)
        self.gateway: Gateway | None = None
        self._runner: web.AppRunner | None = None
        self.session: aiohttp.ClientSession | None = None
        self.base_url = ""

    async def __aenter__(self) -> WireGateway:
        # Without a scripted transport the app builds its real network client.
        app = create_app(self.settings, self.transport) if self.transport else create_app(self.settings)
        self.gateway = app[GATEWAY]
        self.gateway.accountant.add_sink(self.tap)
        finish = self.gateway.accountant.finish

        def finish_and_keep(capture: Capture) -> None:
            self.captures.append(capture)
            finish(capture)

        self.gateway.accountant.finish = finish_and_keep  # type: ignore[method-assign]
        self._runner, port = await start_site(app, "127.0.0.1", 0, shutdown_timeout_s=1.0)
        self.base_url = f"http://127.0.0.1:{port}"
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.session is not None:
            await self.session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def port(self) -> int:
        return int(self.base_url.rsplit(":", 1)[1])

    def cluster(self, name: str) -> Any:
        assert self.gateway is not None
        return self.gateway.fleet.by_name[name]

    async def post(
        self,
        body: Mapping[str, Any] | bytes,
        path: str = "/v1/chat/completions",
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, Mapping[str, str], bytes]:
        assert self.session is not None
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        async with self.session.post(
            self.base_url + path, data=data, headers={"Content-Type": "application/json", **(headers or {})}
        ) as resp:
            return resp.status, resp.headers, await resp.read()

    async def records(self, count: int, timeout_s: float = 10.0) -> list[Any]:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while len(self.tap.records) < count and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        return list(self.tap.records)


def chat(stream: bool = False, client_usage: bool = False, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "hello"}], **extra}
    if stream:
        body["stream"] = True
    if client_usage:
        body["stream_options"] = {"include_usage": True}
    return body
