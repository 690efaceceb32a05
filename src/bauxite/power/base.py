"""The power-source plug-in point and the counter bookkeeping shared by every source."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..units import MJ_PER_J


class PowerError(Exception):
    """A power reading could not be taken (unreachable exporter, bad exposition, no GPU)."""


@dataclass(frozen=True, slots=True)
class PowerReading:
    """One scrape. ``energy_mj`` holds each GPU's cumulative energy counter in millijoules (empty when the
    source has only power gauges); ``power_w`` each GPU's instantaneous power in watts."""

    energy_mj: dict[str, float]
    power_w: dict[str, float]

    @property
    def total_power_w(self) -> float:
        return sum(self.power_w.values())


class PowerSource(Protocol):
    """Plug-in point: one cluster's GPUs. ``read`` raises ``PowerError`` on failure; never blocks the loop."""

    name: str

    async def read(self) -> PowerReading: ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Interval:
    """Energy of one cluster between two good readings (monotonic seconds)."""

    start_s: float
    end_s: float
    energy_j: float
    power_w: float  # latest total power
    counters_reset: bool = False  # some GPU's counter went backwards: that GPU used power × time instead
    from_power_only: bool = False  # no energy counters: trapezoid of power readings


def counter_delta_j(before_mj: float, after_mj: float, fallback_j: float) -> tuple[float, bool]:
    """Joules between two readings of a millijoule counter; a counter that went backwards (exporter or
    driver restart) is reset, so ``fallback_j`` (power × time) is used instead. Returns (joules, reset)."""
    if after_mj < before_mj:
        return fallback_j, True
    return (after_mj - before_mj) / MJ_PER_J, False


class EnergyMeter:
    """Turns successive readings into intervals: counters where present, else power × time (trapezoid).
    A missed scrape just makes the next interval longer; counters make that exact."""

    def __init__(self) -> None:
        self._last: PowerReading | None = None
        self._last_s: float = 0.0

    def update(self, reading: PowerReading, now_s: float) -> Interval | None:
        """Feed a good reading taken at ``now_s``; returns the interval since the last one (None first)."""
        last, last_s = self._last, self._last_s
        self._last, self._last_s = reading, now_s
        if last is None or now_s <= last_s:
            return None
        dt_s = now_s - last_s
        total_j, reset = 0.0, False
        gpus = set(reading.energy_mj) | set(reading.power_w)
        for gpu in gpus:
            trapezoid_j = 0.5 * (last.power_w.get(gpu, 0.0) + reading.power_w.get(gpu, 0.0)) * dt_s
            if gpu in reading.energy_mj and gpu in last.energy_mj:
                delta_j, was_reset = counter_delta_j(last.energy_mj[gpu], reading.energy_mj[gpu], trapezoid_j)
                total_j += delta_j
                reset = reset or was_reset
            else:
                total_j += trapezoid_j
        return Interval(last_s, now_s, total_j, reading.total_power_w, reset, not reading.energy_mj)
