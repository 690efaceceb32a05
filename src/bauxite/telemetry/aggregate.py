"""Running totals fed from drained ring records. They only ever grow, so counters never go down."""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable

from ..records import FLAG_BIT, INDEX, RawRecord, enum_index
from .labels import NO_REASON

SUMMED: tuple[str, ...] = (
    "prompt_tokens", "completion_tokens", "cached_tokens", "energy_j", "energy_j_min", "energy_j_max",
    "gpu_j", "gpu_idle_j", "host_j", "carbon_g", "carbon_market_g", "embodied_g", "avoided_green_g",
    "avoided_kv_g", "avoided_green_net_g",
)  # fmt: skip
"""Record fields summed into every accumulator (per model/region/department and per cluster)."""
MEASURED: tuple[str, ...] = ("energy_j_measured", "requests_measured")
"""Sums over the records whose GPU energy was metered (``energy_measured``): their facility energy and
their count. With ``energy_j`` they give the share of energy resting on a meter rather than an estimate."""
REQ_OK, REQ_ERROR = 0, 1
SLOT: dict[str, int] = {name: 2 + i for i, name in enumerate((*SUMMED, *MEASURED))}
USAGE_SLOTS = 2 + len(SUMMED) + len(MEASURED)
_SOURCES = tuple((SLOT[name], INDEX[name]) for name in SUMMED)
_MEASURED_J, _MEASURED_N = SLOT["energy_j_measured"], SLOT["requests_measured"]
_ENERGY, _FLAGS, _METERED = INDEX["energy_j"], INDEX["flags"], FLAG_BIT["energy_measured"]
_MODEL, _REGION, _CLUSTER, _DEPT, _REASON = (
    INDEX["model"], INDEX["region"], INDEX["cluster"], INDEX["department"], INDEX["route_reason"]
)  # fmt: skip
_STATUS, _TTFT, _DURATION = INDEX["status"], INDEX["ttft_s"], INDEX["duration_s"]
_ENDPOINT = INDEX["endpoint"]
_SOURCE, _SIGNAL, _BASIS = INDEX["intensity_source"], INDEX["intensity_signal"], INDEX["intensity_basis"]
_OK = enum_index("status", "ok")  # errors and cancellations both count as not ok

UsageKey = tuple[int, int, int]
EndpointKey = tuple[int, int]  # (endpoint id, model id): usage slots per wire API


def clean(value: float) -> float:
    """Finite and non-negative, else 0: one NaN would poison a running total forever."""
    return value if 0.0 <= value < math.inf else 0.0


class Histogram:
    """Non-cumulative bucket counts (last bucket is +Inf) plus the sum; cumulated only when exported."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        # bisect_left puts a value equal to a bound into that bound's bucket, matching Prometheus' "le".
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, int]]:
        out: list[tuple[str, int]] = []
        running = 0
        for bound, count in zip((*map(_le, self.bounds), "+Inf"), self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out


def _le(bound: float) -> str:
    return repr(float(bound))


def _summed(rec: RawRecord) -> list[tuple[int, float]]:
    """(``SLOT`` position, cleaned value) of each summed field of one record: cleaned once, folded into
    each of the record's accumulators."""
    return [(slot, clean(rec[index])) for slot, index in _SOURCES]


def _fold(acc: list[float], summed: list[tuple[int, float]], outcome: int, metered_j: float | None) -> None:
    """Add one record (its ``_summed`` values; ``metered_j`` its cleaned energy when metered, else None) to
    an accumulator (``SLOT`` positions)."""
    acc[outcome] += 1
    for slot, value in summed:
        acc[slot] += value
    if metered_j is not None:
        acc[_MEASURED_J] += metered_j
        acc[_MEASURED_N] += 1


class Totals:
    """All running totals. ``add`` is the only writer; the collector and report windows only read."""

    def __init__(self, duration_bounds: tuple[float, ...], ttft_bounds: tuple[float, ...]) -> None:
        self.duration_bounds = duration_bounds
        self.ttft_bounds = ttft_bounds
        self.usage: dict[UsageKey, list[float]] = {}
        self.routing: dict[tuple[int, int, int], int] = {}  # (model, region, reason) -> decisions
        self.clusters: dict[int, list[float]] = {}  # by cluster id, same slots as ``usage``
        self.endpoints: dict[EndpointKey, list[float]] = {}  # by (endpoint id, model id), same slots
        self.duration: dict[tuple[int, int], Histogram] = {}
        self.ttft: dict[tuple[int, int], Histogram] = {}
        self.records = 0
        # Per region id: (source id, signal index, basis index) of the latest record, for the reports.
        self.region_basis: dict[int, tuple[int, int, int]] = {}

    def preinitialise(self, pairs: Iterable[tuple[int, int]], departments: Iterable[int]) -> None:
        """Zero series for configured combinations: dashboards and ``rate()`` see them from the start."""
        depts = list(departments)
        for model, region in pairs:
            for dept in depts:
                self.usage.setdefault((model, region, dept), [0.0] * USAGE_SLOTS)

    def preinitialise_endpoints(self, pairs: Iterable[EndpointKey]) -> None:
        """Zero per-API series for the (endpoint, model) pairs configured clusters serve."""
        for key in pairs:
            self.endpoints.setdefault(key, [0.0] * USAGE_SLOTS)

    def add(self, records: Iterable[RawRecord]) -> int:
        """Fold drained records into the totals; returns how many there were."""
        usage, clusters, routing = self.usage, self.clusters, self.routing
        count = 0
        for rec in records:
            model, region, cluster, reason = rec[_MODEL], rec[_REGION], rec[_CLUSTER], rec[_REASON]
            key = (model, region, rec[_DEPT])
            acc = usage.get(key)
            if acc is None:
                acc = usage[key] = [0.0] * USAGE_SLOTS
            per_cluster = clusters.get(cluster) if cluster else None
            if cluster and per_cluster is None:
                per_cluster = clusters[cluster] = [0.0] * USAGE_SLOTS
            outcome = REQ_OK if rec[_STATUS] == _OK else REQ_ERROR
            metered_j = clean(rec[_ENERGY]) if rec[_FLAGS] & _METERED else None
            summed = _summed(rec)
            _fold(acc, summed, outcome, metered_j)
            if per_cluster is not None:
                _fold(per_cluster, summed, outcome, metered_j)
            self._add_endpoint(rec, model, summed, outcome, metered_j)
            if reason != NO_REASON:
                routing[(model, region, reason)] = routing.get((model, region, reason), 0) + 1
            self.region_basis[region] = (rec[_SOURCE], rec[_SIGNAL], rec[_BASIS])
            self._observe(model, region, rec[_TTFT], rec[_DURATION])
            count += 1
        self.records += count
        return count

    def _add_endpoint(
        self,
        rec: RawRecord,
        model: int,
        summed: list[tuple[int, float]],
        outcome: int,
        metered_j: float | None,
    ) -> None:
        key = (rec[_ENDPOINT], model)
        acc = self.endpoints.get(key)
        if acc is None:
            acc = self.endpoints[key] = [0.0] * USAGE_SLOTS
        _fold(acc, summed, outcome, metered_j)

    def _observe(self, model: int, region: int, ttft_s: float, duration_s: float) -> None:
        key = (model, region)
        hist = self.duration.get(key)
        if hist is None:
            hist = self.duration[key] = Histogram(self.duration_bounds)
        hist.observe(clean(duration_s))
        if 0.0 <= ttft_s < math.inf:  # -1 means no token ever arrived: not an observation
            first = self.ttft.get(key)
            if first is None:
                first = self.ttft[key] = Histogram(self.ttft_bounds)
            first.observe(ttft_s)

    def usage_snapshot(self) -> dict[UsageKey, list[float]]:
        return {key: list(acc) for key, acc in self.usage.items()}

    def cluster_snapshot(self) -> dict[int, list[float]]:
        return {key: list(acc) for key, acc in self.clusters.items()}
