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
from ..records import enum_value
from .aggregate import REQ_ERROR, REQ_OK, SLOT, USAGE_SLOTS, Histogram, Totals
from .labels import LabelTables
from .ring import Ring

_REQUEST_SUMS = (
    ("bauxite_request_carbon_grams",
     "Grams CO2e of requests, location-based: facility energy x grid intensity (SCI's E x I).",
     ("carbon_g",)),
    ("bauxite_request_energy_joules",
     "Request energy at the facility boundary: (GPU + host share) x PUE, joules.", ("energy_j",)),
    ("bauxite_request_energy_min_joules",
     "Low bound of request energy at the facility boundary, summed over requests, joules.",
     ("energy_j_min",)),
    ("bauxite_request_energy_max_joules",
     "High bound of request energy at the facility boundary, summed over requests, joules.",
     ("energy_j_max",)),
    ("bauxite_request_measured_energy_joules",
     "Facility energy of the requests whose GPU energy was metered (DCGM/NVML), joules; the rest of "
     "bauxite_request_energy_joules is estimated.", ("energy_j_measured",)),
    ("bauxite_request_it_energy_joules", "Request IT energy: GPU + host share, joules.", ("gpu_j", "host_j")),
    ("bauxite_request_gpu_energy_joules",
     "Request GPU energy (measured or estimated), including the resident-idle share, joules.", ("gpu_j",)),
    ("bauxite_request_embodied_carbon_grams",
     "Embodied grams CO2e of the hardware requests occupied, amortised over its lifetime (SCI's M).",
     ("embodied_g",)),
    ("bauxite_request_market_carbon_grams",
     "Grams CO2e of requests, market-based: the region's configured residual-mix or contract factor, "
     "else location-based.", ("carbon_market_g",)),
)  # fmt: skip


class TelemetryCollector(Collector):
    def __init__(
        self,
        totals: Totals,
        ring: Ring,
        tables: LabelTables,
        intensity: Callable[[], list[RegionIntensity]],
        # ``accounting.ClusterAccount`` rows: power, metered energy totals, idle carbon and embodied totals.
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
        yield from self._endpoints()
        yield from self._routing()
        yield from self._histograms()
        yield from self._grid()
        yield from self._clusters()
        yield from self._cluster_carbon()
        yield from self._cluster_requests()
        yield from self._buffer()

    def _usage(self) -> Iterator[Metric]:
        t = self._t
        labels = ["model", "region", "department"]
        per_request = [
            (CounterMetricFamily(name, doc, labels=labels), tuple(SLOT[f] for f in fields))
            for name, doc, fields in _REQUEST_SUMS
        ]
        requests = CounterMetricFamily(
            "bauxite_requests", "Finished requests by outcome.", labels=[*labels, "status"]
        )
        tokens = CounterMetricFamily("bauxite_tokens", "Tokens processed, by kind.", labels=[*labels, "kind"])
        avoided: dict[tuple[str, str, str], float] = {}
        added: dict[tuple[str, str, str], float] = {}
        for (m, r, d), acc in self._totals.usage.items():
            values = [t.models.value(m), t.regions.value(r), t.departments.value(d)]
            for family, slots in per_request:
                family.add_metric(values, sum(acc[slot] for slot in slots))
            requests.add_metric([*values, "ok"], acc[REQ_OK])
            requests.add_metric([*values, "error"], acc[REQ_ERROR])
            for kind in ("prompt", "completion", "cached"):
                tokens.add_metric([*values, kind], acc[SLOT[f"{kind}_tokens"]])
            # Avoided carbon has no region label: sum over regions per (model, department, source).
            for source, field in (("green_routing", "avoided_green_g"), ("kv_cache", "avoided_kv_g")):
                key = (values[0], values[2], source)
                avoided[key] = avoided.get(key, 0.0) + acc[SLOT[field]]
            # Added = gross − net, summed per record: what routing emitted beyond the counterfactual.
            key = (values[0], values[2], "green_routing")
            added[key] = added.get(key, 0.0) + max(
                acc[SLOT["avoided_green_g"]] - acc[SLOT["avoided_green_net_g"]], 0.0
            )
        avoided_family = CounterMetricFamily(
            "bauxite_carbon_avoided_grams",
            "Grams CO2e (location-based, facility boundary) avoided versus the latency-first choice "
            "(green_routing) and by KV-cache reuse.",
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
        yield from (family for family, _ in per_request)
        yield from (requests, tokens, avoided_family, added_family)

    def _endpoints(self) -> Iterator[Metric]:
        """The same request figures by wire API (chat, completion, embedding, responses, messages)."""
        t = self._t
        labels = ["endpoint", "model"]
        requests = CounterMetricFamily(
            "bauxite_endpoint_requests",
            "Finished requests by wire API and outcome.",
            labels=[*labels, "status"],
        )
        tokens = CounterMetricFamily(
            "bauxite_endpoint_tokens", "Tokens processed by wire API, by kind.", labels=[*labels, "kind"]
        )
        energy = CounterMetricFamily(
            "bauxite_endpoint_energy_joules",
            "Request energy by wire API at the facility boundary: (GPU + host share) x PUE, joules.",
            labels=labels,
        )
        carbon = CounterMetricFamily(
            "bauxite_endpoint_carbon_grams",
            "Grams CO2e of requests by wire API, location-based: facility energy x grid intensity.",
            labels=labels,
        )
        for (e, m), acc in self._totals.endpoints.items():
            values = [enum_value("endpoint", e), t.models.value(m)]
            requests.add_metric([*values, "ok"], acc[REQ_OK])
            requests.add_metric([*values, "error"], acc[REQ_ERROR])
            for kind in ("prompt", "completion", "cached"):
                tokens.add_metric([*values, kind], acc[SLOT[f"{kind}_tokens"]])
            energy.add_metric(values, acc[SLOT["energy_j"]])
            carbon.add_metric(values, acc[SLOT["carbon_g"]])
        yield from (requests, tokens, energy, carbon)

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
            "bauxite_cluster_power_watts",
            "Current GPU power draw of a metered cluster (GPU boundary), watts.",
            labels=["cluster", "region"],
        )
        energy = CounterMetricFamily(
            "bauxite_cluster_energy_joules",
            "Metered cluster energy at the facility boundary (GPU x (1 + host share) x PUE), joules: "
            "attributed to requests, or idle (no request resident).",
            labels=["cluster", "region", "kind"],
        )
        for row in self._cluster_rows():
            cluster = str(row.cluster)
            region = self._cluster_regions.get(cluster)
            if region is None or not row.metered:
                continue
            power.add_metric([cluster, region], float(row.power_w))
            for kind, total in (("attributed", row.attributed_j_total), ("idle", row.idle_j_total)):
                energy.add_metric([cluster, region, kind], self._monotonic(cluster, kind, float(total)))
        yield from (power, energy)

    def _cluster_carbon(self) -> Iterator[Metric]:
        """Every gram the fleet emitted: requests' carbon per cluster plus each cluster's idle carbon."""
        labels = ["cluster", "region", "kind"]
        carbon = CounterMetricFamily(
            "bauxite_cluster_carbon_grams",
            "Grams CO2e (location-based, facility boundary) per cluster: attributed to its requests, or its "
            "idle energy with no request resident. Their sum is the fleet's operational total.",
            labels=labels,
        )
        embodied = CounterMetricFamily(
            "bauxite_cluster_embodied_carbon_grams",
            "Embodied grams CO2e of a cluster's hardware amortised over its lifetime: the share of its "
            "requests (attributed) and of time with no request resident (idle).",
            labels=labels,
        )
        idle = {str(row.cluster): row for row in self._cluster_rows()}
        for cluster, region in self._cluster_regions.items():
            acc = self._totals.clusters.get(self._t.clusters.id(cluster), [0.0] * USAGE_SLOTS)
            carbon.add_metric([cluster, region, "attributed"], acc[SLOT["carbon_g"]])
            embodied.add_metric([cluster, region, "attributed"], acc[SLOT["embodied_g"]])
            row = idle.get(cluster)
            idle_g = float(row.idle_carbon_g_total) if row is not None else 0.0
            idle_embodied_g = float(row.idle_embodied_g_total) if row is not None else 0.0
            carbon.add_metric([cluster, region, "idle"], self._monotonic(cluster, "idle_g", idle_g))
            embodied.add_metric(
                [cluster, region, "idle"], self._monotonic(cluster, "idle_embodied_g", idle_embodied_g)
            )
        yield from (carbon, embodied)

    def _cluster_requests(self) -> Iterator[Metric]:
        """Per-cluster request figures (beyond the contract), for energy per 1,000 tokens per cluster."""
        energy = CounterMetricFamily(
            "bauxite_cluster_request_energy_joules",
            "Facility-boundary energy charged to the requests a cluster served (estimated or measured), "
            "joules.",
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
            acc = self._totals.clusters.get(self._t.clusters.id(cluster), [0.0] * USAGE_SLOTS)
            energy.add_metric([cluster, region], acc[SLOT["energy_j"]])
            tokens.add_metric([cluster, region, "prompt"], acc[SLOT["prompt_tokens"]])
            tokens.add_metric([cluster, region, "completion"], acc[SLOT["completion_tokens"]])
            requests.add_metric([cluster, region], acc[REQ_OK] + acc[REQ_ERROR])
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
