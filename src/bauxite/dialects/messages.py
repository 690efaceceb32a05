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
from ..sse import SseEvent
from ..usage import CHARS_PER_TOKEN, Kind, StreamState, estimate_unreported
from .base import event_type, json_object, non_negative_int, output_chars

# Anthropic's error types by HTTP status (its SDKs pick exception classes by status, people read the type).
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
}


def apply_messages_usage(capture: Capture, usage: Any, *, final: bool) -> bool:
    """Merge an Anthropic ``usage`` object: fields that are absent or null keep their earlier value."""
    if not isinstance(usage, dict):
        return False
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
        capture.usage_reported, capture.usage_estimated = True, False
    return True


def anthropic_error(status: int, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": _TYPES.get(status, "api_error"), "message": message}}


class MessagesDialect:
    endpoint: Endpoint = "messages"
    path = "/messages"
    name = "messages"

    def classify(self, event: SseEvent, capture: Capture, state: StreamState) -> Kind:
        if event.data is None:
            return Kind.OTHER
        kind, doc = event_type(event)
        if kind == "content_block_delta":
            state.content_events += 1
            return Kind.CONTENT
        if kind in ("message_start", "message_delta"):
            doc = doc if doc is not None else json_object(event.data)
            if kind == "message_start":
                message = doc.get("message") if doc is not None else None
                if isinstance(message, dict):  # input known now; output only at message_delta
                    apply_messages_usage(capture, message.get("usage"), final=False)
                return Kind.OTHER  # held back until the first output: still retryable
            if doc is not None and apply_messages_usage(capture, doc.get("usage"), final=True):
                state.saw_usage = True
            return Kind.USAGE  # the final usage-bearing event; never dropped (the client always gets it)
        if kind == "message_stop":
            state.saw_done = True
            return Kind.DONE
        if kind == "error":
            doc = doc if doc is not None else json_object(event.data)
            error = doc.get("error") if doc is not None else None
            code = error.get("type") if isinstance(error, dict) else None
            state.error = str(code)[:40] if code else "error"
            return Kind.ERROR
        return Kind.OTHER

    def complete(self, state: StreamState, choices: int) -> bool:
        return state.saw_done

    def content_prefix(self, chunk: bytes) -> tuple[int, int]:
        return 0, 0  # named events, each parsed: the usage rides on ordinary-looking ones

    def account_body(self, capture: Capture, body: bytes) -> None:
        doc = json_object(body)
        if doc is not None and apply_messages_usage(capture, doc.get("usage"), final=True):
            return
        blocks = doc.get("content") if doc is not None else None
        # Generated text in every block kind: text, thinking, and a tool call's JSON input.
        chars = output_chars(blocks, "text") + output_chars(blocks, "thinking")
        for block in blocks if isinstance(blocks, list) else ():
            if isinstance(block, dict) and isinstance(block.get("input"), dict):
                chars += len(orjson.dumps(block["input"]))
        estimate_unreported(capture, chars // CHARS_PER_TOKEN + 1 if doc else 0)

    def error_body(self, status: int, message: str, code: str | None, param: str | None) -> bytes:
        return orjson.dumps(anthropic_error(status, message))

    def stream_error_event(self, status: int, message: str, code: str, sequence: int) -> bytes:
        return b"event: error\ndata: " + orjson.dumps(anthropic_error(status, message)) + b"\n\n"

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
