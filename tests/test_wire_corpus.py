"""The wire-behaviour corpus: one row per upstream behaviour, asserting what the client receives (byte-exact
where the gateway promises pass-through) and what is recorded (status, tokens, flags) and which clusters
were cooled down. Clusters are scripted in memory (``ScriptedTransport``); the client side is real HTTP.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from bauxite.errors import ConnectFailed, ConnectTimeout, LocalResourceError, UpstreamClosed
from bauxite.transport_fake import Close, Delay, Exchange, ScriptedTransport, json_reply, sse
from wire_kit import DONE, VLLM_ERROR, WireGateway, chat, chunk, completion_body, config, usage_chunk

SSE = {"Content-Type": "text/event-stream"}
STREAM = [chunk("Hel"), chunk("lo"), chunk("!", finish="stop"), usage_chunk(7, 3), DONE]
RELAYED = chunk("Hel") + chunk("lo") + chunk("!", finish="stop") + DONE  # the gateway's usage chunk dropped
HTML_502 = b"<html><body><h1>502 Bad Gateway</h1><p>nginx</p></body></html>"


def crlf(data: bytes) -> bytes:
    return data.replace(b"\n", b"\r\n")


def split_everywhere(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


@dataclass
class Row:
    name: str
    scripts: Mapping[str, Sequence[Exchange]]
    request: dict[str, Any] = field(default_factory=lambda: chat(stream=True))
    clusters: tuple[str, ...] = ("a",)
    status: int = 200
    body: bytes | None = None  # exact bytes the client must receive
    body_has: Sequence[bytes] = ()  # or fragments it must contain
    headers: Mapping[str, str] = field(default_factory=dict)
    record: Mapping[str, Any] = field(default_factory=dict)
    cooled: Sequence[str] = ()
    not_cooled: Sequence[str] = ()
    check: Callable[[ScriptedTransport, WireGateway], None] | None = None


def one(*exchanges: Exchange) -> dict[str, list[Exchange]]:
    return {"a": list(exchanges)}


def failover(broken: Exchange, cluster_b: Exchange | None = None) -> dict[str, list[Exchange]]:
    return {"a": [broken], "b": [cluster_b or sse(*STREAM)]}


OK_TOKENS = {"status": "ok", "http_status": 200, "prompt_tokens": 7, "completion_tokens": 3}
OK_B = {**OK_TOKENS, "cluster": "b", "usage_estimated": False}

FRAMING = [
    Row("lf", one(sse(*STREAM)), body=RELAYED, record={**OK_TOKENS, "usage_estimated": False}),
    Row("crlf", one(sse(*(crlf(e) for e in STREAM))), body=crlf(RELAYED), record=OK_TOKENS),
    Row(
        "cr-only",
        one(sse(*(e.replace(b"\n", b"\r") for e in STREAM))),
        body=RELAYED.replace(b"\n", b"\r"),
        record=OK_TOKENS,
    ),
    Row(
        "crlf-split-across-reads",
        one(sse(*split_everywhere(crlf(b"".join(STREAM)), 7))),
        body=crlf(RELAYED),
        record=OK_TOKENS,
    ),
    Row(
        "cr|lf-split-at-every-boundary",
        one(sse(*[p for e in STREAM for p in crlf(e).replace(b"\r\n", b"\r\x00\n").split(b"\x00")])),
        body=crlf(RELAYED),
        record=OK_TOKENS,
    ),
    Row("one-byte-reads", one(sse(*split_everywhere(b"".join(STREAM), 1))), body=RELAYED, record=OK_TOKENS),
    Row(
        "data-without-space",
        one(sse(*(e.replace(b"data: ", b"data:") for e in STREAM))),
        body=RELAYED.replace(b"data: ", b"data:"),
        record=OK_TOKENS,
    ),
    Row(
        "multi-line-data-usage",
        one(
            sse(
                chunk("x", finish="stop"),
                b'data: {"choices":[],\ndata: "usage":{"prompt_tokens":5,"completion_tokens":1}}\n\n',
                DONE,
            )
        ),
        body=chunk("x", finish="stop") + DONE,
        record={"status": "ok", "prompt_tokens": 5, "completion_tokens": 1, "usage_estimated": False},
    ),
    Row(
        "comments-and-event-field",
        one(sse(b": ping\n\n", b"event: message\n" + chunk("Hel"), b": keep-alive\n\n", *STREAM[1:])),
        body=b": ping\n\n"
        + b"event: message\n"
        + chunk("Hel")
        + b": keep-alive\n\n"
        + RELAYED[len(chunk("Hel")) :],
        record=OK_TOKENS,
    ),
    Row(
        "utf8-bom",
        one(sse(b"\xef\xbb\xbf" + STREAM[0], *STREAM[1:])),
        body=b"\xef\xbb\xbf" + RELAYED,
        record=OK_TOKENS,
    ),
    Row(
        "client-asked-for-usage",
        one(sse(*STREAM)),
        request=chat(stream=True, client_usage=True),
        body=b"".join(STREAM),
        record=OK_TOKENS,
    ),
]

ENDINGS = [
    Row(
        "no-done-after-finish",
        one(sse(chunk("a"), chunk("b", finish="stop"), usage_chunk(4, 2))),
        body=chunk("a") + chunk("b", finish="stop"),
        record={"status": "ok", "completion_tokens": 2, "usage_estimated": False},
    ),
    Row(
        "no-done-no-usage-after-finish",
        one(sse(chunk("a"), chunk("b", finish="length"))),
        body=chunk("a") + chunk("b", finish="length"),
        record={"status": "ok", "completion_tokens": 2, "usage_estimated": True},
        not_cooled=("a",),
    ),
    Row(
        "truncated-mid-stream",
        one(sse(chunk("a"), chunk("b"))),
        body_has=[chunk("a") + chunk("b"), b'"code":"upstream_error"'],
        record={
            "status": "error",
            "error_type": "upstream_stream_truncated",
            "completion_tokens": 2,
            "usage_estimated": True,
        },
        cooled=("a",),
    ),
    Row(
        "dropped-mid-stream",
        one(sse(chunk("a"), Close())),
        body_has=[chunk("a"), b"failed mid-stream"],
        record={"status": "error", "error_type": "upstream_stream_error"},
        cooled=("a",),
    ),
    Row(
        "two-choices-one-finished",
        one(sse(chunk("a", 0), chunk("b", 1), chunk("c", 0, finish="stop"))),
        request=chat(stream=True, n=2),
        body_has=[b'"upstream_error"'],
        record={"status": "error", "error_type": "upstream_stream_truncated"},
    ),
    Row(
        "unterminated-last-event-relayed",
        one(sse(chunk("a", finish="stop"), b"data: [DO")),
        body=chunk("a", finish="stop") + b"data: [DO",
        record={"status": "ok"},
    ),
]

IN_BAND_ERRORS = [
    Row(
        "vllm-error-mid-stream",
        one(sse(chunk("a"), VLLM_ERROR, DONE)),
        body=chunk("a") + VLLM_ERROR + DONE,
        record={"status": "error", "error_type": "upstream_error_event", "http_status": 502},
        cooled=("a",),
    ),
    Row(
        "error-first-event-fails-over",
        failover(sse(VLLM_ERROR, DONE)),
        clusters=("a", "b"),
        body=RELAYED,
        record=OK_B,
        cooled=("a",),
    ),
    Row(
        "event-error-field",
        one(sse(chunk("a"), b"event: error\ndata: overloaded\n\n")),
        body=chunk("a") + b"event: error\ndata: overloaded\n\n",
        record={"status": "error", "error_type": "upstream_error_event"},
    ),
    Row(
        "error-first-event-single-cluster",
        one(sse(VLLM_ERROR)),
        status=503,
        body_has=[b"error event", b"'a'"],
        record={"status": "error", "error_type": "upstream_error_event"},
    ),
]

CONTENT_TYPES = [
    Row(
        "json-answer-to-stream-request",
        one(json_reply(completion_body())),
        body=completion_body(),
        headers={"Content-Type": "application/json"},
        record={"status": "ok", "prompt_tokens": 9, "completion_tokens": 2, "usage_estimated": False},
    ),
    Row(
        "json-error-to-stream-request",
        one(json_reply(b'{"error":{"message":"bad","type":"invalid_request_error"}}', 400)),
        status=400,
        body=b'{"error":{"message":"bad","type":"invalid_request_error"}}',
        record={"status": "error", "http_status": 400},
        not_cooled=("a",),
    ),
    Row(
        "html-404-wrapped",
        one(Exchange(404, {"Content-Type": "text/html"}, [b"<h1>Not Found</h1>"])),
        status=404,
        body_has=[b'"code":"upstream_error"', b"HTTP 404"],
        record={"status": "error", "http_status": 404},
        not_cooled=("a",),
    ),
    Row(
        "html-502-single-cluster",
        one(Exchange(502, {"Content-Type": "text/html"}, [HTML_502])),
        status=502,
        body_has=[b'"code":"upstream_error"', b"HTTP 502"],
        record={"status": "error", "http_status": 502},
        cooled=("a",),
    ),
    Row(
        "html-502-fails-over",
        failover(Exchange(502, {"Content-Type": "text/html"}, [HTML_502])),
        clusters=("a", "b"),
        body=RELAYED,
        record=OK_B,
        cooled=("a",),
    ),
]

MISSING_USAGE = [
    Row(
        "stream-without-usage",
        one(sse(chunk("a"), chunk("b"), chunk("c", finish="stop"), DONE)),
        body=chunk("a") + chunk("b") + chunk("c", finish="stop") + DONE,
        record={"status": "ok", "completion_tokens": 3, "usage_estimated": True},
    ),
    Row(
        "body-without-usage",
        one(json_reply(completion_body(usage=False, text="x" * 40))),
        request=chat(),
        body=completion_body(usage=False, text="x" * 40),
        record={"status": "ok", "completion_tokens": 11, "usage_estimated": True},
    ),
    Row(
        "stream-options-rejected",
        one(
            json_reply(
                b'{"error":{"message":"Unrecognized request argument supplied: stream_options"}}', 400
            ),
            sse(chunk("a", finish="stop"), DONE),
        ),
        body=chunk("a", finish="stop") + DONE,
        record={"status": "ok", "completion_tokens": 1, "usage_estimated": True},
        not_cooled=("a",),
        check=lambda t, gw: _stream_options_retried(t),
    ),
]

RATE_LIMITS = [
    Row(
        "429-fails-over-and-cools-for-retry-after",
        failover(json_reply(b'{"error":{"message":"slow down"}}', 429, {"Retry-After": "30"})),
        clusters=("a", "b"),
        body=RELAYED,
        record=OK_B,
        cooled=("a",),
        check=lambda t, gw: _cooling_for_at_least(gw, "a", 25.0),
    ),
    Row(
        "429-reaches-client-with-headers",
        one(
            json_reply(
                b'{"error":{"message":"slow down","type":"rate_limit"}}',
                429,
                {
                    "Retry-After": "7",
                    "x-ratelimit-remaining-requests": "0",
                    "x-ratelimit-reset-requests": "7s",
                    "x-request-id": "req-123",
                },
            )
        ),
        status=429,
        body=b'{"error":{"message":"slow down","type":"rate_limit"}}',
        headers={"Retry-After": "7", "x-ratelimit-remaining-requests": "0", "x-request-id": "req-123"},
        record={"status": "error", "http_status": 429},
        cooled=("a",),
    ),
    Row(
        "429-http-date",
        one(
            json_reply(
                b'{"error":{"message":"later"}}',
                429,
                {"Retry-After": time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 90))},
            )
        ),
        status=429,
        record={"status": "error", "http_status": 429},
        cooled=("a",),
    ),
]

DEAD_AND_SLOW = [
    Row(
        "dead-after-200-fails-over",
        failover(sse(Close())),
        clusters=("a", "b"),
        body=RELAYED,
        record=OK_B,
        cooled=("a",),
    ),
    Row(
        "comments-then-closed-fails-over",
        failover(sse(b": ping\n\n", b": ping\n\n")),
        clusters=("a", "b"),
        body=RELAYED,
        record=OK_B,
        cooled=("a",),
    ),
    Row(
        "dead-after-200-single-cluster",
        one(sse(Close())),
        status=503,
        body_has=[b"'a'", b"closed"],
        record={"status": "error", "error_type": "upstream_closed"},
        cooled=("a",),
    ),
    Row(
        "refused-fails-over",
        failover(Exchange(fail=ConnectFailed("connect failed (refused)"))),
        clusters=("a", "b"),
        body=RELAYED,
        record=OK_B,
        cooled=("a",),
    ),
    Row(
        "connect-timeout-fails-over",
        failover(Exchange(fail=ConnectTimeout("connect time-out"))),
        clusters=("a", "b"),
        body=RELAYED,
        record=OK_B,
        cooled=("a",),
    ),
    Row(
        "read-timeout-before-headers-fails-over",
        failover(Exchange(delay_s=5.0)),
        clusters=("a", "b"),
        body=RELAYED,
        record=OK_B,
        cooled=("a",),
    ),
    Row(
        "silent-after-200-fails-over",
        failover(sse(Delay(5.0), *STREAM)),
        clusters=("a", "b"),
        body=RELAYED,
        record=OK_B,
        cooled=("a",),
    ),
    Row(
        "silent-after-200-single-cluster",
        one(sse(b": ping\n\n", Delay(5.0))),
        status=504,
        body_has=[b'"upstream_timeout"'],
        record={"status": "error", "error_type": "timeout"},
        cooled=("a",),
    ),
    Row(
        "read-timeout-single-cluster",
        one(Exchange(delay_s=5.0)),
        status=504,
        body_has=[b'"upstream_timeout"', b"'a'"],
        record={"status": "error", "error_type": "timeout"},
        cooled=("a",),
    ),
    Row(
        "reset-before-answer-fails-over",
        failover(Exchange(fail=UpstreamClosed("connection reset")), json_reply(completion_body())),
        clusters=("a", "b"),
        request=chat(),
        body=completion_body(),
        cooled=("a",),
    ),
    Row(
        "local-fd-exhaustion-is-not-the-cluster",
        one(Exchange(fail=LocalResourceError("local resource exhausted (EMFILE)"))),
        status=503,
        body_has=[b'"gateway_overloaded"'],
        headers={"Retry-After": "1"},
        not_cooled=("a",),
        check=lambda t, gw: _no_upstream_work(gw),
    ),
]


def _no_upstream_work(gw: WireGateway) -> None:
    (capture,) = gw.captures
    assert (capture.status, capture.http_status, capture.completion_tokens) == ("error", 503, 0)


def _cooling_for_at_least(gw: WireGateway, cluster: str, seconds: float) -> None:
    assert gw.cluster(cluster).cooldown_until - time.monotonic() >= seconds


def _stream_options_retried(transport: ScriptedTransport) -> None:
    first, second = (orjson.loads(s.request.body) for s in transport.sent_to("a"))
    assert first["stream_options"] == {"include_usage": True} and "stream_options" not in second


CORPUS = FRAMING + ENDINGS + IN_BAND_ERRORS + CONTENT_TYPES + MISSING_USAGE + RATE_LIMITS + DEAD_AND_SLOW


@pytest.mark.parametrize("row", CORPUS, ids=[r.name for r in CORPUS])
async def test_wire_behaviour(row: Row) -> None:
    transport = ScriptedTransport()
    for cluster, exchanges in row.scripts.items():
        transport.script(cluster, *exchanges)
    cfg = config(row.clusters, timeouts={"read_s": "300ms", "connect_s": "300ms"})
    async with WireGateway(transport, cfg) as gw:
        status, headers, body = await gw.post(row.request)
        assert status == row.status, body
        if row.body is not None:
            assert body == row.body
        for fragment in row.body_has:
            assert fragment in body, (fragment, body)
        for name, value in row.headers.items():
            assert headers.get(name) == value, (name, dict(headers))
        if status >= 400:
            assert "error" in orjson.loads(body)  # always OpenAI-shaped
        if row.record:
            (record,) = await gw.records(1)
            (capture,) = gw.captures
            for name, value in row.record.items():
                assert getattr(capture, name) == value, (name, getattr(capture, name), value)
            assert (record.status, record.usage_estimated) == (capture.status, capture.usage_estimated)
            assert (record.prompt_tokens, record.completion_tokens) == (
                capture.prompt_tokens,
                capture.completion_tokens,
            )
            if capture.status == "ok" and headers.get("Content-Type") == "text/event-stream":
                assert capture.ttft_s is not None and record.ttft_s >= 0
        now = time.monotonic()
        for name in row.cooled:
            assert not gw.cluster(name).available(now), f"{name} should be cooling down"
        for name in row.not_cooled:
            assert gw.cluster(name).available(now), f"{name} should not be cooling down"
        if row.check is not None:
            row.check(transport, gw)
        assert transport.unused() == 0, "every scripted exchange was used"


async def test_cluster_configured_without_stream_options_is_estimated_and_flagged() -> None:
    transport = ScriptedTransport()
    transport.script("a", sse(chunk("a"), chunk("b", finish="stop"), DONE))
    async with WireGateway(transport, config(stream_options=False)) as gw:
        status, _, body = await gw.post(chat(stream=True))
        assert status == 200 and body == chunk("a") + chunk("b", finish="stop") + DONE
        (record,) = await gw.records(1)
        assert record.status == "ok" and record.usage_estimated
        assert record.completion_tokens == 2 and record.prompt_tokens > 0 and record.energy_j > 0
    assert b"stream_options" not in transport.sent[0].request.body


async def test_client_hangup_mid_stream_aborts_the_upstream_exchange() -> None:
    transport = ScriptedTransport()
    transport.script("a", sse(chunk("a"), Delay(0.2), *[chunk("x") for _ in range(50)], Delay(30.0)))
    async with WireGateway(transport, config(timeouts={"read_s": "60s"})) as gw:
        assert gw.session is not None
        async with gw.session.post(gw.base_url + "/v1/chat/completions", json=chat(stream=True)) as resp:
            assert resp.status == 200
            await resp.content.readany()
        (record,) = await gw.records(1)
        assert (record.status, record.http_status) == ("cancelled", 499)
        assert record.usage_estimated and record.completion_tokens >= 1
        assert transport.sent[0].aborted and gw.cluster("a").available()
