"""Chat Completions, Completions and Embeddings: OpenAI's original wire format, as vLLM serves it.

Streams are ``data:`` events ending with ``data: [DONE]``; usage comes in a last chunk with ``choices: []``
that the gateway requests (``stream_options.include_usage``) and drops again when the client did not ask.
The accounting half is ``usage.CHAT``/``COMPLETIONS``/``EMBEDDINGS``; this adds the API's surface.
"""

from __future__ import annotations

from typing import Any

from ..errors import error_body
from ..records import Capture, Endpoint
from ..sse import SseEvent
from ..usage import ApiDialect, Kind, StreamState


class OpenAIDialect:
    def __init__(self, endpoint: Endpoint, path: str, accounting: ApiDialect) -> None:
        self.endpoint: Endpoint = endpoint
        self.path = path
        self.name = accounting.name
        self._accounting = accounting

    def classify(self, event: SseEvent, capture: Capture, state: StreamState) -> Kind:
        return self._accounting.classify(event, capture, state)

    def complete(self, state: StreamState, choices: int) -> bool:
        return self._accounting.complete(state, choices)

    def content_prefix(self, chunk: bytes) -> tuple[int, int]:
        return self._accounting.content_prefix(chunk)

    def account_body(self, capture: Capture, body: bytes) -> None:
        self._accounting.account_body(capture, body)

    def error_body(self, status: int, message: str, code: str | None, param: str | None) -> bytes:
        return error_body(status, message, code, param)

    def stream_error_event(self, status: int, message: str, code: str, sequence: int) -> bytes:
        return b"data: " + error_body(status, message, code) + b"\n\n"

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
