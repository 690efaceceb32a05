"""The background scrape of vLLM /metrics: parsing, and the numbers it leaves for the router."""

from __future__ import annotations

import pytest
from aiohttp import web

from bauxite.clusters import Fleet
from bauxite.routing.config import LatencySettings
from bauxite.routing.router import Router
from bauxite.routing.server_times import ServerCounters, ServerTimes
from bauxite.routing.stats import StatsScraper, parse_vllm_metrics
from bauxite.settings import ClusterSettings

VLLM_METRICS = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="llama"} 8.0
vllm:num_requests_running{engine="0",model_name="qwen"} 2.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="llama"} 3.0
# HELP vllm:prefix_cache_queries_total Prefix cache queries, in terms of number of queried tokens.
# TYPE vllm:prefix_cache_queries_total counter
vllm:prefix_cache_queries_total{engine="0",model_name="llama"} 1000.0
# HELP vllm:prefix_cache_hits_total Prefix cache hits, in terms of number of cached tokens.
# TYPE vllm:prefix_cache_hits_total counter
vllm:prefix_cache_hits_total{engine="0",model_name="llama"} 400.0
"""


def test_parse_sums_over_models() -> None:
    stats = parse_vllm_metrics(VLLM_METRICS)
    assert (stats.running, stats.waiting) == (10, 3)
    assert (stats.prefix_cache_queries, stats.prefix_cache_hits) == (1000.0, 400.0)


def test_parse_without_vllm_metrics_is_zero() -> None:
    stats = parse_vllm_metrics("# TYPE up gauge\nup 1\n")
    assert (stats.running, stats.waiting, stats.prefix_cache_hits) == (0, 0, 0.0)


async def test_scrape_fills_cluster_state_and_teaches_the_model(unused_tcp_port: int) -> None:
    async def metrics(request: web.Request) -> web.Response:
        return web.Response(text=VLLM_METRICS, content_type="text/plain")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", unused_tcp_port)
    await site.start()
    try:
        up = ClusterSettings.model_validate(
            {
                "name": "up",
                "region": "r",
                "url": f"http://127.0.0.1:{unused_tcp_port}/v1",
                "models": ["llama"],
            }
        )
        down = ClusterSettings.model_validate(
            {"name": "down", "region": "r", "url": "http://127.0.0.1:9/v1", "models": ["llama"]}
        )
        fleet = Fleet([up, down])
        settings = LatencySettings(stats_timeout=1.0)
        router = Router(fleet, latency=settings)
        model = router.latency
        scraper = StatsScraper(fleet, router.scraped, settings)
        await scraper.start()
        await scraper.scrape_once()
        await scraper.stop()
    finally:
        await runner.cleanup()
    state = fleet.by_name["up"]
    assert (state.queue_running, state.queue_waiting) == (10, 3)
    assert model.slots(state) == 10  # running while others wait: the cluster's real capacity
    assert 0 < model.rtt_ms(state) < 1000  # measured, as no rtt_ms is configured
    assert fleet.by_name["down"].queue_running == 0  # a failed scrape leaves values alone
    assert scraper.last["up"].prefix_cache_hits == 400.0
    assert router.depth("up") == 13 and router.depth("down") == 0


HISTOGRAMS = """\
# TYPE vllm:request_prefill_time_seconds histogram
vllm:request_prefill_time_seconds_sum{model_name="llama"} 12.5
vllm:request_prefill_time_seconds_count{model_name="llama"} 100.0
# TYPE vllm:request_prompt_tokens histogram
vllm:request_prompt_tokens_sum{model_name="llama"} 50000.0
vllm:request_prompt_tokens_count{model_name="llama"} 100.0
# TYPE vllm:inter_token_latency_seconds histogram
vllm:inter_token_latency_seconds_sum{model_name="llama"} 40.0
vllm:inter_token_latency_seconds_count{model_name="llama"} 2000.0
"""


def test_parse_reads_the_timing_histograms() -> None:
    server = parse_vllm_metrics(VLLM_METRICS + HISTOGRAMS).server
    assert server == ServerCounters(12.5, 100.0, 50000.0, 100.0, 40.0, 2000.0)
    assert parse_vllm_metrics(VLLM_METRICS).server is None


def test_cluster_metrics_teach_prefill_line_and_itl() -> None:
    """Interval means on the line prefill = 60 ms + 0.08 ms/token are fitted back from the counter deltas."""
    times = ServerTimes()
    totals = [0.0, 0.0, 0.0, 0.0, 0.0]
    times.observe(ServerCounters())
    for mean_prompt in (200.0, 900.0, 400.0, 1500.0, 700.0, 300.0):
        n = 50.0
        totals[0] += n * (60.0 + 0.08 * mean_prompt) / 1000.0
        totals[1] += n
        totals[2] += n * mean_prompt
        totals[3] += 0.02 * 1000 * n
        totals[4] += 1000 * n
        times.observe(ServerCounters(totals[0], totals[1], totals[2], totals[1], totals[3], totals[4]))
    assert times.ms_per_token == pytest.approx(0.08)
    assert times.base_ms == pytest.approx(60.0)
    assert times.itl_ms == pytest.approx(20.0)
    times.observe(ServerCounters())  # a restarted cluster: counters reset, nothing learned from the drop
    assert times.base_ms == pytest.approx(60.0)
