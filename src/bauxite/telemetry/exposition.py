"""Prometheus exposition: a custom collector that turns running totals into metric families at scrape time.

Nothing is registered in prometheus_client's global registry and multiprocess mode is never used: each
``Telemetry`` owns a fresh ``CollectorRegistry`` holding this one collector.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from ..intensity.base import RegionIntensity
from .aggregate import (
    ADDED_GREEN,
    AVOIDED_GREEN,
    AVOIDED_KV,
    CACHED,
    CARBON,
    CL_COMPLETION,
    CL_ENERGY,
    CL_PROMPT,
    CL_REQUESTS,
    COMPLETION,
    ENERGY,
    PROMPT,
    REQ_ERROR,
    REQ_OK,
    Histogram,
    Totals,
)
from .labels import LabelTables
from .ring import RingBuffer


class TelemetryCollector(Collector):
    def __init__(
        self,
        totals: Totals,
        ring: RingBuffer,
        tables: LabelTables,
        intensity: Callable[[], list[RegionIntensity]],
        # Rows with cluster, region, power_w, attributed_j_total, idle_j_total (EnergyService.cluster_energy).
        cluster_energy: Callable[[], Iterable[Any]] | None,
        cluster_regions: dict[str, str],
    ) -> None:
        self._totals = totals
        self._ring = ring
        self._t = tables
        self._intensity = intensity
        self._cluster_energy = cluster_energy
        self._cluster_regions = cluster_regions  # configured cluster -> region; anything else is not exported
        self._cluster_energy_max: dict[tuple[str, str], float] = {}

    def collect(self) -> Iterator[Metric]:
        yield from self._usage()
        yield from self._routing()
        yield from self._histograms()
        yield from self._grid()
        yield from self._clusters()
        yield from self._cluster_requests()
        yield from self._buffer()

    def _usage(self) -> Iterator[Metric]:
        t = self._t
        labels = ["model", "region", "department"]
        carbon = CounterMetricFamily(
            "bauxite_request_carbon_grams",
            "Grams CO2e attributed to requests (energy x PUE x grid intensity).",
            labels=labels,
        )
        energy = CounterMetricFamily(
            "bauxite_request_energy_joules", "IT energy attributed to requests, in joules.", labels=labels
        )
        requests = CounterMetricFamily(
            "bauxite_requests", "Finished requests by outcome.", labels=[*labels, "status"]
        )
        tokens = CounterMetricFamily("bauxite_tokens", "Tokens processed, by kind.", labels=[*labels, "kind"])
        avoided: dict[tuple[str, str, str], float] = {}
        added: dict[tuple[str, str, str], float] = {}
        for (m, r, d), acc in self._totals.usage.items():
            model, region, dept = t.models.value(m), t.regions.value(r), t.departments.value(d)
            carbon.add_metric([model, region, dept], acc[CARBON])
            energy.add_metric([model, region, dept], acc[ENERGY])
            requests.add_metric([model, region, dept, "ok"], acc[REQ_OK])
            requests.add_metric([model, region, dept, "error"], acc[REQ_ERROR])
            tokens.add_metric([model, region, dept, "prompt"], acc[PROMPT])
            tokens.add_metric([model, region, dept, "completion"], acc[COMPLETION])
            tokens.add_metric([model, region, dept, "cached"], acc[CACHED])
            # Avoided carbon has no region label: sum over regions per (model, department, source).
            for source, slot in (("green_routing", AVOIDED_GREEN), ("kv_cache", AVOIDED_KV)):
                avoided[(model, dept, source)] = avoided.get((model, dept, source), 0.0) + acc[slot]
            key = (model, dept, "green_routing")
            added[key] = added.get(key, 0.0) + acc[ADDED_GREEN]
        avoided_family = CounterMetricFamily(
            "bauxite_carbon_avoided_grams",
            "Grams CO2e avoided versus the latency-first choice (green_routing) and by KV-cache reuse.",
            labels=["model", "department", "source"],
        )
        for key, grams in avoided.items():
            avoided_family.add_metric(list(key), grams)
        added_family = CounterMetricFamily(
            "bauxite_carbon_added_grams",
            "Grams CO2e emitted beyond the latency-first choice where routing chose a dirtier cluster "
            "(fallbacks, affinity); net avoided = avoided − added.",
            labels=["model", "department", "source"],
        )
        for key, grams in added.items():
            added_family.add_metric(list(key), grams)
        yield from (carbon, energy, requests, tokens, avoided_family, added_family)

    def _routing(self) -> Iterator[Metric]:
        t = self._t
        family = CounterMetricFamily(
            "bauxite_routing_decisions",
            "Routing decisions by chosen region and reason.",
            labels=["model", "region", "reason"],
        )
        for (m, r, reason), count in self._totals.routing.items():
            family.add_metric([t.models.value(m), t.regions.value(r), t.reasons.value(reason)], count)
        yield family

    def _histograms(self) -> Iterator[Metric]:
        specs: tuple[tuple[str, str, dict[tuple[int, int], Histogram]], ...] = (
            (
                "bauxite_request_duration_seconds",
                "Request duration, arrival to last byte.",
                self._totals.duration,
            ),
            ("bauxite_time_to_first_token_seconds", "Time to the first token.", self._totals.ttft),
        )
        for name, doc, hists in specs:
            family = HistogramMetricFamily(name, doc, labels=["model", "region"])
            for (m, r), hist in hists.items():
                family.add_metric(
                    [self._t.models.value(m), self._t.regions.value(r)],
                    hist.cumulative(),
                    sum_value=hist.total,
                )
            yield family

    def _grid(self) -> Iterator[Metric]:
        value = GaugeMetricFamily(
            "bauxite_grid_carbon_intensity_gco2_per_kwh",
            "Current grid carbon intensity per configured region.",
            labels=["region", "zone", "provider"],
        )
        age = GaugeMetricFamily(
            "bauxite_grid_carbon_intensity_age_seconds",
            "Age of the grid intensity value in use.",
            labels=["region"],
        )
        try:
            rows = self._intensity()
        except Exception:  # a scrape must never fail because one source misbehaves
            rows = []
        for row in rows:
            if self._t.regions.id(row.region) == 0:
                continue  # only configured regions become label values
            value.add_metric([row.region, row.zone, row.provider], row.g_per_kwh)
            age.add_metric([row.region], max(row.age_s, 0.0))
        yield from (value, age)

    def _clusters(self) -> Iterator[Metric]:
        power = GaugeMetricFamily(
            "bauxite_cluster_power_watts", "Current cluster power draw.", labels=["cluster", "region"]
        )
        energy = CounterMetricFamily(
            "bauxite_cluster_energy_joules",
            "Cluster energy: attributed to requests, or idle/static.",
            labels=["cluster", "region", "kind"],
        )
        for row in self._cluster_rows():
            cluster = str(row.cluster)
            region = self._cluster_regions.get(cluster)
            if region is None:
                continue
            power.add_metric([cluster, region], float(row.power_w))
            for kind, total in (("attributed", row.attributed_j_total), ("idle", row.idle_j_total)):
                energy.add_metric([cluster, region, kind], self._monotonic(cluster, kind, float(total)))
        yield from (power, energy)

    def _cluster_requests(self) -> Iterator[Metric]:
        """Per-cluster request figures (beyond the contract), for energy per 1,000 tokens per cluster."""
        energy = CounterMetricFamily(
            "bauxite_cluster_request_energy_joules",
            "Energy attributed to the requests a cluster served (estimated or measured share).",
            labels=["cluster", "region"],
        )
        tokens = CounterMetricFamily(
            "bauxite_cluster_tokens",
            "Tokens a cluster processed, by kind.",
            labels=["cluster", "region", "kind"],
        )
        requests = CounterMetricFamily(
            "bauxite_cluster_requests", "Requests a cluster served.", labels=["cluster", "region"]
        )
        for cluster, region in self._cluster_regions.items():
            acc = self._totals.clusters.get(self._t.clusters.id(cluster))
            if acc is None:
                acc = [0.0] * (CL_COMPLETION + 1)
            energy.add_metric([cluster, region], acc[CL_ENERGY])
            tokens.add_metric([cluster, region, "prompt"], acc[CL_PROMPT])
            tokens.add_metric([cluster, region, "completion"], acc[CL_COMPLETION])
            requests.add_metric([cluster, region], acc[CL_REQUESTS])
        yield from (energy, tokens, requests)

    def _cluster_rows(self) -> list[Any]:
        if self._cluster_energy is None:
            return []
        try:
            return list(self._cluster_energy())
        except Exception:  # a scrape must never fail because one source misbehaves
            return []

    def _monotonic(self, cluster: str, kind: str, total: float) -> float:
        """Counters never go down, even if the source restarts its own totals."""
        key = (cluster, kind)
        best = max(self._cluster_energy_max.get(key, 0.0), total if total == total else 0.0)
        self._cluster_energy_max[key] = best
        return best

    def _buffer(self) -> Iterator[Metric]:
        ring = self._ring
        yield GaugeMetricFamily(
            "bauxite_telemetry_buffer_capacity_bytes",
            "Size of the telemetry ring buffer.",
            ring.capacity_bytes,
        )
        yield GaugeMetricFamily(
            "bauxite_telemetry_buffer_used_bytes",
            "Bytes of the ring buffer holding undrained records.",
            ring.used_bytes,
        )
        yield GaugeMetricFamily(
            "bauxite_telemetry_buffer_high_water_bytes",
            "Most bytes of the ring buffer ever in use at once.",
            ring.high_water * (ring.capacity_bytes // ring.slots),
        )
        yield GaugeMetricFamily(
            "bauxite_telemetry_buffer_locked",
            "1 when the buffer is locked in RAM (mlock), else 0.",
            1.0 if ring.locked else 0.0,
        )
        yield CounterMetricFamily(
            "bauxite_telemetry_records_dropped",
            "Records discarded because the buffer was full or invalid.",
            ring.dropped,
        )
        yield CounterMetricFamily(
            "bauxite_telemetry_records", "Records drained into the running totals.", self._totals.records
        )
