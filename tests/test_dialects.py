"""Per-API wire details: usage in bodies and events, stream ends, in-band errors, error shapes, carbon."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest

from bauxite.dialects import DIALECTS
from bauxite.records import Capture, Endpoint
from bauxite.sse import SseEvent, SseParser
from bauxite.usage import SseRelay, StreamState, usage_from_body


def capture(endpoint: Endpoint) -> Capture:
    return Capture("m", "d", endpoint, time.time(), time.monotonic(), stream=True)


def relay_for(cap: Capture) -> SseRelay:
    """A relay as the proxy builds one: these APIs always give the client its usage events."""
    dialect = DIALECTS[cap.endpoint]
    return SseRelay(cap, strip_usage=not dialect.client_wants_usage({}), dialect=dialect)


def parse(raw: bytes) -> list[SseEvent]:
    return SseParser().feed(raw)


def ev(name: str, doc: dict[str, Any], named: bool = True) -> bytes:
    head = f"event: {name}\n".encode() if named else b""
    return head + b"data: " + orjson.dumps({"type": name, **doc}) + b"\n\n"


RESPONSE_STREAM = (
    ev("response.created", {"response": {"id": "resp_1", "status": "in_progress", "usage": None}})
    + ev("response.output_text.delta", {"delta": "a"})
    + ev("response.output_text.delta", {"delta": "b"})
    + ev("response.output_text.done", {"text": "ab"})
    + ev("response.completed", {"response": {"id": "resp_1", "usage": {
        "input_tokens": 40, "input_tokens_details": {"cached_tokens": 32},
        "output_tokens": 9, "output_tokens_details": {"reasoning_tokens": 7}}}})
)  # fmt: skip

START_USAGE = {
    "input_tokens": 5,
    "cache_read_input_tokens": 30,
    "cache_creation_input_tokens": 10,
    "output_tokens": 1,
}
MESSAGES_STREAM = (
    ev("message_start", {"message": {"id": "msg_1", "usage": START_USAGE}})
    + ev("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
    + ev("ping", {})
    + ev("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": "hi"}})
    + ev("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": "!"}})
    + ev("content_block_stop", {"index": 0})
    + ev("message_delta", {"delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 12}})
    + ev("message_stop", {})
)  # fmt: skip


@pytest.mark.parametrize("named", [True, False])
@pytest.mark.parametrize("size", [1, 5, 64, 10_000])
def test_responses_stream_usage_end_and_byte_exact_relay(size: int, named: bool) -> None:
    stream = RESPONSE_STREAM if named else RESPONSE_STREAM.replace(b"event: ", b": ")  # type in JSON only
    cap = capture("responses")
    relay = relay_for(cap)
    out = b"".join(relay.feed(stream[i : i + size]) for i in range(0, len(stream), size))
    assert out == stream
    assert (cap.prompt_tokens, cap.completion_tokens, cap.cached_tokens) == (40, 9, 32)
    assert relay.complete(1) and not relay.state.error and relay.content_events == 2
    assert cap.usage_reported and cap.upstream_id == "resp_1" and cap.ttft_s is not None


@pytest.mark.parametrize("size", [1, 7, 10_000])
def test_messages_stream_cache_tokens_cumulative_output_and_end(size: int) -> None:
    stream = MESSAGES_STREAM.replace(b"\n", b"\r\n")  # Anthropic ends lines with CRLF
    cap = capture("messages")
    relay = relay_for(cap)
    out = b"".join(relay.feed(stream[i : i + size]) for i in range(0, len(stream), size)) + relay.flush()
    assert out == stream
    # input 5 + cache read 30 + cache write 10; output is message_delta's cumulative 12, not 1 + 12
    assert (cap.prompt_tokens, cap.cached_tokens, cap.cache_write_tokens) == (45, 30, 10)
    assert cap.completion_tokens == 12
    assert relay.complete(1) and relay.content_events == 2  # pings and block starts are not output


def test_messages_usage_is_final_only_at_message_delta_and_output_ends_the_hold() -> None:
    cap = capture("messages")
    relay = relay_for(cap)
    relay.feed(MESSAGES_STREAM.split(b"event: content_block_delta")[0])
    assert cap.prompt_tokens == 45 and not relay.started  # message_start, block start, ping: still held
    relay.feed(
        MESSAGES_STREAM[len(MESSAGES_STREAM.split(b"event: content_block_delta")[0]) :].split(
            b"event: message_delta"
        )[0]
    )
    assert relay.started and not cap.usage_reported and not relay.complete(1)


def test_vllm_messages_usage_without_cache_fields() -> None:
    cap = capture("messages")
    dialect, state = DIALECTS["messages"], StreamState()
    start = {"type": "message_start", "message": {"usage": {"input_tokens": 17, "output_tokens": 0}}}
    delta = {"type": "message_delta", "usage": {"input_tokens": 17, "output_tokens": 4}}
    for doc in (start, delta):
        (event,) = parse(b"data: " + orjson.dumps(doc) + b"\n\n")  # the type only in the JSON
        dialect.classify(event, cap, state)
    assert (cap.prompt_tokens, cap.cached_tokens, cap.completion_tokens) == (17, 0, 4)
    assert cap.usage_reported and state.saw_usage


@pytest.mark.parametrize(
    ("endpoint", "event", "end", "error"),
    [
        ("responses", ev("response.failed", {"response": {"id": "r", "usage": None}}), False, True),
        ("responses", ev("response.incomplete", {"response": {"id": "r", "usage": None}}), True, False),
        ("responses", ev("error", {"code": "server_error", "message": "x"}), False, True),
        ("messages", ev("error", {"error": {"type": "overloaded_error", "message": "x"}}), False, True),
        ("messages", ev("message_stop", {}), True, False),
    ],
)
def test_end_and_in_band_errors(endpoint: Endpoint, event: bytes, end: bool, error: bool) -> None:
    relay = relay_for(capture(endpoint))
    assert relay.feed(event) == event
    assert (relay.complete(1), bool(relay.state.error)) == (end, error)


def test_body_usage_per_api() -> None:
    responses = capture("responses")
    usage_from_body(responses, orjson.dumps({"id": "resp_9", "usage": {"input_tokens": 3, "output_tokens": 4,
                    "input_tokens_details": {"cached_tokens": 2}}}), DIALECTS["responses"])  # fmt: skip
    assert (responses.prompt_tokens, responses.completion_tokens, responses.cached_tokens) == (3, 4, 2)
    assert responses.upstream_id == "resp_9"
    messages = capture("messages")
    usage_from_body(messages, orjson.dumps({"usage": {"input_tokens": 3, "output_tokens": 4,
                    "cache_read_input_tokens": None, "cache_creation_input_tokens": 6}}),
                    DIALECTS["messages"])  # fmt: skip
    assert (messages.prompt_tokens, messages.completion_tokens, messages.cached_tokens) == (9, 4, 0)


def test_body_without_usage_is_estimated_and_flagged() -> None:
    text = "x" * 400
    responses = capture("responses")
    body = {"output": [{"type": "message", "content": [{"type": "output_text", "text": text}]}]}
    usage_from_body(responses, orjson.dumps(body), DIALECTS["responses"])
    messages = capture("messages")
    usage_from_body(
        messages, orjson.dumps({"content": [{"type": "text", "text": text}]}), DIALECTS["messages"]
    )
    for cap in (responses, messages):
        assert cap.usage_estimated and not cap.usage_reported and cap.completion_tokens == 101


def test_error_shapes() -> None:
    anthropic = orjson.loads(DIALECTS["messages"].error_body(429, "slow down", "rate_limited", None))
    assert anthropic == {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}
    openai = orjson.loads(DIALECTS["responses"].error_body(404, "nope", "model_not_found", "model"))
    assert openai["error"] == {"message": "nope", "type": "not_found_error", "param": "model",
                               "code": "model_not_found"}  # fmt: skip
    (event,) = parse(DIALECTS["responses"].stream_error_event(502, "cut", "upstream_error", 7))
    assert event.event == "error" and event.data and orjson.loads(event.data)["sequence_number"] == 7
    (event,) = parse(DIALECTS["messages"].stream_error_event(502, "cut", "upstream_error", 7))
    assert event.event == "error" and event.data and orjson.loads(event.data)["error"]["type"] == "api_error"


@pytest.mark.parametrize(
    ("endpoint", "stream", "final"),
    [("responses", RESPONSE_STREAM, "response.completed"), ("messages", MESSAGES_STREAM, "message_delta")],
)
def test_the_final_usage_event_is_offered_for_carbon(endpoint: Endpoint, stream: bytes, final: str) -> None:
    relay = relay_for(capture(endpoint))
    offered: list[str] = []

    def on_usage(event: SseEvent) -> bytes:
        offered.append(event.event)
        return b"event: replaced\ndata: {}\n\n"

    relay.on_usage = on_usage
    out = relay.feed(stream)
    assert offered == [final] and out.count(b"event: replaced") == 1


def test_carbon_placement_per_api() -> None:
    carbon: dict[str, Any] = {"carbon_g": 1.5}
    doc: dict[str, Any] = {"type": "response.completed", "response": {"id": "r"}}
    DIALECTS["responses"].with_carbon(doc, carbon, event=True)
    assert doc["response"]["bauxite_carbon"] == carbon and "bauxite_carbon" not in doc
    body: dict[str, Any] = {"id": "r"}
    DIALECTS["responses"].with_carbon(body, carbon, event=False)
    assert body["bauxite_carbon"] == carbon
    delta: dict[str, Any] = {"type": "message_delta"}
    DIALECTS["messages"].with_carbon(delta, carbon, event=True)
    assert delta["bauxite_carbon"] == carbon


def test_routing_hints_per_api() -> None:
    assert DIALECTS["responses"].max_tokens({"max_output_tokens": 50, "max_tokens": 3}) == 50
    assert DIALECTS["messages"].max_tokens({"max_tokens": 64}) == 64
    assert DIALECTS["messages"].prefix({"system": "be brief", "messages": []}) == "be brief"
    assert DIALECTS["responses"].prefix({"input": "only one turn"}) is None
    assert not DIALECTS["chat"].client_wants_usage({"stream_options": {"x": 1}})
    # Responses and Messages always carry usage: the gateway never asks for it nor drops events.
    assert DIALECTS["responses"].client_wants_usage({}) and DIALECTS["messages"].client_wants_usage({})


def test_messages_estimate_counts_thinking_and_tool_input() -> None:
    cap = capture("messages")
    blocks = [
        {"type": "thinking", "thinking": "t" * 40},
        {"type": "text", "text": "x" * 40},
        {"type": "tool_use", "id": "t1", "name": "f", "input": {"q": "y" * 30}},
    ]
    usage_from_body(cap, orjson.dumps({"content": blocks}), DIALECTS["messages"])
    assert cap.usage_estimated and cap.completion_tokens == (40 + 40 + len('{"q":""}') + 30) // 4 + 1
