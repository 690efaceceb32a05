"""The SSE parser against the WHATWG rules, under every split of the input; body splicing; Retry-After."""

from __future__ import annotations

import itertools
import json
import random

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bauxite.bodies import set_members
from bauxite.retry_after import MAX_RETRY_AFTER_S, retry_after_s
from bauxite.sse import SseParser


def parse(data: bytes, splits: list[int]) -> tuple[list[tuple[bytes | None, str, str | None]], bytes]:
    parser = SseParser()
    events = []
    raw = b""
    cuts = [0, *sorted(set(splits)), len(data)]
    for start, end in itertools.pairwise(cuts):
        for event in parser.feed(data[start:end]):
            events.append((event.data, event.event, event.id))
            raw += event.raw
    rest = parser.flush()
    assert raw + rest == data  # byte-exact: every input byte is in exactly one event or the flush
    return events, rest


SPEC_CASES = [
    (b"data: a\n\n", [(b"a", "message", None)]),
    (b"data:a\r\n\r\n", [(b"a", "message", None)]),
    (b"data: a\r\rdata: b\r\r", [(b"a", "message", None), (b"b", "message", None)]),
    (b"data: a\ndata: b\n\n", [(b"a\nb", "message", None)]),
    (b"data\n\n", [(b"", "message", None)]),  # a bare field name: empty value
    (b"data:  two spaces\n\n", [(b" two spaces", "message", None)]),  # only one space is stripped
    (b": comment\n\n", [(None, "message", None)]),
    (b"event: error\ndata: x\nid: 7\n\n", [(b"x", "error", "7")]),
    (b"event: error\n\ndata: x\n\n", [(None, "error", None), (b"x", "message", None)]),  # event resets
    (b"\xef\xbb\xbfdata: a\n\n", [(b"a", "message", None)]),
    (b"retry: 10\nfoo: bar\ndata: a\n\n", [(b"a", "message", None)]),
]


@pytest.mark.parametrize(("data", "expected"), SPEC_CASES)
def test_spec_cases_under_every_single_split(data: bytes, expected: list[object]) -> None:
    for cut in range(len(data) + 1):
        events, rest = parse(data, [cut])
        assert events == expected, cut
        # A CRLF split after its CR: the LF is relayed with whatever follows (here: the end).
        assert rest in (b"", b"\n")


def test_unterminated_event_is_not_dispatched() -> None:
    events, rest = parse(b"data: a\n\ndata: b\n", [])
    assert events == [(b"a", "message", None)] and rest == b"data: b\n"


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from([b"data: x", b"data:y", b": c", b"event: e", b"", b"id: 1"]), max_size=12),
    st.sampled_from([b"\n", b"\r", b"\r\n"]),
    st.lists(st.integers(min_value=0, max_value=200), max_size=6),
)
def test_any_line_ending_and_split_gives_the_same_events(
    lines: list[bytes], ending: bytes, splits: list[int]
) -> None:
    data = b"".join(line + ending for line in lines)
    reference, _ = parse(data.replace(ending, b"\n"), [])
    events, _ = parse(data, [s % (len(data) + 1) for s in splits])
    assert events == reference


@pytest.mark.parametrize(
    ("raw", "changes"),
    [
        (b'{"model":"a","seed":123456789012345678901234567890}', {"model": b'"b"'}),
        (b' {\n "model" : "a" ,\n "x":{"model":"n"} } ', {"model": b'"b"', "stream_options": b"{}"}),
        (b"{}", {"stream_options": b'{"include_usage":true}'}),
        (b'{"s":"},\\"model\\":","model":"a","model":"c"}', {"model": b'"b"'}),
        (b'{"a":[{"b":[]}],"stream_options":{"x":1}}', {"stream_options": b'{"x":1,"include_usage":true}'}),
    ],
)
def test_set_members_changes_only_the_named_members(raw: bytes, changes: dict[str, bytes]) -> None:
    out = set_members(raw, changes)
    doc = json.loads(out)
    expected = json.loads(raw)
    expected.update({k: json.loads(v) for k, v in changes.items()})
    assert doc == expected
    if b"1234567890123" in raw:
        assert b"123456789012345678901234567890" in out  # not turned into a float


def test_set_members_random_objects() -> None:
    rng = random.Random(3)
    for _ in range(300):
        doc = {
            f"k{i}": rng.choice([1, "x}", [1, {"model": 2}], {"a": "]"}, None])
            for i in range(rng.randint(0, 5))
        }
        if rng.random() < 0.5:
            doc["model"] = "orig"
        raw = orjson.dumps(doc)
        out = set_members(raw, {"model": b'"new"'})
        assert json.loads(out) == {**doc, "model": "new"}


def test_retry_after_forms() -> None:
    now = 1_800_000_000.0
    assert retry_after_s("30", now) == 30.0
    assert retry_after_s("Thu, 15 Jan 2027 08:00:30 GMT", 1_800_000_000.0 - 0) is not None
    date = "Fri, 15 Jan 2027 08:00:00 GMT"
    from email.utils import parsedate_to_datetime

    at = parsedate_to_datetime(date).timestamp()
    assert retry_after_s(date, at - 90) == pytest.approx(90.0)
    assert retry_after_s(date, at + 90) == 0.0  # in the past: retry now
    assert retry_after_s("999999", now) == MAX_RETRY_AFTER_S
    for bad in (None, "", "soon", "-5", "1.5e3"):
        assert retry_after_s(bad, now) is None
