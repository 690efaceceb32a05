"""The ``bauxite_carbon`` extension object: only when asked, in the final usage-bearing chunk or the body."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from harness import Harness, fleet_config

MESSAGES: Any = [{"role": "user", "content": "say something green, please"}]
HEADER = "x-bauxite-include-carbon"
ASK = {HEADER: "true"}
FIELDS = {
    "energy_wh", "energy_wh_min", "energy_wh_max", "carbon_g", "carbon_g_min", "carbon_g_max", "embodied_g",
    "region", "grid_intensity_g_per_kwh", "grid_intensity_source", "grid_intensity_signal",
    "grid_intensity_basis", "pue", "boundary", "source", "settles_later",
}  # fmt: skip


def _streamed(client: openai.OpenAI, headers: dict[str, str], **kw: Any) -> list[Any]:
    return list(
        client.chat.completions.create(
            model="tiny-8b", messages=MESSAGES, max_tokens=11, stream=True, extra_headers=headers, **kw
        )
    )


def test_extension_in_stream_and_body_only_when_asked() -> None:
    with Harness(fleet_config()) as h:
        client = openai.OpenAI(base_url=h.base_url + "/v1", api_key="k", max_retries=0)
        plain = _streamed(client, {})
        assert all("bauxite_carbon" not in (c.model_extra or {}) for c in plain)
        assert all(c.choices for c in plain)  # the gateway's own usage chunk is not shown to this client

        asked = _streamed(client, ASK)
        carrying = [c for c in asked if "bauxite_carbon" in (c.model_extra or {})]
        assert len(carrying) == 1 and carrying[0] is asked[-1] and carrying[0].usage is not None
        streamed = (carrying[0].model_extra or {})["bauxite_carbon"]
        assert set(streamed) == FIELDS
        assert streamed["energy_wh_min"] <= streamed["energy_wh"] <= streamed["energy_wh_max"]
        assert streamed["carbon_g"] == pytest.approx(
            streamed["energy_wh"] / 1000 * streamed["grid_intensity_g_per_kwh"], rel=1e-3
        )
        assert streamed["source"] == "estimated" and streamed["settles_later"] is False
        assert streamed["region"] in {"us-east-1", "us-west-2"}

        body = client.chat.completions.with_raw_response.create(
            model="tiny-8b", messages=MESSAGES, max_tokens=11, extra_headers=ASK
        )
        completion = body.parse()
        carbon = (completion.model_extra or {})["bauxite_carbon"]
        assert set(carbon) == FIELDS and completion.choices[0].message.content == "green " * 11
        # The header figure and the body figure are the same estimate.
        assert float(body.headers["x-bauxite-energy-wh"]) == pytest.approx(carbon["energy_wh"], rel=1e-3)
        unasked = client.chat.completions.create(model="tiny-8b", messages=MESSAGES, max_tokens=11)
        assert "bauxite_carbon" not in (unasked.model_extra or {})
        # The same request costs the same whether streamed or not.
        assert streamed["energy_wh"] == pytest.approx(carbon["energy_wh"], rel=0.05)


def test_client_that_asked_for_usage_gets_it_with_the_extension() -> None:
    with Harness(fleet_config()) as h:
        client = openai.OpenAI(base_url=h.base_url + "/v1", api_key="k", max_retries=0)
        chunks = _streamed(client, ASK, stream_options={"include_usage": True})
        last = chunks[-1]
        assert last.choices == [] and last.usage is not None and last.usage.completion_tokens == 11
        assert "bauxite_carbon" in (last.model_extra or {})


@pytest.mark.parametrize(
    ("value", "carries"), [("TRUE", True), ("True", True), ("1", True), ("false", False), ("0", False)]
)
def test_include_carbon_header_accepts_booleans(value: str, carries: bool) -> None:
    with Harness(fleet_config()) as h:
        client = openai.OpenAI(base_url=h.base_url + "/v1", api_key="k", max_retries=0)
        completion = client.chat.completions.create(
            model="tiny-8b", messages=MESSAGES, max_tokens=3, extra_headers={HEADER: value}
        )
        assert ("bauxite_carbon" in (completion.model_extra or {})) is carries


@pytest.mark.parametrize("value", ["maybe", "yes", "", "tru"])
def test_include_carbon_header_other_values_are_400(value: str) -> None:
    with Harness(fleet_config()) as h:
        client = openai.OpenAI(base_url=h.base_url + "/v1", api_key="k", max_retries=0)
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(
                model="tiny-8b", messages=MESSAGES, max_tokens=3, extra_headers={HEADER: value}
            )
    error = caught.value.body
    assert isinstance(error, dict) and error["code"] == "invalid_header"
    assert "x-bauxite-include-carbon" in error["message"] and error["type"] == "invalid_request_error"
