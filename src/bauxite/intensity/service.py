"""Per-region intensity snapshots the request path reads without waiting.

Placeholder until the provider work lands: every region reads a nominal static value.
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING

from aiohttp import web

from .base import Intensity, RegionIntensity

if TYPE_CHECKING:
    from ..settings import Settings

NOMINAL_G_PER_KWH = 400.0


class IntensityService:
    def __init__(self, regions: dict[str, str | None]) -> None:
        now = time.time()
        self._snapshots = {
            region: Intensity(zone or region, NOMINAL_G_PER_KWH, now, "static", fetched_at=now)
            for region, zone in regions.items()
        }

    @classmethod
    def from_settings(cls, settings: Settings) -> IntensityService:
        return cls({c.region: c.zone for c in settings.clusters})

    def current(self, region: str) -> Intensity:
        """Latest known intensity for ``region``; never raises, never waits."""
        found = self._snapshots.get(region)
        if found is None:
            now = time.time()
            found = Intensity(region, NOMINAL_G_PER_KWH, now, "static", fetched_at=now)
        return found

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def snapshot(self) -> list[RegionIntensity]:
        now = time.time()
        return [
            RegionIntensity(r, i.zone, i.source, i.g_per_kwh, i.signal, i.basis, now - i.fetched_at, False)
            for r, i in self._snapshots.items()
        ]

    def for_ranking(self, regions: list[str]) -> dict[str, Intensity]:
        """Values for comparing regions with each other; all of one signal (never average vs marginal)."""
        return {region: self.current(region) for region in regions}

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/v1/carbon/intensity", self._handle)

    async def _handle(self, request: web.Request) -> web.Response:
        return web.json_response({"regions": [dataclasses.asdict(row) for row in self.snapshot()]})
