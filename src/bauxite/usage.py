"""Reading token usage out of OpenAI-format responses without re-serialising what the client receives."""

from __future__ import annotations

import time
from typing import Any

import orjson

from .records import Capture


def apply_usage(capture: Capture, usage: Any) -> None:
    """Copy an OpenAI ``usage`` object into the capture; tolerate missing or odd fields."""
    if not isinstance(usage, dict):
        return
    capture.usage_reported = True
    capture.prompt_tokens = _int(usage.get("prompt_tokens"))
    capture.completion_tokens = _int(usage.get("completion_tokens"))
    details = usage.get("prompt_tokens_details")
    if isinstance(details, dict):
        capture.cached_tokens = _int(details.get("cached_tokens"))


def _int(value: Any) -> int:
    return value if isinstance(value, int) and value >= 0 else 0


def usage_from_body(capture: Capture, body: bytes) -> None:
    """Usage from a complete (non-streaming) JSON response body."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return
    if isinstance(doc, dict):
        apply_usage(capture, doc.get("usage"))


class SseRelay:
    """Splits an upstream SSE byte stream into events, notes usage and first-token time, and decides what
    to forward. Events are forwarded byte-for-byte; only the usage-only chunk may be dropped, when the
    gateway (not the client) asked for it.
    """

    __slots__ = ("_buffer", "_capture", "_strip_usage", "content_events", "saw_done")

    def __init__(self, capture: Capture, strip_usage: bool) -> None:
        self._capture = capture
        self._strip_usage = strip_usage
        self._buffer = b""
        self.content_events = 0  # events carrying choices; approximates tokens if usage never arrives
        self.saw_done = False

    def feed(self, chunk: bytes) -> bytes:
        """Bytes to forward to the client for this upstream chunk (possibly empty)."""
        if b"\r" in chunk:  # some servers end SSE lines with CRLF; events are then split on blank lines
            chunk = chunk.replace(b"\r\n", b"\n")
        data = self._buffer + chunk if self._buffer else chunk
        out: list[bytes] = []
        start = 0
        while True:
            end = data.find(b"\n\n", start)
            if end < 0:
                break
            event = data[start : end + 2]
            start = end + 2
            if self._keep(event):
                out.append(event)
        self._buffer = data[start:]
        return b"".join(out) if len(out) != 1 else out[0]

    def flush(self) -> bytes:
        """Whatever partial event is left when the upstream closes."""
        rest, self._buffer = self._buffer, b""
        return rest

    def _keep(self, event: bytes) -> bool:
        capture = self._capture
        if capture.ttft_s is None:
            capture.ttft_s = time.monotonic() - capture.started_mono
        if event.startswith(b"data: [DONE]"):
            self.saw_done = True
            return True
        if b'"usage":{' in event or b'"usage": {' in event:
            payload = _sse_json(event)
            if payload is not None:
                apply_usage(capture, payload.get("usage"))
                if payload.get("choices") == []:
                    return not self._strip_usage
        self.content_events += 1
        return True


def _sse_json(event: bytes) -> dict[str, Any] | None:
    lines = [line[5:].strip() for line in event.split(b"\n") if line.startswith(b"data:")]
    if not lines:
        return None
    try:
        doc = orjson.loads(b"\n".join(lines))
    except orjson.JSONDecodeError:
        return None
    return doc if isinstance(doc, dict) else None
