"""The Anthropic Messages API through the gateway, driven by the official ``anthropic`` client."""

from __future__ import annotations

import hashlib
import http.client
import json
import urllib.request
from collections.abc import Iterator

import anthropic
import pytest
from anthropic.types import MessageParam

from agent_helpers import endpoint_tokens, sim_faults
from anthropic_fake import CACHE_READ, CACHE_WRITE, TEXT, UNCACHED, AnthropicFake
from harness import Harness, fleet_config

KEY = "sk-test-messages"
MESSAGES: list[MessageParam] = [{"role": "user", "content": "How green is this request?"}]
CARBON = {"x-bauxite-include-carbon": "true"}


def keyed_config(**extra: object) -> dict[str, object]:
    config = fleet_config(**extra)  # type: ignore[arg-type]
    config["auth"] = {"keys": [{"sha256": hashlib.sha256(KEY.encode()).hexdigest(), "department": "agents"}]}
    return config


@pytest.fixture(scope="module")
def gw() -> Iterator[Harness]:
    with Harness(keyed_config()) as harness:
        yield harness


def client(h: Harness, key: str = KEY) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=h.base_url, api_key=key, max_retries=0)


def test_create_with_x_api_key_returns_text_usage_and_is_accounted(gw: Harness) -> None:
    before = len(gw.tap.records)
    metered = endpoint_tokens(gw, "messages", "completion")
    raw = client(gw).messages.with_raw_response.create(model="tiny-8b", max_tokens=6, messages=MESSAGES)
    message = raw.parse()
    assert message.content[0].type == "text" and message.content[0].text == "green " * 6
    assert message.usage.output_tokens == 6 and message.usage.input_tokens > 0
    assert raw.headers["x-bauxite-cluster"] in {"east", "west"}
    assert float(raw.headers["x-bauxite-carbon-grams"]) > 0
    record = gw.wait_records(before + 1)[before]
    assert (record.endpoint, record.status, record.department) == ("messages", "ok", "agents")
    assert (record.prompt_tokens, record.completion_tokens) == (message.usage.input_tokens, 6)
    assert endpoint_tokens(gw, "messages", "completion") == metered + 6


def test_stream_helper_gets_text_and_final_usage(gw: Harness) -> None:
    before = len(gw.tap.records)
    with client(gw).messages.stream(model="tiny-8b", max_tokens=5, messages=MESSAGES) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "green " * 5
    assert final.usage.output_tokens == 5 and final.usage.input_tokens > 0
    record = gw.wait_records(before + 1)[before]
    assert (record.endpoint, record.status, record.completion_tokens) == ("messages", "ok", 5)
    assert record.prompt_tokens == final.usage.input_tokens and record.ttft_s >= 0


def test_create_stream_true_yields_anthropic_events(gw: Harness) -> None:
    events = list(client(gw).messages.create(model="tiny-8b", max_tokens=3, messages=MESSAGES, stream=True))
    kinds = [e.type for e in events]
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    assert kinds.count("content_block_delta") == 3


def test_bearer_key_also_works_and_bad_key_gets_anthropic_error(gw: Harness) -> None:
    bearer = anthropic.Anthropic(base_url=gw.base_url, auth_token=KEY, max_retries=0)
    assert bearer.messages.create(model="tiny-8b", max_tokens=1, messages=MESSAGES).usage.output_tokens == 1
    with pytest.raises(anthropic.AuthenticationError) as denied:
        client(gw, "wrong-key").messages.create(model="tiny-8b", max_tokens=1, messages=MESSAGES)
    assert denied.value.body == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "Incorrect API key provided"},
    }
    with pytest.raises(anthropic.NotFoundError) as unknown:
        client(gw).messages.create(model="no-such-model", max_tokens=1, messages=MESSAGES)
    assert isinstance(unknown.value.body, dict) and unknown.value.body["error"]["type"] == "not_found_error"


def test_count_tokens_is_passed_through_and_not_accounted(gw: Harness) -> None:
    before = len(gw.tap.records)
    counted = client(gw).messages.count_tokens(model="tiny-8b", messages=MESSAGES)
    created = client(gw).messages.create(model="tiny-8b", max_tokens=1, messages=MESSAGES)
    assert counted.input_tokens == created.usage.input_tokens > 0
    records = gw.wait_records(before + 1)
    assert len(records) == before + 1  # only the create


def test_carbon_object_in_body_and_in_message_delta_only_when_asked(gw: Harness) -> None:
    api = client(gw)
    raw = api.messages.with_raw_response.create(
        model="tiny-8b", max_tokens=2, messages=MESSAGES, extra_headers=CARBON
    )
    carbon = raw.http_response.json()["bauxite_carbon"]
    assert carbon["carbon_g"] > 0 and carbon["region"] == raw.headers["x-bauxite-region"]
    events = list(
        api.messages.create(
            model="tiny-8b", max_tokens=2, messages=MESSAGES, stream=True, extra_headers=CARBON
        )
    )
    delta = next(e for e in events if e.type == "message_delta")
    assert (delta.model_extra or {})["bauxite_carbon"]["energy_wh"] > 0
    plain = list(api.messages.create(model="tiny-8b", max_tokens=2, messages=MESSAGES, stream=True))
    assert all("bauxite_carbon" not in (e.model_extra or {}) for e in plain)


def test_in_band_error_after_output_raises_in_client_and_fails_the_record() -> None:
    one = [{"name": "east", "region": "us-east-1", "models": ["tiny-8b"]}]
    with Harness(keyed_config(clusters=one, time_scale=1.0)) as h:  # paced: output reaches the client first
        sim_faults(h, "east", error_mid_stream=1)
        text = ""
        with (
            pytest.raises(anthropic.APIStatusError),
            client(h).messages.stream(model="tiny-8b", max_tokens=9, messages=MESSAGES) as stream,
        ):
            for piece in stream.text_stream:
                text += piece
        assert text == "green " * 3
        record = h.wait_records(1)[0]
        assert (record.endpoint, record.status, record.completion_tokens) == ("messages", "error", 3)


def test_in_band_error_before_output_is_retried_on_another_cluster(gw: Harness) -> None:
    sim_faults(gw, "west", error_mid_stream=1)
    for _ in range(4):
        with client(gw).messages.stream(model="tiny-8b", max_tokens=5, messages=MESSAGES) as stream:
            assert "".join(stream.text_stream) == "green " * 5
    assert gw.fleet is not None and gw.fleet.sim("west").faults.error_mid_stream == 0


def test_routes_only_to_clusters_serving_messages_and_models_lists_endpoints() -> None:
    clusters = [
        {"name": "east", "region": "us-east-1", "models": ["tiny-8b"]},
        {"name": "west", "region": "us-west-2", "models": ["tiny-8b"], "endpoints": ["chat", "responses"]},
        {"name": "chat-only", "region": "us-west-2", "models": ["chat-8b"], "endpoints": ["chat"]},
    ]
    with Harness(keyed_config(clusters=clusters)) as h:
        with urllib.request.urlopen(h.base_url + "/metrics", timeout=10) as resp:
            exposition = resp.read().decode()
        # Zero series from the start for what is served, none for what is not.
        assert (
            'bauxite_endpoint_requests_total{endpoint="messages",model="tiny-8b",status="ok"} 0.0'
            in exposition
        )
        assert (
            'bauxite_endpoint_tokens_total{endpoint="chat",kind="prompt",model="chat-8b"} 0.0' in exposition
        )
        assert 'endpoint="messages",model="chat-8b"' not in exposition
        api = client(h)
        for _ in range(6):
            raw = api.messages.with_raw_response.create(model="tiny-8b", max_tokens=1, messages=MESSAGES)
            assert raw.headers["x-bauxite-cluster"] == "east"
        with pytest.raises(anthropic.NotFoundError) as unserved:
            api.messages.create(model="chat-8b", max_tokens=1, messages=MESSAGES)
        assert "/v1/messages" in str(unserved.value.body)
        models = {m.id: m.model_extra or {} for m in api.models.list()}
        assert "messages" in models["tiny-8b"]["bauxite_endpoints"]
        assert models["chat-8b"]["bauxite_endpoints"] == ["chat"]
        by_cluster = {c["name"]: c["endpoints"] for c in models["tiny-8b"]["bauxite_clusters"]}
        assert by_cluster == {"east": ["chat", "completion", "embedding", "responses", "messages"],
                              "west": ["chat", "responses"]}  # fmt: skip


def test_anthropic_wire_format_upstream_cache_tokens_version_header_and_key() -> None:
    """An upstream in Anthropic's own format: cache reads/writes counted, headers passed, pings skipped."""
    with AnthropicFake() as fake:
        cluster = {"name": "claude", "region": "us-east-1", "models": ["claude-x"], "url": fake.url,
                   "no_sim": True, "api_key_env": "TEST_ANTHROPIC_UPSTREAM_KEY"}  # fmt: skip
        mp = pytest.MonkeyPatch()
        mp.setenv("TEST_ANTHROPIC_UPSTREAM_KEY", "upstream-secret")
        try:
            with Harness(keyed_config(clusters=[cluster])) as h:
                api = client(h)
                message = api.messages.create(model="claude-x", max_tokens=9, messages=MESSAGES)
                with api.messages.stream(model="claude-x", max_tokens=9, messages=MESSAGES) as stream:
                    text = "".join(stream.text_stream)
                    final = stream.get_final_message()
                counted = api.messages.count_tokens(model="claude-x", messages=MESSAGES)
                records = h.wait_records(2)
        finally:
            mp.undo()
    assert message.usage.cache_read_input_tokens == CACHE_READ and text == "".join(TEXT)
    assert (
        final.usage.output_tokens == len(TEXT) and counted.input_tokens == UNCACHED + CACHE_READ + CACHE_WRITE
    )
    for record in records:
        assert record.prompt_tokens == UNCACHED + CACHE_READ + CACHE_WRITE
        assert (record.cached_tokens, record.completion_tokens, record.status) == (
            CACHE_READ,
            len(TEXT),
            "ok",
        )
    streamed = records[1]
    assert streamed.ttft_s >= 0
    for headers in fake.headers:
        assert headers["anthropic-version"] == "2023-06-01"  # the client's, passed through
        assert headers["x-api-key"] == "upstream-secret"  # the cluster's key, never the caller's
        assert KEY not in str(headers)


def test_client_that_hangs_up_mid_stream_is_recorded_as_cancelled() -> None:
    one = [{"name": "east", "region": "us-east-1", "models": ["tiny-8b"]}]
    with Harness(keyed_config(clusters=one, time_scale=1.0)) as h:  # paced, so the stream is still running
        host, port = h.base_url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        body = {"model": "tiny-8b", "max_tokens": 200, "stream": True, "messages": MESSAGES}
        conn.request(
            "POST", "/v1/messages", json.dumps(body), {"x-api-key": KEY, "Content-Type": "application/json"}
        )
        resp = conn.getresponse()
        assert resp.status == 200 and b"content_block_delta" in resp.read1(65536) + resp.read1(65536)
        conn.close()  # the client leaves while the cluster is still generating
        record = h.wait_records(1)[0]
        assert (record.endpoint, record.status, record.http_status) == ("messages", "cancelled", 499)
        assert 0 < record.completion_tokens < 200
