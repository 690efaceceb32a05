"""What the simulated vLLM server writes for each API: bodies and stream events, in vLLM's wire format.

One ``Wire`` per request turns the generation loop's facts (token i was produced; the final usage) into the
bytes vLLM would send for that API: Chat Completions and Completions chunks ending in ``[DONE]``, the
Responses API's typed events ending in ``response.completed``, and the Anthropic Messages events ending in
``message_stop`` (vLLM converts its chat stream into these; so does this module, from the same facts).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

WORD = "green "


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int


class Wire(Protocol):
    def start(self) -> list[bytes]:
        """Events written before the first token (after admission)."""

    def delta(self, index: int) -> bytes:
        """The event carrying token ``index``."""

    def finish(self, usage: Usage, count: int) -> list[bytes]:
        """Events after the last of ``count`` tokens, usage included where the API puts it."""

    def in_band_error(self, message: str) -> bytes:
        """How vLLM reports a failure during generation, after the 200 and some events."""

    def body(self, usage: Usage, count: int) -> dict[str, Any]:
        """The complete non-streaming answer."""


def sse(doc: dict[str, Any], event: str | None = None) -> bytes:
    head = b"event: " + event.encode() + b"\n" if event else b""
    return head + b"data: " + orjson.dumps(doc) + b"\n\n"


def new_id(prefix: str, sep: str = "-") -> str:
    return f"{prefix}{sep}{uuid.uuid4().hex}"


def openai_usage(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        "completion_tokens": usage.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens} if usage.cached_tokens else None,
    }


class ChatWire:
    """Chat Completions (``chat``) and Completions (``completion``) chunks."""

    def __init__(self, kind: str, model: str, include_usage: bool) -> None:
        self.kind, self.model, self.include_usage = kind, model, include_usage
        self.id = new_id("chatcmpl" if kind == "chat" else "cmpl")
        self.created = int(time.time())

    def _base(self) -> dict[str, Any]:
        obj = "chat.completion.chunk" if self.kind == "chat" else "text_completion"
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}

    def _chunk(self, index: int, finish: bool = False) -> bytes:
        reason = "length" if finish else None
        text = "" if finish else WORD
        if self.kind == "chat":
            delta: dict[str, Any] = {"content": text}
            if index == 0:
                delta["role"] = "assistant"
            choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": reason}
        return sse(self._base() | {"choices": [choice]})

    def start(self) -> list[bytes]:
        return []

    def delta(self, index: int) -> bytes:
        return self._chunk(index)

    def finish(self, usage: Usage, count: int) -> list[bytes]:
        events = [self._chunk(count, finish=True)]
        if self.include_usage:
            events.append(sse(self._base() | {"choices": [], "usage": openai_usage(usage)}))
        return [*events, b"data: [DONE]\n\n"]

    def in_band_error(self, message: str) -> bytes:
        return sse({"error": {"message": message, "type": "InternalServerError", "param": None, "code": 500}})

    def body(self, usage: Usage, count: int) -> dict[str, Any]:
        text = WORD * count
        if self.kind == "chat":
            choice: dict[str, Any] = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": "length",
                "stop_reason": None,
            }
        else:
            choice = {
                "index": 0,
                "text": text,
                "logprobs": None,
                "finish_reason": "length",
                "stop_reason": None,
            }
        obj = "chat.completion" if self.kind == "chat" else "text_completion"
        doc = {"id": self.id, "object": obj, "created": self.created, "model": self.model}
        return doc | {"choices": [choice], "usage": openai_usage(usage)}


class MessagesWire:
    """Anthropic Messages, as vLLM's converter writes it: usage input in message_start, the final counts in
    message_delta, ``message_stop`` at the end; no ``ping`` events and no cache fields."""

    def __init__(self, model: str, prompt_tokens: int) -> None:
        self.model, self.prompt_tokens = model, prompt_tokens
        self.id = new_id("chatcmpl")  # vLLM reuses the chat completion id

    def start(self) -> list[bytes]:
        return []

    def delta(self, index: int) -> bytes:
        event = sse(
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": WORD}},
            "content_block_delta",
        )
        if index:
            return event
        message: dict[str, Any] = {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": self.model,
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": self.prompt_tokens, "output_tokens": 0},
        }
        block = {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
        return (
            sse({"type": "message_start", "message": message}, "message_start")
            + sse(block, "content_block_start")
            + event
        )

    def finish(self, usage: Usage, count: int) -> list[bytes]:
        counts = {"input_tokens": usage.prompt_tokens, "output_tokens": usage.completion_tokens}
        return [
            sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
            sse(
                {"type": "message_delta", "delta": {"stop_reason": "max_tokens"}, "usage": counts},
                "message_delta",
            ),
            sse({"type": "message_stop"}, "message_stop"),
        ]

    def in_band_error(self, message: str) -> bytes:
        return sse({"type": "error", "error": {"type": "internal_error", "message": message}}, "error")

    def body(self, usage: Usage, count: int) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "content": [{"type": "text", "text": WORD * count}],
            "model": self.model,
            "stop_reason": "max_tokens",
            "usage": {"input_tokens": usage.prompt_tokens, "output_tokens": usage.completion_tokens},
        }


def _texts(items: Any) -> list[str]:
    """Text of a message list (chat, Responses input items, Anthropic messages): strings or text parts."""
    parts: list[str] = []
    for item in items if isinstance(items, list) else []:
        content = item.get("content") if isinstance(item, dict) else None
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return parts


def prompt_text(body: dict[str, Any], kind: str) -> str:
    """The prompt's text as the model would see it (the simulator counts 4 characters a token)."""
    if kind == "chat":
        return "\n".join(_texts(body.get("messages")))
    if kind == "responses":
        items = body.get("input")
        instructions = body.get("instructions")
        head = [instructions] if isinstance(instructions, str) and instructions else []
        return "\n".join(head + ([items] if isinstance(items, str) else _texts(items)))
    if kind == "messages":
        system = body.get("system")
        head = [system] if isinstance(system, str) else [t for t in _texts([{"content": system}]) if t]
        return "\n".join(head + _texts(body.get("messages")))
    prompt = body.get("prompt")
    return (
        prompt if isinstance(prompt, str) else " ".join(map(str, prompt)) if isinstance(prompt, list) else ""
    )
