"""2,000 seeded fuzzed requests (bodies through a real client, heads through raw sockets) against a real
gateway whose clusters are scripted in memory: never a 500, never a traceback, never a hang, and at DEBUG
level no log line and no error body carries the canary API key or the canary prompt text.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from typing import Any

import orjson
import pytest

from bauxite.settings import sha256_hex
from bauxite.transport import UpstreamRequest
from bauxite.transport_fake import Exchange, ScriptedTransport, json_reply, sse
from wire_kit import DONE, MODEL, WireGateway, chunk, completion_body, config, usage_chunk

SEED = 20261130
BODIES = 1500
HEADS = 500
CANARY_KEY = "sk-canary-KEY-5a1f0c9e"
CANARY_PROMPT = "canary-PROMPT-0b7d2e"


def upstream(request: UpstreamRequest) -> Exchange:
    if b'"stream":true' in request.body:
        return sse(chunk("a"), chunk("b", finish="stop"), usage_chunk(), DONE)
    return json_reply(completion_body())


def _value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(10 if depth < 3 else 6)
    simple: list[Any] = [
        None,
        rng.choice([True, False]),
        rng.randint(-(2**70), 2**70),
        rng.choice([0.5, -1e308, 1e-9]),
        CANARY_PROMPT * rng.randint(1, 3),
        "".join(chr(rng.randrange(0x20, 0x2FFF)) for _ in range(rng.randint(0, 12))),
    ]
    if kind < 6:
        return simple[kind]
    if kind < 8:
        return [_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {rng.choice(["model", "stream", "n", "x", "stream_options"]): _value(rng, depth + 1)}


def fuzz_body(rng: random.Random) -> bytes:
    doc: dict[str, Any] = {
        "model": rng.choice([MODEL, MODEL, "nope", "", "x" * 5000, 3, None]),
        "messages": [{"role": "user", "content": CANARY_PROMPT}],
    }
    for key in rng.sample(["stream", "stream_options", "n", "max_tokens", "messages", "prompt", "tools"], 3):
        doc[key] = _value(rng)
    if rng.random() < 0.5:
        doc["stream"] = rng.random() < 0.7
    raw = orjson.dumps(doc) if _fits(doc) else json.dumps(doc).encode()
    mutation = rng.randrange(8)
    if mutation == 0:
        raw = raw[: rng.randrange(len(raw) + 1)]  # truncated
    elif mutation == 1:
        pos = rng.randrange(len(raw))
        raw = raw[:pos] + bytes([rng.randrange(256)]) + raw[pos + 1 :]  # one corrupted byte
    elif mutation == 2:
        raw = b'{"model":"' + MODEL.encode() + b'","stream":true,"x":' + b"[" * 2000 + b"]" * 2000 + b"}"
    elif mutation == 3:
        raw = raw[:-1] + b',"model":"' + MODEL.encode() + b'","stream":true}'  # duplicate keys
    return raw


def _fits(doc: Any) -> bool:
    try:
        orjson.dumps(doc)
    except TypeError:
        return False
    return True


def fuzz_head(rng: random.Random, body: bytes) -> bytes:
    auth = rng.choice(
        [
            f"Authorization: Bearer {CANARY_KEY}\x01",  # a control byte: aiohttp's parser rejects the head
            f"Authorization: Bearer {CANARY_KEY}" + "A" * 9000,  # over the 8 KiB field limit
            f"Authorization: Bearer {CANARY_KEY}",
            f"Authorization: Bearer {CANARY_KEY}",
            "Authorization: Bearer \xff\xfe",  # not UTF-8
            f"Authorization: {CANARY_KEY}\r\n Bearer folded",  # obsolete line folding
        ]
    )
    extras = [
        "x-bauxite-max-latency-ms: " + rng.choice(["nan", "-1", "1e309", "5", "", "\x7f"]),
        "Content-Type: " + rng.choice(["application/json", "text/plain", "\x00", "a" * 9000]),
        "Transfer-Encoding: " + rng.choice(["chunked", "gzip", "identity, chunked"]),
        "X-Junk: " + CANARY_PROMPT + "\x00",
        "Content-Length: " + rng.choice(["-1", "abc", str(10**30), "1, 2"]),
    ]
    request_line = rng.choice(
        ["POST /v1/chat/completions HTTP/1.1"] * 4
        + ["POST /v1/chat/completions HTTP/9.9", "POST /v1/../../etc HTTP/1.1", "P\x00ST / HTTP/1.1"]
    )
    lines = [request_line, "Host: x", "Connection: close", auth]
    lines += rng.sample(extras, rng.randint(0, 3))
    if not any(line.lower().startswith(("content-length", "transfer-encoding")) for line in lines):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace") + body


async def _raw_exchange(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await reader.read(1 << 20)
    finally:
        writer.close()


@pytest.fixture
def all_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    for name in ("aiohttp.server", "aiohttp.access", "aiohttp.internal", "aiohttp.web", "bauxite"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    return caplog


async def test_fuzzed_bodies_and_heads(all_logs: pytest.LogCaptureFixture) -> None:
    rng = random.Random(SEED)
    cfg = config(("a", "b"))
    cfg["auth"] = {"allow_anonymous": True, "keys": [{"department": "d", "sha256": sha256_hex(CANARY_KEY)}]}
    transport = ScriptedTransport(responder=upstream)
    statuses: dict[int, int] = {}
    leaks: list[bytes] = []
    async with WireGateway(transport, cfg) as gw:
        for _ in range(BODIES):
            headers = {"Authorization": f"Bearer {CANARY_KEY}"} if rng.random() < 0.5 else {}
            status, _, body = await asyncio.wait_for(gw.post(fuzz_body(rng), headers=headers), 10)
            statuses[status] = statuses.get(status, 0) + 1
            if status >= 400 and (CANARY_KEY.encode() in body or CANARY_PROMPT.encode() in body):
                leaks.append(body[:200])
        for _ in range(HEADS):
            answer = await asyncio.wait_for(_raw_exchange(gw.port, fuzz_head(rng, fuzz_body(rng))), 10)
            status_line = answer.split(b"\r\n", 1)[0]
            code = int(status_line.split()[1]) if status_line.startswith(b"HTTP/1.") else 0
            statuses[code] = statuses.get(code, 0) + 1
            if code >= 400 and (CANARY_KEY.encode() in answer or CANARY_PROMPT.encode() in answer):
                leaks.append(answer[:300])
    assert sum(statuses.values()) == BODIES + HEADS
    assert 500 not in statuses and 0 not in statuses, statuses
    assert {200, 400, 404}.issubset(statuses), statuses  # the fuzz reached every layer
    assert not leaks, leaks
    for record in all_logs.records:
        text = record.getMessage()
        assert record.exc_info is None, f"traceback logged: {text}"
        assert CANARY_KEY not in text and CANARY_PROMPT not in text, text
    assert CANARY_KEY not in all_logs.text and CANARY_PROMPT not in all_logs.text
