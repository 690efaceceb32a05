"""Reporting basis: Scope 2 vs Scope 3 cat. 1, location- and market-based carbon, embodied share, intensity
basis — on real records from a real gateway in front of the simulated fleet."""

from __future__ import annotations

import time
from typing import Any

import openai
import pytest

from bauxite.embodied import GPU_KGCO2E, LIFETIME_YEARS, SECONDS_PER_YEAR, SERVER_GPUS, SERVER_KGCO2E
from bauxite.energy import curves
from bauxite.settings import ConfigError, settings_from_mapping
from harness import Harness, fleet_config

MESSAGES: Any = [{"role": "user", "content": "hello"}]


def test_records_carry_scope_market_factor_embodied_share_and_basis() -> None:
    clusters: list[dict[str, Any]] = [
        {"name": "own", "region": "eu-west-1", "models": ["tiny-8b"], "gpu": {"type": "H100", "count": 2}},
        {"name": "api", "region": "us-east-1", "models": ["tiny-70b"], "kind": "external"},
    ]
    accounting = {"market_factors": {"eu-west-1": {"g_per_kwh": 600.0, "reference": "residual mix 2023"}}}
    with Harness(fleet_config(clusters, time_scale=0.05, accounting=accounting)) as h:
        client = openai.OpenAI(base_url=h.base_url + "/v1", api_key="k", max_retries=0)
        client.chat.completions.create(model="tiny-8b", messages=MESSAGES, max_tokens=20)
        client.chat.completions.create(model="tiny-70b", messages=MESSAGES, max_tokens=20)
        own, api = sorted(h.wait_records(2), key=lambda r: r.cluster != "own")
        assert h.gateway is not None
        grid = {r: h.gateway.intensity.current(r) for r in ("eu-west-1", "us-east-1")}
    assert (own.scope, api.scope) == ("scope2", "scope3_cat1")
    # Market-based: the configured factor where one is configured, else the location-based intensity.
    assert own.market_factor and own.market_g_per_kwh == 600.0
    assert own.carbon_market_g == pytest.approx(own.energy_j / 3.6e6 * 600.0)
    assert not api.market_factor and api.carbon_market_g == pytest.approx(api.carbon_g)
    for record in (own, api):
        assert record.carbon_g == pytest.approx(record.energy_j / 3.6e6 * record.intensity_g_per_kwh)
        assert record.energy_j == pytest.approx((record.gpu_j + record.host_j) * record.pue)
        used = grid[record.region]  # the basis and source of the intensity the figure used
        assert (record.intensity_signal, record.intensity_basis) == (used.signal, used.basis)
        assert record.intensity_source == used.source
        assert 0 < record.gpu_idle_j <= record.gpu_j and record.embodied_g > 0
    # Embodied: EcoLogits' figures amortised over three years, for the cluster time the request occupied
    # (alone on the 2-GPU cluster: its whole residency, at most its client-visible latency).
    lifetime_s = LIFETIME_YEARS * SECONDS_PER_YEAR
    rate_g_per_s = (2 * GPU_KGCO2E + 2 / SERVER_GPUS * SERVER_KGCO2E) * 1000 / lifetime_s
    assert 0 < own.embodied_g <= rate_g_per_s * own.duration_s * 1.001


def test_market_factor_for_an_unknown_region_is_a_config_error() -> None:
    config = fleet_config(accounting={"market_factors": {"mars-1": {"g_per_kwh": 10}}})
    with pytest.raises(ConfigError, match="mars-1"):
        settings_from_mapping(config)


def test_unmetered_self_hosted_cluster_idle_energy_is_estimated_and_reaches_carbon() -> None:
    clusters: list[dict[str, Any]] = [
        {"name": "own", "region": "eu-west-1", "models": ["tiny-8b"], "gpu": {"type": "H100", "count": 2}},
        {"name": "api", "region": "us-east-1", "models": ["tiny-70b"], "kind": "external"},
    ]
    with Harness(fleet_config(clusters, time_scale=0.0)) as h:
        gateway = h.gateway
        assert gateway is not None

        async def accounts() -> dict[str, Any]:
            return {a.cluster: a for a in gateway.accountant.cluster_accounts()}

        first = h.call(accounts())["own"].idle_j_total
        time.sleep(0.5)
        now = h.call(accounts())
        window = gateway.telemetry.close_window()
    own, api = now["own"], now["api"]
    idle_w = curves.idle_w(curves.gpu_spec("H100")) * 2
    # nothing ran: half a second (or more, on a loaded machine) of two idle GPUs × host share × PUE 1.2
    assert own.idle_j_total - first >= idle_w * 0.5 * 1.43 * 1.2 * 0.99
    assert own.idle_carbon_g_total > 0 and not own.metered
    assert api.idle_j_total == 0.0  # an external API's idle capacity is its provider's
    rows = {row["cluster"]: row for row in window["clusters"]}
    assert rows["own"]["measured_energy_j"] is None and rows["own"]["idle_carbon_g"] > 0
    assert rows["api"]["idle_carbon_g"] is None
