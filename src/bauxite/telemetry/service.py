"""Telemetry facade the app talks to: ``submit`` records, serve ``/metrics`` and ``/v1/carbon/reports``.

Data path: ``submit`` interns labels and packs the record into the ring buffer (no allocation beyond the call,
no I/O, no lock); ``drain`` — on every scrape, every report close and a short timer — folds the buffer into
running totals; the collector renders those totals. Everything runs on the gateway's event-loop thread; a
``submit`` from any other thread is handed to the loop rather than touching the buffer concurrently.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest

from ..errors import error_response
from ..intensity.base import RegionIntensity
from ..records import RequestRecord
from ..tasks import cancel_all
from .aggregate import Totals
from .codec import packer
from .config import TelemetryConfigError
from .dashboard import Dashboard
from .exposition import TelemetryCollector
from .http import token_middleware
from .labels import LabelTables
from .reports import Reports, windows_csv
from .ring import CAPACITY_BYTES, Ring, RingBuffer
from .series import Series

if TYPE_CHECKING:
    from ..clusters import Fleet
    from ..intensity.service import IntensityService
    from ..settings import Settings

MULTIPROC_ENV = ("PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir")
# The classic text format every Prometheus 2.x parses; all our names are legacy-valid, so no escaping applies.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_log = logging.getLogger(__name__)


class Telemetry:
    def __init__(
        self,
        settings: Settings,
        *,
        intensity: Callable[[], list[RegionIntensity]] | None = None,
        cluster_energy: Callable[[], Iterable[Any]] | None = None,
        token: str | None = None,
        capacity_bytes: int = CAPACITY_BYTES,
        ring: Ring | None = None,
    ) -> None:
        cfg = settings.telemetry
        self.settings = cfg
        self.tables = LabelTables.from_settings(settings)
        self._pack = packer(self.tables)
        # A given ring is shared with other processes (``serve --workers``); else this process owns one.
        self.ring: Ring = (
            ring if ring is not None else RingBuffer(capacity_bytes, lock_memory=cfg.lock_memory)
        )
        self.totals = Totals(cfg.duration_buckets_s, cfg.ttft_buckets_s)
        self.totals.preinitialise(self.tables.served_pairs(settings), range(1, len(self.tables.departments)))
        self.totals.preinitialise_endpoints(self.tables.served_endpoints(settings))
        cluster_regions = {c.name: c.region for c in settings.clusters}
        self.reports = Reports(
            self.totals, self.tables, cluster_regions, cluster_energy,
            settings.enterprise.carbon_tracking.reporting_interval, cfg.reports_kept,
        )  # fmt: skip
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(
            TelemetryCollector(
                self.totals,
                self.ring,
                self.tables,
                intensity or (lambda: []),
                cluster_energy,
                cluster_regions,
            )
        )
        green = settings.enterprise.green_routing
        threshold = green.threshold_gco2 if green.enabled else None
        self.dashboard = Dashboard(Series(self.registry.collect, threshold_g_per_kwh=threshold), self.drain)
        self._token = token
        # Shared state hooks: closed windows are also handed to these, and when ``shared_windows`` gives
        # every replica's windows, /v1/carbon/reports answers with them merged.
        self.window_sinks: list[Callable[[dict[str, Any]], None]] = []
        self.shared_windows: Callable[[], Awaitable[list[dict[str, Any]] | None]] | None = None
        self._thread = threading.get_ident()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.reports.open(time.time(), 0)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        fleet: Fleet,
        intensity: IntensityService,
        cluster_accounts: Callable[[], Iterable[Any]] | None = None,
        ring: Ring | None = None,
    ) -> Telemetry:
        """Build from configuration; raises ``TelemetryConfigError`` for a setup that breaks a promise."""
        for name in MULTIPROC_ENV:
            if os.environ.get(name):
                raise TelemetryConfigError(
                    f"{name} is set: Prometheus multiprocess mode writes metric files to disk, which Bauxite "
                    "never does (request telemetry stays in memory). Unset it; /metrics is served directly."
                )
        token = None
        if settings.telemetry.token_env:
            token = os.environ.get(settings.telemetry.token_env, "")
            if not token.strip():
                raise TelemetryConfigError(
                    f"telemetry.token_env names {settings.telemetry.token_env!r}, but that environment "
                    "variable is unset or empty; set it to the bearer token /metrics and /v1/carbon/* "
                    "should require"
                )
        return cls(
            settings,
            intensity=intensity.snapshot,
            cluster_energy=cluster_accounts,
            token=token.strip() if token else None,
            ring=ring,
        )

    def submit(self, record: RequestRecord) -> None:
        """Append one record to the ring. Never blocks, never raises; a full buffer counts a drop."""
        try:
            if threading.get_ident() != self._thread:
                self._submit_elsewhere(record)
                return
            self.ring.append(*self._pack(record))
        except Exception:  # a malformed record must not break the request that produced it
            self.ring.dropped += 1

    def _submit_elsewhere(self, record: RequestRecord) -> None:
        """Called off the loop thread (e.g. a measured-energy callback): hop onto the loop, the writer."""
        loop = self._loop
        if loop is None or loop.is_closed():
            self.ring.dropped += 1
            return
        loop.call_soon_threadsafe(self.submit, record)

    def drain(self) -> int:
        """Fold every buffered record into the running totals; returns how many."""
        return self.totals.add(self.ring.drain())

    def close_window(self, now: float | None = None) -> dict[str, Any]:
        """Drain, then close the current reporting window (normally done by the timer)."""
        self.drain()
        window = self.reports.close(time.time() if now is None else now, self.ring.dropped)
        for sink in self.window_sinks:
            try:
                sink(window)
            except Exception:  # sharing a report must never stop reporting
                _log.exception("could not share a report window")
        return window

    def render_metrics(self) -> bytes:
        """Prometheus text exposition, after draining the buffer so a scrape sees every finished request."""
        self.drain()
        return generate_latest(self.registry)

    # HTTP -------------------------------------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        """Register ``GET /metrics`` and ``GET /v1/carbon/reports`` (unless a separate listener is
        configured) and, with a token configured, a first middleware requiring it on ``/metrics`` and
        ``/v1/carbon/*``."""
        if self._token:
            app.middlewares.insert(0, token_middleware(self._token))
        if self.settings.listen_port is None:
            self._register(app)

    def admin_app(self) -> web.Application | None:
        """The separate telemetry listener's app when ``telemetry.listen_port`` is set, else None."""
        if self.settings.listen_port is None:
            return None
        app = web.Application(middlewares=[token_middleware(self._token)] if self._token else [])
        self._register(app)
        return app

    def _register(self, app: web.Application) -> None:
        app.router.add_get("/metrics", self._metrics_handler)
        app.router.add_get("/v1/carbon/reports", self._reports_handler)
        self.dashboard.add_routes(app)

    async def _metrics_handler(self, request: web.Request) -> web.Response:
        return web.Response(body=self.render_metrics(), headers={"Content-Type": CONTENT_TYPE})

    async def _reports_handler(self, request: web.Request) -> web.Response:
        limit: int | None = None
        if "limit" in request.query:
            try:
                limit = int(request.query["limit"])
            except ValueError:
                limit = -1
            if limit < 0:  # 0 is a valid limit: no windows, only the report's header fields
                return _bad_query("limit", "limit must be a whole number ≥ 0 (the latest N windows)")
        fmt = request.query.get("format", "json")
        if fmt not in ("json", "csv"):
            return _bad_query("format", "format must be 'json' or 'csv'")
        table = request.query.get("table", "usage")
        if fmt == "csv" and table not in ("usage", "clusters"):
            return _bad_query("table", "table must be 'usage' or 'clusters'")
        merged = await self._merged_windows(limit)
        if fmt == "csv":
            body = self.reports.as_csv(limit, table) if merged is None else windows_csv(merged, table)
            return web.Response(body=body, content_type="text/csv", charset="utf-8")
        if merged is None:
            return web.Response(body=self.reports.as_json(limit), content_type="application/json")
        doc = orjson.loads(self.reports.as_json(0))
        doc.update(windows=merged, shared=True)
        return web.Response(body=orjson.dumps(doc), content_type="application/json")

    async def _merged_windows(self, limit: int | None) -> list[dict[str, Any]] | None:
        """Every replica's closed windows merged per period (the latest ``limit``), when shared state offers
        them; None means "use this process's own windows" (no shared state, or it is unreachable)."""
        if self.shared_windows is None:
            return None
        windows = await self.shared_windows()
        if windows is None:
            return None
        from ..state.reports import merge_windows

        merged = merge_windows(windows, self.reports.interval_s)
        if limit is not None:
            merged = merged[-limit:] if limit > 0 else []
        return merged

    # Lifecycle --------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Adopt the running loop's thread as the only writer and start the drain and report timers."""
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self.reports.open(time.time(), self.ring.dropped)
        self._tasks = [
            asyncio.create_task(self._drain_every(self.settings.drain_interval), name="telemetry-drain"),
            asyncio.create_task(self._close_windows(), name="telemetry-reports"),
            asyncio.create_task(self.dashboard.series.sample_every(), name="telemetry-dashboard"),
        ]
        if not self.ring.locked and self.settings.lock_memory:
            _log.info("telemetry buffer not locked in RAM (mlock refused; raise RLIMIT_MEMLOCK to allow it)")

    async def stop(self) -> None:
        """Stop the timers, close the last (partial) window so its figures are logged, free the buffer."""
        await cancel_all(self._tasks)
        self._tasks = []
        if not self.ring.closed:
            self.close_window()
            self.ring.close()

    async def _drain_every(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            self.drain()

    async def _close_windows(self) -> None:
        interval = self.reports.interval_s
        boundary = (math.floor(time.time() / interval) + 1) * interval
        while True:
            # Close on wall-clock multiples of the interval (hourly windows end on the hour). The sleep runs
            # on the monotonic clock: if it ends a little before the wall-clock boundary, sleep the rest
            # rather than close the window early and then again for the same boundary.
            await asyncio.sleep(max(boundary - time.time(), 0.0))
            now = time.time()
            if now < boundary:
                continue
            self.close_window(now)
            boundary = (math.floor(now / interval) + 1) * interval


def _bad_query(param: str, message: str) -> web.Response:
    return error_response(400, message, "invalid_query", param)
