"""The intensity service: background refresh, stale reuse, fallback, ranking guard, HTTP view and CLI."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from aiohttp.web import Application

from bauxite.intensity.base import MixedSignalError, require_one_signal
from bauxite.intensity.cli import add_parser
from bauxite.intensity.config import IntensitySettings
from bauxite.intensity.resilience import CircuitBreaker, backoff_s
from bauxite.intensity.service import IntensityService
from bauxite.settings import settings_from_mapping
from intensity_fakes import EM_KEY, WT_PASSWORD, WT_USER, FakeProviders

EM_ENV = {"ELECTRICITY_MAPS_API_KEY": EM_KEY}
WT_ENV = {"WATTTIME_USERNAME": WT_USER, "WATTTIME_PASSWORD": WT_PASSWORD}


class Clock:
    def __init__(self) -> None:
        self.now_s = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now_s


def _settings(fake: FakeProviders, **overrides: Any) -> IntensitySettings:
    data: dict[str, Any] = {
        "request_timeout": 0.3,
        "electricity_maps": {"base_url": fake.base_url + "/em/v3"},
        "watttime": {"base_url": fake.base_url + "/wt", "regions": {"us-west-1": "CAISO_NORTH"}},
        "uk_carbon_intensity": {"base_url": fake.base_url + "/uk"},
    }
    data.update(overrides)
    return IntensitySettings.model_validate(data)


def _cluster(name: str, region: str, zone: str | None = None) -> dict[str, Any]:
    cluster = {"name": name, "region": region, "url": "http://127.0.0.1:9/v1", "models": ["m"]}
    return {**cluster, "zone": zone} if zone else cluster


def test_minimal_config_gives_offline_static_values_and_never_raises() -> None:
    settings = settings_from_mapping(
        {
            "enterprise": {"carbon_tracking": {"provider": "static"}},
            "clusters": [
                _cluster("a", "us-east-1"),
                _cluster("b", "europe-west4"),
                _cluster("c", "x-dc", "DE"),
            ],
        }
    )
    service = IntensityService.from_settings(settings)
    assert service.current("us-east-1").g_per_kwh == 379.069
    rows = {row.region: row for row in service.snapshot()}
    assert list(rows) == ["us-east-1", "europe-west4", "x-dc"]
    assert (rows["europe-west4"].g_per_kwh, rows["europe-west4"].year, rows["europe-west4"].cfe_share) == (
        208.81,
        2024,
        0.83,
    )
    assert rows["x-dc"].zone == "DE" and not rows["x-dc"].stale
    assert service.current("not-configured-anywhere").source == "static"  # unknown: answered, not raised
    assert service.feeds() == []  # nothing live to refresh


async def test_outage_reuses_stale_value_with_age_then_falls_back(fake: FakeProviders) -> None:
    clock = Clock()
    service = IntensityService(
        "electricity_maps", {"eu-central-1": None}, _settings(fake), clock=clock, env=EM_ENV
    )
    try:
        before = service.snapshot()[0]
        assert (before.provider, before.stale) == ("static", True)  # nothing fetched yet: fallback stands in
        await service.refresh_once()
        live = service.snapshot()[0]
        assert (live.provider, live.g_per_kwh, live.stale, live.zone) == (
            "electricity_maps",
            302.0,
            False,
            "DE",
        )
        fake.sticky["em"] = "500"
        clock.now_s += 600
        await service.refresh_once()
        stale = service.snapshot()[0]
        assert (stale.provider, stale.g_per_kwh, stale.stale, stale.age_s) == (
            "electricity_maps",
            302.0,
            True,
            600,
        )
        assert "HTTP 500" in stale.error
        clock.now_s += service.settings.stale_max_age
        fallback = service.snapshot()[0]
        assert (fallback.provider, fallback.g_per_kwh, fallback.stale) == ("static", 311.0, True)
        assert service.current("eu-central-1").source == "static"
    finally:
        await service.stop()


async def test_hanging_provider_never_delays_the_request_path(fake: FakeProviders) -> None:
    fake.sticky["em"] = "hang"
    service = IntensityService("electricity_maps", {"eu-central-1": None}, _settings(fake), env=EM_ENV)
    await service.start()
    try:
        await asyncio.sleep(0.05)  # the refresh task is now waiting on the server
        started = time.perf_counter()
        value = service.current("eu-central-1")
        assert time.perf_counter() - started < 0.05
        assert value.source == "static" and value.g_per_kwh == 311.0
        await asyncio.sleep(0.5)  # past the 0.3 s client time-out
        row = service.snapshot()[0]
        assert row.stale and "no answer within 0.3s" in row.error
    finally:
        await service.stop()
    assert all(task.done() for task in service._tasks) and service._tasks == []


async def test_failures_back_off_and_open_the_circuit(fake: FakeProviders) -> None:
    fake.sticky["em"] = "500"
    settings = _settings(fake, retry_min=0.01, retry_max=0.02, breaker_failures=3, breaker_open="1h")
    service = IntensityService("electricity_maps", {"eu-central-1": None}, settings, env=EM_ENV)
    await service.start()
    await asyncio.sleep(0.4)
    await service.stop()
    (feed,) = service.feeds()
    assert feed.calls == 3 and feed.failures == 3  # three quick retries, then the open circuit stops calls
    assert service.current("eu-central-1").source == "static"


async def test_429_waits_at_least_retry_after(fake: FakeProviders) -> None:
    fake.sticky["em"] = "429"
    settings = _settings(fake, retry_min=0.01, retry_max=0.02)
    service = IntensityService("electricity_maps", {"eu-central-1": None}, settings, env=EM_ENV)
    await service.start()
    await asyncio.sleep(0.3)
    await service.stop()
    assert service.feeds()[0].calls == 1  # Retry-After: 7 outweighs the 10 ms backoff


def test_backoff_doubles_caps_and_honours_retry_after() -> None:
    middle = lambda: 0.5  # noqa: E731 - no jitter at the midpoint
    assert [backoff_s(n, 5, 30, jitter=middle) for n in (1, 2, 3, 4, 5)] == [5, 10, 20, 30, 30]
    assert backoff_s(1, 5, 30, retry_after_s=60, jitter=middle) == 60
    assert 4.5 <= backoff_s(1, 5, 30) <= 5.5


def test_circuit_breaker_opens_half_opens_and_closes() -> None:
    clock = Clock()
    breaker = CircuitBreaker(2, 60, clock)
    breaker.record_failure()
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state == "open" and not breaker.allow()
    clock.now_s += 61
    assert breaker.state == "half_open" and breaker.allow()
    breaker.record_failure()  # the trial failed: open again at once
    assert not breaker.allow()
    clock.now_s += 61
    breaker.record_success()
    assert breaker.state == "closed"


async def test_ranking_never_mixes_marginal_and_average(fake: FakeProviders) -> None:
    clock = Clock()
    # us-west-1 has a WattTime region; us-east2 has neither a mapping nor coordinates: average fallback.
    service = IntensityService(
        "watttime", {"us-west-1": None, "us-east2": None}, _settings(fake), clock=clock, env=WT_ENV
    )
    try:
        await service.refresh_once()
        assert service.current("us-west-1").signal == "marginal"
        assert service.current("us-east2").signal == "average"
        with pytest.raises(MixedSignalError):
            require_one_signal({r: service.current(r) for r in ("us-west-1", "us-east2")})
        ranked = service.for_ranking(["us-west-1", "us-east2"])
        assert {v.signal for v in ranked.values()} == {"average"}
        assert ranked["us-west-1"].g_per_kwh == 322.167 and ranked["us-west-1"].source == "static"
        alone = service.for_ranking(["us-west-1"])
        assert alone["us-west-1"].signal == "marginal"  # all marginal: ranked on the marginal signal
    finally:
        await service.stop()


async def test_cloud_table_is_enriched_with_live_values_when_a_key_exists(fake: FakeProviders) -> None:
    plain = IntensityService("google_cloud", {"europe-west4": None}, _settings(fake), env={})
    assert plain.feeds() == [] and plain.current("europe-west4").source == "google_cloud"
    enriched = IntensityService("google_cloud", {"europe-west4": None}, _settings(fake), env=EM_ENV)
    try:
        assert enriched.current("europe-west4").source == "google_cloud"  # until the first live value
        await enriched.refresh_once()
        value = enriched.current("europe-west4")
        assert (value.source, value.g_per_kwh) == ("electricity_maps", 302.0)
        assert fake.requests[-1][1]["zone"] == "NL"
    finally:
        await enriched.stop()


async def test_uk_provider_serves_gb_regions_and_static_elsewhere(fake: FakeProviders) -> None:
    service = IntensityService("uk_carbon_intensity", {"eu-west-2": None, "us-east-1": None}, _settings(fake))
    try:
        await service.refresh_once()
        rows = {row.region: row for row in service.snapshot()}
        assert (rows["eu-west-2"].provider, rows["eu-west-2"].g_per_kwh) == ("uk_carbon_intensity", 160.0)
        assert (rows["us-east-1"].provider, rows["us-east-1"].stale) == (
            "static",
            False,
        )  # not covered: no outage
    finally:
        await service.stop()


async def test_http_view_reports_fallback_during_outage(fake: FakeProviders) -> None:
    fake.sticky["em"] = "500"
    service = IntensityService(
        "electricity_maps", {"eu-central-1": None, "europe-west4": None}, _settings(fake), env=EM_ENV
    )
    await service.refresh_once()
    app = Application()
    service.add_routes(app)
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/v1/carbon/intensity")
        assert response.status == 200
        body = await response.json()
    await service.stop()
    assert body["configured_provider"] == "electricity_maps"
    rows = {row["region"]: row for row in body["data"]}
    assert rows["eu-central-1"]["provider"] == "static" and rows["eu-central-1"]["stale"] is True
    assert rows["eu-central-1"]["gco2_per_kwh"] == 311.0 and rows["eu-central-1"]["age_s"] >= 0
    assert "HTTP 500" in rows["eu-central-1"]["error"]
    assert rows["europe-west4"]["zone"] == "NL" and rows["europe-west4"]["signal"] == "average"


def test_trace_service_moves_with_the_replay() -> None:
    clock = Clock()
    settings = IntensitySettings.model_validate(
        {"trace": {"start_at": "2022-07-01T00:00:00Z", "speedup": 3600}}
    )
    service = IntensityService("trace", {"us-east-1": None, "us-west-2": None}, settings, clock=clock)
    first = service.for_ranking(["us-east-1", "us-west-2"])
    clock.now_s += 6
    later = service.for_ranking(["us-east-1", "us-west-2"])
    assert first["us-east-1"].g_per_kwh != later["us-east-1"].g_per_kwh
    assert all(v.source == "trace" for v in later.values())
    assert later["us-west-2"].g_per_kwh < later["us-east-1"].g_per_kwh  # hydro BPAT below PJM


# --- CLI ---------------------------------------------------------------------------------------------------


def _cli(*argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="bauxite")
    add_parser(parser.add_subparsers())
    args = parser.parse_args(["intensity", *argv])
    out, err = io.StringIO(), io.StringIO()
    code = args.func(args, out, err)
    return code, out.getvalue(), err.getvalue()


def test_cli_json_works_offline_with_static_defaults() -> None:
    code, out, _ = _cli("--json", "us-east-1", "europe-west4")
    assert code == 0
    rows = json.loads(out)
    assert [(r["region"], r["zone"], r["gco2_per_kwh"], r["provider"], r["signal"]) for r in rows] == [
        ("us-east-1", "US-MIDA-PJM", 379.069, "static", "average"),
        ("europe-west4", "NL", 208.81, "static", "average"),
    ]
    assert rows[1]["year"] == 2024 and rows[0]["year"] == 2020


def test_cli_table_and_provider_override() -> None:
    code, out, _ = _cli("--provider", "aws", "us-east-1", "westus3")
    assert code == 0
    header, first, second = out.splitlines()[:3]
    assert header.split() == ["region", "zone", "g/kWh", "source", "signal", "basis", "age"]
    assert first.split()[:4] == ["us-east-1", "US-MIDA-PJM", "379.1", "aws"]
    assert second.split()[:4] == ["westus3", "US-SW-AZPS", "322.2", "static"]


def test_cli_reports_config_and_region_errors(tmp_path: Path) -> None:
    code, _, err = _cli("--config", str(tmp_path / "missing.yaml"))
    assert code == 2 and "cannot read file" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("intensity:\n  refresh_intervall: 5m\n")
    code, _, err = _cli("--config", str(bad), "us-east-1")
    assert code == 2 and "intensity.refresh_intervall" in err
    code, _, err = _cli("us-est-1")
    assert code == 2 and "us-east-1" in err


def test_unreadable_trace_falls_back_to_static_instead_of_failing_start() -> None:
    settings = IntensitySettings.model_validate({"trace": {"traces": {"us-east-1": "/no/such/trace.csv"}}})
    service = IntensityService("trace", {"us-east-1": None, "us-west-2": None}, settings)
    assert service.current("us-east-1").source == "static"
    assert service.current("us-west-2").source == "trace"
