"""The OpenAI Responses API through the gateway, driven by the official ``openai`` client."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from agent_helpers import endpoint_tokens, metric, sim_faults
from harness import Harness, fleet_config

CARBON = {"x-bauxite-include-carbon": "true"}


@pytest.fixture(scope="module")
def gw() -> Iterator[Harness]:
    with Harness(fleet_config()) as harness:
        yield harness


def client(h: Harness) -> openai.OpenAI:
    return openai.OpenAI(base_url=h.base_url + "/v1", api_key="any-key", max_retries=0)


def test_create_returns_text_usage_headers_and_is_accounted(gw: Harness) -> None:
    before = len(gw.tap.records)
    metered = endpoint_tokens(gw, "responses", "completion")
    raw = client(gw).responses.with_raw_response.create(
        model="tiny-8b", input="How green is this request?", max_output_tokens=7
    )
    response = raw.parse()
    assert response.output_text == "green " * 7
    assert response.usage is not None and response.usage.output_tokens == 7
    assert response.usage.input_tokens > 0
    assert raw.headers["x-bauxite-cluster"] in {"east", "west"}
    assert float(raw.headers["x-bauxite-energy-wh"]) > 0 and float(raw.headers["x-bauxite-carbon-grams"]) > 0
    assert "bauxite_carbon" not in raw.http_response.text  # never unless asked
    record = gw.wait_records(before + 1)[before]
    assert (record.endpoint, record.status, record.completion_tokens) == ("responses", "ok", 7)
    assert record.prompt_tokens == response.usage.input_tokens
    assert record.cluster == raw.headers["x-bauxite-cluster"]
    assert endpoint_tokens(gw, "responses", "completion") == metered + 7
    assert metric(gw, "bauxite_endpoint_requests_total", endpoint="responses", status="ok") >= 1


def test_stream_yields_typed_events_and_usage_from_response_completed(gw: Harness) -> None:
    before = len(gw.tap.records)
    metered = endpoint_tokens(gw, "responses", "prompt")
    raw = client(gw).responses.with_raw_response.create(
        model="tiny-8b", input="Stream, please", max_output_tokens=5, stream=True
    )
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert (
        raw.headers["x-bauxite-cluster"] in {"east", "west"}
        and float(raw.headers["x-bauxite-grid-intensity"]) > 0
    )
    events = list(raw.parse())
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "green " * 5
    final = events[-1]
    assert final.type == "response.completed" and final.response.usage is not None
    assert final.response.usage.output_tokens == 5
    record = gw.wait_records(before + 1)[before]
    assert (record.endpoint, record.status, record.completion_tokens) == ("responses", "ok", 5)
    assert record.prompt_tokens == final.response.usage.input_tokens and record.ttft_s >= 0
    assert endpoint_tokens(gw, "responses", "prompt") == metered + record.prompt_tokens


def test_retrieve_and_previous_response_id_reach_the_creating_cluster(gw: Harness) -> None:
    # The simulated clusters, like vLLM, keep a response only where it was created: a retrieval routed
    # to the other cluster would be a 404.
    api = client(gw)
    created = []
    for i in range(6):
        raw = api.responses.with_raw_response.create(model="tiny-8b", input=f"item {i}", max_output_tokens=2)
        created.append((raw.parse().id, raw.headers["x-bauxite-cluster"]))
    assert {cluster for _, cluster in created} == {"east", "west"}  # both clusters created some
    for response_id, cluster in created:
        raw = api.responses.with_raw_response.retrieve(response_id)
        assert raw.parse().id == response_id and raw.headers["x-bauxite-cluster"] == cluster
    first_id, first_cluster = created[0]
    for _ in range(3):
        raw = api.responses.with_raw_response.create(
            model="tiny-8b", input="and then?", previous_response_id=first_id, max_output_tokens=2
        )
        assert raw.headers["x-bauxite-cluster"] == first_cluster
        assert raw.headers["x-bauxite-route-reason"] == "response_state"


def test_unknown_response_id_and_model_get_openai_errors(gw: Harness) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client(gw).responses.retrieve("resp_not_from_here")
    assert missing.value.code == "response_not_found"
    with pytest.raises(openai.NotFoundError) as unknown:
        client(gw).responses.create(model="no-such-model", input="hi")
    assert unknown.value.code == "model_not_found"


def test_carbon_object_only_when_asked_in_body_and_stream(gw: Harness) -> None:
    api = client(gw)
    raw = api.responses.with_raw_response.create(
        model="tiny-8b", input="carbon?", max_output_tokens=3, extra_headers=CARBON
    )
    carbon = raw.http_response.json()["bauxite_carbon"]
    assert carbon["energy_wh_min"] <= carbon["energy_wh"] <= carbon["energy_wh_max"]
    assert carbon["carbon_g_min"] <= carbon["carbon_g"] <= carbon["carbon_g_max"] and carbon["carbon_g"] > 0
    assert carbon["region"] == raw.headers["x-bauxite-region"]
    assert carbon["source"] in ("estimated", "measured") and carbon["grid_intensity_source"]
    assert carbon["grid_intensity_g_per_kwh"] == pytest.approx(
        float(raw.headers["x-bauxite-grid-intensity"]), abs=0.1
    )
    events = list(
        api.responses.create(
            model="tiny-8b", input="carbon?", max_output_tokens=3, stream=True, extra_headers=CARBON
        )
    )
    final = events[-1]
    assert final.type == "response.completed"
    extra = final.response.model_extra or {}
    assert extra["bauxite_carbon"]["carbon_g"] > 0
    plain = list(api.responses.create(model="tiny-8b", input="carbon?", max_output_tokens=3, stream=True))
    assert "bauxite_carbon" not in (plain[-1].response.model_extra or {})  # type: ignore[union-attr]


def test_stream_cut_mid_way_reports_error_event_and_records_the_work() -> None:
    with Harness(
        fleet_config(clusters=[{"name": "east", "region": "us-east-1", "models": ["tiny-8b"]}])
    ) as h:
        sim_faults(h, "east", die_mid_stream=1)
        events = list(
            client(h).responses.create(model="tiny-8b", input="x", max_output_tokens=9, stream=True)
        )
        assert events[-1].type == "error"
        record = h.wait_records(1)[0]
        assert (record.endpoint, record.status, record.http_status) == ("responses", "error", 502)
        assert record.completion_tokens == 3  # the deltas relayed before the cut


def test_in_band_error_after_output_fails_the_request() -> None:
    one = [{"name": "east", "region": "us-east-1", "models": ["tiny-8b"]}]
    with Harness(fleet_config(clusters=one, time_scale=1.0)) as h:  # paced: output reaches the client first
        sim_faults(h, "east", error_mid_stream=1)
        events = list(
            client(h).responses.create(model="tiny-8b", input="x", max_output_tokens=9, stream=True)
        )
        assert [e.type for e in events].count("response.output_text.delta") == 3 and events[
            -1
        ].type == "error"
        record = h.wait_records(1)[0]
        assert (record.status, record.http_status, record.completion_tokens) == ("error", 502, 3)
        assert h.gateway is not None and h.gateway.fleet.by_name["east"].consecutive_failures == 1


def test_in_band_error_before_output_reached_the_client_is_retried_elsewhere() -> None:
    with Harness(fleet_config()) as h:  # zero delay: the error arrives before anything was relayed
        sim_faults(h, "east", error_mid_stream=1)
        api = client(h)
        for _ in range(4):
            events = list(api.responses.create(model="tiny-8b", input="x", max_output_tokens=5, stream=True))
            assert events[-1].type == "response.completed"
        records = h.wait_records(4)
        assert h.fleet is not None and h.fleet.sim("east").faults.error_mid_stream == 0  # east did fail once
        assert [r.status for r in records] == ["ok"] * 4


def test_retrieval_through_another_gateway_finds_the_cluster_holding_the_response(gw: Harness) -> None:
    """A restarted gateway, another worker or replica has not seen the id: it asks each cluster in turn."""
    assert gw.fleet is not None
    clusters = [
        {
            "name": c.name,
            "region": c.region,
            "models": ["tiny-8b"],
            "url": gw.fleet.url(c.name),
            "no_sim": True,
        }
        for c in gw.settings.clusters
    ]
    created = [
        client(gw).responses.with_raw_response.create(model="tiny-8b", input=f"r{i}", max_output_tokens=1)
        for i in range(4)
    ]
    with Harness(fleet_config(clusters=clusters)) as other:
        for raw in created:
            again = client(other).responses.with_raw_response.retrieve(raw.parse().id)
            assert again.parse().id == raw.parse().id
            assert again.headers["x-bauxite-cluster"] == raw.headers["x-bauxite-cluster"]
        with pytest.raises(openai.NotFoundError) as missing:
            client(other).responses.retrieve("resp_nowhere")
        assert missing.value.code == "response_not_found"
