"""The wire APIs the gateway speaks, one ``Dialect`` each, looked up by the record's endpoint name."""

from __future__ import annotations

from ..records import Endpoint
from .base import Dialect, EventInfo, SseEvent, parse_event
from .messages import MessagesDialect
from .openai import OpenAIDialect
from .responses import ResponsesDialect

DIALECTS: dict[Endpoint, Dialect] = {
    "chat": OpenAIDialect("chat", "/chat/completions"),
    "completion": OpenAIDialect("completion", "/completions"),
    "embedding": OpenAIDialect("embedding", "/embeddings"),
    "responses": ResponsesDialect(),
    "messages": MessagesDialect(),
}

__all__ = ["DIALECTS", "Dialect", "EventInfo", "SseEvent", "parse_event"]
