"""UK Carbon Intensity API (National Grid ESO): free, no key, average signal, national or per DNO region."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from .base import Intensity, IntensityError, Location, Signal
from .config import UkCarbonIntensitySettings
from .electricity_maps import parse_time_s
from .http import HttpClient

NAME = "uk_carbon_intensity"
NATIONAL = "national"
# Cloud regions in Great Britain → regional id (13 London, 7 South Wales); other GB regions use national.
BUILTIN_REGION_IDS = {
    ("aws", "eu-west-2"): 13,
    ("gcp", "europe-west2"): 13,
    ("azure", "uksouth"): 13,
    ("azure", "ukwest"): 7,
}


class UkCarbonIntensityProvider:
    name = NAME
    signal: Signal = "average"

    def __init__(
        self, http: HttpClient, settings: UkCarbonIntensitySettings, clock: Callable[[], float]
    ) -> None:
        self._http = http
        self._settings = settings
        self._clock = clock

    def key_for(self, location: Location) -> str | None:
        configured = self._settings.region_ids.get(location.region)
        if configured is not None:
            return str(configured)
        builtin = BUILTIN_REGION_IDS.get((location.cloud or "", location.cloud_region or ""))
        if builtin is not None:
            return str(builtin)
        return NATIONAL if location.zone == "GB" else None

    async def current(self, zone: str) -> Intensity:
        path = "/intensity" if zone == NATIONAL else f"/regional/regionid/{zone}"
        points = self._parse(await self._get(path), zone)
        if not points:
            raise IntensityError(f"{NAME}: no current value for {zone!r}")
        return points[0]

    async def forecast(self, zone: str) -> list[Intensity]:
        start = datetime.fromtimestamp(self._clock(), UTC).strftime("%Y-%m-%dT%H:%MZ")
        path = (
            f"/intensity/{start}/fw24h"
            if zone == NATIONAL
            else f"/regional/intensity/{start}/fw24h/regionid/{zone}"
        )
        return self._parse(await self._get(path), zone)

    async def _get(self, path: str) -> Any:
        reply = await self._http.get(NAME, self._settings.base_url.rstrip("/") + path)
        if reply.status != 200:
            raise reply.error(NAME, path)
        data = reply.json(NAME)
        if not isinstance(data, dict) or "data" not in data:
            raise IntensityError(f"{NAME}: response has no 'data'")
        return data["data"]

    def _parse(self, data: Any, key: str) -> list[Intensity]:
        """Half-hour slots: national ``[slot…]``; regional ``{…, data: [slot…]}`` or a list of those."""
        slots = _slots(data)
        now_s = self._clock()
        points = []
        for slot in slots:
            intensity = slot.get("intensity") if isinstance(slot, dict) else None
            if not isinstance(intensity, dict):
                continue
            # "actual" is measured and only national; "forecast" is always there unless the slot is empty.
            value = intensity.get("actual")
            if not isinstance(value, int | float) or isinstance(value, bool):
                value = intensity.get("forecast")
            if not isinstance(value, int | float) or isinstance(value, bool):
                continue
            points.append(
                Intensity(
                    zone="GB" if key == NATIONAL else f"GB-region-{key}",
                    g_per_kwh=float(value),
                    at=parse_time_s(slot.get("from")),
                    source=NAME,
                    signal="average",
                    basis="direct",
                    fetched_at=now_s,
                    reference="Carbon Intensity API (NESO), CC BY 4.0",
                )
            )
        return sorted(points, key=lambda p: p.at)


def _slots(data: Any) -> list[Any]:
    items = data if isinstance(data, list) else [data]
    slots: list[Any] = []
    for item in items:
        if isinstance(item, dict) and isinstance(item.get("data"), list):
            slots.extend(item["data"])  # a regional wrapper around its own slots
        elif isinstance(item, dict):
            slots.append(item)
    return slots
