"""Optional bearer-token protection for ``/metrics``, the dashboard's data and all of ``/v1/carbon/``."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from ..errors import error_response

PROTECTED_EXACT = ("/metrics", "/dashboard/series")
PROTECTED_PREFIX = "/v1/carbon/"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def is_protected(path: str) -> bool:
    return path in PROTECTED_EXACT or path.startswith(PROTECTED_PREFIX)


def token_matches(header: str, token: str) -> bool:
    scheme, _, value = header.partition(" ")
    # compare_digest: the time taken must not reveal how much of a guessed token was right.
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode())


def unauthorized() -> web.Response:
    return error_response(
        401,
        "a valid bearer token is required",
        "invalid_token",
        headers={"WWW-Authenticate": 'Bearer realm="bauxite-telemetry"'},
    )


def token_middleware(token: str) -> Middleware:
    """Middleware that requires ``Authorization: Bearer <token>`` on protected paths only."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if is_protected(request.path) and not token_matches(request.headers.get("Authorization", ""), token):
            return unauthorized()
        return await handler(request)

    return guard
