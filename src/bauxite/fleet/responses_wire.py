"""The simulated server's OpenAI Responses API answers, in vLLM's wire format.

vLLM frames each event as ``event: <type>`` plus a ``data:`` line holding the event object (with a running
``sequence_number``) and sends no ``[DONE]``: ``response.completed`` is the last event, carrying the whole
response object and its usage.
"""

from __future__ import annotations

import time
from typing import Any

from .wire import WORD, Usage, new_id, sse


def responses_usage(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_tokens},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    }


class ResponsesWire:
    def __init__(self, model: str, body: dict[str, Any]) -> None:
        self.model, self.request = model, body
        self.id = new_id("resp", "_")
        self.item_id = new_id("msg", "_")
        self.created_at = int(time.time())
        self._sequence = 0

    def _event(self, kind: str, fields: dict[str, Any]) -> bytes:
        doc = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return sse(doc, kind)

    def response(self, status: str, usage: Usage | None, text: str | None) -> dict[str, Any]:
        """The response object; ``text`` None while in progress (no output yet)."""
        output = [] if text is None else [self._message(text)]
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "background": False,
            "incomplete_details": None,
            "instructions": self.request.get("instructions"),
            "max_output_tokens": self.request.get("max_output_tokens"),
            "metadata": self.request.get("metadata"),
            "model": self.model,
            "output": output,
            "parallel_tool_calls": True,
            "previous_response_id": self.request.get("previous_response_id"),
            "reasoning": None,
            "service_tier": "auto",
            "temperature": self.request.get("temperature", 1.0),
            "text": None,
            "tool_choice": "auto",
            "tools": [],
            "top_p": self.request.get("top_p", 1.0),
            "truncation": "disabled",
            "usage": responses_usage(usage) if usage is not None else None,
            "user": None,
        }

    def _part(self, text: str) -> dict[str, Any]:
        return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}

    def _message(self, text: str, status: str = "completed") -> dict[str, Any]:
        content = [self._part(text)] if status == "completed" else []
        return {
            "id": self.item_id,
            "type": "message",
            "role": "assistant",
            "status": status,
            "content": content,
        }

    def start(self) -> list[bytes]:
        in_progress = self.response("in_progress", None, None)
        where = {"output_index": 0, "item_id": self.item_id, "content_index": 0}
        return [
            self._event("response.created", {"response": in_progress}),
            self._event("response.in_progress", {"response": in_progress}),
            self._event(
                "response.output_item.added", {"output_index": 0, "item": self._message("", "in_progress")}
            ),
            self._event("response.content_part.added", {**where, "part": self._part("")}),
        ]

    def delta(self, index: int) -> bytes:
        where = {"output_index": 0, "item_id": self.item_id, "content_index": 0}
        return self._event("response.output_text.delta", {**where, "delta": WORD, "logprobs": []})

    def finish(self, usage: Usage, count: int) -> list[bytes]:
        text = WORD * count
        where = {"output_index": 0, "item_id": self.item_id, "content_index": 0}
        return [
            self._event("response.output_text.done", {**where, "text": text, "logprobs": []}),
            self._event("response.content_part.done", {**where, "part": self._part(text)}),
            self._event("response.output_item.done", {"output_index": 0, "item": self._message(text)}),
            self._event("response.completed", {"response": self.response("completed", usage, text)}),
        ]

    def in_band_error(self, message: str) -> bytes:
        return self._event("error", {"code": "internal_error", "message": message, "param": None})

    def body(self, usage: Usage, count: int) -> dict[str, Any]:
        return self.response("completed", usage, WORD * count)
