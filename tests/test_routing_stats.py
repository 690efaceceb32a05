"""The background scrape of vLLM /metrics: parsing, and the numbers it leaves for the router."""

from __future__ import annotations

from aiohttp import web

from bauxite.clusters import Fleet
from bauxite.routing.config import LatencySettings
from bauxite.routing.router import Router
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
