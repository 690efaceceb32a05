"""SSE relay: events forwarded byte-for-byte whatever the chunking; only the gateway's usage chunk dropped."""

from __future__ import annotations

import time

import orjson
import pytest

from bauxite.records import Capture
from bauxite.usage import SseRelay, usage_from_body

CONTENT = b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'
USAGE = (
    b'data: {"choices":[],"usage":{"prompt_tokens":11,"completion_tokens":2,'
    b'"prompt_tokens_details":{"cached_tokens":8}}}\n\n'
)
DONE = b"data: [DONE]\n\n"
STREAM = CONTENT + CONTENT + USAGE + DONE


def capture() -> Capture:
    return Capture("m", "d", "chat", time.time(), time.monotonic(), stream=True)


@pytest.mark.parametrize("size", [1, 2, 7, 64, len(STREAM)])
@pytest.mark.parametrize("strip", [True, False])
def test_any_chunking_gives_same_output(size: int, strip: bool) -> None:
    cap = capture()
    relay = SseRelay(cap, strip_usage=strip)
    out = b"".join(relay.feed(STREAM[i : i + size]) for i in range(0, len(STREAM), size)) + relay.flush()
    assert out == (CONTENT + CONTENT + DONE if strip else STREAM)
    assert (cap.prompt_tokens, cap.completion_tokens, cap.cached_tokens) == (11, 2, 8)
    assert relay.saw_done and relay.content_events == 2 and cap.ttft_s is not None


def test_crlf_events_are_split_and_relayed_unchanged() -> None:
    relay = SseRelay(capture(), strip_usage=True)
    out = relay.feed(STREAM.replace(b"\n", b"\r\n"))
    assert out == (CONTENT + CONTENT + DONE).replace(b"\n", b"\r\n")


def test_truncated_stream_keeps_partial_event_for_flush() -> None:
    relay = SseRelay(capture(), strip_usage=True)
    assert relay.feed(CONTENT + b'data: {"choi') == CONTENT
    assert relay.flush() == b'data: {"choi' and not relay.saw_done


def test_usage_from_body_tolerates_garbage() -> None:
    cap = capture()
    usage_from_body(cap, b"not json")
    assert not cap.usage_reported
    usage_from_body(cap, orjson.dumps({"usage": {"prompt_tokens": 3, "completion_tokens": "x"}}))
    assert cap.usage_reported and cap.prompt_tokens == 3 and cap.completion_tokens == 0
