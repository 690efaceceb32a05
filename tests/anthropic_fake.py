"""A local server speaking Anthropic's own Messages wire format (not vLLM's), on its own thread.

Differences from vLLM that the gateway must handle: ``input_tokens`` excludes prompt-cache reads and writes
(reported apart as ``cache_read_input_tokens`` and ``cache_creation_input_tokens``), ``message_start`` reports
one output token already, ``message_delta`` carries only the cumulative ``output_tokens``, ``ping`` events
arrive between content events, lines end in CRLF, and the key comes in ``x-api-key``.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import orjson
from aiohttp import web

UNCACHED, CACHE_READ, CACHE_WRITE = 12, 30, 8
TEXT = ["Hello", ", ", "world"]


def _event(name: str, doc: dict[str, Any]) -> bytes:
    return f"event: {name}\r\ndata: ".encode() + orjson.dumps(doc) + b"\r\n\r\n"


class AnthropicFake:
    def __init__(self) -> None:
        self.headers: list[dict[str, str]] = []
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self.url = ""

    def __enter__(self) -> AnthropicFake:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/messages", self.messages)
        app.router.add_post("/v1/messages/count_tokens", self.count_tokens)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/v1"

    def _usage(self, output_tokens: int) -> dict[str, int]:
        return {
            "input_tokens": UNCACHED,
            "cache_creation_input_tokens": CACHE_WRITE,
            "cache_read_input_tokens": CACHE_READ,
            "output_tokens": output_tokens,
        }

    async def count_tokens(self, request: web.Request) -> web.Response:
        self.headers.append(dict(request.headers))
        return web.json_response({"input_tokens": UNCACHED + CACHE_READ + CACHE_WRITE})

    async def messages(self, request: web.Request) -> web.StreamResponse:
        self.headers.append(dict(request.headers))
        body = await request.json()
        if body.get("stream") is not True:
            return web.json_response(
                {
                    "id": "msg_fake",
                    "type": "message",
                    "role": "assistant",
                    "content": [{"type": "text", "text": "".join(TEXT)}],
                    "model": body["model"],
                    "stop_reason": "end_turn",
                    "stop_sequence": None,
                    "usage": self._usage(len(TEXT)),
                }
            )
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        message = {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": body["model"],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": self._usage(1),
        }
        await response.write(_event("message_start", {"type": "message_start", "message": message}))
        block = {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
        await response.write(_event("content_block_start", block))
        await response.write(_event("ping", {"type": "ping"}))
        for piece in TEXT:
            delta = {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": piece},
            }
            await response.write(_event("content_block_delta", delta))
        await response.write(_event("content_block_stop", {"type": "content_block_stop", "index": 0}))
        final = {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": len(TEXT)},
        }
        await response.write(_event("message_delta", final))
        await response.write(_event("message_stop", {"type": "message_stop"}))
        await response.write_eof()
        return response
