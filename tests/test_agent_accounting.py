"""A Responses or Messages request is accounted exactly like a chat request with the same usage."""

from __future__ import annotations

import time
from typing import Any

import anthropic
import openai
import pytest

from bauxite.records import Capture, Endpoint, RequestRecord
from harness import Harness, fleet_config

ONE = [{"name": "east", "region": "us-east-1", "models": ["tiny-8b"]}]
PROMPT = "Count the carbon of this exact prompt, please."


def capture(endpoint: Endpoint) -> Capture:
    c = Capture("tiny-8b", "anonymous", endpoint, time.time(), time.monotonic(), stream=True)
    c.cluster, c.region, c.route_reason, c.status, c.http_status = (
        "east",
        "us-east-1",
        "least_loaded",
        "ok",
        200,
    )
    c.prompt_tokens, c.completion_tokens, c.cached_tokens, c.usage_reported = 120, 48, 64, True
    c.ttft_s, c.duration_s, c.attempts = 0.05, 0.9, 1
    return c


def comparable(record: RequestRecord) -> tuple[Any, ...]:
    return (record.prompt_tokens, record.completion_tokens, record.cached_tokens, record.energy_j,
            record.energy_j_min, record.energy_j_max, record.carbon_g, record.intensity_g_per_kwh,
            record.pue, record.energy_measured)  # fmt: skip


def test_same_usage_gives_identical_records_and_carbon_objects() -> None:
    with Harness(fleet_config(clusters=ONE)) as h:
        assert h.gateway is not None
        accountant = h.gateway.accountant

        async def settle() -> list[dict[str, Any] | None]:
            objects = []
            for endpoint in ("chat", "responses", "messages"):
                c = capture(endpoint)
                accountant.begin(c)  # admitted on arrival, like a routed request
                assert c.residency is not None
                c.residency.start_s = c.started_mono
                objects.append(accountant.carbon_extension(c))
                accountant.finish(c)
            return objects

        objects = h.call(settle())
        records = h.wait_records(3)
    assert [r.endpoint for r in records] == ["chat", "responses", "messages"]
    for other in records[1:]:  # equal up to the microseconds between the three settlements
        assert comparable(other) == pytest.approx(comparable(records[0]), rel=1e-6)
    assert records[0].carbon_g > 0
    assert objects[0] is not None and objects[1] is not None and objects[2] is not None
    for key in ("energy_wh", "energy_wh_min", "energy_wh_max", "carbon_g", "carbon_g_min", "carbon_g_max"):
        assert objects[1][key] == pytest.approx(objects[0][key], rel=1e-6) == objects[2][key]


def test_same_prompt_through_three_apis_accounts_the_same_tokens_and_close_energy() -> None:
    with Harness(fleet_config(clusters=ONE)) as h:
        oai = openai.OpenAI(base_url=h.base_url + "/v1", api_key="k", max_retries=0)
        ant = anthropic.Anthropic(base_url=h.base_url, api_key="k", max_retries=0)
        oai.chat.completions.create(
            model="tiny-8b", messages=[{"role": "user", "content": PROMPT}], max_tokens=20
        )
        oai.responses.create(model="tiny-8b", input=PROMPT, max_output_tokens=20)
        ant.messages.create(model="tiny-8b", max_tokens=20, messages=[{"role": "user", "content": PROMPT}])
        chat, responses, messages = h.wait_records(3)
    assert [chat.endpoint, responses.endpoint, messages.endpoint] == ["chat", "responses", "messages"]
    for other in (responses, messages):
        assert (other.prompt_tokens, other.completion_tokens) == (chat.prompt_tokens, chat.completion_tokens)
        # Energy depends on tokens and (weakly) on the measured duration, which differs by scheduling noise.
        assert other.energy_j == pytest.approx(chat.energy_j, rel=0.05)
        assert other.carbon_g == pytest.approx(chat.carbon_g, rel=0.05)


def test_three_apis_take_the_same_green_routing_decision() -> None:
    clusters = [
        {"name": "dirty", "region": "ap-south-1", "models": ["tiny-8b"]},  # coal-heavy grid
        {"name": "clean", "region": "eu-north-1", "models": ["tiny-8b"]},  # hydro and nuclear
    ]
    green = {"green_routing": {"enabled": True, "priority": "low_carbon"}}
    with Harness(fleet_config(clusters=clusters, enterprise=green)) as h:
        oai = openai.OpenAI(base_url=h.base_url + "/v1", api_key="k", max_retries=0)
        ant = anthropic.Anthropic(base_url=h.base_url, api_key="k", max_retries=0)
        chat = oai.chat.completions.with_raw_response.create(
            model="tiny-8b", messages=[{"role": "user", "content": PROMPT}], max_tokens=2
        )
        responses = oai.responses.with_raw_response.create(model="tiny-8b", input=PROMPT, max_output_tokens=2)
        messages = ant.messages.with_raw_response.create(
            model="tiny-8b", max_tokens=2, messages=[{"role": "user", "content": PROMPT}]
        )
    routes = {
        (raw.headers["x-bauxite-cluster"], raw.headers["x-bauxite-route-reason"])
        for raw in (chat, responses, messages)
    }
    assert routes == {("clean", chat.headers["x-bauxite-route-reason"])}
    assert chat.headers["x-bauxite-route-reason"] == "low_carbon"
