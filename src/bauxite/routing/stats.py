"""Background scrape of each vLLM cluster's ``/metrics``: queue depth, prefix-cache counters, round trip.

Runs on its own timer and hands each reading to the router's ``scraped`` feedback method; the request path
only reads what the router keeps. A failed scrape leaves the previous values in place (retried next interval).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from ..clusters import ClusterState, Fleet
from ..tasks import cancel
from .config import LatencySettings
from .server_times import ServerCounters

# (cluster, running, waiting, round trip ms, server counters): the router's ``scraped`` feedback method.
ScrapeSink = Callable[[str, int, int, float | None, ServerCounters | None], None]


class ScrapeSource(Protocol):
    """Where a router's cluster readings come from: started and stopped with the router."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


# Builds a router's source from (fleet, the router's ``scraped`` method, the latency settings); the default
# is ``StatsScraper`` itself. ``serve --workers N`` gives each worker a reader of the hub's readings instead.
ScrapeFactory = Callable[[Fleet, ScrapeSink, LatencySettings], ScrapeSource]

# Sample names as vLLM (v0 and v1) exposes them; counters carry the _total suffix in samples.
_RUNNING = "vllm:num_requests_running"
_WAITING = "vllm:num_requests_waiting"
_PREFIX_QUERIES = ("vllm:prefix_cache_queries_total", "vllm:gpu_prefix_cache_queries_total")
_PREFIX_HITS = ("vllm:prefix_cache_hits_total", "vllm:gpu_prefix_cache_hits_total")
# Histogram samples (sum and count) feeding ServerCounters, by field name.
_HISTOGRAMS = {
    "vllm:request_prefill_time_seconds_sum": "prefill_s_sum",
    "vllm:request_prefill_time_seconds_count": "prefill_count",
    "vllm:request_prompt_tokens_sum": "prompt_tokens_sum",
    "vllm:request_prompt_tokens_count": "prompt_count",
    "vllm:time_per_output_token_seconds_sum": "itl_s_sum",
    "vllm:time_per_output_token_seconds_count": "itl_count",
    "vllm:inter_token_latency_seconds_sum": "itl_s_sum",
    "vllm:inter_token_latency_seconds_count": "itl_count",
}


@dataclass(frozen=True, slots=True)
class VllmStats:
    running: int
    waiting: int
    prefix_cache_queries: float  # tokens looked up in the prefix cache (counter)
    prefix_cache_hits: float  # tokens found there (counter)
    server: ServerCounters | None = None  # None when the cluster exports no prefill histogram


def parse_vllm_metrics(text: str) -> VllmStats:
    """Sum queue gauges, prefix-cache counters and timing histograms over all served models; ValueError on
    bad text."""
    sums = {_RUNNING: 0.0, _WAITING: 0.0, "queries": 0.0, "hits": 0.0}
    histograms: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            field = _HISTOGRAMS.get(sample.name)
            if field is not None:
                histograms[field] = histograms.get(field, 0.0) + sample.value
            elif sample.name in (_RUNNING, _WAITING):
                sums[sample.name] += sample.value
            elif sample.name in _PREFIX_QUERIES:
                sums["queries"] += sample.value
            elif sample.name in _PREFIX_HITS:
                sums["hits"] += sample.value
    server = ServerCounters(**histograms) if "prefill_count" in histograms else None
    return VllmStats(int(sums[_RUNNING]), int(sums[_WAITING]), sums["queries"], sums["hits"], server)


class StatsScraper:
    def __init__(self, fleet: Fleet, sink: ScrapeSink, settings: LatencySettings) -> None:
        self._targets = [c for c in fleet.clusters if c.settings.kind == "vllm"]
        self._sink = sink
        self._interval_s = settings.stats_interval
        self._timeout_s = settings.stats_timeout
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self.last: dict[str, VllmStats] = {}  # by cluster name, for prefix-cache hit accounting and /readyz

    async def start(self) -> None:
        if self._task is not None or not self._targets or self._interval_s <= 0:
            return
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._timeout_s))
        self._task = asyncio.create_task(self._run(), name="bauxite-cluster-stats")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel(task)
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def _run(self) -> None:
        while True:
            await self.scrape_once()
            await asyncio.sleep(self._interval_s)

    async def scrape_once(self) -> None:
        """Scrape every target concurrently; one slow cluster does not delay the others' numbers."""
        if self._session is None:
            return
        session = self._session
        await asyncio.gather(*(self._scrape(session, c) for c in self._targets))

    async def _scrape(self, session: aiohttp.ClientSession, cluster: ClusterState) -> None:
        started = time.monotonic()
        try:
            async with session.get(cluster.settings.effective_metrics_url) as response:
                if response.status != 200:
                    return
                text = await response.text()
            stats = parse_vllm_metrics(text)
        except (aiohttp.ClientError, TimeoutError, ValueError, UnicodeDecodeError):
            return
        elapsed_ms = (time.monotonic() - started) * 1000.0
        self.last[cluster.name] = stats
        self._sink(cluster.name, stats.running, stats.waiting, elapsed_ms, stats.server)
