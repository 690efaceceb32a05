"""The pipe end to end through real sockets: a real gateway, real upstream TCP servers that misbehave on the
wire (``raw_upstream``), and real clients (aiohttp, raw sockets, the official ``openai`` client)."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import openai
import orjson
import pytest

from raw_upstream import Exchange, RawUpstream
from wire_kit import DONE, MODEL, WireGateway, chat, chunk, completion_body, config, usage_chunk

STREAM = chunk("Hel") + chunk("lo", finish="stop") + usage_chunk(5, 2) + DONE
Behaviour = Callable[[Exchange], Awaitable[None]]


async def healthy(ex: Exchange) -> None:
    if b'"stream":true' in ex.body:
        await ex.start_sse()
        await ex.send(STREAM)
    else:
        await ex.answer("200 OK", {"Content-Type": "application/json"}, completion_body())


async def dead_after_200(ex: Exchange) -> None:
    await ex.start_sse()


async def silent(ex: Exchange) -> None:
    await asyncio.sleep(5)


async def rate_limited(ex: Exchange) -> None:
    await ex.answer("429 Too Many Requests", {"Content-Type": "application/json", "Retry-After": "60"},
                    b'{"error":{"message":"rate limited"}}')  # fmt: skip


async def html_503(ex: Exchange) -> None:
    await ex.answer("503 Service Unavailable", {"Content-Type": "text/html"}, b"<h1>upstream down</h1>")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def good() -> AsyncIterator[RawUpstream]:
    server = RawUpstream(healthy)
    await server.start()
    yield server
    await server.stop()


@pytest.mark.parametrize(
    "broken",
    [dead_after_200, silent, rate_limited, html_503, None],
    ids=lambda b: getattr(b, "__name__", "refused"),
)
async def test_one_broken_cluster_of_two_fails_no_client_request(
    good: RawUpstream, broken: Behaviour | None
) -> None:
    bad = RawUpstream(broken) if broken else None
    if bad is not None:
        await bad.start()
    bad_url = bad.url if bad else f"http://127.0.0.1:{closed_port()}/v1"
    cfg = config(("a", "b"), urls={"a": bad_url, "b": good.url}, timeouts={"read_s": "400ms"})
    try:
        async with WireGateway(None, cfg) as gw:
            for i in range(12):
                status, _, body = await gw.post(chat(stream=i % 2 == 0, max_tokens=4))
                assert status == 200, body
                assert body in (STREAM.replace(usage_chunk(5, 2), b""), completion_body())
            records = await gw.records(12)
            assert [r.status for r in records] == ["ok"] * 12
            assert {r.cluster for r in records} == {"b"}
            # cooled down after its first failure: the broken cluster saw one request, not half of them
            assert bad is None or len(bad.exchanges) == 1
    finally:
        if bad is not None:
            await bad.stop()


async def test_split_crlf_and_comments_reach_client_unchanged_and_ttft_skips_comments() -> None:
    events = (b": ping\r\n\r\n", chunk("Hel"), chunk("lo", finish="stop"), DONE)
    wire = b"".join(e.replace(b"\n", b"\r\n") if e[:1] != b":" else e for e in events)

    async def behaviour(ex: Exchange) -> None:
        await ex.start_sse()
        await ex.send(wire[:10])  # the comment, cut short
        await asyncio.sleep(0.3)
        cut = wire.index(b"\r\n\r\n", 20) + 1  # between a CR and its LF
        await ex.send(wire[10:cut])
        await asyncio.sleep(0.05)
        await ex.send(wire[cut:])

    server = RawUpstream(behaviour)
    await server.start()
    try:
        async with WireGateway(None, config(urls={"a": server.url})) as gw:
            status, _, body = await gw.post(chat(stream=True))
            assert status == 200 and body == wire
            (record,) = await gw.records(1)
            assert record.status == "ok" and record.ttft_s >= 0.3  # the comment was not the first token
            assert record.usage_estimated and record.completion_tokens == 2
            assert b'"stream_options":{"include_usage":true}' in server.exchanges[0].body
    finally:
        await server.stop()


async def _hang_up_after(port: int, body: bytes, seconds: float) -> None:
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    await asyncio.sleep(seconds)
    writer.close()


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream-before-first-event"])
async def test_client_hangup_cancels_upstream_and_records_cancelled(
    stream: bool, caplog: pytest.LogCaptureFixture
) -> None:
    async def behaviour(ex: Exchange) -> None:
        if stream:
            await ex.start_sse()
        await ex.watch_hangup()

    server = RawUpstream(behaviour)
    await server.start()
    try:
        async with WireGateway(None, config(urls={"a": server.url})) as gw:
            await _hang_up_after(gw.port, orjson.dumps(chat(stream=stream)), 0.3)
            (record,) = await gw.records(1)
            assert (record.status, record.http_status) == ("cancelled", 499)
            await asyncio.wait_for(server.exchanges[0].client_gone.wait(), 5)  # upstream told to stop
    finally:
        await server.stop()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], "no unhandled-error traceback"


async def test_body_forwarded_byte_exact_except_spliced_members() -> None:
    async def behaviour(ex: Exchange) -> None:
        await ex.start_sse()
        await ex.send(STREAM)

    server = RawUpstream(behaviour)
    await server.start()
    deep = b"[" * 300 + b"1" + b"]" * 300
    raw = (
        b'{"model":"tiny-8b","stream":true,"seed":123456789012345678901234567890,'
        b'"messages":[{"role":"user","content":"x"}],"metadata":{"nested":' + deep + b"}}"
    )
    try:
        async with WireGateway(None, config(urls={"a": server.url})) as gw:
            status, _, body = await gw.post(raw)
            assert status == 200, body
            sent = server.exchanges[0].body
            assert sent == raw[:-1] + b',"stream_options":{"include_usage":true}}'
    finally:
        await server.stop()


async def test_models_retrieve_and_bounded_unknown_model_errors() -> None:
    server = RawUpstream(healthy)
    await server.start()
    odd = "org/Model-1.5:q4"
    cfg = config(urls={"a": server.url})
    cfg["clusters"][0]["models"] = [MODEL, odd]
    try:
        async with WireGateway(None, cfg) as gw:
            client = openai.AsyncOpenAI(base_url=gw.base_url + "/v1", api_key="k", max_retries=0)
            assert (await client.models.retrieve(odd)).id == odd
            assert (await client.models.retrieve(MODEL)).id == MODEL
            with pytest.raises(openai.NotFoundError):
                await client.models.retrieve("nope")
            status, _, body = await gw.post(chat(model="m" * 3_000_000))
            assert status == 404 and len(body) < 1024 and b"3000000 characters" in body
            await client.close()
    finally:
        await server.stop()


async def test_upstream_failure_is_logged_once_with_cluster_host_and_cause(
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = closed_port()
    caplog.set_level(logging.DEBUG)
    async with WireGateway(None, config(urls={"a": f"http://127.0.0.1:{port}/v1"})) as gw:
        started = time.monotonic()
        status, _, body = await gw.post(chat(messages=[{"role": "user", "content": "SECRET-PROMPT"}]))
        assert status == 503 and b"'a'" in body and b"connect failed" in body
        assert time.monotonic() - started < 10
    warnings = [r for r in caplog.records if r.name == "bauxite.proxy" and r.levelno == logging.WARNING]
    assert len(warnings) == 1
    line = warnings[0].getMessage()
    assert f"127.0.0.1:{port}" in line and "connect failed" in line and " a " in line
    assert not any("SECRET-PROMPT" in r.getMessage() for r in caplog.records)
