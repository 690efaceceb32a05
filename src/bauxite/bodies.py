"""Changing top-level members of a JSON request body without re-serialising the rest.

Re-encoding a client's body loses information (integers beyond 64 bits become floats, key order and
number formatting change) and fails on nesting deeper than the encoder allows. The proxy only ever needs
to replace or add a few top-level members (``model``, ``stream_options``), so it splices bytes instead:
the client's bytes reach the upstream unchanged except for those members.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import orjson

# A JSON string, or one structural character. Everything else (numbers, literals, whitespace) is skipped.
_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[{}\[\],:]')


def member_spans(raw: bytes) -> tuple[dict[str, list[tuple[int, int]]], int]:
    """Value byte spans of every top-level member (by key; repeats kept in order) and the offset of the
    object's closing brace. ``raw`` must already be known to be one valid JSON object."""
    spans: dict[str, list[tuple[int, int]]] = {}
    depth = 0
    key: str | None = None
    value_start = -1
    expect_key = False
    for match in _TOKEN.finditer(raw):
        token = match.group()
        first = token[0]
        if first == 0x22:  # string
            if depth == 1 and expect_key:
                key = token[1:-1].decode() if b"\\" not in token else orjson.loads(token)
                expect_key = False
            continue
        if token in (b"{", b"["):
            depth += 1
            if depth == 1:
                expect_key = True
            continue
        if depth == 1 and token in (b",", b"}") and key is not None:
            spans.setdefault(key, []).append((value_start, match.start()))
            key = None
        if token == b":" and depth == 1:
            value_start = match.end()
        elif token == b"," and depth == 1:
            expect_key = True
        elif token in (b"}", b"]"):
            depth -= 1
            if depth == 0:
                return spans, match.start()
    raise ValueError("not a JSON object")


def set_members(raw: bytes, values: Mapping[str, bytes]) -> bytes:
    """``raw`` with each top-level member in ``values`` set to the given JSON-encoded value: replaced where
    present (every repeat of the key), appended before the closing brace where absent."""
    if not any(orjson.dumps(key) in raw for key in values):
        # None of the keys occurs anywhere (the usual case): append before the closing brace, no scan.
        close = raw.rstrip().rfind(b"}")
        empty = raw[raw.find(b"{") + 1 : close].strip() == b""
        added = b",".join(orjson.dumps(key) + b":" + value for key, value in values.items())
        return raw[:close] + (b"" if empty else b",") + added + raw[close:]
    spans, close = member_spans(raw)
    edits: list[tuple[int, int, bytes]] = []
    appended: list[bytes] = []
    for key, value in values.items():
        if key in spans:
            edits.extend((start, end, value) for start, end in spans[key])
        else:
            appended.append(orjson.dumps(key) + b":" + value)
    if appended:
        prefix = b"," if spans else b""
        edits.append((close, close, prefix + b",".join(appended)))
    out: list[bytes] = []
    pos = 0
    for start, end, value in sorted(edits, key=lambda e: e[0]):
        out.append(raw[pos:start])
        out.append(value)
        pos = end
    out.append(raw[pos:])
    return b"".join(out)
