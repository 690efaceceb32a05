"""WattTime API v3: marginal operating emissions rate (MOER), a marginal signal in lbs/MWh.

Login with HTTP Basic gives a bearer token valid about 30 minutes; we renew it early, and once more when
the API answers 401, or 403 with an HTML page (how an expired token shows up), before giving up.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from typing import Any

from ..units import lbs_per_mwh_to_g_per_kwh
from .base import Intensity, IntensityError, Location, Signal
from .config import WattTimeSettings
from .electricity_maps import parse_time_s
from .http import HttpClient, HttpReply

NAME = "watttime"
TOKEN_LIFETIME_S = 25 * 60  # tokens last 30 minutes; renew a little before
_LOCATION_PREFIX = "@"  # query keys "@lat,lon" are resolved to a WattTime region on first use


class WattTimeProvider:
    name = NAME
    signal: Signal = "marginal"

    def __init__(
        self,
        http: HttpClient,
        settings: WattTimeSettings,
        username: str | None,
        password: str | None,
        clock: Callable[[], float],
    ) -> None:
        self._http = http
        self._settings = settings
        self._username = username
        self._password = password
        self._clock = clock
        self._token: str | None = None
        self._token_at_s = 0.0
        self._regions: dict[str, str] = {}  # "@lat,lon" → WattTime region, learnt once
        self.logins = 0  # how many times we logged in (exposed for diagnostics)

    def key_for(self, location: Location) -> str | None:
        mapped: Mapping[str, str] = self._settings.regions
        region = mapped.get(location.region) or mapped.get(location.zone)
        if region:
            return region
        if location.latitude is not None and location.longitude is not None:
            return f"{_LOCATION_PREFIX}{location.latitude},{location.longitude}"
        return None

    async def current(self, zone: str) -> Intensity:
        """The nowcast: the first point of a zero-horizon forecast."""
        points = await self._forecast(zone, horizon_hours=0)
        if not points:
            raise IntensityError(f"{NAME}: no current value for {zone!r}")
        return points[0]

    async def forecast(self, zone: str) -> list[Intensity]:
        return await self._forecast(zone, horizon_hours=24)

    async def _forecast(self, key: str, horizon_hours: int) -> list[Intensity]:
        region = await self._region(key)
        params = {
            "region": region,
            "signal_type": self._settings.signal_type,
            "horizon_hours": str(horizon_hours),
        }
        data = await self._authorised_json("/v3/forecast", params)
        return self._parse_points(data, region)

    async def _region(self, key: str) -> str:
        if not key.startswith(_LOCATION_PREFIX):
            return key
        if key not in self._regions:
            latitude, _, longitude = key.removeprefix(_LOCATION_PREFIX).partition(",")
            params = {"latitude": latitude, "longitude": longitude, "signal_type": self._settings.signal_type}
            data = await self._authorised_json("/v3/region-from-loc", params)
            region = data.get("region")
            if not isinstance(region, str) or not region:
                raise IntensityError(f"{NAME}: region-from-loc gave no region")
            self._regions[key] = region
        return self._regions[key]

    async def _login(self) -> str:
        if not self._username or not self._password:
            raise IntensityError(
                f"{NAME}: no credentials (set the variables named in intensity.watttime)", status=401
            )
        reply = await self._http.get(
            NAME, self._url("/login"), headers={"Authorization": _basic_auth(self._username, self._password)}
        )
        if reply.status != 200:
            raise reply.error(NAME, "login")
        data = reply.json(NAME)
        token = data.get("token") if isinstance(data, dict) else None
        if not isinstance(token, str) or not token:
            raise IntensityError(f"{NAME}: login answered without a token")
        self._token, self._token_at_s = token, self._clock()
        self.logins += 1
        return token

    async def _authorised_json(self, path: str, params: dict[str, str]) -> dict[str, Any]:
        token = self._token
        if token is None or self._clock() - self._token_at_s > TOKEN_LIFETIME_S:
            token = await self._login()
        reply = await self._get(path, params, token)
        if _token_expired(reply):
            reply = await self._get(path, params, await self._login())
        if reply.status != 200:
            raise reply.error(NAME, path.rsplit("/", 1)[-1])
        data = reply.json(NAME)
        if not isinstance(data, dict):
            raise IntensityError(f"{NAME}: expected a JSON object from {path}")
        return data

    async def _get(self, path: str, params: dict[str, str], token: str) -> HttpReply:
        return await self._http.get(
            NAME, self._url(path), params=params, headers={"Authorization": f"Bearer {token}"}
        )

    def _url(self, path: str) -> str:
        return self._settings.base_url.rstrip("/") + path

    def _parse_points(self, data: dict[str, Any], region: str) -> list[Intensity]:
        raw = data.get("data")
        meta = data.get("meta") if isinstance(data.get("meta"), dict) else {}
        units = meta.get("units", "lbs_co2_per_mwh") if isinstance(meta, dict) else "lbs_co2_per_mwh"
        if units != "lbs_co2_per_mwh":
            raise IntensityError(f"{NAME}: unexpected units {units!r} (expected lbs_co2_per_mwh)")
        if not isinstance(raw, list):
            raise IntensityError(f"{NAME}: response has no 'data' list")
        now_s = self._clock()
        points = []
        for item in raw:
            value = item.get("value") if isinstance(item, dict) else None
            if not isinstance(value, int | float) or isinstance(value, bool):
                continue  # a null point is a gap, not a zero
            points.append(
                Intensity(
                    zone=region,
                    g_per_kwh=lbs_per_mwh_to_g_per_kwh(float(value)),
                    at=parse_time_s(item.get("point_time")),
                    source=NAME,
                    signal="marginal",
                    basis="direct",
                    fetched_at=now_s,
                    reference=f"WattTime {self._settings.signal_type} {region}",
                )
            )
        return sorted(points, key=lambda p: p.at)


def _basic_auth(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


def _token_expired(reply: HttpReply) -> bool:
    """401, or 403 with a non-JSON (HTML) body: the token lapsed. A JSON 403 is a plan/scope refusal."""
    return reply.status == 401 or (reply.status == 403 and not reply.looks_like_json())
