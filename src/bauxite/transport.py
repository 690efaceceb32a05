"""The seam between the proxy and the network: send one request to a cluster, get status, headers, bytes.

``UpstreamTransport`` is the whole contract (as httpx's transports are): the proxy, SSE relay, failover and
accounting depend only on it, so they run against ``transport_fake.ScriptedTransport`` in unit tests with
no sockets, and against ``AiohttpTransport`` (one shared keep-alive ``aiohttp.ClientSession``) in service.

Failures below HTTP surface only as ``errors.TransportError`` subclasses, never as aiohttp exceptions:
``ConnectFailed``/``ConnectTimeout`` (nothing was sent), ``ReadTimeout``, ``UpstreamClosed`` and
``LocalResourceError`` (the gateway itself ran out of descriptors or memory).
"""

from __future__ import annotations

import errno
import functools
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

import aiohttp

from .errors import (
    ConnectFailed,
    ConnectTimeout,
    LocalResourceError,
    ReadTimeout,
    TransportError,
    UpstreamClosed,
)

# errno values that mean "this machine is out of something", not "the upstream is broken".
LOCAL_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


@dataclass(slots=True)  # built per request: a frozen dataclass constructs several times slower
class UpstreamRequest:
    """One request to a cluster (a POST unless ``method`` says otherwise). Times in seconds; ``read_s``
    bounds each silence, ``total_s`` the whole."""

    cluster: str
    url: str
    body: bytes
    headers: Mapping[str, str]
    connect_s: float = 5.0
    read_s: float = 60.0
    total_s: float = 600.0
    method: str = "POST"


class UpstreamResponse(Protocol):
    """An upstream answer whose body has not been read yet. Header names are case-insensitive."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    def chunks(self) -> AsyncIterator[bytes]:
        """Body bytes as they arrive (any split). Raises ``TransportError`` on failure."""
        ...

    async def read(self, limit: int) -> bytes:
        """The whole body, or its first ``limit`` bytes. Raises ``TransportError`` on failure."""
        ...


class UpstreamTransport(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def send(self, request: UpstreamRequest) -> AbstractAsyncContextManager[UpstreamResponse]:
        """Send ``request``; the response is valid inside the context. Leaving early aborts the exchange
        (the upstream sees the connection close and stops generating)."""
        ...


def content_type(headers: Mapping[str, str]) -> str:
    """The media type without parameters, lower-case ('' when absent)."""
    return headers.get("Content-Type", "").split(";", 1)[0].strip().lower()


def translate(exc: BaseException) -> TransportError:
    """An aiohttp/OS failure as a ``TransportError`` whose ``cause`` is safe to log and show."""
    if isinstance(exc, TransportError):
        return exc
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return ConnectTimeout("connect time-out")
    if isinstance(exc, aiohttp.SocketTimeoutError):
        return ReadTimeout("read time-out")
    if isinstance(exc, TimeoutError):
        return ReadTimeout("total time-out")
    os_error = exc.os_error if isinstance(exc, aiohttp.ClientConnectorError) else exc
    if isinstance(os_error, OSError) and os_error.errno in LOCAL_ERRNOS:
        return LocalResourceError(f"local resource exhausted ({errno.errorcode[os_error.errno]})")
    if isinstance(exc, aiohttp.ClientConnectorError):
        reason = os_error.strerror if isinstance(os_error, OSError) and os_error.strerror else "refused"
        return ConnectFailed(f"connect failed ({reason.lower()})")
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return UpstreamClosed("connection closed by upstream")
    if isinstance(exc, aiohttp.ClientPayloadError):
        return UpstreamClosed("incomplete body from upstream")
    return UpstreamClosed(f"connection error ({type(exc).__name__})")


class _Chunks:
    """Body bytes as they arrive: one awaited read per chunk (no extra generator layer per chunk)."""

    __slots__ = ("_content",)

    def __init__(self, content: aiohttp.StreamReader) -> None:
        self._content = content

    def __aiter__(self) -> _Chunks:
        return self

    async def __anext__(self) -> bytes:
        try:
            chunk = await self._content.readany()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise translate(exc) from None
        if not chunk:
            raise StopAsyncIteration
        return chunk


class _AiohttpResponse:
    __slots__ = ("_resp",)

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self._resp = resp

    @property
    def status(self) -> int:
        return self._resp.status

    @property
    def headers(self) -> Mapping[str, str]:
        return self._resp.headers

    def chunks(self) -> AsyncIterator[bytes]:
        return _Chunks(self._resp.content)

    async def read(self, limit: int) -> bytes:
        length = self._resp.content_length
        try:
            if length is not None and length <= limit:  # the usual case: one read of a known size
                return await self._resp.read()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise translate(exc) from None
        parts: list[bytes] = []
        size = 0
        try:
            while size < limit:
                chunk = await self._resp.content.read(min(limit - size, 1 << 16))
                if not chunk:
                    break
                parts.append(chunk)
                size += len(chunk)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise translate(exc) from None
        return b"".join(parts)


class AiohttpTransport:
    """The production transport: one keep-alive session (created inside the running loop by ``start``)."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=30)
        self._session = aiohttp.ClientSession(connector=connector, auto_decompress=True)

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def send(self, request: UpstreamRequest) -> _Exchange:
        if self._session is None:
            raise RuntimeError("upstream transport used before start()")
        return _Exchange(self._session, request)


@functools.lru_cache(maxsize=256)  # a few distinct per-cluster settings; built once, not per request
def _timeout(total_s: float, connect_s: float, read_s: float) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=total_s, sock_connect=connect_s, sock_read=read_s)


class _Exchange:
    """One upstream request as a context (a plain class: cheaper per request than asynccontextmanager)."""

    __slots__ = ("_request", "_resp", "_session")

    def __init__(self, session: aiohttp.ClientSession, request: UpstreamRequest) -> None:
        self._session = session
        self._request = request
        self._resp: aiohttp.ClientResponse | None = None

    async def __aenter__(self) -> UpstreamResponse:
        request = self._request
        timeout = _timeout(request.total_s, request.connect_s, request.read_s)
        try:
            self._resp = await self._session.request(
                request.method, request.url, data=request.body, headers=request.headers, timeout=timeout
            )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise translate(exc) from None
        return _AiohttpResponse(self._resp)

    async def __aexit__(self, *exc: object) -> None:
        resp = self._resp
        if resp is not None:
            # Read to the end: the connection goes back to the pool. Left early: closing it tells the
            # upstream to stop generating.
            resp.release() if resp.content.at_eof() else resp.close()
