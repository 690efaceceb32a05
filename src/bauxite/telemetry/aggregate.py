"""Running totals fed from drained ring records. They only ever grow, so counters never go down."""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable

from .labels import NO_REASON
from .ring import STATUS_ERROR, RawRecord

# Slots of one usage accumulator, keyed by (model id, region id, department id).
REQ_OK, REQ_ERROR, PROMPT, COMPLETION, CACHED, ENERGY, CARBON, AVOIDED_GREEN, AVOIDED_KV, ADDED_GREEN = range(
    10
)
USAGE_SLOTS = 10
# Slots of one cluster accumulator, keyed by cluster id: what the requests it served were charged.
CL_REQUESTS, CL_ENERGY, CL_CARBON, CL_PROMPT, CL_COMPLETION = range(5)
CLUSTER_SLOTS = 5

UsageKey = tuple[int, int, int]


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


class Totals:
    """All running totals. ``add`` is the only writer; the collector and report windows only read."""

    def __init__(self, duration_bounds: tuple[float, ...], ttft_bounds: tuple[float, ...]) -> None:
        self.duration_bounds = duration_bounds
        self.ttft_bounds = ttft_bounds
        self.usage: dict[UsageKey, list[float]] = {}
        self.routing: dict[tuple[int, int, int], int] = {}  # (model, region, reason) -> decisions
        self.clusters: dict[int, list[float]] = {}
        self.duration: dict[tuple[int, int], Histogram] = {}
        self.ttft: dict[tuple[int, int], Histogram] = {}
        self.records = 0

    def preinitialise(self, pairs: Iterable[tuple[int, int]], departments: Iterable[int]) -> None:
        """Zero series for configured combinations: dashboards and ``rate()`` see them from the start."""
        depts = list(departments)
        for model, region in pairs:
            for dept in depts:
                self.usage.setdefault((model, region, dept), [0.0] * USAGE_SLOTS)

    def add(self, records: Iterable[RawRecord]) -> int:
        """Fold drained records into the totals; returns how many there were."""
        usage, clusters, routing = self.usage, self.clusters, self.routing
        count = 0
        for rec in records:
            model, region, cluster, dept, reason = rec[0], rec[1], rec[2], rec[3], rec[4]
            acc = usage.get((model, region, dept))
            if acc is None:
                acc = usage[(model, region, dept)] = [0.0] * USAGE_SLOTS
            acc[REQ_ERROR if rec[8] == STATUS_ERROR else REQ_OK] += 1
            acc[PROMPT] += rec[10]
            acc[COMPLETION] += rec[11]
            acc[CACHED] += rec[12]
            energy_j, carbon_g = clean(rec[15]), clean(rec[20])
            acc[ENERGY] += energy_j
            acc[CARBON] += carbon_g
            acc[AVOIDED_GREEN] += clean(rec[21])
            acc[AVOIDED_KV] += clean(rec[22])
            acc[ADDED_GREEN] += clean(rec[24])
            if reason != NO_REASON:
                routing[(model, region, reason)] = routing.get((model, region, reason), 0) + 1
            if cluster:
                per_cluster = clusters.get(cluster)
                if per_cluster is None:
                    per_cluster = clusters[cluster] = [0.0] * CLUSTER_SLOTS
                per_cluster[CL_REQUESTS] += 1
                per_cluster[CL_ENERGY] += energy_j
                per_cluster[CL_CARBON] += carbon_g
                per_cluster[CL_PROMPT] += rec[10]
                per_cluster[CL_COMPLETION] += rec[11]
            self._observe(model, region, rec[13], rec[14])
            count += 1
        self.records += count
        return count

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
