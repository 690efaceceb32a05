"""A grid-intensity provider outage never fails or slows requests; the fallback is reported."""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

import openai
import pytest

from harness import Harness, fleet_config

MESSAGES: Any = [{"role": "user", "content": "hello"}]


def test_provider_outage_keeps_serving_with_static_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_EM_KEY", "em-secret")
    config = fleet_config(
        enterprise={"carbon_tracking": {"provider": "electricity_maps"}},
        # Port 9 (discard) refuses connections: Electricity Maps is "down" for the whole test.
        intensity={
            "refresh_interval": "1s",
            "request_timeout": "1s",
            "electricity_maps": {"api_key_env": "TEST_EM_KEY", "base_url": "http://127.0.0.1:9/v3"},
        },
    )
    with Harness(config) as h:
        client = openai.OpenAI(base_url=h.base_url + "/v1", api_key="k", max_retries=0)
        started = time.monotonic()
        for _ in range(5):
            raw = client.chat.completions.with_raw_response.create(
                model="tiny-8b", messages=MESSAGES, max_tokens=2
            )
            assert raw.http_response.status_code == 200
        assert time.monotonic() - started < 5  # nobody waited on the dead provider
        with urllib.request.urlopen(h.base_url + "/v1/carbon/intensity", timeout=5) as resp:
            rows = {row["region"]: row for row in json.loads(resp.read())["data"]}
        served = rows[raw.headers["x-bauxite-region"]]["gco2_per_kwh"]
        assert raw.headers["x-bauxite-grid-intensity"] == f"{served:.1f}"
        east = rows["us-east-1"]
        assert east["provider"] == "static" and east["stale"] is True and east["gco2_per_kwh"] == 379.069
        records = h.wait_records(5)
        assert {r.intensity_source for r in records} == {"static"}
        assert all(r.status == "ok" and r.carbon_g > 0 for r in records)
