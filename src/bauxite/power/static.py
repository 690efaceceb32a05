"""Last-resort power model: idle/max watts per GPU × utilisation, integrated into an energy counter."""

from __future__ import annotations

from collections.abc import Callable

from ..units import MJ_PER_J
from .base import PowerReading


def static_power_w(idle_w: float, max_w: float, utilisation: float) -> float:
    """Power of one GPU in watts: idle plus the dynamic range times utilisation (clamped to 0..1)."""
    return idle_w + (max_w - idle_w) * min(max(utilisation, 0.0), 1.0)


def utilisation_from_running(running: int, half_load_seqs: float = 16.0) -> float:
    """Utilisation proxy from running sequences: 0 idle, ½ at ``half_load_seqs``, → 1 under heavy batching."""
    return running / (running + half_load_seqs) if running > 0 else 0.0


class StaticSource:
    """Synthesises readings from a power model; keeps its own integrated counter so the meter treats it
    like a measured source (the figures are still labelled estimates by the service)."""

    name = "static"

    def __init__(
        self,
        gpu_count: int,
        idle_w: float,
        max_w: float,
        utilisation: Callable[[], float],
        clock: Callable[[], float],
    ) -> None:
        self._gpu_count = max(gpu_count, 1)
        self._idle_w, self._max_w = idle_w, max_w
        self._utilisation = utilisation
        self._clock = clock
        self._energy_mj = 0.0
        self._last_s: float | None = None

    async def read(self) -> PowerReading:
        now_s = self._clock()
        power_w = static_power_w(self._idle_w, self._max_w, self._utilisation())
        if self._last_s is not None:
            self._energy_mj += power_w * (now_s - self._last_s) * MJ_PER_J
        self._last_s = now_s
        gpus = [str(i) for i in range(self._gpu_count)]
        return PowerReading({g: self._energy_mj for g in gpus}, {g: power_w for g in gpus})

    async def close(self) -> None:
        return None
