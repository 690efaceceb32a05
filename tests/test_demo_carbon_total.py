"""The demo's total CO2e is the fleet's whole account: every joule its GPUs drew reaches carbon.

The demo fleet (three DCGM-metered simulated clusters) with a constant grid intensity per region: after
mixed traffic, the total the dashboard shows — Σ bauxite_cluster_carbon_grams_total, requests and idle —
equals each cluster's metered GPU energy × (1 + host share) × PUE × intensity, within 1%.
"""

from __future__ import annotations

import time
from typing import Any

import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bauxite.demo import embedded_demo_settings
from bauxite.units import J_PER_KWH
from harness import Harness

MESSAGES: Any = [{"role": "user", "content": "a short question about the grid"}]


def demo_config() -> dict[str, Any]:
    settings = embedded_demo_settings().model_dump(mode="json", exclude_none=True)
    settings["enterprise"]["carbon_tracking"]["provider"] = "static"  # constant intensity per region
    settings["server"]["port"] = 0
    return settings


def _dashboard_total_g(exposition: bytes) -> float:
    total = 0.0
    for family in text_string_to_metric_families(exposition.decode()):
        for sample in family.samples:
            if sample.name == "bauxite_cluster_carbon_grams_total":
                total += sample.value
    return total


def test_demo_dashboard_total_equals_metered_energy_times_factors_times_intensity() -> None:
    with Harness(demo_config()) as h:
        gateway = h.gateway
        assert gateway is not None
        time.sleep(2.5)  # a first scrape of every cluster sets its counter baseline
        client = openai.OpenAI(base_url=h.base_url + "/v1", api_key="demo", max_retries=0)
        for model, stream in (("llama-3.1-8b", False), ("llama-3.1-70b", True), ("llama-3.1-8b", True),
                              ("llama-3.1-70b", False)):  # fmt: skip
            response = client.chat.completions.create(
                model=model, messages=MESSAGES, max_tokens=12, stream=stream
            )
            if stream:
                list(response)
        client.embeddings.create(model="BAAI/bge-small-en-v1.5", input=["grid", "carbon"])
        records = h.wait_records(5)
        time.sleep(5.0)  # two more scrape intervals: every request's measured share is settled

        async def snapshot() -> tuple[bytes, float, int]:
            # One loop turn, so no interval closes between the exposition and the meter readings.
            expected_g = 0.0
            for cluster in gateway.settings.clusters:
                ledger = gateway.energy.ledger(cluster.name)
                assert ledger is not None and ledger.measured_j > 0
                host = 1 + gateway.settings.energy.host_frac
                facility_j = ledger.measured_j * host * (cluster.pue or 1.2)
                expected_g += facility_j / J_PER_KWH * gateway.intensity.current(cluster.region).g_per_kwh
            return gateway.telemetry.render_metrics(), expected_g, len(h.tap.records)

        exposition, expected_g, count = h.call(snapshot())
    assert count == len(records) == 5 and all(r.energy_measured for r in records if r.endpoint == "chat")
    assert _dashboard_total_g(exposition) == pytest.approx(expected_g, rel=0.01)
    # Idle capacity is a real share of the fleet's total, no longer dropped.
    idle_g = sum(
        s.value for f in text_string_to_metric_families(exposition.decode()) for s in f.samples
        if s.name == "bauxite_cluster_carbon_grams_total" and s.labels["kind"] == "idle"
    )  # fmt: skip
    assert 0 < idle_g < expected_g
