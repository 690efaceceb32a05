"""DCGM exporter scrape over HTTP: per-GPU energy counters (mJ) and power gauges (W)."""

from __future__ import annotations

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from .base import PowerError, PowerReading

ENERGY_METRIC = "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"  # mJ since driver load, counter
POWER_METRIC = "DCGM_FI_DEV_POWER_USAGE"  # W, gauge


def parse_dcgm(text: str) -> PowerReading:
    """Per-GPU values from a DCGM exporter exposition; GPUs keyed by UUID (else index). Raises PowerError."""
    energy_mj: dict[str, float] = {}
    power_w: dict[str, float] = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                name = sample.name.removesuffix("_total")
                if name not in (ENERGY_METRIC, POWER_METRIC):
                    continue
                gpu = sample.labels.get("UUID") or sample.labels.get("gpu") or "0"
                (energy_mj if name == ENERGY_METRIC else power_w)[gpu] = float(sample.value)
    except ValueError as exc:
        raise PowerError(f"DCGM exposition could not be parsed: {exc}") from None
    if not energy_mj and not power_w:
        raise PowerError(f"DCGM exposition has neither {ENERGY_METRIC} nor {POWER_METRIC}")
    return PowerReading(energy_mj, power_w)


class DcgmSource:
    """Reads one DCGM exporter ``/metrics`` URL with a shared aiohttp session."""

    name = "dcgm"

    def __init__(
        self, url: str, timeout_s: float = 2.0, session: aiohttp.ClientSession | None = None
    ) -> None:
        self._url = url
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session = session
        self._own_session = session is None

    async def read(self) -> PowerReading:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        try:
            async with self._session.get(self._url, timeout=self._timeout) as response:
                if response.status != 200:
                    raise PowerError(f"DCGM exporter {self._url} answered HTTP {response.status}")
                text = await response.text()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise PowerError(f"DCGM exporter {self._url} unreachable: {exc.__class__.__name__}") from None
        return parse_dcgm(text)

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None
