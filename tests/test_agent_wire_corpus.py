"""The wire-behaviour corpus for the Responses and Messages APIs: framing variants, stream ends, in-band
errors before and after output, truncation, missing usage and upstream errors, each asserting what the client
receives (byte-exact where the gateway passes bytes through, the API's own error shape otherwise), what is
recorded, and which clusters cool down. Clusters are scripted in memory; the client side is real HTTP.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from bauxite.transport_fake import Close, Exchange, ScriptedTransport, json_reply, sse
from wire_kit import MODEL, WireGateway, config

RESPONSES, MESSAGES = "/v1/responses", "/v1/messages"


def ev(name: str, named: bool = True, **doc: Any) -> bytes:
    head = f"event: {name}\n".encode() if named else b""
    return head + b"data: " + orjson.dumps({"type": name, **doc}) + b"\n\n"


def crlf(data: bytes) -> bytes:
    return data.replace(b"\n", b"\r\n")


RESP_USAGE = {"input_tokens": 11, "input_tokens_details": {"cached_tokens": 4}, "output_tokens": 2,
              "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 13}  # fmt: skip
R_CREATED = ev("response.created", response={"id": "resp_1", "status": "in_progress", "usage": None})
R_DELTA = ev("response.output_text.delta", item_id="m", output_index=0, content_index=0, delta="hi")
R_DONE = ev("response.completed", response={"id": "resp_1", "status": "completed", "usage": RESP_USAGE})
R_STREAM = [R_CREATED, R_DELTA, R_DELTA, R_DONE]

M_START = ev("message_start", message={"id": "msg_1", "type": "message", "role": "assistant", "content": [],
             "usage": {"input_tokens": 5, "cache_read_input_tokens": 30, "cache_creation_input_tokens": 0,
                       "output_tokens": 1}})  # fmt: skip
M_BLOCK = ev("content_block_start", index=0, content_block={"type": "text", "text": ""})
M_PING = ev("ping")
M_DELTA = ev("content_block_delta", index=0, delta={"type": "text_delta", "text": "hi"})
M_FINAL = ev("message_delta", delta={"stop_reason": "end_turn"}, usage={"output_tokens": 2})
M_STOP = ev("message_stop")
M_STREAM = [M_START, M_BLOCK, M_PING, M_DELTA, M_DELTA, ev("content_block_stop", index=0), M_FINAL, M_STOP]
M_OVERLOADED = ev("error", error={"type": "overloaded_error", "message": "Overloaded"})

FAILED = {"id": "r", "status": "failed", "error": {"code": "server_error", "message": "x"}, "usage": None}
ANTHROPIC_529 = orjson.dumps({"type": "error", "error": {"type": "overloaded_error", "message": "busy"}})
RESP_OK = {"status": "ok", "prompt_tokens": 11, "completion_tokens": 2, "cached_tokens": 4}
MSG_OK = {"status": "ok", "prompt_tokens": 35, "completion_tokens": 2, "cached_tokens": 30}


@dataclass
class Row:
    name: str
    path: str
    scripts: Mapping[str, Sequence[Exchange]]
    stream: bool = True
    clusters: tuple[str, ...] = ("a",)
    status: int = 200
    body: bytes | None = None
    body_has: Sequence[bytes] = ()
    record: Mapping[str, Any] = field(default_factory=dict)
    cooled: Sequence[str] = ()


def one(*exchanges: Exchange) -> dict[str, list[Exchange]]:
    return {"a": list(exchanges)}


# fmt: off
ROWS = [
    Row("responses-lf", RESPONSES, one(sse(*R_STREAM)), body=b"".join(R_STREAM),
        record={**RESP_OK, "upstream_id": "resp_1", "usage_estimated": False}),
    Row("responses-crlf-one-byte-reads", RESPONSES, one(sse(*[bytes([b]) for b in crlf(b"".join(R_STREAM))])),
        body=crlf(b"".join(R_STREAM)), record=RESP_OK),
    Row("responses-type-only-in-json", RESPONSES,
        one(sse(*(e.split(b"\n", 1)[1] for e in R_STREAM))),
        body=b"".join(e.split(b"\n", 1)[1] for e in R_STREAM), record=RESP_OK),
    Row("responses-incomplete-is-a-normal-end", RESPONSES,
        one(sse(R_CREATED, R_DELTA, ev("response.incomplete", response={"id": "r", "usage": RESP_USAGE}))),
        record=RESP_OK),
    Row("responses-closed-after-output-gets-error-event", RESPONSES, one(sse(R_CREATED, R_DELTA, Close())),
        body_has=[b"event: error\ndata: {\"type\":\"error\",\"code\":\"upstream_error\""],
        record={"status": "error", "http_status": 502, "completion_tokens": 1, "usage_estimated": True},
        cooled=("a",)),
    Row("responses-ended-without-completed-is-truncated", RESPONSES, one(sse(R_CREATED, R_DELTA)),
        body_has=[b"event: error"], record={"status": "error", "error_type": "upstream_stream_truncated"},
        cooled=("a",)),
    Row("responses-failed-after-output-is-an-error", RESPONSES,
        one(sse(R_CREATED, R_DELTA, ev("response.failed", response=FAILED))),
        body_has=[b"response.failed"], record={"status": "error", "error_type": "upstream_error_event"},
        cooled=("a",)),
    Row("responses-created-then-closed-fails-over", RESPONSES,
        {"a": [sse(R_CREATED, Close())], "b": [sse(*R_STREAM)]}, clusters=("a", "b"),
        body=b"".join(R_STREAM), record={**RESP_OK, "cluster": "b"}, cooled=("a",)),
    Row("responses-error-event-before-output-fails-over", RESPONSES,
        {"a": [sse(R_CREATED, ev("error", code="server_error", message="x"))], "b": [sse(*R_STREAM)]},
        clusters=("a", "b"), body=b"".join(R_STREAM), record={**RESP_OK, "cluster": "b"}, cooled=("a",)),
    Row("responses-body-without-usage-is-estimated", RESPONSES,
        one(json_reply(orjson.dumps({"id": "resp_2", "output": [{"type": "message", "content": [
            {"type": "output_text", "text": "x" * 40}]}]}))),
        stream=False, record={"status": "ok", "usage_estimated": True, "completion_tokens": 11,
                              "upstream_id": "resp_2"}),
    Row("responses-html-502-becomes-openai-error", RESPONSES,
        one(Exchange(502, {"Content-Type": "text/html"}, [b"<html>bad gateway</html>"])), stream=False,
        status=502, body_has=[b'"error":{', b'"code":"upstream_error"'], cooled=("a",)),
    Row("messages-anthropic-format-crlf-pings-cache", MESSAGES, one(sse(*(crlf(e) for e in M_STREAM))),
        body=b"".join(crlf(e) for e in M_STREAM), record={**MSG_OK, "usage_estimated": False}),
    Row("messages-vllm-format", MESSAGES,
        one(sse(ev("message_start", message={"id": "m", "usage": {"input_tokens": 35, "output_tokens": 0}}),
                M_BLOCK, M_DELTA, M_DELTA,
                ev("message_delta", delta={}, usage={"input_tokens": 35, "output_tokens": 2}), M_STOP)),
        record={"status": "ok", "prompt_tokens": 35, "completion_tokens": 2, "cached_tokens": 0}),
    Row("messages-closed-before-stop-gets-anthropic-error-event", MESSAGES,
        one(sse(M_START, M_BLOCK, M_DELTA, M_DELTA, Close())),
        body_has=[b'event: error\ndata: {"type":"error","error":{"type":"api_error"'],
        record={"status": "error", "prompt_tokens": 35, "completion_tokens": 2, "usage_estimated": True},
        cooled=("a",)),
    Row("messages-overloaded-before-output-fails-over", MESSAGES,
        {"a": [sse(M_START, M_PING, M_OVERLOADED)], "b": [sse(*M_STREAM)]}, clusters=("a", "b"),
        body=b"".join(M_STREAM), record={**MSG_OK, "cluster": "b"}, cooled=("a",)),
    Row("messages-overloaded-after-output-is-relayed-and-recorded", MESSAGES,
        one(sse(M_START, M_BLOCK, M_DELTA, M_OVERLOADED)),
        body=b"".join((M_START, M_BLOCK, M_DELTA, M_OVERLOADED)),
        record={"status": "error", "error_type": "upstream_error_event", "completion_tokens": 1},
        cooled=("a",)),
    Row("messages-html-502-becomes-anthropic-error", MESSAGES,
        one(Exchange(502, {"Content-Type": "text/html"}, [b"<html>bad gateway</html>"])), stream=False,
        status=502, body_has=[b'{"type":"error","error":{"type":"api_error"'], cooled=("a",)),
    Row("messages-529-is-relayed-as-anthropic-wrote-it", MESSAGES,
        one(json_reply(ANTHROPIC_529, status=529)), stream=False, status=529, body=ANTHROPIC_529,
        cooled=("a",)),
]
# fmt: on


def request_body(row: Row) -> dict[str, Any]:
    if row.path == RESPONSES:
        return {"model": MODEL, "input": "hello", "stream": row.stream}
    return {"model": MODEL, "max_tokens": 16, "messages": [{"role": "user", "content": "hello"}],
            "stream": row.stream}  # fmt: skip


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
async def test_agent_wire_behaviour(row: Row) -> None:
    transport = ScriptedTransport()
    for cluster, exchanges in row.scripts.items():
        transport.script(cluster, *exchanges)
    cfg = config(row.clusters, timeouts={"read_s": "300ms", "connect_s": "300ms"})
    async with WireGateway(transport, cfg) as gw:
        status, _headers, body = await gw.post(request_body(row), path=row.path)
        assert status == row.status, body
        if row.body is not None:
            assert body == row.body
        for fragment in row.body_has:
            assert fragment in body, (fragment, body)
        if status >= 400:  # each API's own error shape
            doc = orjson.loads(body)
            assert (
                (doc["type"] == "error" and "type" in doc["error"])
                if row.path == MESSAGES
                else "code" in doc["error"]
            )
        if row.record:
            (record,) = await gw.records(1)
            (capture,) = gw.captures
            assert record.endpoint == ("responses" if row.path == RESPONSES else "messages")
            for name, value in row.record.items():
                assert getattr(capture, name) == value, (name, getattr(capture, name), value)
            if capture.status == "ok" and row.stream:
                assert capture.ttft_s is not None and record.ttft_s >= 0
        now = time.monotonic()
        for name in row.cooled:
            assert not gw.cluster(name).available(now), f"{name} should be cooling down"
        assert transport.unused() == 0


async def test_messages_upstream_gets_cluster_key_and_anthropic_headers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TEST_AGENT_UPSTREAM_KEY", "cluster-secret")
    transport = ScriptedTransport()
    transport.script("a", sse(*M_STREAM))
    async with WireGateway(transport, config(("a",), api_key_env="TEST_AGENT_UPSTREAM_KEY")) as gw:
        headers = {"x-api-key": "client-key", "anthropic-version": "2023-06-01", "anthropic-beta": "tools-1"}
        status, _, _ = await gw.post(
            request_body(ROWS[-1]) | {"stream": True}, path=MESSAGES, headers=headers
        )
    assert status == 200
    (sent,) = transport.sent
    assert sent.request.url.endswith("/v1/messages")
    assert sent.request.headers["x-api-key"] == "cluster-secret"
    assert sent.request.headers["Authorization"] == "Bearer cluster-secret"
    assert (sent.request.headers["anthropic-version"], sent.request.headers["anthropic-beta"]) == (
        "2023-06-01",
        "tools-1",
    )
    assert b"stream_options" not in sent.request.body  # usage always comes: the body is the client's
