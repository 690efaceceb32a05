"""A real local HTTP server speaking the Electricity Maps, WattTime and UK Carbon Intensity wire formats.

Responses are built from the documented example payloads in ``tests/fakes/intensity_*.json``. Each provider
family (``em``, ``wt``, ``uk``) has a queue of scripted modes; an empty queue answers normally. Modes:
``ok``, ``429``, ``500``, ``hang`` (never answers until the server closes), ``malformed`` (broken JSON),
``null`` (values null), ``object`` (UK: ``data`` as an object), ``expired`` (WattTime: 403 HTML page and the
token stops working), ``scope`` (WattTime: JSON 403, plan lacks access).
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
from pathlib import Path
from typing import Any

from aiohttp import web

FIXTURES = Path(__file__).parent / "fakes"
EM_KEY = "em-test-key"
WT_USER, WT_PASSWORD = "wt-user", "wt-secret"


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / f"intensity_{name}.json").read_text(encoding="utf-8"))


class FakeProviders:
    def __init__(self) -> None:
        self.modes: dict[str, list[str]] = {"em": [], "wt": [], "uk": []}
        self.sticky: dict[str, str] = {}  # a mode that applies to every request of a family until cleared
        self.requests: list[tuple[str, dict[str, str], dict[str, str]]] = []  # (path, query, headers)
        self.wt_valid_tokens: set[str] = set()
        self.wt_logins = 0
        self.em_values: dict[str, float] = {}  # zone -> carbonIntensity answered instead of the example's
        self._release = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def script(self, family: str, *modes: str) -> None:
        self.modes[family].extend(modes)

    def paths(self, prefix: str = "") -> list[str]:
        return [path for path, _, _ in self.requests if path.startswith(prefix)]

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/em/v3/carbon-intensity/{kind}", self._em)
        app.router.add_get("/wt/login", self._wt_login)
        app.router.add_get("/wt/v3/{kind}", self._wt)
        app.router.add_get("/uk/{tail:.*}", self._uk)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def close(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    def _record(self, request: web.Request) -> None:
        self.requests.append((request.path, dict(request.query), dict(request.headers)))

    def _mode(self, family: str) -> str:
        if family in self.sticky:
            return self.sticky[family]
        return self.modes[family].pop(0) if self.modes[family] else "ok"

    async def _common(self, mode: str, error_body: Any) -> web.Response | None:
        """Answers shared by all families; None means the family handles ``mode`` itself."""
        if mode == "hang":
            await self._release.wait()
            return web.json_response({}, status=503)
        if mode == "429":
            return web.json_response(error_body, status=429, headers={"Retry-After": "7"})
        if mode == "500":
            return web.Response(text="<html>upstream trouble</html>", status=500, content_type="text/html")
        if mode == "malformed":
            return web.Response(text='{"zone": "DE", "carbonIntensity": 3', content_type="application/json")
        return None

    # --- Electricity Maps ---------------------------------------------------------------------------

    async def _em(self, request: web.Request) -> web.Response:
        self._record(request)
        mode = self._mode("em")
        if request.headers.get("auth-token") != EM_KEY:
            return web.json_response(fixture("em_error_401"), status=401)
        early = await self._common(mode, fixture("em_error_401"))
        if early is not None:
            return early
        zone = request.query.get("zone") or request.query.get("zoneKey")
        if zone is None and "dataCenterRegion" in request.query:
            zone = "NL"  # the fake knows one data centre mapping
        if zone is None:
            return web.json_response(fixture("em_error_400_or_404"), status=400)
        kind = request.match_info["kind"]
        name = {
            "latest": "em_carbon-intensity_latest_DE",
            "history": "em_carbon-intensity_history_DE",
            "forecast": "em_carbon-intensity_forecast_DE",
        }.get(kind)
        if name is None:
            return web.json_response(fixture("em_error_400_or_404"), status=404)
        body = copy.deepcopy(fixture(name))
        body["zone"] = zone
        if kind == "latest" and zone in self.em_values:
            body["carbonIntensity"] = self.em_values[zone]
        if mode == "null":
            if kind == "latest":
                body["carbonIntensity"] = None
            else:
                body[kind][0]["carbonIntensity"] = None
        return web.json_response(body)

    # --- WattTime ---------------------------------------------------------------------------------------

    async def _wt_login(self, request: web.Request) -> web.Response:
        self._record(request)
        expected = "Basic " + base64.b64encode(f"{WT_USER}:{WT_PASSWORD}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            return web.json_response({"error": "Unauthorized"}, status=401)
        self.wt_logins += 1
        token = f"token-{self.wt_logins}"
        self.wt_valid_tokens.add(token)
        return web.json_response({"token": token})

    async def _wt(self, request: web.Request) -> web.Response:
        self._record(request)
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if token not in self.wt_valid_tokens:
            return web.Response(
                text="<html><body>403 Forbidden</body></html>", status=403, content_type="text/html"
            )
        mode = self._mode("wt")
        if mode == "expired":
            self.wt_valid_tokens.clear()
            return web.Response(
                text="<html><body>403 Forbidden</body></html>", status=403, content_type="text/html"
            )
        if mode == "scope":
            return web.json_response(fixture("wt_error_403_scope"), status=403)
        early = await self._common(mode, {"error": "Too many requests"})
        if early is not None:
            return early
        kind = request.match_info["kind"]
        if kind == "region-from-loc":
            return web.json_response(fixture("wt_region-from-loc"))
        if kind != "forecast":
            return web.json_response({"error": "not in this fake"}, status=404)
        body = copy.deepcopy(fixture("wt_forecast"))
        body["meta"]["region"] = request.query.get("region", "")
        if request.query.get("horizon_hours") == "0":
            body["data"] = body["data"][:1]
        if mode == "null":
            body["data"][0]["value"] = None
        return web.json_response(body)

    # --- UK Carbon Intensity ------------------------------------------------------------------------

    async def _uk(self, request: web.Request) -> web.Response:
        self._record(request)
        mode = self._mode("uk")
        early = await self._common(mode, fixture("uk_error_400"))
        if early is not None:
            return early
        tail = request.match_info["tail"]
        if tail == "intensity":
            body = copy.deepcopy(fixture("uk_intensity"))
        elif tail.startswith("intensity/") and tail.endswith("/fw24h"):
            body = copy.deepcopy(fixture("uk_intensity_fw24h"))
        elif tail == "regional/regionid/13":
            body = copy.deepcopy(fixture("uk_regional_regionid_13"))
            if mode == "object":
                body["data"] = body["data"][0]
        elif tail.startswith("regional/intensity/") and tail.endswith("/regionid/13"):
            body = copy.deepcopy(fixture("uk_regional_intensity_fw24h_regionid_13"))
        else:
            return web.json_response(fixture("uk_error_400"), status=400)
        if mode == "null":
            for slot in _uk_slots(body["data"]):
                slot["intensity"]["forecast"] = None
                slot["intensity"]["actual"] = None
        return web.json_response(body)


def _uk_slots(data: Any) -> list[dict[str, Any]]:
    items = data if isinstance(data, list) else [data]
    slots: list[dict[str, Any]] = []
    for item in items:
        slots.extend(item.get("data", [item]))
    return slots
