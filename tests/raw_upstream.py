"""A real TCP upstream on 127.0.0.1 that writes exactly the bytes a test scripts (status line, headers,
body pieces with pauses, abrupt closes), for end-to-end tests of misbehaviours a well-behaved HTTP server
library would never produce. It also records each request body and whether the client hung up early.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

Behaviour = Callable[["Exchange"], Awaitable[None]]


@dataclass
class Exchange:
    """One accepted request: what arrived, and the socket to answer on."""

    head: bytes
    body: bytes
    writer: asyncio.StreamWriter
    reader: asyncio.StreamReader
    client_gone: asyncio.Event = field(default_factory=asyncio.Event)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def answer(self, status: str, headers: dict[str, str], body: bytes) -> None:
        lines = [f"HTTP/1.1 {status}", *(f"{k}: {v}" for k, v in headers.items())]
        lines.append(f"Content-Length: {len(body)}")
        await self.send(("\r\n".join(lines) + "\r\n\r\n").encode() + body)

    async def start_sse(self, extra: str = "") -> None:
        await self.send(
            f"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n{extra}\r\n".encode()
        )

    async def watch_hangup(self) -> None:
        """Set ``client_gone`` when the gateway closes its side (it aborted the exchange)."""
        try:
            await self.reader.read(1)
        finally:
            self.client_gone.set()


class RawUpstream:
    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.exchanges: list[Exchange] = []
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            body = await reader.readexactly(length)
            exchange = Exchange(head, body, writer, reader)
            if not head.startswith(b"POST "):  # the gateway's metrics scrapes: not what tests script
                await exchange.answer("404 Not Found", {}, b"")
                return
            self.exchanges.append(exchange)
            await self.behaviour(exchange)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
