"""The official openai clients (Python and Node) through the gateway: models list and retrieve, chat and
completions, streaming with and without usage, tool-call deltas, embeddings (base64 on the wire).

Both clients run the same steps and must report the same summary."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import openai
import pytest
from aiohttp import web

import openai_upstream
from wire_kit import WireGateway, config

NODE_DIR = Path(__file__).resolve().parent / "node"
MESSAGES: Any = [{"role": "user", "content": "hi"}]
TOOLS: Any = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]
EXPECTED = {
    "models": ["embed-small", "tiny-8b"],
    "retrieved": "tiny-8b",
    "chat": "Hello from upstream",
    "chat_usage": 8,
    "completion": "once upon",
    "stream_text": "Hello from upstream",
    "stream_usage": None,  # the gateway asked for usage for itself; the client did not, so it sees none
    "stream_usage_requested": 8,
    "tool_call": {"name": "weather", "arguments": '{"city": "Paris"}'},
    "embeddings": [openai_upstream.VECTOR, openai_upstream.VECTOR],
}


@pytest.fixture
async def gateway() -> AsyncIterator[WireGateway]:
    runner = web.AppRunner(openai_upstream.app())
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    cfg = config(urls={"a": f"http://127.0.0.1:{port}/v1"})
    cfg["clusters"][0]["models"] = ["tiny-8b", "embed-small"]
    try:
        async with WireGateway(None, cfg) as gw:
            yield gw
    finally:
        await runner.cleanup()


async def _collect(client: openai.AsyncOpenAI, **params: Any) -> dict[str, Any]:
    stream = await client.chat.completions.create(model="tiny-8b", messages=MESSAGES, stream=True, **params)
    text, usage = "", None
    calls: dict[int, dict[str, str]] = {}
    async for chunk in stream:
        if chunk.usage:
            usage = chunk.usage.total_tokens
        for choice in chunk.choices:
            text += choice.delta.content or ""
            for call in choice.delta.tool_calls or []:
                slot = calls.setdefault(call.index, {"name": "", "arguments": ""})
                slot["name"] += (call.function.name or "") if call.function else ""
                slot["arguments"] += (call.function.arguments or "") if call.function else ""
    return {"text": text, "usage": usage, "calls": list(calls.values())}


async def python_summary(base_url: str) -> dict[str, Any]:
    client = openai.AsyncOpenAI(base_url=base_url, api_key="conformance", max_retries=0)
    summary: dict[str, Any] = {}
    summary["models"] = sorted([m.id async for m in client.models.list()])
    summary["retrieved"] = (await client.models.retrieve("tiny-8b")).id
    chat = await client.chat.completions.create(model="tiny-8b", messages=MESSAGES)
    summary["chat"] = chat.choices[0].message.content
    summary["chat_usage"] = chat.usage.total_tokens if chat.usage else None
    completion = await client.completions.create(model="tiny-8b", prompt="tell me")
    summary["completion"] = completion.choices[0].text
    plain = await _collect(client)
    summary["stream_text"], summary["stream_usage"] = plain["text"], plain["usage"]
    summary["stream_usage_requested"] = (await _collect(client, stream_options={"include_usage": True}))[
        "usage"
    ]
    summary["tool_call"] = (await _collect(client, tools=TOOLS))["calls"][0]
    # No encoding_format: the client asks for base64 itself and decodes it into floats.
    embedding = await client.embeddings.create(model="embed-small", input=["a", "b"])
    summary["embeddings"] = [list(d.embedding) for d in embedding.data]
    await client.close()
    return summary


async def test_python_client_conformance(gateway: WireGateway) -> None:
    assert await python_summary(gateway.base_url + "/v1") == EXPECTED
    records = await gateway.records(6)  # chat, completion, three streams, embeddings
    assert len(records) == 6 and all(r.status == "ok" for r in records)
    assert all(r.prompt_tokens > 0 and not r.usage_estimated for r in records)


async def test_node_client_conformance(gateway: WireGateway) -> None:
    if not (NODE_DIR / "node_modules" / "openai").is_dir():
        pytest.fail("the openai Node client is not installed: run `make node-deps` (npm ci in tests/node)")
    process = await asyncio.create_subprocess_exec(
        "node",
        str(NODE_DIR / "conformance.mjs"),
        gateway.base_url + "/v1",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, err.decode()
    assert json.loads(out.decode().strip().splitlines()[-1]) == EXPECTED
