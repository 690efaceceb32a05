"""Chat Completions, Completions and Embeddings: OpenAI's original wire format, as vLLM serves it.

Streams are ``data:`` events ending with ``data: [DONE]``; usage comes in a last chunk with ``choices: []``
that the gateway requests (``stream_options.include_usage``) and drops again when the client did not ask.
"""

from __future__ import annotations

from typing import Any

from ..errors import error_body
from ..records import Capture, Endpoint
from .base import CONTENT, OTHER, EventInfo, SseEvent, json_object, non_negative_int

_DONE = EventInfo(end=True)
_ERROR = EventInfo(error=True)


def apply_openai_usage(capture: Capture, usage: Any) -> None:
    """Copy an OpenAI ``usage`` object into the capture; tolerate missing or odd fields."""
    if not isinstance(usage, dict):
        return
    capture.usage_reported = True
    capture.prompt_tokens = non_negative_int(usage.get("prompt_tokens"))
    capture.completion_tokens = non_negative_int(usage.get("completion_tokens"))
    details = usage.get("prompt_tokens_details")
    if isinstance(details, dict):
        capture.cached_tokens = non_negative_int(details.get("cached_tokens"))


class OpenAIDialect:
    def __init__(self, endpoint: Endpoint, path: str) -> None:
        self.endpoint = endpoint
        self.path = path

    def apply_body_usage(self, capture: Capture, doc: dict[str, Any]) -> None:
        apply_openai_usage(capture, doc.get("usage"))

    def inspect(self, capture: Capture, event: SseEvent) -> EventInfo:
        data = event.data
        if data.startswith(b"[DONE]"):
            return _DONE
        # Parse only the few events that can matter: token deltas are most of a stream.
        if b'"usage":{' in data or b'"usage": {' in data:
            doc = json_object(data)
            if doc is not None:
                apply_openai_usage(capture, doc.get("usage"))
                if doc.get("choices") == []:
                    return EventInfo(droppable=True, final_usage=True)
        elif data.startswith(b'{"error"') or data.startswith(b'{"object":"error"'):
            doc = json_object(data)
            if doc is not None and "choices" not in doc:
                return _ERROR  # vLLM reports a failure during generation this way, after the 200
        return CONTENT if data else OTHER

    def error_body(self, status: int, message: str, code: str | None, param: str | None) -> bytes:
        return error_body(status, message, code, param)

    def stream_error_event(self, status: int, message: str, code: str, sequence: int) -> bytes:
        return b"data: " + error_body(status, message, code) + b"\n\n"

    def stream_body(self, body: dict[str, Any]) -> dict[str, Any] | None:
        if self.endpoint == "embedding":
            return None
        patched = dict(body)
        options = body.get("stream_options")
        patched["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
        return patched

    def client_wants_usage(self, body: dict[str, Any]) -> bool:
        options = body.get("stream_options")
        return isinstance(options, dict) and options.get("include_usage") is True

    def max_tokens(self, body: dict[str, Any]) -> int:
        value = body.get("max_completion_tokens", body.get("max_tokens"))
        return value if isinstance(value, int) and value > 0 else 0

    def prefix(self, body: dict[str, Any]) -> Any:
        messages = body.get("messages")
        if isinstance(messages, list) and messages:
            first = messages[0]
            if isinstance(first, dict) and first.get("role") in ("system", "developer"):
                return first
            return messages[:-1] if len(messages) > 1 else None
        prompt = body.get("prompt")
        if isinstance(prompt, str) and len(prompt) >= 256:
            return prompt[:256]
        return None

    def with_carbon(self, doc: dict[str, Any], carbon: dict[str, Any], *, event: bool) -> None:
        doc["bauxite_carbon"] = carbon
