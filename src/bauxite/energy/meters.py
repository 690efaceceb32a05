"""One background scrape per metered cluster: power source → energy meter → attribution ledger."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..power.base import EnergyMeter, Interval, PowerError, PowerSource
from ..power.dcgm import DcgmSource
from ..power.nvml import NvmlSource
from ..power.static import StaticSource, utilisation_from_running
from ..tasks import cancel
from . import curves
from .attribution import ClusterLedger
from .config import EnergySettings, PowerSettings

if TYPE_CHECKING:
    from ..clusters import ClusterState

log = logging.getLogger(__name__)


class ClusterMeter:
    """Scrape state of one cluster. ``method`` is ``measured`` (DCGM, NVML) or ``static_power``."""

    def __init__(
        self,
        state: ClusterState,
        power: PowerSettings,
        source: PowerSource,
        ledger: ClusterLedger,
        clock: Callable[[], float],
        report_idle: Callable[[float, float], None] | None = None,
    ) -> None:
        self.state = state
        self.region = state.region
        self.power = power
        self.source = source
        self.ledger = ledger
        self.method = "static_power" if source.name == "static" else "measured"
        self.meter = EnergyMeter()
        self.power_w = 0.0
        self.pending: dict[
            asyncio.TimerHandle, Callable[[], None]
        ] = {}  # deadline timers of waiting requests
        self._clock = clock
        self._report_idle = report_idle
        self._reported = (0.0, 0.0)  # ledger idle joules and unallocated seconds already reported
        self._last_good_s = clock()
        self._task: asyncio.Task[None] | None = None

    @property
    def deadline_s(self) -> float:
        """How long after a request's end its measured figure may take before the estimate is used: one missed
        or slow scrape is tolerated (a late figure costs the account its exactness)."""
        return 2.0 * self.power.scrape_interval + self.power.grace + self.power.timeout

    def stale(self, now_s: float) -> bool:
        return now_s - self._last_good_s > self.power.stale_after_s

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"power:{self.state.name}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel(task)
        for handle, late in list(self.pending.items()):  # settle waiting requests with their estimates now
            handle.cancel()
            late()
        self.pending.clear()
        self.ledger.flush()
        await self.source.close()

    async def _run(self) -> None:
        interval_s = self.power.scrape_interval
        while True:
            started_s = self._clock()
            await self.scrape_once()
            await asyncio.sleep(max(interval_s - (self._clock() - started_s), 0.05))

    async def scrape_once(self) -> None:
        """Read, then after the grace period split the interval; failures only age the data."""
        sent_s = self._clock()
        try:
            reading = await self.source.read()
        except PowerError as exc:
            log.warning("power scrape of %s failed: %s", self.state.name, exc)
            return
        now_s = self._clock()
        gap_s = now_s - self._last_good_s
        self._last_good_s = now_s
        self.power_w = reading.total_power_w
        # The counters were sampled somewhere between asking and having the answer: stamp the middle. Stamping
        # the end shifts each interval by the scrape's duration, and its idle-power × shift joules land on
        # whichever short request happened to be resident.
        interval = self.meter.update(reading, 0.5 * (sent_s + now_s))
        if interval is None:
            return
        await asyncio.sleep(self.power.grace)
        self.close(interval, gap_s)

    def close(self, interval: Interval, gap_s: float) -> None:
        """Split the interval in the ledger, then report the idle energy and time it added."""
        tainted = interval.counters_reset or (interval.from_power_only and gap_s > self.power.stale_after_s)
        self.ledger.close_interval(interval.start_s, interval.end_s, interval.energy_j, tainted)
        idle_j, unallocated_s = self.ledger.idle_j, self.ledger.unallocated_s
        if self._report_idle is not None:
            self._report_idle(idle_j - self._reported[0], unallocated_s - self._reported[1])
        self._reported = (idle_j, unallocated_s)


def idle_w_per_gpu(state: ClusterState, power: PowerSettings) -> float:
    """Resident-idle power of one GPU: configured, else the calibrated idle share of board power."""
    if power.idle_w_per_gpu is not None:
        return power.idle_w_per_gpu
    return curves.idle_w(curves.gpu_spec(state.settings.gpu.type))


def build_source(state: ClusterState, power: PowerSettings, clock: Callable[[], float]) -> PowerSource | None:
    if power.source == "dcgm" and power.url:
        return DcgmSource(power.url, power.timeout)
    if power.source == "nvml":
        return NvmlSource(power.gpu_indices)
    if power.source == "static":
        max_w = power.max_w_per_gpu or curves.gpu_spec(state.settings.gpu.type).board_w

        def utilisation() -> float:
            return utilisation_from_running(state.queue_running or state.in_flight)

        return StaticSource(state.settings.gpu.count, idle_w_per_gpu(state, power), max_w, utilisation, clock)
    return None


def build_meter(
    state: ClusterState,
    settings: EnergySettings,
    clock: Callable[[], float],
    report_idle: Callable[[float, float], None] | None = None,
    weigh: Callable[[str, float], tuple[float, float, float]] | None = None,
) -> ClusterMeter | None:
    """The meter for a cluster with a power source, else None (its requests are estimated)."""
    power = state.settings.power
    source = build_source(state, power, clock)
    if source is None:
        return None
    count = state.settings.gpu.count
    idle_w = idle_w_per_gpu(state, power)
    board_w = power.max_w_per_gpu or curves.gpu_spec(state.settings.gpu.type).board_w
    ledger = ClusterLedger(idle_w * count, weigh, max(board_w - idle_w, 0.0) * count)
    return ClusterMeter(state, power, source, ledger, clock, report_idle)
