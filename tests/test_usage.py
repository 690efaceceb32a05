"""SSE relay: events forwarded byte-for-byte whatever the chunking; only the gateway's usage chunk dropped."""

from __future__ import annotations

import time

import orjson
import pytest

from bauxite.records import Capture
from bauxite.sse import SseEvent, data_events
from bauxite.usage import CHAT, Kind, SseRelay, StreamState, usage_from_body

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


class _EventByEvent:
    """The chat dialect with its whole-chunk path turned off: every event is parsed and classified."""

    name = "choices"

    def classify(self, event: SseEvent, capture: Capture, state: StreamState) -> Kind:
        return CHAT.classify(event, capture, state)

    def complete(self, state: StreamState, choices: int) -> bool:
        return CHAT.complete(state, choices)

    def account_body(self, capture: Capture, body: bytes) -> None:
        CHAT.account_body(capture, body)

    def content_prefix(self, chunk: bytes) -> tuple[int, int]:
        return 0, 0


def _token(text: str, finish: str | None = None, index: int = 0) -> bytes:
    choice = {"index": index, "delta": {"content": text}, "finish_reason": finish}
    return b"data: " + orjson.dumps({"choices": [choice]}) + b"\n\n"


@pytest.mark.parametrize("group", [1, 2, 3, 5, 100])
@pytest.mark.parametrize("strip", [True, False])
def test_whole_chunks_of_tokens_are_relayed_as_the_event_by_event_path_relays_them(
    group: int, strip: bool
) -> None:
    # Token text that looks like the notable keys or the sentinel must not be mistaken for them, and must
    # not change any figure either way.
    texts = ["Hel", "lo", ' "usage": {', "[DONE]", "error", "\\n\\ndata: x", "é", ": comment"]
    events = [_token(t) for t in texts] + [_token("", "stop"), USAGE, b": keep-alive\n\n", DONE]
    events[3:3] = [b"event: message\ndata: " + orjson.dumps({"choices": []}) + b"\n\n"]
    chunks = [b"".join(events[i : i + group]) for i in range(0, len(events), group)]
    if group <= 3:  # the stream's first events take the whole-run path
        assert CHAT.content_prefix(chunks[0])[0] > 0
    fast_cap, slow_cap = capture(), capture()
    fast = SseRelay(fast_cap, strip_usage=strip)
    slow = SseRelay(slow_cap, strip_usage=strip, dialect=_EventByEvent())
    for chunk in chunks:
        assert fast.feed(chunk) == slow.feed(chunk)
    assert fast.flush() == slow.flush() == b""
    assert fast.state == slow.state and fast.forwarded == slow.forwarded and fast.started == slow.started
    fields = ("prompt_tokens", "completion_tokens", "cached_tokens", "usage_reported")
    assert [getattr(fast_cap, f) for f in fields] == [getattr(slow_cap, f) for f in fields]
    assert (fast_cap.ttft_s is None) == (slow_cap.ttft_s is None)


def test_only_plain_data_events_count_as_a_run_of_tokens() -> None:
    assert data_events(CONTENT * 3) == 3 and CHAT.content_prefix(CONTENT * 3) == (3, 3 * len(CONTENT))
    for chunk in (
        CONTENT + CONTENT[:-1],  # an unfinished event
        CONTENT.replace(b"\n", b"\r\n"),
        b": comment\n\n" + CONTENT,
        CONTENT + b"event: x\ndata: {}\n\n",
        CONTENT + b"data: a\ndata: b\n\n",  # two data lines: one event, joined
        CONTENT + b"\n" + CONTENT,  # a blank line too many
        b"\xef\xbb\xbf" + CONTENT,  # a byte-order mark
        b"",
    ):
        assert data_events(chunk) == 0, chunk
    # The run ends before the first event that carries usage, a finish, an error or the sentinel.
    stop = _token("", "stop")
    for tail in (USAGE, DONE, stop, b'data: {"error":{"type":"x"}}\n\n'):
        assert CHAT.content_prefix(CONTENT * 2 + tail + CONTENT) == (2, 2 * len(CONTENT)), tail
        assert CHAT.content_prefix(tail + CONTENT) == (0, 0), tail
    assert CHAT.content_prefix(CONTENT + CONTENT[:9]) == (1, len(CONTENT))  # the partial event waits
