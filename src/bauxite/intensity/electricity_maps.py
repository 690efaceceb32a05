"""Electricity Maps API v3: average grid intensity per zone (latest, history, forecast)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from .base import Intensity, IntensityError, Location, Signal
from .config import ElectricityMapsSettings
from .http import HttpClient

NAME = "electricity_maps"
_DATA_CENTER_SEPARATOR = "/"  # never part of a zone name, so it marks a "cloud/region" query key


def parse_time_s(text: Any) -> float:
    """Unix seconds from an ISO 8601 timestamp such as ``2024-03-01T12:00:00.000Z``."""
    if not isinstance(text, str):
        raise IntensityError(f"expected a timestamp, got {text!r}")
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise IntensityError(f"unreadable timestamp {text!r}") from None


class ElectricityMapsProvider:
    """Queries by grid zone, or by ``dataCenterProvider``/``dataCenterRegion`` when so configured."""

    name = NAME
    signal: Signal = "average"

    def __init__(
        self,
        http: HttpClient,
        settings: ElectricityMapsSettings,
        api_key: str | None,
        clock: Callable[[], float],
    ) -> None:
        self._http = http
        self._settings = settings
        self._api_key = api_key
        self._clock = clock

    def key_for(self, location: Location) -> str | None:
        if self._settings.use_data_center and location.cloud and location.cloud_region:
            return f"{location.cloud}{_DATA_CENTER_SEPARATOR}{location.cloud_region}"
        return location.zone if location.zone_known else None

    async def current(self, zone: str) -> Intensity:
        data = await self._get("/carbon-intensity/latest", zone)
        point = self._point(data, zone)
        if point is None:
            raise IntensityError(f"{NAME}: no current value for {zone!r} (carbonIntensity is null)")
        return point

    async def history(self, zone: str) -> list[Intensity]:
        """The last 24 hours; points without a value are left out."""
        data = await self._get("/carbon-intensity/history", zone)
        return self._points(data, "history", zone)

    async def forecast(self, zone: str) -> list[Intensity]:
        """Forecast points (paid plans)."""
        data = await self._get("/carbon-intensity/forecast", zone)
        return self._points(data, "forecast", zone)

    def _params(self, key: str) -> dict[str, str]:
        params: dict[str, str] = {"emissionFactorType": self._settings.emission_factor_type}
        if self._settings.disable_estimations:
            params["disableEstimations"] = "true"
        cloud, separator, region = key.partition(_DATA_CENTER_SEPARATOR)
        if separator:
            params.update(dataCenterProvider=cloud, dataCenterRegion=region)
        else:
            params["zone"] = key
        return params

    async def _get(self, path: str, key: str) -> Any:
        if not self._api_key:
            raise IntensityError(
                f"{NAME}: no API key (set the variable named in intensity.electricity_maps.api_key_env)",
                status=401,
            )
        reply = await self._http.get(
            NAME,
            self._settings.base_url.rstrip("/") + path,
            params=self._params(key),
            headers={"auth-token": self._api_key},
        )
        if reply.status != 200:
            # 401 means a bad key, but Electricity Maps also answers 401 when rate-limited: both back off.
            raise reply.error(NAME, key)
        data = reply.json(NAME)
        if not isinstance(data, dict):
            raise IntensityError(f"{NAME}: expected a JSON object for {key!r}")
        return data

    def _point(self, data: dict[str, Any], key: str) -> Intensity | None:
        value = data.get("carbonIntensity")
        if value is None:
            return None
        if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
            raise IntensityError(f"{NAME}: carbonIntensity is not a number for {key!r}")
        zone = data.get("zone")
        factor = data.get("emissionFactorType") or self._settings.emission_factor_type
        return Intensity(
            zone=zone if isinstance(zone, str) and zone else key,
            g_per_kwh=float(value),
            at=parse_time_s(data.get("datetime")),
            source=NAME,
            signal="average",
            basis="direct" if factor == "direct" else "lifecycle",
            fetched_at=self._clock(),
            reference="Electricity Maps" + (" (estimated)" if data.get("isEstimated") else ""),
        )

    def _points(self, data: dict[str, Any], field: str, key: str) -> list[Intensity]:
        raw = data.get(field)
        if not isinstance(raw, list):
            raise IntensityError(f"{NAME}: response has no {field!r} list for {key!r}")
        zone = data.get("zone") if isinstance(data.get("zone"), str) else key
        points = [self._point({"zone": zone, **p}, key) for p in raw if isinstance(p, dict)]
        return sorted((p for p in points if p is not None), key=lambda p: p.at)
