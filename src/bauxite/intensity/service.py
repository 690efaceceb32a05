"""Per-region intensity snapshots the request path reads without waiting.

Each configured region has a chain of (provider, query key) links: the configured provider (after any live
enrichment), configured fallbacks, and finally ``static``. Live providers are refreshed by background tasks,
one per distinct (provider, key), so regions sharing a zone share calls. ``current()`` walks the chain and
returns the first value that is fresh enough (stale values are reused up to ``stale_max_age``); the static
table always answers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, cast

from ..state.base import LocalState, SharedState
from ..tasks import cancel_all
from .api import register_routes
from .base import (
    Intensity,
    IntensityError,
    LocalProvider,
    Location,
    RegionalProvider,
    RegionIntensity,
    require_one_signal,
)
from .catalogue import Catalogue, locate
from .config import IntensitySettings
from .http import HttpClient
from .local import StaticProvider, TraceProvider
from .registry import ProviderContext, provider_chain
from .resilience import CircuitBreaker, Feed, backoff_s
from .traces import TraceError

if TYPE_CHECKING:
    from aiohttp import web

    from ..settings import Settings

log = logging.getLogger(__name__)
CURRENT_CACHE_S = 1.0  # how long one lookup answers ``current`` for its region


@dataclass(frozen=True, slots=True)
class _Link:
    provider: RegionalProvider
    key: str
    local: bool  # decided once: an isinstance check against a Protocol is slow on the request path


@dataclass(frozen=True, slots=True)
class _Served:
    value: Intensity
    position: int  # index in the region's chain of the link that answered


class IntensityService:
    def __init__(
        self,
        provider: str,
        regions: Mapping[str, str | None],
        settings: IntensitySettings | None = None,
        *,
        catalogue: Catalogue | None = None,
        clock: Callable[[], float] = time.time,
        env: Mapping[str, str] | None = None,
        state: SharedState | None = None,
    ) -> None:
        self.settings = settings or IntensitySettings()
        # With shared state, one replica calls a provider per refresh and every replica reads its value.
        self._state: SharedState = state or LocalState()
        self.provider_name = provider
        self.catalogue = catalogue or Catalogue.load()
        self._clock = clock
        self._http = HttpClient(self.settings.request_timeout)
        ctx = ProviderContext(self.settings, self.catalogue, self._http, clock)
        if env is not None:
            ctx = replace(ctx, env=env)
        self._providers = provider_chain(provider, ctx)
        self._by_name = {p.name: p for p in reversed(self._providers)}  # the first of a name wins
        self._static = StaticProvider(self.catalogue, clock)
        self._locations = {r: locate(self.catalogue, r, z) for r, z in regions.items()}
        self._chains = {r: self._chain_for(loc) for r, loc in self._locations.items()}
        self._feeds: dict[tuple[str, str], Feed] = {}
        self._breakers = {
            p.name: CircuitBreaker(self.settings.breaker_failures, self.settings.breaker_open, clock)
            for p in self._providers
        }
        for region, chain in self._chains.items():
            for link in chain:
                if not link.local:
                    feed = self._feeds.setdefault(
                        (link.provider.name, link.key), Feed(link.provider.name, link.key)
                    )
                    feed.regions.append(region)
        self._preload_traces()
        self._tasks: list[asyncio.Task[None]] = []
        self._current: dict[str, tuple[float, Intensity]] = {}  # region -> (looked up at, value)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.time,
        env: Mapping[str, str] | None = None,
        state: SharedState | None = None,
    ) -> IntensityService:
        regions: dict[str, str | None] = {}
        for cluster in settings.clusters:
            regions.setdefault(cluster.region, cluster.zone)
        return cls(
            settings.enterprise.carbon_tracking.provider,
            regions,
            settings.intensity,
            clock=clock,
            env=env,
            state=state,
        )

    def _chain_for(self, location: Location) -> list[_Link]:
        links = []
        for provider in self._providers:
            key = provider.key_for(location)
            if key is not None:
                links.append(_Link(provider, key, isinstance(provider, LocalProvider)))
        return links

    def _preload_traces(self) -> None:
        for provider in self._providers:
            if isinstance(provider, TraceProvider):
                keys = [
                    link.key for chain in self._chains.values() for link in chain if link.provider is provider
                ]
                for key in sorted(set(keys)):
                    try:
                        provider.preload([key])
                    except TraceError as exc:  # config validation reports it; serving falls back to static
                        log.warning("intensity trace unavailable, using the static table instead: %s", exc)

    # --- the request path: memory reads only -------------------------------------------------------

    def current(self, region: str) -> Intensity:
        """Latest usable intensity for ``region``; never raises, never waits.

        A request asks several times (route headers, response estimate, settlement): the answer is kept for
        ``CURRENT_CACHE_S`` of the service clock, and dropped at once when a feed brings a new value.
        """
        now_s = self._clock()
        hit = self._current.get(region)
        if hit is not None and hit[0] <= now_s < hit[0] + CURRENT_CACHE_S:
            return hit[1]
        try:
            value = self._serve(region).value
        except Exception:  # a bug here must not fail a request: the static table still answers
            log.exception("intensity lookup failed for region %s; using the static table", region)
            return self._static_for(region)
        self._current[region] = (now_s, value)
        return value

    def _static_for(self, region: str) -> Intensity:
        location = self._locations.get(region) or locate(self.catalogue, region)
        return self._static.lookup(self._static.key_for(location) or region)

    def _serve(self, region: str, *, average_only: bool = False) -> _Served:
        chain = self._chains.get(region)
        if chain is None:
            return _Served(self._static_for(region), -1)
        now_s = self._clock()
        for position, link in enumerate(chain):
            if average_only and link.provider.signal != "average":
                continue
            value = self._read_link(link, now_s)
            if value is not None:
                return _Served(value, position)
        return _Served(self._static_for(region), len(chain))

    def _read_link(self, link: _Link, now_s: float) -> Intensity | None:
        if link.local:
            try:
                return cast(LocalProvider, link.provider).lookup(link.key)
            except IntensityError:
                return None
        feed = self._feeds[(link.provider.name, link.key)]
        return feed.fresh_enough(now_s, self.settings.stale_max_age)

    def for_ranking(self, regions: list[str]) -> dict[str, Intensity]:
        """Values the router may compare with each other: always all of one signal.

        When every region has a marginal value, they are ranked on marginal values. When any region is
        served an average value (its marginal provider is failing, or does not cover it), every region is
        ranked on its average chain instead, because a half-marginal ranking would compare different things.
        """
        values = {region: self.current(region) for region in regions}
        if len({v.signal for v in values.values()}) > 1:
            values = {region: self._serve(region, average_only=True).value for region in regions}
        return require_one_signal(values)

    def snapshot(self) -> list[RegionIntensity]:
        """One row per configured region, for the gauge, the JSON view and the CLI."""
        return [self._row(region) for region in self._locations]

    def _row(self, region: str) -> RegionIntensity:
        served = self._serve(region)
        value, chain = served.value, self._chains[region]
        first = chain[0] if chain else None
        failing = ""
        if first is not None and not first.local:
            feed = self._feeds[(first.provider.name, first.key)]
            failing = feed.last_error if feed.failures else ""
        stale = served.position != 0 or bool(failing)
        return RegionIntensity(
            region=region,
            zone=self._locations[region].zone,
            provider=value.source,
            g_per_kwh=value.g_per_kwh,
            signal=value.signal,
            basis=value.basis,
            age_s=max(0.0, self._clock() - value.fetched_at),
            stale=stale,
            reference=value.reference,
            cfe_share=value.cfe_share,
            year=value.year,
            error=failing,
        )

    def feeds(self) -> list[Feed]:
        """The background feeds (for diagnostics and tests)."""
        return list(self._feeds.values())

    # --- background refresh --------------------------------------------------------------------------

    async def start(self) -> None:
        """Start one refresh task per feed; returns at once (the first values arrive in the background)."""
        if self._tasks:
            return
        for feed in self._feeds.values():
            name = f"intensity-refresh:{feed.provider_name}:{feed.key}"
            self._tasks.append(asyncio.create_task(self._run_feed(feed), name=name))

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        await cancel_all(tasks)
        await self._http.close()

    async def refresh_once(self) -> None:
        """Refresh every feed once, concurrently (for the CLI and tests; the server uses ``start``)."""
        await asyncio.gather(*(self._refresh(feed) for feed in self._feeds.values()))

    async def _run_feed(self, feed: Feed) -> None:
        while True:
            delay_s = await self._refresh(feed)
            await asyncio.sleep(delay_s)

    async def _refresh(self, feed: Feed) -> float:
        """One refresh attempt; returns seconds until the next."""
        breaker = self._breakers[feed.provider_name]
        if not breaker.allow():
            return max(breaker.remaining_s(), self.settings.retry_min)
        provider = self._by_name[feed.provider_name]
        bound_s = 3 * self.settings.request_timeout

        async def fetch() -> Intensity:
            feed.calls += 1
            # The HTTP client has its own time-out; this outer bound also covers slow login + query pairs.
            value = await asyncio.wait_for(provider.current(feed.key), bound_s)
            return replace(value, fetched_at=self._clock())

        name = f"{feed.provider_name}:{feed.key}"
        interval_s = self.settings.refresh_interval
        try:
            value = await self._state.fetch_once(name, interval_s, fetch, lock_s=bound_s + 1.0)
        except (IntensityError, TimeoutError) as exc:
            return self._failed(feed, breaker, exc)
        feed.last = value
        self._current.clear()  # the next lookup sees the new value
        feed.failures, feed.last_error = 0, ""
        breaker.record_success()
        # A value another replica fetched earlier is due for refresh sooner: stay in step with it.
        age_s = max(0.0, self._clock() - value.fetched_at)
        return max(interval_s - age_s, self.settings.retry_min)

    def _failed(self, feed: Feed, breaker: CircuitBreaker, exc: Exception) -> float:
        feed.failures += 1
        feed.last_error = str(exc) or "timed out"
        breaker.record_failure()
        retry_after_s = exc.retry_after_s if isinstance(exc, IntensityError) else None
        delay_s = backoff_s(feed.failures, self.settings.retry_min, self.settings.retry_max, retry_after_s)
        log.warning(
            "intensity %s %s failed (%d in a row, retry in %.0fs): %s",
            feed.provider_name,
            feed.key,
            feed.failures,
            delay_s,
            feed.last_error,
        )
        return delay_s

    # --- HTTP ------------------------------------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        """Register ``GET /v1/carbon/intensity`` (handler: ``intensity.api.handle_intensity``)."""
        register_routes(app, self)
