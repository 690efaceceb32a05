"""The simulated world: cluster queues, grid intensity per hour, energy per request.

Each cluster runs up to ``capacity`` sequences at once; later requests wait first-come first-served for the
earliest slot to free. A request's time to first token, as its client sees it, is the client's round trip to
the cluster + the wait for a slot + prefill; it then holds its slot for prefill + completion × itl.
Queueing follows decision order (the one-way network delay is added to the latency, not to queue order).
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Mapping
from datetime import UTC, datetime, time

from ..intensity.base import Intensity
from ..intensity.traces import Trace, load_trace
from .config import SimCluster, SimConfig

HOUR_S = 3600.0


class ClusterQueue:
    """Slot free-times of one cluster (a min-heap), so the wait of a new request is exact and O(log n)."""

    __slots__ = ("busy_until", "config", "prefill_ms_per_token")

    def __init__(self, config: SimCluster) -> None:
        self.config = config
        self.busy_until = [0.0] * config.capacity
        self.prefill_ms_per_token = config.prefill_ms_per_1k_tokens / 1000.0

    def start_s(self, now_s: float) -> float:
        """When a request arriving now would start (perfect knowledge: what the greedy baseline sees)."""
        free = self.busy_until[0]
        return free if free > now_s else now_s

    def prefill_ms(self, prompt_tokens: int) -> float:
        return self.config.ttft_ms + self.prefill_ms_per_token * prompt_tokens

    def admit(self, now_s: float, prompt_tokens: int, completion_tokens: int) -> tuple[float, float, float]:
        """Queue the request; return (start_s, prefill_ms, finish_s)."""
        start = self.start_s(now_s)
        prefill_ms = self.prefill_ms(prompt_tokens)
        finish = start + (prefill_ms + self.config.itl_ms * completion_tokens) / 1000.0
        heapq.heapreplace(self.busy_until, finish)
        return start, prefill_ms, finish

    def energy_j(self, prompt_tokens: int, completion_tokens: int) -> float:
        c = self.config
        return c.j_per_prompt_token * prompt_tokens + c.j_per_output_token * completion_tokens


def intensity_table(config: SimConfig) -> list[list[float]]:
    """g/kWh per cluster (config order) per hour of the period; each trace read once."""
    start = datetime.combine(config.period.start, time(0), tzinfo=UTC).timestamp()
    hours = config.period.days * 24
    traces: dict[str, Trace] = {}
    table = []
    for cluster in config.clusters:
        trace = traces.get(cluster.trace)
        if trace is None:
            trace = traces[cluster.trace] = load_trace(cluster.trace)
        table.append([trace.at(start + h * HOUR_S) for h in range(hours)])
    return table


class SimIntensity:
    """The intensity service as the router sees it: values of the current simulated hour, by region."""

    def __init__(self, config: SimConfig, table: list[list[float]]) -> None:
        self._by_region: dict[str, list[float]] = {}
        for cluster, values in zip(config.clusters, table, strict=True):
            self._by_region.setdefault(cluster.region, values)
        self.hour = 0

    def for_ranking(self, regions: list[str]) -> Mapping[str, Intensity]:
        hour = self.hour
        return {
            r: Intensity(r, self._by_region[r][hour], hour * HOUR_S, "trace")
            for r in regions
            if r in self._by_region
        }


class SimEnergy:
    """The energy service as one site's gateway sees it: the simulated clusters' energy per token, each off
    by a fixed factor drawn once per (site, cluster) from a log-normal with ``energy_estimate_error`` as sigma
    (an estimator or a meter calibration is wrong by a steady few percent, not by fresh noise per request)."""

    def __init__(self, config: SimConfig, site: int = 0) -> None:
        self._clusters = {c.name: c for c in config.clusters}
        rng = random.Random(f"{config.seed}:energy:{site}")
        sigma = config.energy_estimate_error
        self._bias = {c.name: math.exp(rng.gauss(0.0, sigma)) if sigma > 0 else 1.0 for c in config.clusters}

    def expected_j(self, cluster: str, model: str, prompt_tokens: int, completion_tokens: int) -> float:
        c = self._clusters[cluster]
        exact = c.j_per_prompt_token * prompt_tokens + c.j_per_output_token * completion_tokens
        return exact * self._bias[cluster]

    def pue(self, cluster: str) -> float:
        return self._clusters[cluster].pue
