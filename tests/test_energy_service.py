"""EnergyService: estimates, settlement of measured clusters against a local DCGM exporter, fallbacks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from bauxite.clusters import Fleet
from bauxite.energy import curves
from bauxite.energy.estimator import (
    Boundary,
    CalibratedEstimator,
    Estimate,
    Overheads,
    RequestShape,
    Serving,
)
from bauxite.energy.params import ModelParams
from bauxite.energy.service import EnergyFigure, EnergyService, RequestWork, Residency
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


class Clock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


def _service(settings: Any, clock: Clock | None = None) -> EnergyService:
    if clock is None:
        return EnergyService.from_settings(settings, Fleet(settings.clusters))
    return EnergyService(settings.energy, list(Fleet(settings.clusters).clusters), clock=clock)


def _work(model: str, **kw: Any) -> RequestWork:
    base: dict[str, Any] = {"prompt_tokens": 200, "completion_tokens": 300, "duration_s": 0.2, "ttft_s": 0.05}
    base.update(kw)
    return RequestWork(model, **base)


def _finished(service: EnergyService, cluster: str, model: str) -> Residency:
    residency = service.begin(cluster, model)
    service.end(residency)
    return residency


def test_estimate_for_external_api_and_settle_at_once() -> None:
    settings = _settings()
    service = _service(settings)
    residency = _finished(service, "openai", "gpt-4o")
    figure = service.estimate(_work("gpt-4o", prompt_tokens=100), residency)
    assert figure.source == "estimated" and figure.method == "calibrated"
    assert figure.energy_j_min < figure.energy_j < figure.energy_j_max
    # One boundary: facility = (GPU + host share) × PUE, parts kept.
    assert figure.host_j == pytest.approx(0.43 * figure.gpu_j)
    assert figure.energy_j == pytest.approx((figure.gpu_j + figure.host_j) * 1.1)
    got: list[EnergyFigure] = []
    service.settle(_work("gpt-4o"), residency, got.append)
    assert len(got) == 1 and got[0].source == "estimated"


def test_estimate_never_raises_on_unknown_clusters_and_models() -> None:
    settings = _settings()
    service = _service(settings)
    figure = service.estimate(_work("mystery-model"), _finished(service, "nowhere", "mystery-model"))
    assert figure.energy_j > 0 and figure.sizes_default


def test_estimate_uses_the_batch_the_cluster_ran_over_the_request_life() -> None:
    """The same request costs less per token when another request of its model shared the batch throughout,
    and the figure does not depend on when during its life it is asked (response time or settlement)."""
    settings = _settings()
    clock = Clock()
    service = _service(settings, clock)
    lone = service.begin("self", "llama-70b")
    clock.now_s += 10.0
    lone_figure = service.estimate(_work("llama-70b", duration_s=10.0), lone)
    service.end(lone)
    assert service.estimate(_work("llama-70b", duration_s=10.0), lone) == lone_figure
    other = service.begin("self", "llama-70b")
    shared = service.begin("self", "llama-70b")
    clock.now_s += 10.0
    service.end(shared)
    service.end(other)
    shared_figure = service.estimate(_work("llama-70b", duration_s=10.0), shared)
    assert shared_figure.gpu_j < lone_figure.gpu_j
    # Each of the two occupied half the cluster's time: half the resident-idle energy and embodied basis.
    assert shared_figure.occupancy_s == pytest.approx(5.0) and lone_figure.occupancy_s == pytest.approx(10.0)


def test_config_overrides_method_and_model_size() -> None:
    sizes = {"llama-70b": {"active_params_b": 70, "precision": "bf16"}}
    settings = _settings(method="ecologits", models=sizes)
    service = _service(settings)
    figure = service.estimate(_work("llama-70b"), _finished(service, "self", "llama-70b"))
    assert figure.method == "ecologits" and not figure.sizes_default
    assert service.params("llama-70b").source == "config"


def test_pue_defaults_by_kind_and_provider_and_configured_value_wins() -> None:
    settings = _settings()
    service = _service(settings)
    # api.example.com is no known provider: the external default; vllm: the self-hosted default.
    assert (service.pue("openai"), service.pue("self"), service.pue("unknown")) == (1.1, 1.2, 1.1)
    clusters = [
        {"name": name, "region": "us-east-1", "url": url, "kind": "external", "models": ["m"], **extra}
        for name, url, extra in (
            ("oa", "https://api.openai.com/v1", {}),
            ("an", "https://api.anthropic.com/v1", {}),
            ("mi", "https://api.mistral.ai/v1", {}),
            ("set", "https://api.openai.com/v1", {"pue": 1.5}),
        )
    ]
    service = _service(settings_from_mapping({"clusters": clusters}))
    # EcoLogits' provider table: OpenAI 1.20, Anthropic 1.09-1.14 (midpoint), Mistral 1.16.
    assert service.pue("oa") == pytest.approx(1.20) and service.pue("an") == pytest.approx(1.115)
    assert service.pue("mi") == pytest.approx(1.16) and service.pue("set") == 1.5


def test_expected_j_grows_with_tokens_and_is_fast() -> None:
    settings = _settings()
    service = _service(settings)
    small = service.expected_j("self", "llama-70b", 100, 100)
    large = service.expected_j("self", "llama-70b", 100, 1000)
    assert 0 < small < large
    started = time.perf_counter()
    for _ in range(1000):
        service.expected_j("openai", "gpt-4o", 200, 300)
    assert time.perf_counter() - started < 1.0


IDLE_W_PER_GPU = curves.idle_w(curves.gpu_spec("H100"))


class Exporter:
    """A DCGM exporter for 4 idle H100s (resident-idle power each), counters advancing with wall time."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.power_w = IDLE_W_PER_GPU
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
    settings = _settings(power)
    service = _service(settings)
    await service.start()
    try:
        await asyncio.sleep(0.25)
        got: list[EnergyFigure] = []
        residency = service.begin("self", "llama-70b")
        await asyncio.sleep(0.1)
        service.end(residency)
        service.settle(_work("llama-70b", duration_s=0.1), residency, got.append)
        for _ in range(50):
            if got:
                break
            await asyncio.sleep(0.02)
        assert len(got) == 1 and got[0].source == "measured" and got[0].method == "measured"
        # The GPUs draw only their resident-idle power: the request is charged about that power over its own
        # ~0.1 s residency (not the whole interval's). Its resident-idle share is exactly the idle power over
        # the cluster time it occupied; what the counter shows beyond it (the exporter's clock and the
        # scrape's differ by a few ms on a loaded machine) is dynamic energy, and it is the only taker.
        assert got[0].gpu_j == pytest.approx(4 * IDLE_W_PER_GPU * 0.1, rel=0.5)
        assert got[0].gpu_idle_j <= 4 * IDLE_W_PER_GPU * got[0].occupancy_s * (1 + 1e-9)
        assert got[0].gpu_idle_j >= 0.5 * got[0].gpu_j
        assert got[0].occupancy_s == pytest.approx(0.1, rel=0.5)
        (cluster,) = service.cluster_energy()
        assert cluster.cluster == "self" and cluster.power_w == pytest.approx(4 * IDLE_W_PER_GPU)
        assert cluster.attributed_j_total + cluster.idle_j_total == pytest.approx(cluster.measured_j_total)
        assert cluster.attributed_j_total + cluster.idle_j_total > 0
        assert service.expected_j("self", "llama-70b", 200, 300) > 0
    finally:
        await service.stop()


async def test_stale_telemetry_falls_back_to_the_flagged_estimate(exporter: tuple[Exporter, str]) -> None:
    state, url = exporter
    power = {"source": "dcgm", "url": url, "scrape_interval": "50ms", "grace": "10ms", "stale_after": "150ms"}
    settings = _settings(power)
    service = _service(settings)
    await service.start()
    try:
        state.up = False
        await asyncio.sleep(0.3)
        got: list[EnergyFigure] = []
        service.settle(_work("llama-70b"), _finished(service, "self", "llama-70b"), got.append)
        assert len(got) == 1 and got[0].source == "estimated" and got[0].flag == "telemetry_stale"
    finally:
        await service.stop()


async def test_stop_settles_waiting_requests_with_estimates(exporter: tuple[Exporter, str]) -> None:
    _, url = exporter
    power = {"source": "dcgm", "url": url, "scrape_interval": "5s"}
    settings = _settings(power)
    service = _service(settings)
    await service.start()
    got: list[EnergyFigure] = []
    service.settle(_work("llama-70b"), _finished(service, "self", "llama-70b"), got.append)
    assert got == []
    await service.stop()
    assert len(got) == 1 and got[0].flag == "telemetry_late"


class _Unprepared:
    """The calibrated estimator without its prepared path: the service then takes its general path."""

    name = "calibrated"

    def __init__(self) -> None:
        self._inner = CalibratedEstimator()

    def estimate(
        self, shape: RequestShape, params: ModelParams, serving: Serving, boundary: Boundary, over: Overheads
    ) -> Estimate:
        return self._inner.estimate(shape, params, serving, boundary, over)


def test_prepared_estimates_are_the_general_paths_floats_and_are_reused_only_while_unchanged() -> None:
    settings = _settings()
    clock = Clock()
    prepared = _service(settings, clock)
    general = _service(settings, clock)
    general._estimator = _Unprepared()
    for cluster, model in (("self", "llama-70b"), ("openai", "gpt-4o"), ("self", "BAAI/bge-small-en-v1.5")):
        residents = [(prepared.begin(cluster, model), general.begin(cluster, model)) for _ in range(3)]
        clock.now_s += 0.37
        for work in (
            _work(model),
            _work(model, prompt_tokens=5000, cached_tokens=4000),
            _work(model, ttft_s=None),
        ):
            a, b = residents[0]
            assert prepared.estimate(work, a) == general.estimate(work, b)  # still running
            clock.now_s += 0.11
        for a, b in residents:
            prepared.end(a)
            general.end(b)
            clock.now_s += 0.05
        a, b = residents[1]
        first = prepared.estimate(_work(model), a)
        assert first == general.estimate(_work(model), b)
        # Settlement moments later with nothing changed: the same figure, not a second evaluation.
        clock.now_s += 1.0
        assert prepared.estimate(_work(model, duration_s=0.9), a) is first
        # Other token counts are another figure.
        other = prepared.estimate(_work(model, prompt_tokens=201), a)
        assert other == general.estimate(_work(model, prompt_tokens=201), b) and other != first
