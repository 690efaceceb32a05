"""The OpenAI Responses API (``POST /v1/responses``), as OpenAI and vLLM serve it.

Streams are typed events (``event: response.output_text.delta`` …) without a ``[DONE]``: the stream ends with
``response.completed`` (or ``response.incomplete`` when a limit cut the output short, or ``response.failed``),
whose ``response.usage`` holds ``input_tokens``, ``output_tokens``, ``input_tokens_details.cached_tokens``
and ``output_tokens_details.reasoning_tokens`` (already part of ``output_tokens``).
"""

from __future__ import annotations

from typing import Any

import orjson

from ..errors import error_body
from ..records import Capture, Endpoint
from .base import CONTENT, OTHER, EventInfo, SseEvent, event_type, json_object, non_negative_int

_FINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})


def apply_responses_usage(capture: Capture, usage: Any) -> None:
    if not isinstance(usage, dict):
        return
    capture.usage_reported = True
    capture.prompt_tokens = non_negative_int(usage.get("input_tokens"))
    capture.completion_tokens = non_negative_int(usage.get("output_tokens"))
    details = usage.get("input_tokens_details")
    if isinstance(details, dict):
        capture.cached_tokens = non_negative_int(details.get("cached_tokens"))


def _response_id(capture: Capture, response: Any) -> None:
    if isinstance(response, dict):
        ident = response.get("id")
        if isinstance(ident, str) and 0 < len(ident) <= 256:
            capture.upstream_id = ident


class ResponsesDialect:
    endpoint: Endpoint = "responses"
    path = "/responses"

    def apply_body_usage(self, capture: Capture, doc: dict[str, Any]) -> None:
        _response_id(capture, doc)
        apply_responses_usage(capture, doc.get("usage"))

    def inspect(self, capture: Capture, event: SseEvent) -> EventInfo:
        kind, doc = event_type(event)
        if kind.endswith(".delta"):
            return CONTENT
        if kind == "response.created" or kind in _FINAL:
            doc = doc if doc is not None else json_object(event.data)
            response = doc.get("response") if doc is not None else None
            _response_id(capture, response)
            if kind == "response.created":
                return OTHER
            if isinstance(response, dict):
                apply_responses_usage(capture, response.get("usage"))
            return EventInfo(end=True, final_usage=True, error=kind == "response.failed")
        if kind == "error":
            return EventInfo(error=True)
        return OTHER

    def error_body(self, status: int, message: str, code: str | None, param: str | None) -> bytes:
        return error_body(status, message, code, param)

    def stream_error_event(self, status: int, message: str, code: str, sequence: int) -> bytes:
        doc = {"type": "error", "code": code, "message": message, "param": None, "sequence_number": sequence}
        return b"event: error\ndata: " + orjson.dumps(doc) + b"\n\n"

    def stream_body(self, body: dict[str, Any]) -> dict[str, Any] | None:
        return None  # response.completed always carries usage

    def client_wants_usage(self, body: dict[str, Any]) -> bool:
        return True

    def max_tokens(self, body: dict[str, Any]) -> int:
        value = body.get("max_output_tokens")
        return value if isinstance(value, int) and value > 0 else 0

    def prefix(self, body: dict[str, Any]) -> Any:
        instructions = body.get("instructions")
        if isinstance(instructions, str) and instructions:
            return instructions
        items = body.get("input")
        if isinstance(items, list) and items:
            first = items[0]
            if isinstance(first, dict) and first.get("role") in ("system", "developer"):
                return first
            return items[:-1] if len(items) > 1 else None
        return None

    def with_carbon(self, doc: dict[str, Any], carbon: dict[str, Any], *, event: bool) -> None:
        # In a stream the final event wraps the response object; the extension sits in that object, so a
        # client reads it at the same place whether it streamed or not.
        target = doc.get("response") if event else doc
        if isinstance(target, dict):
            target["bauxite_carbon"] = carbon
