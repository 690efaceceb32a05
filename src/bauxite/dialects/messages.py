"""The Anthropic Messages API (``POST /v1/messages``), as Anthropic and vLLM serve it.

Streams are typed events: ``message_start`` (its ``message.usage`` has the input tokens), content block
events, ``message_delta`` (its ``usage.output_tokens`` is cumulative: the final count, not an increment),
``message_stop``; ``ping`` keeps the connection alive and ``error`` reports a failure in band. Anthropic's
``input_tokens`` excludes prompt-cache reads and writes (``cache_read_input_tokens``,
``cache_creation_input_tokens``); the record's prompt tokens are the sum of the three, its cached tokens the
reads. vLLM reports the whole prompt as ``input_tokens`` and no cache fields, which sums the same way.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..records import Capture, Endpoint
from .base import CONTENT, OTHER, EventInfo, SseEvent, event_type, json_object, non_negative_int

_END = EventInfo(end=True)
_ERROR = EventInfo(error=True)

# Anthropic's error types by HTTP status (its SDKs pick exception classes by status, people read the type).
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
}


def apply_messages_usage(capture: Capture, usage: Any, *, final: bool) -> None:
    """Merge an Anthropic ``usage`` object: fields that are absent or null keep their earlier value."""
    if not isinstance(usage, dict):
        return
    uncached = capture.prompt_tokens - capture.cached_tokens - capture.cache_write_tokens
    if isinstance(usage.get("input_tokens"), int):
        uncached = non_negative_int(usage["input_tokens"])
    if isinstance(usage.get("cache_read_input_tokens"), int):
        capture.cached_tokens = non_negative_int(usage["cache_read_input_tokens"])
    if isinstance(usage.get("cache_creation_input_tokens"), int):
        capture.cache_write_tokens = non_negative_int(usage["cache_creation_input_tokens"])
    capture.prompt_tokens = max(uncached, 0) + capture.cached_tokens + capture.cache_write_tokens
    if isinstance(usage.get("output_tokens"), int):
        capture.completion_tokens = non_negative_int(usage["output_tokens"])
    if final:
        capture.usage_reported = True


def anthropic_error(status: int, message: str) -> dict[str, Any]:
    error_type = _TYPES.get(status, "api_error")
    return {"type": "error", "error": {"type": error_type, "message": message}}


class MessagesDialect:
    endpoint: Endpoint = "messages"
    path = "/messages"

    def apply_body_usage(self, capture: Capture, doc: dict[str, Any]) -> None:
        apply_messages_usage(capture, doc.get("usage"), final=True)

    def inspect(self, capture: Capture, event: SseEvent) -> EventInfo:
        kind, doc = event_type(event)
        if kind == "content_block_delta":
            return CONTENT
        if kind == "message_start":
            doc = doc if doc is not None else json_object(event.data)
            message = doc.get("message") if doc is not None else None
            if isinstance(message, dict):
                # Input is known now, output is not: usage counts as reported only at message_delta.
                apply_messages_usage(capture, message.get("usage"), final=False)
            return OTHER
        if kind == "message_delta":
            doc = doc if doc is not None else json_object(event.data)
            if doc is not None:
                apply_messages_usage(capture, doc.get("usage"), final=True)
            return EventInfo(final_usage=True)
        if kind == "message_stop":
            return _END
        if kind == "error":
            return _ERROR
        return OTHER

    def error_body(self, status: int, message: str, code: str | None, param: str | None) -> bytes:
        return orjson.dumps(anthropic_error(status, message))

    def stream_error_event(self, status: int, message: str, code: str, sequence: int) -> bytes:
        return b"event: error\ndata: " + orjson.dumps(anthropic_error(status, message)) + b"\n\n"

    def stream_body(self, body: dict[str, Any]) -> dict[str, Any] | None:
        return None  # message_start and message_delta always carry usage

    def client_wants_usage(self, body: dict[str, Any]) -> bool:
        return True

    def max_tokens(self, body: dict[str, Any]) -> int:
        value = body.get("max_tokens")
        return value if isinstance(value, int) and value > 0 else 0

    def prefix(self, body: dict[str, Any]) -> Any:
        system = body.get("system")
        if system:
            return system
        messages = body.get("messages")
        if isinstance(messages, list) and len(messages) > 1:
            return messages[:-1]
        return None

    def with_carbon(self, doc: dict[str, Any], carbon: dict[str, Any], *, event: bool) -> None:
        doc["bauxite_carbon"] = carbon
