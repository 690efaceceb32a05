"""``GET /dashboard``: a carbon dashboard page served by the gateway itself, no Prometheus or Grafana needed.

Routes (on the listener that serves ``/metrics``):

- ``GET /dashboard`` - the page (static HTML; it holds no data, so it is served without the token and asks
  the browser user for the token when the data endpoint answers 401).
- ``GET /dashboard/static/{name}`` - the page's script and style, and the vendored uPlot chart library
  (MIT licence, shipped next to it as ``LICENSE``). Nothing is loaded from a CDN; the page works offline.
- ``GET /dashboard/series`` - the figures as JSON (shape in ``telemetry.series``); behind the same optional
  bearer token as ``/metrics``.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources

import orjson
from aiohttp import web

from .series import Series

SERIES_PATH = "/dashboard/series"
STATIC_PREFIX = "/dashboard/static/"
# The only files served, with their content types: a fixed list, so no path ever reaches the package loader.
STATIC_FILES = {
    "dashboard.js": "text/javascript",
    "dashboard.css": "text/css",
    "uPlot.iife.min.js": "text/javascript",
    "uPlot.min.css": "text/css",
    "LICENSE.uPlot": "text/plain",
}
# The page and its script come from the package; a strict policy keeps any injected markup inert.
CSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'"


def static_text(name: str) -> str:
    """A file of the page, read from the installed package (``bauxite/telemetry/static``)."""
    return resources.files("bauxite.telemetry").joinpath("static", name).read_text(encoding="utf-8")


class Dashboard:
    """Serves the page and its data; ``drain`` runs first so the figures include every finished request."""

    def __init__(self, series: Series, drain: Callable[[], object]) -> None:
        self.series = series
        self._drain = drain
        self._files = {name: static_text(name).encode() for name in (*STATIC_FILES, "dashboard.html")}

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/dashboard", self._page)
        app.router.add_get(SERIES_PATH, self._data)
        app.router.add_get(STATIC_PREFIX + "{name}", self._static)

    async def _page(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self._files["dashboard.html"],
            content_type="text/html",
            charset="utf-8",
            headers={"Content-Security-Policy": CSP, "Cache-Control": "no-cache"},
        )

    async def _static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        content_type = STATIC_FILES.get(name)
        if content_type is None:
            raise web.HTTPNotFound()
        return web.Response(body=self._files[name], content_type=content_type, charset="utf-8")

    async def _data(self, request: web.Request) -> web.Response:
        self._drain()
        return web.Response(
            body=orjson.dumps(self.series.as_json()),
            content_type="application/json",
            headers={"Cache-Control": "no-store"},
        )
