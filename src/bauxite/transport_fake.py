"""An in-memory ``UpstreamTransport`` that plays scripted wire behaviour: no sockets, fully deterministic.

Each cluster gets a queue of ``Exchange`` scripts (or a ``responder`` building one per request). A script
says what the upstream does: fail before answering, answer a status and headers, then a body as a list of
steps — byte strings (each delivered as one read, so splits are exact), ``Delay`` (silence; longer than the
request's ``read_s`` becomes a ``ReadTimeout``, as a real socket read would) and ``Close`` (the connection
drops). Every request sent and whether the gateway aborted it are recorded for assertions.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from multidict import CIMultiDict, CIMultiDictProxy

from .errors import ReadTimeout, TransportError, UpstreamClosed
from .transport import UpstreamRequest, UpstreamResponse


@dataclass(frozen=True, slots=True)
class Delay:
    seconds: float


@dataclass(frozen=True, slots=True)
class Close:
    """The upstream drops the connection here."""


Step = bytes | Delay | Close


@dataclass(slots=True)
class Exchange:
    """One scripted upstream answer. ``fail`` (raised after ``delay_s``) replaces the answer entirely."""

    status: int = 200
    headers: Mapping[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})
    body: Sequence[Step] = ()
    fail: TransportError | None = None
    delay_s: float = 0.0  # before the status line; longer than read_s is a ReadTimeout


@dataclass(slots=True)
class Sent:
    """What the gateway sent, and how the exchange ended."""

    request: UpstreamRequest
    aborted: bool = False  # the gateway left before the body's end (client gone, or gave up)
    finished: bool = False  # the whole scripted body was read


def sse(*events: Step | str, headers: Mapping[str, str] | None = None) -> Exchange:
    """A 200 ``text/event-stream`` answer whose body steps are ``events`` (strings are UTF-8 encoded)."""
    steps = [e.encode() if isinstance(e, str) else e for e in events]
    return Exchange(200, headers or {"Content-Type": "text/event-stream"}, steps)


def json_reply(body: bytes, status: int = 200, headers: Mapping[str, str] | None = None) -> Exchange:
    return Exchange(status, {"Content-Type": "application/json", **(headers or {})}, [body])


class _Response:
    def __init__(self, exchange: Exchange, sent: Sent) -> None:
        self._exchange = exchange
        self._sent = sent
        self._headers = CIMultiDictProxy(CIMultiDict(exchange.headers))

    @property
    def status(self) -> int:
        return self._exchange.status

    @property
    def headers(self) -> Mapping[str, str]:
        return self._headers

    async def chunks(self) -> AsyncIterator[bytes]:
        for step in self._exchange.body:
            if isinstance(step, Delay):
                await _silence(step.seconds, self._sent.request.read_s)
            elif isinstance(step, Close):
                raise UpstreamClosed("connection closed by upstream")
            elif step:
                yield step
        self._sent.finished = True

    async def read(self, limit: int) -> bytes:
        parts: list[bytes] = []
        async for chunk in self.chunks():
            parts.append(chunk)
        return b"".join(parts)[:limit]


async def _silence(seconds: float, read_s: float) -> None:
    if seconds > read_s:
        await asyncio.sleep(read_s)
        raise ReadTimeout("read time-out")
    await asyncio.sleep(seconds)


class ScriptedTransport:
    """``UpstreamTransport`` for tests. ``script(cluster, *exchanges)`` queues answers, consumed in order;
    when a cluster's queue is empty, ``responder`` (if given) builds the answer, else the test fails loudly.
    """

    def __init__(self, responder: Callable[[UpstreamRequest], Exchange] | None = None) -> None:
        self._queues: dict[str, deque[Exchange]] = defaultdict(deque)
        self.responder = responder
        self.sent: list[Sent] = []

    def script(self, cluster: str, *exchanges: Exchange) -> None:
        self._queues[cluster].extend(exchanges)

    def unused(self) -> int:
        """Scripted exchanges not consumed yet."""
        return sum(len(q) for q in self._queues.values())

    def sent_to(self, cluster: str) -> list[Sent]:
        return [s for s in self.sent if s.request.cluster == cluster]

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    @asynccontextmanager
    async def send(self, request: UpstreamRequest) -> AsyncIterator[UpstreamResponse]:
        sent = Sent(request)
        self.sent.append(sent)
        queue = self._queues[request.cluster]
        if queue:
            exchange = queue.popleft()
        elif self.responder is not None:
            exchange = self.responder(request)
        else:
            raise AssertionError(f"no scripted answer left for cluster {request.cluster!r}")
        if exchange.delay_s:
            await _silence(exchange.delay_s, request.read_s)
        if exchange.fail is not None:
            raise exchange.fail
        try:
            yield _Response(exchange, sent)
        finally:
            sent.aborted = not sent.finished
