"""A real HTTP upstream speaking OpenAI's wire format, including what the simulated fleet does not produce:
streamed tool-call deltas and base64 embeddings. Used by the client conformance tests."""

from __future__ import annotations

import base64
import struct
from typing import Any

import orjson
from aiohttp import web

CONTENT = ["Hello", " from", " upstream"]
TOOL_ARGS = ['{"city', '": "Par', 'is"}']
VECTOR = [0.5, -0.25, 0.125]
USAGE = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}


def _sse(doc: Any) -> bytes:
    return b"data: " + orjson.dumps(doc) + b"\n\n"


def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    return _sse(
        {
            "id": "chatcmpl-c",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "tiny-8b",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
    )


async def chat(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    if not body.get("stream"):
        message = {"role": "assistant", "content": "".join(CONTENT)}
        return web.json_response(
            {"id": "chatcmpl-c", "object": "chat.completion", "created": 1, "model": "tiny-8b",
             "choices": [{"index": 0, "message": message, "finish_reason": "stop"}], "usage": USAGE}
        )  # fmt: skip
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    if body.get("tools"):
        call = {
            "index": 0,
            "id": "call_1",
            "type": "function",
            "function": {"name": "weather", "arguments": ""},
        }
        await response.write(_chunk({"role": "assistant", "tool_calls": [call]}))
        for piece in TOOL_ARGS:
            await response.write(_chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}))
        await response.write(_chunk({}, "tool_calls"))
    else:
        await response.write(_chunk({"role": "assistant", "content": ""}))
        for piece in CONTENT:
            await response.write(_chunk({"content": piece}))
        await response.write(_chunk({}, "stop"))
    options = body.get("stream_options") or {}
    if options.get("include_usage"):
        await response.write(
            _sse({"id": "chatcmpl-c", "object": "chat.completion.chunk", "created": 1, "model": "tiny-8b",
                  "choices": [], "usage": USAGE})
        )  # fmt: skip
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


async def completions(request: web.Request) -> web.Response:
    return web.json_response(
        {"id": "cmpl-c", "object": "text_completion", "created": 1, "model": "tiny-8b",
         "choices": [{"index": 0, "text": "once upon", "finish_reason": "stop", "logprobs": None}],
         "usage": USAGE}
    )  # fmt: skip


async def embeddings(request: web.Request) -> web.Response:
    body = await request.json()
    inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
    packed = base64.b64encode(struct.pack(f"<{len(VECTOR)}f", *VECTOR)).decode()
    as_base64 = body.get("encoding_format") == "base64"
    data = [
        {"object": "embedding", "index": i, "embedding": packed if as_base64 else VECTOR}
        for i in range(len(inputs))
    ]
    usage = {"prompt_tokens": 4, "total_tokens": 4}
    return web.json_response({"object": "list", "data": data, "model": "embed-small", "usage": usage})


def app() -> web.Application:
    application = web.Application()
    application.router.add_post("/v1/chat/completions", chat)
    application.router.add_post("/v1/completions", completions)
    application.router.add_post("/v1/embeddings", embeddings)
    return application
