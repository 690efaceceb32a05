"""The OpenAI Responses API (``POST /v1/responses``), as OpenAI and vLLM serve it.

Streams are typed events (``event: response.output_text.delta`` …) without a ``[DONE]``: the stream ends with
``response.completed`` (or ``response.incomplete`` when a limit cut the output short; ``response.failed`` is
a failure), whose ``response.usage`` holds ``input_tokens``, ``output_tokens``,
``input_tokens_details.cached_tokens`` and ``output_tokens_details.reasoning_tokens`` (already part of
``output_tokens``). Usage always comes, so the gateway never has to ask for it.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..errors import error_body
from ..records import Capture, Endpoint
from ..sse import SseEvent
from ..usage import CHARS_PER_TOKEN, Kind, StreamState, estimate_unreported
from .base import event_type, json_object, non_negative_int, output_chars

_FINAL = frozenset({"response.completed", "response.incomplete"})


def apply_responses_usage(capture: Capture, usage: Any) -> bool:
    """Copy a Responses ``usage`` object into the capture; True if it was one."""
    if not isinstance(usage, dict):
        return False
    capture.usage_reported, capture.usage_estimated = True, False
    capture.prompt_tokens = non_negative_int(usage.get("input_tokens"))
    capture.completion_tokens = non_negative_int(usage.get("output_tokens"))
    details = usage.get("input_tokens_details")
    if isinstance(details, dict):
        capture.cached_tokens = non_negative_int(details.get("cached_tokens"))
    return True


def _response_id(capture: Capture, response: Any) -> None:
    if isinstance(response, dict):
        ident = response.get("id")
        if isinstance(ident, str) and 0 < len(ident) <= 256:
            capture.upstream_id = ident


def _error_code(doc: dict[str, Any] | None, fallback: str) -> str:
    """The failure's code: ``response.error.code`` (response.failed), a top-level ``error.code``, or the
    event's own ``code`` (the ``error`` event); ``fallback`` when none is given."""
    if doc is None:
        return fallback
    response = doc.get("response")
    for error in (response.get("error") if isinstance(response, dict) else None, doc.get("error"), doc):
        if isinstance(error, dict) and error.get("code"):
            return str(error["code"])[:40]
    return fallback


class ResponsesDialect:
    endpoint: Endpoint = "responses"
    path = "/responses"
    name = "responses"

    def classify(self, event: SseEvent, capture: Capture, state: StreamState) -> Kind:
        if event.data is None:
            return Kind.OTHER
        kind, doc = event_type(event)
        if kind.endswith(".delta"):  # output text, reasoning, tool-call arguments, audio …
            state.content_events += 1
            return Kind.CONTENT
        if kind == "response.created" or kind in _FINAL or kind == "response.failed":
            doc = doc if doc is not None else json_object(event.data)
            response = doc.get("response") if doc is not None else None
            _response_id(capture, response)
            if kind == "response.created":
                return Kind.OTHER  # held back with what follows until the first output: still retryable
            if isinstance(response, dict) and apply_responses_usage(capture, response.get("usage")):
                state.saw_usage = True
            if kind == "response.failed":
                state.error = _error_code(doc, "response_failed")
                return Kind.ERROR
            state.saw_done = True
            return Kind.USAGE  # the final, usage-bearing event; never dropped (the client always gets it)
        if kind == "error":
            state.error = _error_code(doc if doc is not None else json_object(event.data), "error")
            return Kind.ERROR
        return Kind.OTHER

    def complete(self, state: StreamState, choices: int) -> bool:
        return state.saw_done

    def content_prefix(self, chunk: bytes) -> tuple[int, int]:
        return 0, 0  # named events, each parsed: the usage rides on ordinary-looking ones

    def account_body(self, capture: Capture, body: bytes) -> None:
        doc = json_object(body)
        if doc is not None:
            _response_id(capture, doc)
            if apply_responses_usage(capture, doc.get("usage")):
                return
        chars = sum(
            output_chars(item.get("content"), "text") + _chars(item.get("arguments")) for item in _items(doc)
        )
        estimate_unreported(capture, chars // CHARS_PER_TOKEN + 1 if doc else 0)

    def error_body(self, status: int, message: str, code: str | None, param: str | None) -> bytes:
        return error_body(status, message, code, param)

    def stream_error_event(self, status: int, message: str, code: str, sequence: int) -> bytes:
        doc = {"type": "error", "code": code, "message": message, "param": None, "sequence_number": sequence}
        return b"event: error\ndata: " + orjson.dumps(doc) + b"\n\n"

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


def _items(doc: dict[str, Any] | None) -> list[dict[str, Any]]:
    output = doc.get("output") if doc is not None else None
    return [item for item in output if isinstance(item, dict)] if isinstance(output, list) else []


def _chars(value: Any) -> int:
    return len(value) if isinstance(value, str) else 0  # a function call's arguments are generated text too
