"""Providers answering from memory: the embedded static table, the clouds' yearly tables, trace replay.

None of these does I/O after construction, so the service reads them on every request instead of
refreshing them in the background.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from .base import Intensity, IntensityError, Location, Signal
from .catalogue import Catalogue, RegionEntry
from .config import TraceSettings
from .traces import Trace, load_trace

_ZONE_PREFIX = "zone:"


def _from_entry(entry: RegionEntry, zone: str, source: str, now_s: float) -> Intensity:
    return Intensity(
        zone=zone,
        g_per_kwh=entry.g_per_kwh,
        at=now_s,
        source=source,
        signal="average",
        basis=entry.basis,
        fetched_at=now_s,
        reference=entry.reference,
        year=entry.year,
        cfe_share=entry.cfe_share,
    )


class StaticProvider:
    """The embedded default: every catalogued region's own cloud table, offline, never failing.

    Clusters that name only a grid zone get the value of a catalogued region in that zone, and anything
    else the global average of the shipped AWS table (labelled as such in ``reference``).
    """

    name = "static"
    signal: Signal = "average"

    def __init__(self, catalogue: Catalogue, clock: Callable[[], float]) -> None:
        self._catalogue = catalogue
        self._clock = clock

    def key_for(self, location: Location) -> str | None:
        if location.cloud and location.cloud_region:
            return f"{location.cloud}:{location.cloud_region}"
        return _ZONE_PREFIX + location.zone

    def lookup(self, key: str) -> Intensity:
        now_s = self._clock()
        if key.startswith(_ZONE_PREFIX):
            zone = key.removeprefix(_ZONE_PREFIX)
            entry = self._catalogue.for_zone(zone) or self._catalogue.default
            return _from_entry(entry, zone, self.name, now_s)
        entry = self._catalogue.find(key) or self._catalogue.default
        return _from_entry(entry, entry.zone or entry.region, self.name, now_s)

    async def current(self, zone: str) -> Intensity:
        return self.lookup(zone)


class CloudTableProvider:
    """A cloud provider's own published yearly per-region figures (google_cloud, aws, azure).

    Covers only that cloud's regions; the service falls back to ``static`` for the others.
    """

    signal: Signal = "average"

    def __init__(self, name: str, cloud: str, catalogue: Catalogue, clock: Callable[[], float]) -> None:
        self.name = name
        self._cloud = cloud
        self._catalogue = catalogue
        self._clock = clock

    def key_for(self, location: Location) -> str | None:
        if location.cloud == self._cloud and location.cloud_region:
            return f"{self._cloud}:{location.cloud_region}"
        return None

    def lookup(self, key: str) -> Intensity:
        entry = self._catalogue.find(key)
        if entry is None:
            raise IntensityError(f"{self.name} publishes no figure for {key!r}")
        return _from_entry(entry, entry.zone or entry.region, self.name, self._clock())

    async def current(self, zone: str) -> Intensity:
        return self.lookup(zone)


class TraceProvider:
    """Replays hourly traces: ``now`` maps to ``start_at`` in the trace, advancing ``speedup`` times faster.

    The replay wraps around at the end of a trace so a long demo never runs out of data.
    """

    name = "trace"
    signal: Signal = "average"

    def __init__(self, settings: TraceSettings, catalogue: Catalogue, clock: Callable[[], float]) -> None:
        self._settings = settings
        self._clock = clock
        self._started_s = clock()
        self._traces: dict[str, tuple[Trace, float]] = {}  # by key: the trace and its replay anchor
        self._catalogue = catalogue

    def preload(self, sources: list[str]) -> None:
        """Read the traces the configured regions need (at start-up: file reads stay off the request path)."""
        for source in sources:
            if source not in self._traces:
                trace = load_trace(source)
                self._traces[source] = (trace, self._anchor_s(trace))

    def key_for(self, location: Location) -> str | None:
        mapped: Mapping[str, str] = self._settings.traces
        return (
            mapped.get(location.region)
            or mapped.get(location.zone)
            or location.balancing_authority
            or self._settings.default
        )

    def _anchor_s(self, trace: Trace) -> float:
        """Seconds into ``trace`` that the moment replay started maps to (fixed once the trace is loaded)."""
        start_at = self._settings.start_at
        if start_at is None:
            started = datetime.fromtimestamp(self._started_s, UTC)
            year_start = datetime(started.year, 1, 1, tzinfo=UTC).timestamp()
            return self._started_s - year_start  # same moment of the year as when replay started
        moment = start_at if start_at.tzinfo else start_at.replace(tzinfo=UTC)
        return moment.timestamp() - trace.start_s

    def lookup(self, key: str) -> Intensity:
        loaded = self._traces.get(key)
        if loaded is None:
            raise IntensityError(f"trace {key!r} was not loaded at start-up")
        trace, anchor_s = loaded
        now_s = self._clock()
        offset_s = anchor_s + (now_s - self._started_s) * self._settings.speedup
        replayed_s = trace.start_s + offset_s % trace.duration_s
        moment = datetime.fromtimestamp(replayed_s, UTC).strftime("%Y-%m-%dT%H:00Z")
        return Intensity(
            zone=key,
            g_per_kwh=trace.at(replayed_s),
            at=now_s,
            source=self.name,
            signal="average",
            basis="lifecycle",
            fetched_at=now_s,
            reference=f"trace {trace.name} replaying {moment}",
        )

    async def current(self, zone: str) -> Intensity:
        return self.lookup(zone)
