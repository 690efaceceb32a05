"""Power sources: DCGM scrape against a local exporter, counter resets, missed scrapes, NVML/static models."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from bauxite.power.base import EnergyMeter, PowerError, PowerReading, counter_delta_j
from bauxite.power.dcgm import DcgmSource, parse_dcgm
from bauxite.power.nvml import NvmlSource
from bauxite.power.static import StaticSource, static_power_w, utilisation_from_running
from bauxite.server import start_site


def exposition(energy_mj: list[float], power_w: list[float]) -> str:
    """The DCGM exporter's format: one series per GPU, energy counter in mJ without a _total suffix."""
    lines = ["# HELP DCGM_FI_DEV_POWER_USAGE Power draw (in W).", "# TYPE DCGM_FI_DEV_POWER_USAGE gauge"]
    for i, p in enumerate(power_w):
        lines.append(f'DCGM_FI_DEV_POWER_USAGE{{gpu="{i}",UUID="GPU-{i}",modelName="NVIDIA H100"}} {p}')
    lines += [
        "# HELP DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION Total energy (in mJ).",
        "# TYPE DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION counter",
    ]
    for i, e in enumerate(energy_mj):
        lines.append(
            f'DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{{gpu="{i}",UUID="GPU-{i}",modelName="NVIDIA H100"}} {e}'
        )
    return "\n".join(lines) + "\n"


class Exporter:
    def __init__(self) -> None:
        self.body = exposition([0.0, 0.0], [100.0, 100.0])
        self.status = 200


@pytest.fixture
async def exporter() -> AsyncIterator[tuple[Exporter, str]]:
    state = Exporter()

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text=state.body, status=state.status)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner, port = await start_site(app, "127.0.0.1", 0)
    yield state, f"http://127.0.0.1:{port}/metrics"
    await runner.cleanup()
    await runner.cleanup()


def test_parse_dcgm_per_gpu_values() -> None:
    reading = parse_dcgm(exposition([5000.0, 7000.0], [300.0, 400.0]))
    assert reading.energy_mj == {"GPU-0": 5000.0, "GPU-1": 7000.0}
    assert reading.total_power_w == 700.0


def test_parse_dcgm_rejects_expositions_without_power_metrics() -> None:
    with pytest.raises(PowerError):
        parse_dcgm("# TYPE other gauge\nother 1\n")


def test_counter_delta_in_joules_and_reset_falls_back_to_power_times_time() -> None:
    assert counter_delta_j(1000.0, 6000.0, fallback_j=99.0) == (5.0, False)
    assert counter_delta_j(6000.0, 10.0, fallback_j=99.0) == (99.0, True)


def test_meter_uses_counters_and_covers_missed_scrapes_exactly() -> None:
    meter = EnergyMeter()
    assert meter.update(PowerReading({"a": 0.0}, {"a": 100.0}), 0.0) is None
    first = meter.update(PowerReading({"a": 500_000.0}, {"a": 100.0}), 5.0)
    assert first is not None and first.energy_j == pytest.approx(500.0)
    # two scrapes missed: the next interval is 15 s long and the counter still gives its exact energy
    gap = meter.update(PowerReading({"a": 2_000_000.0}, {"a": 100.0}), 20.0)
    assert gap is not None and (gap.start_s, gap.end_s) == (5.0, 20.0)
    assert gap.energy_j == pytest.approx(1500.0)


def test_meter_trapezoid_without_counters_and_reset_flag() -> None:
    meter = EnergyMeter()
    meter.update(PowerReading({}, {"a": 100.0}), 0.0)
    interval = meter.update(PowerReading({}, {"a": 300.0}), 2.0)
    assert interval is not None and interval.energy_j == pytest.approx(400.0) and interval.from_power_only
    meter = EnergyMeter()
    meter.update(PowerReading({"a": 9_000_000.0}, {"a": 200.0}), 0.0)
    reset = meter.update(PowerReading({"a": 1000.0}, {"a": 200.0}), 1.0)
    assert reset is not None and reset.counters_reset and reset.energy_j == pytest.approx(200.0)


async def test_dcgm_source_against_local_exporter(exporter: tuple[Exporter, str]) -> None:
    state, url = exporter
    source = DcgmSource(url, timeout_s=1.0)
    try:
        state.body = exposition([1000.0, 3000.0], [250.0, 260.0])
        reading = await source.read()
        assert reading.energy_mj == {"GPU-0": 1000.0, "GPU-1": 3000.0}
        state.status = 503
        with pytest.raises(PowerError, match="503"):
            await source.read()
        state.status, state.body = 200, "garbage {{{"
        with pytest.raises(PowerError):
            await source.read()
    finally:
        await source.close()


async def test_dcgm_source_unreachable_is_a_power_error() -> None:
    source = DcgmSource("http://127.0.0.1:9/metrics", timeout_s=0.5)
    try:
        with pytest.raises(PowerError):
            await source.read()
    finally:
        await source.close()


def test_static_power_model_by_hand() -> None:
    assert static_power_w(100.0, 700.0, 0.5) == 400.0
    assert static_power_w(100.0, 700.0, 3.0) == 700.0
    assert utilisation_from_running(0) == 0.0
    assert utilisation_from_running(16) == 0.5


async def test_static_source_integrates_its_power_into_a_counter() -> None:
    now = [0.0]
    source = StaticSource(2, 100.0, 700.0, lambda: 0.5, lambda: now[0])
    await source.read()
    now[0] = 10.0
    reading = await source.read()
    assert reading.energy_mj["0"] == pytest.approx(400.0 * 10.0 * 1000.0)  # 400 W × 10 s, in mJ
    assert reading.total_power_w == pytest.approx(800.0)


async def test_nvml_without_gpu_or_package_is_a_power_error() -> None:
    source = NvmlSource()
    try:
        await source.read()
    except PowerError:
        pass  # expected on a machine without an NVIDIA driver
    finally:
        await source.close()
