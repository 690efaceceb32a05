"""The gateway's error tree, and the OpenAI-shaped error bodies it becomes at the HTTP edge (the Anthropic
Messages API answers in its own shape: see ``dialects``).

Exceptions::

    BauxiteError                      root of everything the gateway raises on purpose
    ├── GatewayError                  answered to the client: carries ``status`` and ``code``
    │   ├── BadRequest                400  invalid_json, invalid_body, missing_model, invalid_header,
    │   │                                  json_too_deep (and invalid_query on the telemetry endpoints)
    │   ├── Unauthorized              401  invalid_api_key
    │   ├── Forbidden                 403  department_not_allowed
    │   ├── NotFound                  404  model_not_found, endpoint_not_served, response_not_found
    │   ├── RequestTimeout            408  request_timeout
    │   ├── PayloadTooLarge           413  request_too_large
    │   ├── UpstreamFailed            502/503 (or the upstream's own status)  upstream_error
    │   ├── UpstreamTimeout           504  upstream_timeout
    │   ├── NoCluster                 503  no_available_cluster
    │   └── GatewayOverloaded         503  gateway_overloaded (local resources, not the upstream)
    └── TransportError                raised by an ``UpstreamTransport``; the proxy translates it
        ├── ConnectFailed             the request never reached the upstream: always safe to retry
        │   └── ConnectTimeout
        ├── ReadTimeout               the upstream went silent for longer than ``read_s``
        ├── UpstreamClosed            the upstream closed or reset the connection
        └── LocalResourceError        out of file descriptors/memory here: not the upstream's fault

Error ``code`` values form the fixed set ``CODES``; clients may match on them. Messages never contain
request bodies, completions or keys.
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from aiohttp import web

# Every code the gateway itself answers with, and the HTTP status it comes with.
CODES: Mapping[str, int] = {
    "invalid_json": 400,
    "invalid_body": 400,
    "missing_model": 400,
    "invalid_header": 400,
    "json_too_deep": 400,
    "bad_http_request": 400,
    "invalid_query": 400,  # telemetry endpoints: a bad query parameter (limit, format, table)
    "invalid_api_key": 401,
    "invalid_token": 401,  # telemetry endpoints: missing or wrong bearer token
    "department_not_allowed": 403,
    "model_not_found": 404,
    "endpoint_not_served": 404,
    "response_not_found": 404,
    "not_found": 404,
    "method_not_allowed": 405,
    "request_timeout": 408,
    "request_too_large": 413,
    "internal_error": 500,
    "upstream_error": 503,  # or the upstream's own status when one answered
    "no_available_cluster": 503,
    "gateway_overloaded": 503,
    "upstream_timeout": 504,
}

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    502: "upstream_error",
    503: "service_unavailable",
    504: "timeout_error",
}


class BauxiteError(Exception):
    """Root of the gateway's own exceptions."""


class GatewayError(BauxiteError):
    """Raised inside request handling; turned into an OpenAI error response at the edge."""

    default_status = 500

    def __init__(
        self,
        status: int | None,
        message: str,
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status if status is not None else self.default_status
        self.message = message
        self.code = code
        self.param = param
        self.headers = dict(headers or {})


class BadRequest(GatewayError):
    default_status = 400

    def __init__(self, message: str, code: str, param: str | None = None) -> None:
        super().__init__(400, message, code, param)


class Unauthorized(GatewayError):
    default_status = 401

    def __init__(self, message: str) -> None:
        super().__init__(401, message, "invalid_api_key")


class Forbidden(GatewayError):
    """The key is valid but may not do what the request asks (e.g. charge another department)."""

    default_status = 403

    def __init__(self, message: str, code: str, param: str | None = None) -> None:
        super().__init__(403, message, code, param)


class NotFound(GatewayError):
    default_status = 404

    def __init__(self, message: str, code: str = "model_not_found", param: str | None = "model") -> None:
        super().__init__(404, message, code, param)


class RequestTimeout(GatewayError):
    default_status = 408

    def __init__(self, message: str) -> None:
        super().__init__(408, message, "request_timeout")


class PayloadTooLarge(GatewayError):
    default_status = 413

    def __init__(self, message: str) -> None:
        super().__init__(413, message, "request_too_large")


class UpstreamFailed(GatewayError):
    """The chosen cluster(s) failed. ``status`` is 503 when none answered, else the upstream's own."""

    default_status = 503

    def __init__(self, message: str, status: int = 503, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(status, message, "upstream_error", headers=headers)


class UpstreamTimeout(GatewayError):
    default_status = 504

    def __init__(self, message: str) -> None:
        super().__init__(504, message, "upstream_timeout")


class NoCluster(GatewayError):
    default_status = 503

    def __init__(self, message: str, status: int = 503) -> None:
        super().__init__(status, message, "no_available_cluster")


class GatewayOverloaded(GatewayError):
    default_status = 503

    def __init__(self, message: str) -> None:
        super().__init__(503, message, "gateway_overloaded", headers={"Retry-After": "1"})


class TransportError(BauxiteError):
    """An upstream exchange failed below HTTP. ``cause`` is short and safe to log and show."""

    retry_safe = False  # True when the request provably never reached the upstream

    def __init__(self, cause: str) -> None:
        super().__init__(cause)
        self.cause = cause


class ConnectFailed(TransportError):
    retry_safe = True


class ConnectTimeout(ConnectFailed):
    pass


class ReadTimeout(TransportError):
    pass


class UpstreamClosed(TransportError):
    pass


class LocalResourceError(TransportError):
    """Out of sockets, file descriptors or memory on the gateway's own machine."""


def error_body(status: int, message: str, code: str | None = None, param: str | None = None) -> bytes:
    return orjson.dumps(
        {
            "error": {
                "message": message,
                "type": _TYPES.get(status, "api_error"),
                "param": param,
                "code": code,
            }
        }
    )


def error_response(
    status: int,
    message: str,
    code: str | None = None,
    param: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    return web.Response(
        status=status,
        body=error_body(status, message, code, param),
        content_type="application/json",
        headers=headers,
    )


def clip(text: str, limit: int = 64) -> str:
    """Client-supplied text for an error message, shortened so no error echoes megabytes back."""
    return text if len(text) <= limit else text[:limit] + f"… ({len(text)} characters)"
