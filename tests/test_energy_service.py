"""EnergyService: estimates, settlement of measured clusters against a local DCGM exporter, fallbacks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from bauxite.clusters import Fleet
from bauxite.energy.service import EnergyFigure, EnergyService
from bauxite.records import Capture
from bauxite.server import start_site
from bauxite.settings import settings_from_mapping


def _settings(power: dict[str, Any] | None = None, **energy: Any) -> Any:
    clusters: list[dict[str, Any]] = [
        {
            "name": "openai",
            "region": "us-east-1",
            "url": "https://api.example.com/v1",
            "kind": "external",
            "models": ["gpt-4o"],
        },
        {
            "name": "self",
            "region": "europe-west4",
            "url": "http://127.0.0.1:9/v1",
            "models": ["llama-70b"],
            "gpu": {"type": "H100", "count": 4},
            "power": power or {"source": "none"},
        },
    ]
    return settings_from_mapping({"clusters": clusters, "energy": energy})


def _capture(cluster: str, model: str, **kw: Any) -> Capture:
    base: dict[str, Any] = {
        "prompt_tokens": 200,
        "completion_tokens": 300,
        "duration_s": 0.2,
        "ttft_s": 0.05,
        "status": "ok",
        "cluster": cluster,
    }
    base.update(kw)
    return Capture(
        model=model,
        department="d",
        endpoint="chat",
        started_at=time.time(),
        started_mono=base.pop("started_mono", time.monotonic() - base["duration_s"]),
        **base,
    )


def test_estimate_for_external_api_and_settle_at_once() -> None:
    settings = _settings()
    service = EnergyService.from_settings(settings, Fleet(settings.clusters))
    figure = service.estimate(_capture("openai", "gpt-4o", prompt_tokens=100))
    assert figure.source == "estimated" and figure.method == "calibrated" and figure.boundary == "full"
    assert figure.energy_j_min < figure.energy_j < figure.energy_j_max
    got: list[EnergyFigure] = []
    service.settle(_capture("openai", "gpt-4o"), got.append)
    assert len(got) == 1 and got[0].source == "estimated"


def test_estimate_never_raises_on_unknown_clusters_and_models() -> None:
    settings = _settings()
    service = EnergyService.from_settings(settings, Fleet(settings.clusters))
    figure = service.estimate(_capture("nowhere", "mystery-model"))
    assert figure.energy_j > 0


def test_config_overrides_method_and_boundary() -> None:
    settings = _settings(
        boundary="gpu", method="ecologits", models={"llama-70b": {"active_params_b": 70, "precision": "bf16"}}
    )
    service = EnergyService.from_settings(settings, Fleet(settings.clusters))
    figure = service.estimate(_capture("self", "llama-70b"))
    assert (figure.boundary, figure.method) == ("gpu", "ecologits")
    assert service.params("llama-70b").source == "config"


def test_pue_defaults_by_kind_and_configured_value_wins() -> None:
    settings = _settings()
    service = EnergyService.from_settings(settings, Fleet(settings.clusters))
    assert (service.pue("openai"), service.pue("self"), service.pue("unknown")) == (1.1, 1.2, 1.1)


def test_expected_j_grows_with_tokens_and_is_fast() -> None:
    settings = _settings()
    service = EnergyService.from_settings(settings, Fleet(settings.clusters))
    small = service.expected_j("self", "llama-70b", 100, 100)
    large = service.expected_j("self", "llama-70b", 100, 1000)
    assert 0 < small < large
    started = time.perf_counter()
    for _ in range(1000):
        service.expected_j("openai", "gpt-4o", 200, 300)
    assert time.perf_counter() - started < 1.0


class Exporter:
    """A DCGM exporter for 4 GPUs drawing a constant 400 W each, counters advancing with wall time."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.power_w = 400.0
        self.up = True

    def body(self) -> str:
        energy_mj = (time.monotonic() - self.started) * self.power_w * 1000.0
        lines = [
            "# TYPE DCGM_FI_DEV_POWER_USAGE gauge",
            "# TYPE DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION counter",
        ]
        for i in range(4):
            lines.append(f'DCGM_FI_DEV_POWER_USAGE{{gpu="{i}",UUID="GPU-{i}"}} {self.power_w}')
            lines.append(f'DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{{gpu="{i}",UUID="GPU-{i}"}} {energy_mj}')
        return "\n".join(lines) + "\n"


@pytest.fixture
async def exporter() -> AsyncIterator[tuple[Exporter, str]]:
    state = Exporter()

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text=state.body(), status=200 if state.up else 503)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner, port = await start_site(app, "127.0.0.1", 0)
    yield state, f"http://127.0.0.1:{port}/metrics"
    await runner.cleanup()


async def test_measured_cluster_settles_after_the_covering_interval(exporter: tuple[Exporter, str]) -> None:
    _, url = exporter
    power = {"source": "dcgm", "url": url, "scrape_interval": "100ms", "grace": "20ms"}
    settings = _settings(power, boundary="gpu")
    service = EnergyService.from_settings(settings, Fleet(settings.clusters))
    await service.start()
    try:
        await asyncio.sleep(0.25)
        got: list[EnergyFigure] = []
        service.settle(_capture("self", "llama-70b", duration_s=0.1), got.append)
        for _ in range(50):
            if got:
                break
            await asyncio.sleep(0.02)
        assert len(got) == 1 and got[0].source == "measured" and got[0].method == "measured"
        assert got[0].energy_j > 0
        (cluster,) = service.cluster_energy()
        assert cluster.cluster == "self" and cluster.power_w == pytest.approx(1600.0)
        assert cluster.attributed_j_total + cluster.idle_j_total > 0
        assert service.expected_j("self", "llama-70b", 200, 300) > 0
    finally:
        await service.stop()


async def test_stale_telemetry_falls_back_to_the_flagged_estimate(exporter: tuple[Exporter, str]) -> None:
    state, url = exporter
    power = {"source": "dcgm", "url": url, "scrape_interval": "50ms", "grace": "10ms", "stale_after": "150ms"}
    settings = _settings(power)
    service = EnergyService.from_settings(settings, Fleet(settings.clusters))
    await service.start()
    try:
        state.up = False
        await asyncio.sleep(0.3)
        got: list[EnergyFigure] = []
        service.settle(_capture("self", "llama-70b"), got.append)
        assert len(got) == 1 and got[0].source == "estimated" and got[0].flag == "telemetry_stale"
    finally:
        await service.stop()


async def test_stop_settles_waiting_requests_with_estimates(exporter: tuple[Exporter, str]) -> None:
    _, url = exporter
    power = {"source": "dcgm", "url": url, "scrape_interval": "5s"}
    settings = _settings(power)
    service = EnergyService.from_settings(settings, Fleet(settings.clusters))
    await service.start()
    got: list[EnergyFigure] = []
    service.settle(_capture("self", "llama-70b"), got.append)
    assert got == []
    await service.stop()
    assert len(got) == 1 and got[0].flag == "telemetry_late"
