"""What one wire API looks like to the proxy: the ``Dialect`` interface and the parts the dialects share.

The proxy path (auth → route → forward → account) is the same for every API; only these details differ:
the upstream path, where usage sits in a body and in which stream events, which event ends a stream, how an
in-band error looks, and the shape of an error the gateway itself answers with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from ..records import Capture, Endpoint


@dataclass(frozen=True, slots=True)
class SseEvent:
    """One server-sent event: its ``event:`` name ("" when absent) and its joined ``data:`` lines."""

    name: str
    data: bytes


@dataclass(frozen=True, slots=True)
class EventInfo:
    """What an upstream event means for accounting and for the end of the stream.

    content: carries generated output (text, reasoning or tool-call deltas): the first sets TTFT, and their
      number stands in for the completion tokens when a stream dies before reporting usage.
    end: the API's normal last event (``[DONE]``, ``response.completed``, ``message_stop``…).
    error: an in-band error event: the request failed although the HTTP status was 200.
    droppable: the usage-only chunk the gateway asked for on the client's behalf (Chat Completions).
    final_usage: the event that carries the request's final usage: where ``bauxite_carbon`` goes.
    """

    content: bool = False
    end: bool = False
    error: bool = False
    droppable: bool = False
    final_usage: bool = False


OTHER = EventInfo()
CONTENT = EventInfo(content=True)


class Dialect(Protocol):
    """One wire API. Implementations hold no per-request state: per-request facts go into the ``Capture``."""

    endpoint: Endpoint
    path: str  # appended to the cluster's base URL (which ends in /v1)

    def apply_body_usage(self, capture: Capture, doc: dict[str, Any]) -> None:
        """Copy usage (and, for stateful APIs, the response id) from a complete JSON response body."""

    def inspect(self, capture: Capture, event: SseEvent) -> EventInfo:
        """Classify one upstream stream event, copying any usage it carries into ``capture``."""

    def error_body(self, status: int, message: str, code: str | None, param: str | None) -> bytes:
        """The API's own JSON error document for an error the gateway answers itself."""

    def stream_error_event(self, status: int, message: str, code: str, sequence: int) -> bytes:
        """A complete SSE event telling the client that the stream failed after ``sequence`` events."""

    def stream_body(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """The body to send upstream for a stream when it must differ from the client's, else None."""

    def client_wants_usage(self, body: dict[str, Any]) -> bool:
        """Whether the client itself asked for stream usage (else a droppable usage event is dropped)."""

    def max_tokens(self, body: dict[str, Any]) -> int:
        """The request's output-token cap (0 when not given), for routing's energy and latency estimates."""

    def prefix(self, body: dict[str, Any]) -> Any:
        """The part of the prompt a KV cache could reuse (system prompt or conversation so far), or None."""

    def with_carbon(self, doc: dict[str, Any], carbon: dict[str, Any], *, event: bool) -> None:
        """Place the ``bauxite_carbon`` object into a final body (``event=False``) or final usage event."""


def non_negative_int(value: Any) -> int:
    """Token counts as sent: a non-negative integer, anything else (null, strings, floats) counts as 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def json_object(data: bytes) -> dict[str, Any] | None:
    """``data`` parsed as a JSON object, or None for anything else (not JSON, an array, ``[DONE]``)."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return doc if isinstance(doc, dict) else None


def sse_event(name: str, doc: dict[str, Any]) -> bytes:
    """One named SSE event with a JSON payload, as vLLM and both vendors write them."""
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(doc) + b"\n\n"


def event_type(event: SseEvent) -> tuple[str, dict[str, Any] | None]:
    """The event's type: its ``event:`` name, else the ``type`` member of its JSON (then also returned)."""
    if event.name:
        return event.name, None
    doc = json_object(event.data)
    kind = doc.get("type") if doc is not None else None
    return (kind if isinstance(kind, str) else ""), doc


def parse_event(block: bytes) -> SseEvent:
    """Fields of one event block (lines already split on LF): ``event:`` and ``data:``, comments ignored.

    Per the EventSource spec a single space after the colon is not part of the value and several ``data:``
    lines join with LF.
    """
    name = ""
    data: list[bytes] = []
    for line in block.split(b"\n"):
        if line.startswith(b"data:"):
            value = line[5:]
            data.append(value[1:] if value.startswith(b" ") else value)
        elif line.startswith(b"event:"):
            value = line[6:]
            name = (value[1:] if value.startswith(b" ") else value).decode("utf-8", "replace")
    return SseEvent(name, b"\n".join(data))
