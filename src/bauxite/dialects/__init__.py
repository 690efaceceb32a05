"""The wire APIs the gateway speaks, one ``Dialect`` each, looked up by the record's endpoint name."""

from __future__ import annotations

from aiohttp import web

from ..errors import GatewayError
from ..records import Endpoint
from ..usage import CHAT, COMPLETIONS, EMBEDDINGS
from .base import Dialect
from .messages import MessagesDialect
from .openai import OpenAIDialect
from .responses import ResponsesDialect

DIALECTS: dict[Endpoint, Dialect] = {
    "chat": OpenAIDialect("chat", "/chat/completions", CHAT),
    "completion": OpenAIDialect("completion", "/completions", COMPLETIONS),
    "embedding": OpenAIDialect("embedding", "/embeddings", EMBEDDINGS),
    "responses": ResponsesDialect(),
    "messages": MessagesDialect(),
}


def error_response(
    endpoint: Endpoint,
    status: int,
    message: str,
    code: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """An error the gateway answers itself, in ``endpoint``'s API shape (OpenAI's, or Anthropic's)."""
    body = DIALECTS[endpoint].error_body(status, message, code, param)
    return web.Response(status=status, body=body, content_type="application/json", headers=headers)


def from_exception(
    endpoint: Endpoint, exc: GatewayError, headers: dict[str, str] | None = None
) -> web.Response:
    return error_response(
        endpoint, exc.status, exc.message, exc.code, exc.param, {**(headers or {}), **exc.headers}
    )


__all__ = ["DIALECTS", "Dialect", "error_response", "from_exception"]
