"""What one wire API looks like to the gateway: the ``Dialect`` interface and the parts dialects share.

The proxy path (auth → route → forward → account) is the same for every API. A dialect is the accounting
half the SSE relay uses (``usage.ApiDialect``: what each event means, when a stream is complete, usage from a
body) plus the API's surface: its upstream path, the shape of errors the gateway answers with, routing hints
from the request body, and where the ``bauxite_carbon`` object goes.
"""

from __future__ import annotations

from typing import Any, Protocol

import orjson

from ..records import Endpoint
from ..sse import SseEvent
from ..usage import ApiDialect


class Dialect(ApiDialect, Protocol):
    """One wire API. Implementations hold no per-request state: per-request facts go into the ``Capture``."""

    endpoint: Endpoint
    path: str  # appended to the cluster's base URL (which ends in /v1)

    def error_body(self, status: int, message: str, code: str | None, param: str | None) -> bytes:
        """The API's own JSON error document for an error the gateway answers itself."""
        ...

    def stream_error_event(self, status: int, message: str, code: str, sequence: int) -> bytes:
        """A complete SSE event telling the client the stream failed after ``sequence`` events."""
        ...

    def client_wants_usage(self, body: dict[str, Any]) -> bool:
        """Whether the client itself asked for stream usage (else the gateway asks, and drops it again)."""
        ...

    def max_tokens(self, body: dict[str, Any]) -> int:
        """The request's output-token cap (0 when not given), for routing's energy and latency estimates."""
        ...

    def prefix(self, body: dict[str, Any]) -> Any:
        """The part of the prompt a KV cache could reuse (system prompt or conversation so far), or None."""
        ...

    def with_carbon(self, doc: dict[str, Any], carbon: dict[str, Any], *, event: bool) -> None:
        """Place the ``bauxite_carbon`` object into a final body (``event=False``) or final usage event."""
        ...


def non_negative_int(value: Any) -> int:
    """Token counts as sent: a non-negative integer, anything else (null, strings, floats) counts as 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def json_object(data: bytes | None) -> dict[str, Any] | None:
    """``data`` parsed as a JSON object, or None for anything else (not JSON, an array, ``[DONE]``)."""
    if data is None:
        return None
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return doc if isinstance(doc, dict) else None


def event_type(event: SseEvent) -> tuple[str, dict[str, Any] | None]:
    """The event's type: its ``event:`` field, else the ``type`` member of its JSON (then also returned).

    vLLM and both vendors name every event; a JSON-only upstream is read from the payload instead.
    """
    if event.event and event.event != "message":
        return event.event, None
    doc = json_object(event.data)
    kind = doc.get("type") if doc is not None else None
    return (kind if isinstance(kind, str) else ""), doc


def output_chars(parts: Any, key: str) -> int:
    """Characters of ``key`` text in a list of content parts (for an estimate when usage is missing)."""
    total = 0
    for part in parts if isinstance(parts, list) else ():
        text = part.get(key) if isinstance(part, dict) else None
        total += len(text) if isinstance(text, str) else 0
    return total
