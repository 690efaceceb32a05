"""Server edge: slow clients time out, the FD limit is raised, local exhaustion is not an upstream failure,
and provider reads are bounded."""

from __future__ import annotations

import asyncio
import errno
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from bauxite.errors import ConnectFailed, LocalResourceError, ReadTimeout
from bauxite.intensity.base import IntensityError
from bauxite.intensity.http import HttpClient
from bauxite.transport import translate
from bauxite.transport_fake import ScriptedTransport
from wire_kit import WireGateway, config


async def test_slow_request_head_is_closed_after_header_timeout() -> None:
    cfg = {**config(), "server": {"header_timeout": "500ms"}}
    async with WireGateway(ScriptedTransport(), cfg) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        started = time.monotonic()
        head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Slow: "
        closed = False
        for i in range(200):  # one byte every 50 ms: a slowloris would keep this up for ever
            try:
                writer.write(head[i : i + 1] if i < len(head) else b"a")
                await writer.drain()
            except ConnectionError:
                closed = True
                break
            if reader.at_eof():
                closed = True
                break
            try:
                if await asyncio.wait_for(reader.read(1), 0.05) == b"":
                    closed = True
                    break
            except TimeoutError:
                pass
        writer.close()
        assert closed and time.monotonic() - started < 5


async def test_slow_request_body_gets_408() -> None:
    transport = ScriptedTransport()
    async with WireGateway(transport, {**config(), "server": {"body_timeout": "300ms"}}) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(4096), 10)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 408") and b'"request_timeout"' in answer
        assert transport.sent == []


def test_fd_soft_limit_is_raised_to_the_hard_limit() -> None:
    script = (
        "import resource\n"
        "from bauxite.http_server import raise_fd_limit\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))\n"
        "before, after = raise_fd_limit()\n"
        "assert before == 256 and after == resource.getrlimit(resource.RLIMIT_NOFILE)[0]\n"
        "assert after == (hard if hard != resource.RLIM_INFINITY else max(256, 1 << 20)), (after, hard)\n"
        "print('raised', before, after)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "raised 256" in out.stdout, out.stderr


def test_descriptor_exhaustion_is_local_not_an_upstream_failure() -> None:
    key = aiohttp.client_reqrep.ConnectionKey("h", 1, False, True, None, None, None)
    emfile = aiohttp.ClientConnectorError(key, OSError(errno.EMFILE, "Too many open files"))
    refused = aiohttp.ClientConnectorError(
        key, ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
    )
    assert isinstance(translate(emfile), LocalResourceError)
    assert isinstance(translate(OSError(errno.ENFILE, "table full")), LocalResourceError)
    assert isinstance(translate(refused), ConnectFailed) and translate(refused).retry_safe
    assert isinstance(translate(aiohttp.SocketTimeoutError()), ReadTimeout)


async def test_provider_answers_are_read_within_a_bound() -> None:
    big = b'{"data": "' + b"x" * (3 * 1024 * 1024) + b'"}'

    async def huge(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)  # chunked: no Content-Length to refuse up front
        for i in range(0, len(big), 65536):
            await response.write(big[i : i + 65536])
        return response

    async def sized(request: web.Request) -> web.Response:
        return web.Response(body=big, content_type="application/json")

    app = web.Application()
    app.router.add_get("/huge", huge)
    app.router.add_get("/sized", sized)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    http = HttpClient(timeout_s=10, max_reply_bytes=1024 * 1024)
    try:
        for path in ("/huge", "/sized"):
            with pytest.raises(IntensityError, match=r"exceeds|larger than"):
                await http.get("test", f"http://127.0.0.1:{port}{path}")
        small = HttpClient(timeout_s=10)
        assert small.max_reply_bytes >= 64 * 1024
        await small.close()
    finally:
        await http.close()
        await runner.cleanup()


def test_1100_slow_clients_at_a_1024_descriptor_limit_do_not_stop_the_gateway(tmp_path: Path) -> None:
    """A real ``bauxite serve`` started with a soft limit of 1,024 open files: it raises the limit, serves
    a normal request while 1,100 slowloris sockets are open, and closes those after ``header_timeout``."""
    config = tmp_path / "gw.yaml"
    config.write_text(
        "auth: {allow_anonymous: true}\nserver: {header_timeout: 2s}\n"
        "clusters: [{name: a, region: us-east-1, url: 'http://127.0.0.1:9/v1', models: [tiny-8b]}]\n"
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 4096:
        pytest.fail(f"this test needs a hard open-files limit of at least 4096 (have {hard})")
    if soft != resource.RLIM_INFINITY and soft < 4096:  # this process holds the 1,100 client sockets
        resource.setrlimit(resource.RLIMIT_NOFILE, (4096, hard))

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))

    server = subprocess.Popen(
        [sys.executable, "-m", "bauxite.cli", "serve", "--config", str(config), "--port", str(port)],
        preexec_fn=low_limit,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    slow: list[socket.socket] = []
    try:
        _wait_healthy(port)
        for _ in range(1100):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")  # and never the rest
            slow.append(sock)
        assert _healthz(port) == 200  # still serving with 1,100 held sockets
        deadline = time.monotonic() + 30
        for sock in slow:
            sock.settimeout(max(deadline - time.monotonic(), 0.1))
            assert sock.recv(1) == b""  # closed by the server: the head never completed
    finally:
        for sock in slow:
            sock.close()
        server.terminate()
        _, err = server.communicate(timeout=30)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert b"Traceback" not in err, err.decode()[-2000:]


def _healthz(port: int) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        return int(sock.recv(64).split()[1])


def _wait_healthy(port: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if _healthz(port) == 200:
                return
        except OSError:
            time.sleep(0.2)
    pytest.fail("the gateway did not start within 60 s")
