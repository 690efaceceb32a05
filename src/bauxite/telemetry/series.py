"""The dashboard page's data: the telemetry totals sampled every 10 s, kept in memory for the last hour.

Each sample reads the metric families the Prometheus collector renders from the running totals, so the page
and ``/metrics`` never disagree, and a figure added to the exposition needs a line in ``PICKS`` to show here.
Samples hold only sums per configured label value (department, model, region, cluster, reason, source): no
request data. At most ``window_s / bucket_s + 1`` samples are kept; nothing is written to disk.

JSON shape (``Series.as_json``)::

    {"bucket_s": 10.0, "window_s": 3600.0, "started_at": <unix s>, "now": <unix s>,
     "threshold_gco2_per_kwh": 200.0 | null,
     "kinds": {group: "counter" | "gauge"}, "units": {group: "g" | "J" | ...},
     "t": [<unix s at the end of each bucket>, ...],          # the last entry is "now" (a partial bucket)
     "dt_s": [<length of each bucket in s>, ...],             # divide an increase by it for a rate
     "series": {group: {label value: [per-bucket increase (counters) or value at sample time (gauges)]}},
     "since_start": {group: {label value: total since the gateway started, or current value}},
     "last_hour": {group: {label value: increase over the last window_s, or current value}}}
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from prometheus_client.core import Metric

BUCKET_S = 10.0
WINDOW_S = 3600.0
TOTAL = "total"  # the one label value of a group that is not split by a label

Kind = Literal["counter", "gauge"]
Snapshot = dict[str, dict[str, float]]


@dataclass(frozen=True, slots=True)
class Pick:
    """One dashboard group: a metric family summed by one label (or in total), optionally filtered."""

    group: str
    family: str
    by: str | None
    kind: Kind
    unit: str
    where: tuple[tuple[str, str], ...] = ()


IDLE = (("kind", "idle"),)
PICKS: tuple[Pick, ...] = (
    Pick("carbon_g_by_region", "bauxite_request_carbon_grams", "region", "counter", "g"),
    Pick("carbon_g_by_department", "bauxite_request_carbon_grams", "department", "counter", "g"),
    Pick("carbon_g_by_model", "bauxite_request_carbon_grams", "model", "counter", "g"),
    # Clusters' idle (unattributed) carbon, where the exposition exports it: part of the fleet's real total.
    Pick("idle_carbon_g_by_region", "bauxite_cluster_carbon_grams", "region", "counter", "g", IDLE),
    Pick("energy_j", "bauxite_request_energy_joules", None, "counter", "J"),
    Pick("avoided_g_by_source", "bauxite_carbon_avoided_grams", "source", "counter", "g"),
    Pick("added_g_by_source", "bauxite_carbon_added_grams", "source", "counter", "g"),
    Pick("routing_by_reason", "bauxite_routing_decisions", "reason", "counter", "decisions"),
    Pick("tokens_by_kind", "bauxite_tokens", "kind", "counter", "tokens"),
    Pick("cluster_energy_j", "bauxite_cluster_request_energy_joules", "cluster", "counter", "J"),
    Pick("cluster_tokens", "bauxite_cluster_tokens", "cluster", "counter", "tokens"),
    Pick("intensity_g_per_kwh", "bauxite_grid_carbon_intensity_gco2_per_kwh", "region", "gauge", "gCO2e/kWh"),
    Pick("buffer_used_bytes", "bauxite_telemetry_buffer_used_bytes", None, "gauge", "bytes"),
    Pick("buffer_high_water_bytes", "bauxite_telemetry_buffer_high_water_bytes", None, "gauge", "bytes"),
    Pick("buffer_capacity_bytes", "bauxite_telemetry_buffer_capacity_bytes", None, "gauge", "bytes"),
    Pick("records_dropped", "bauxite_telemetry_records_dropped", None, "counter", "records"),
)


def snapshot(families: Iterable[Metric], picks: tuple[Pick, ...] = PICKS) -> Snapshot:
    """Sum each pick's samples by its label; a family that is absent gives an empty group."""
    by_family: dict[str, list[Pick]] = {}
    for pick in picks:
        by_family.setdefault(pick.family, []).append(pick)
    out: Snapshot = {pick.group: {} for pick in picks}
    for family in families:
        wanted = by_family.get(family.name)
        if not wanted:
            continue
        # A counter's value sample is "<name>_total"; "_created" samples are timestamps, not values.
        names = (family.name, family.name + "_total")
        for sample in family.samples:
            if sample.name not in names or not math.isfinite(sample.value):
                continue
            for pick in wanted:
                if all(sample.labels.get(k) == v for k, v in pick.where):
                    key = sample.labels.get(pick.by, "") if pick.by else TOTAL
                    group = out[pick.group]
                    group[key] = group.get(key, 0.0) + sample.value
    return out


class Series:
    """A bounded ring of snapshots, one per bucket; ``sample`` is the only writer."""

    def __init__(
        self,
        collect: Callable[[], Iterable[Metric]],
        *,
        threshold_g_per_kwh: float | None = None,
        bucket_s: float = BUCKET_S,
        window_s: float = WINDOW_S,
        picks: tuple[Pick, ...] = PICKS,
    ) -> None:
        if bucket_s <= 0 or window_s < bucket_s:
            raise ValueError("bucket_s must be positive and window_s at least one bucket")
        self._collect = collect
        self._picks = picks
        self.threshold_g_per_kwh = threshold_g_per_kwh
        self.bucket_s = bucket_s
        self.window_s = window_s
        self._samples: deque[tuple[float, Snapshot]] = deque(maxlen=int(window_s / bucket_s) + 1)
        self.started_at = time.time()

    def __len__(self) -> int:
        return len(self._samples)

    def take(self) -> Snapshot:
        return snapshot(self._collect(), self._picks)

    def sample(self, now: float | None = None) -> None:
        """Append the current totals as the sample ending the bucket at ``now`` (unix seconds)."""
        self._samples.append((time.time() if now is None else now, self.take()))

    async def sample_every(self) -> None:
        """Sample on wall-clock multiples of ``bucket_s`` until cancelled; the first one is the baseline."""
        self.started_at = time.time()
        self.sample(self.started_at)
        while True:
            now = time.time()
            await asyncio.sleep((math.floor(now / self.bucket_s) + 1) * self.bucket_s - now)
            self.sample()

    def as_json(self, now: float | None = None) -> dict[str, Any]:
        """The page's data: the stored samples plus the current totals as a last, partial bucket."""
        now = time.time() if now is None else now
        current = self.take()
        points = [*self._samples, (now, current)]
        kinds = {pick.group: pick.kind for pick in self._picks}
        oldest = next((snap for t, snap in points if t >= now - self.window_s), current)
        return {
            "bucket_s": self.bucket_s,
            "window_s": self.window_s,
            "started_at": self.started_at,
            "now": now,
            "threshold_gco2_per_kwh": self.threshold_g_per_kwh,
            "kinds": kinds,
            "units": {pick.group: pick.unit for pick in self._picks},
            "t": [t for t, _ in points[1:]] if len(points) > 1 else [now],
            "dt_s": [b - a for (a, _), (b, _) in itertools.pairwise(points)] or [0.0],
            "series": {g: _series(g, kind, points) for g, kind in kinds.items()},
            "since_start": current,
            "last_hour": {g: _increase(g, kind, oldest, current) for g, kind in kinds.items()},
        }


def _series(group: str, kind: Kind, points: list[tuple[float, Snapshot]]) -> dict[str, list[float | None]]:
    names = sorted({name for _, snap in points for name in snap.get(group, {})})
    out: dict[str, list[float | None]] = {}
    for name in names:
        values = [snap.get(group, {}).get(name) for _, snap in points]
        if kind == "gauge":
            out[name] = values[1:] if len(values) > 1 else values
            continue
        # A name that appears mid-window started from zero (totals only grow from process start).
        steps = [(b or 0.0) - (a or 0.0) for a, b in itertools.pairwise(values)]
        out[name] = [max(step, 0.0) for step in steps] if steps else [0.0]
    return out


def _increase(group: str, kind: Kind, before: Snapshot, after: Snapshot) -> dict[str, float]:
    now = after.get(group, {})
    if kind == "gauge":
        return dict(now)
    then = before.get(group, {})
    return {name: max(value - then.get(name, 0.0), 0.0) for name, value in now.items()}
