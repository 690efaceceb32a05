"""``GET /v1/carbon/intensity``: current intensity per configured region, with source and age."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import orjson
from aiohttp import web

from .base import RegionIntensity

if TYPE_CHECKING:
    from .service import IntensityService


class _Snapshots(Protocol):
    provider_name: str

    def snapshot(self) -> list[RegionIntensity]: ...


INTENSITY_SERVICE_KEY: web.AppKey[_Snapshots] = web.AppKey("bauxite_intensity_service", _Snapshots)
ROUTE = "/v1/carbon/intensity"


def row_json(row: RegionIntensity) -> dict[str, Any]:
    """One region as JSON (shared by the HTTP view and ``bauxite intensity --json``)."""
    return {
        "region": row.region,
        "zone": row.zone,
        "gco2_per_kwh": round(row.g_per_kwh, 3),
        "provider": row.provider,
        "signal": row.signal,
        "basis": row.basis,
        "age_s": round(row.age_s, 1),
        "stale": row.stale,
        "reference": row.reference,
        "year": row.year,
        "cfe_share": row.cfe_share,
        "error": row.error or None,
    }


def intensity_payload(service: _Snapshots) -> dict[str, Any]:
    return {
        "object": "list",
        "configured_provider": service.provider_name,
        "data": [row_json(row) for row in service.snapshot()],
    }


async def handle_intensity(request: web.Request) -> web.Response:
    """Plain handler: reads the service stored under ``INTENSITY_SERVICE_KEY``; wrap it to add auth."""
    service = request.app[INTENSITY_SERVICE_KEY]
    return web.Response(body=orjson.dumps(intensity_payload(service)), content_type="application/json")


def register_routes(app: web.Application, service: IntensityService) -> None:
    app[INTENSITY_SERVICE_KEY] = service
    app.router.add_get(ROUTE, handle_intensity)
