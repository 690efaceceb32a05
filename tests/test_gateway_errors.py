"""Bad input and upstream trouble: the right OpenAI-shaped error, a record, and a gateway still serving."""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from harness import Harness, fleet_config

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]


def post(
    h: Harness, path: str, body: bytes, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        h.base_url + path, data=body, headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def sim_faults(h: Harness, cluster: str, **faults: int) -> None:
    assert h.fleet is not None
    url = f"http://127.0.0.1:{h.fleet.ports[cluster]}/fleet/faults"
    request = urllib.request.Request(url, data=json.dumps(faults).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=5):
        pass


def chat_body(**extra: Any) -> bytes:
    return json.dumps({"model": "tiny-8b", "messages": MESSAGES, "max_tokens": 2, **extra}).encode()


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "invalid_json"),
        (b"[1, 2]", 400, "invalid_body"),
        (json.dumps({"messages": MESSAGES}).encode(), 400, "missing_model"),
        (json.dumps({"model": "nope", "messages": MESSAGES}).encode(), 404, "model_not_found"),
    ],
)
def test_bad_bodies_get_openai_errors(gateway: Harness, body: bytes, status: int, code: str) -> None:
    got_status, doc = post(gateway, "/v1/chat/completions", body)
    assert got_status == status
    assert doc["error"]["code"] == code and doc["error"]["message"] and doc["error"]["type"]
    # and the gateway keeps serving
    assert post(gateway, "/v1/chat/completions", chat_body())[0] == 200


def test_bad_max_latency_header_is_400(gateway: Harness) -> None:
    status, doc = post(gateway, "/v1/chat/completions", chat_body(), {"x-bauxite-max-latency-ms": "fast"})
    assert status == 400 and "x-bauxite-max-latency-ms" in doc["error"]["message"]


def test_unknown_path_and_method_keep_openai_shape(gateway: Harness) -> None:
    status, doc = post(gateway, "/v1/nothing-here", b"{}")
    assert status in (404, 405) and doc["error"]["code"] in ("not_found", "method_not_allowed")


def test_body_over_limit_is_413() -> None:
    config = fleet_config(server={"max_body_bytes": 2048})
    with Harness(config) as h:
        big = chat_body(messages=[{"role": "user", "content": "x" * 5000}])
        status, doc = post(h, "/v1/chat/completions", big)
        assert status == 413 and doc["error"]["code"] == "request_too_large"
        assert post(h, "/v1/chat/completions", chat_body())[0] == 200


def test_keys_map_to_departments_and_bad_key_is_401(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_KEY_RESEARCH", "sk-research-123")
    digest = hashlib.sha256(b"sk-finance-456").hexdigest()
    config = fleet_config(
        auth={
            "keys": [
                {"key_env": "TEST_KEY_RESEARCH", "department": "research"},
                {"sha256": digest, "department": "finance"},
            ]
        }
    )
    with Harness(config) as h:
        for key in ("sk-research-123", "sk-finance-456"):
            c = openai.OpenAI(base_url=h.base_url + "/v1", api_key=key, max_retries=0)
            c.chat.completions.create(model="tiny-8b", messages=MESSAGES, max_tokens=1)
        records = h.wait_records(2)
        assert sorted(r.department for r in records) == ["finance", "research"]
        bad = openai.OpenAI(base_url=h.base_url + "/v1", api_key="sk-wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            bad.chat.completions.create(model="tiny-8b", messages=MESSAGES)
        status, doc = post(h, "/v1/chat/completions", chat_body())
        assert status == 401 and doc["error"]["type"] == "authentication_error"
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()


def test_anonymous_mode_still_maps_configured_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_KEY_OPS", "sk-ops")
    config = fleet_config(
        auth={"allow_anonymous": True, "keys": [{"key_env": "TEST_KEY_OPS", "department": "ops"}]}
    )
    with Harness(config) as h:
        for key in ("sk-ops", "sk-unknown"):
            openai.OpenAI(base_url=h.base_url + "/v1", api_key=key, max_retries=0).chat.completions.create(
                model="tiny-8b",
                messages=MESSAGES,
                max_tokens=1,
            )
        assert post(h, "/v1/chat/completions", chat_body())[0] == 200  # no key at all
        assert [r.department for r in h.wait_records(3)] == ["ops", "anonymous", "anonymous"]


def test_client_key_is_never_forwarded_cluster_key_is(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_CLUSTER_KEY", "cluster-secret")
    clusters = [
        {
            "name": "east",
            "region": "us-east-1",
            "models": ["tiny-8b"],
            "api_key_env": "TEST_CLUSTER_KEY",
            "sim": {"api_key_env": "TEST_CLUSTER_KEY"},
        },
    ]
    with Harness(fleet_config(clusters)) as h:
        # The simulated cluster accepts only its own key: success proves the client's key was replaced.
        c = openai.OpenAI(base_url=h.base_url + "/v1", api_key="client-secret", max_retries=0)
        c.chat.completions.create(model="tiny-8b", messages=MESSAGES, max_tokens=1)


def test_upstream_down_is_503_with_record() -> None:
    clusters = [
        {
            "name": "ghost",
            "region": "us-east-1",
            "models": ["tiny-8b"],
            "url": "http://127.0.0.1:9/v1",
            "no_sim": True,
        }
    ]
    with Harness(fleet_config(clusters)) as h:
        status, doc = post(h, "/v1/chat/completions", chat_body())
        assert status == 503 and doc["error"]["code"] in ("upstream_error", "no_available_cluster")
        record = h.wait_records(1)[0]
        assert record.status == "error" and record.cluster == "ghost"


def test_refused_request_retries_once_on_another_cluster() -> None:
    with Harness(fleet_config()) as h:
        sim_faults(h, "east", refuse=1)
        sim_faults(h, "west", refuse=1)
        # Whichever cluster is tried first refuses; the retry lands on the other, which refuses too.
        status, doc = post(h, "/v1/chat/completions", chat_body())
        assert status == 503, doc
        # Now only one refuses: the retry succeeds on the other cluster.
        with Harness(fleet_config()) as h2:
            sim_faults(h2, "east", refuse=5)
            c = openai.OpenAI(base_url=h2.base_url + "/v1", api_key="k", max_retries=0)
            for _ in range(3):
                raw = c.chat.completions.with_raw_response.create(
                    model="tiny-8b",
                    messages=MESSAGES,
                    max_tokens=1,
                )
                assert raw.headers["x-bauxite-cluster"] == "west"


def test_upstream_dying_mid_stream_terminates_client_stream_and_records_error() -> None:
    clusters = [{"name": "east", "region": "us-east-1", "models": ["tiny-8b"]}]
    with Harness(fleet_config(clusters)) as h:
        sim_faults(h, "east", die_mid_stream=1)
        c = openai.OpenAI(base_url=h.base_url + "/v1", api_key="k", max_retries=0)
        received = []
        with pytest.raises(openai.APIError):
            for chunk in c.chat.completions.create(
                model="tiny-8b",
                messages=MESSAGES,
                max_tokens=50,
                stream=True,
            ):
                received.append(chunk)
        assert 0 < len(received) < 50
        record = h.wait_records(1)[0]
        assert record.status == "error" and record.completion_tokens == len(received)
        # the gateway keeps serving
        c.chat.completions.create(model="tiny-8b", messages=MESSAGES, max_tokens=1)


def test_upstream_timeout_is_504() -> None:
    clusters = [
        {
            "name": "slow",
            "region": "us-east-1",
            "models": ["tiny-8b"],
            "timeouts": {"read_s": "200ms", "total_s": "1s"},
        }
    ]
    with Harness(fleet_config(clusters, time_scale=100.0)) as h:
        request = urllib.request.Request(
            h.base_url + "/v1/chat/completions",
            data=chat_body(max_tokens=50),
            headers={"Content-Type": "application/json"},
        )
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request, timeout=10)
        assert info.value.code == 504 and info.value.headers["x-bauxite-cluster"] == "slow"
        assert json.loads(info.value.read())["error"]["code"] == "upstream_timeout"
        assert h.wait_records(1)[0].status == "error"


def test_upstream_client_errors_pass_through_and_are_recorded() -> None:
    # The gateway believes the cluster serves "ghost-model"; the cluster itself answers 404.
    clusters = [{"name": "east", "region": "us-east-1", "models": ["tiny-8b", "ghost-model"]}]
    config = fleet_config(clusters)
    config["fleet"]["clusters"][0]["models"] = ["tiny-8b"]
    with Harness(config) as h:
        c = openai.OpenAI(base_url=h.base_url + "/v1", api_key="k", max_retries=0)
        with pytest.raises(openai.NotFoundError):
            c.chat.completions.create(model="ghost-model", messages=MESSAGES)
        record = h.wait_records(1)[0]
        assert (record.status, record.http_status, record.cluster) == ("error", 404, "east")
        # a 4xx is the request's fault, not the cluster's: it is not cooled down
        c.chat.completions.create(model="tiny-8b", messages=MESSAGES, max_tokens=1)


def test_client_disconnect_mid_stream_is_still_accounted() -> None:
    import socket

    clusters = [{"name": "east", "region": "us-east-1", "models": ["tiny-8b"]}]
    with Harness(fleet_config(clusters, time_scale=1.0)) as h:
        port = int(h.base_url.rsplit(":", 1)[1])
        body = chat_body(max_tokens=200, stream=True)
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        assert b"200 OK" in sock.recv(4096)
        sock.close()
        record = h.wait_records(1, timeout=20)[0]
        assert record.status == "cancelled" and record.http_status == 499
        assert 0 < record.completion_tokens < 200 and record.usage_estimated


def test_one_failure_does_not_take_a_single_cluster_model_offline() -> None:
    clusters = [{"name": "east", "region": "us-east-1", "models": ["tiny-8b"]}]
    with Harness(fleet_config(clusters)) as h:
        sim_faults(h, "east", refuse=1)
        assert post(h, "/v1/chat/completions", chat_body())[0] == 503
        # east is cooling down, but it is the only cluster: it is tried again rather than refused
        c = openai.OpenAI(base_url=h.base_url + "/v1", api_key="k", max_retries=0)
        raw = c.chat.completions.with_raw_response.create(model="tiny-8b", messages=MESSAGES, max_tokens=1)
        assert raw.headers["x-bauxite-route-reason"] == "cooldown_fallback"
