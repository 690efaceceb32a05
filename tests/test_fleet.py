"""The simulated fleet speaks vLLM's wire format and metrics, and DCGM's power names."""

from __future__ import annotations

import json
import time
import urllib.request

import aiohttp
import openai
import pytest
from aiohttp import web
from openai.types.chat import ChatCompletionMessageParam
from prometheus_client.parser import text_string_to_metric_families

from bauxite.fleet.server import SimClusterSettings, SimServer
from bauxite.fleet.sim import SimCluster
from harness import Harness, fleet_config


def scrape(h: Harness, cluster: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    assert h.fleet is not None
    with urllib.request.urlopen(f"http://127.0.0.1:{h.fleet.ports[cluster]}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def test_metrics_names_and_counters_move() -> None:
    clusters = [{"name": "east", "region": "us-east-1", "models": ["tiny-8b"], "sim": {"gpu_count": 2}}]
    with Harness(fleet_config(clusters, time_scale=0.05)) as h:
        before = scrape(h, "east")
        for name in (
            "vllm:num_requests_running",
            "vllm:num_requests_waiting",
            "vllm:kv_cache_usage_perc",
            "vllm:prompt_tokens_total",
            "vllm:generation_tokens_total",
            "vllm:prefix_cache_queries_total",
            "vllm:prefix_cache_hits_total",
            "DCGM_FI_DEV_POWER_USAGE",
            "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
        ):
            assert name in before, name
        assert len(before["DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"]) == 2  # one series per GPU
        c = openai.OpenAI(base_url=h.base_url + "/v1", api_key="k", max_retries=0)
        c.chat.completions.create(model="tiny-8b", messages=[{"role": "user", "content": "x"}], max_tokens=9)
        after = scrape(h, "east")
        assert (
            sum(after["vllm:generation_tokens_total"].values())
            - sum(before["vllm:generation_tokens_total"].values())
            == 9
        )
        energy_before = sum(before["DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"].values())
        assert sum(after["DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"].values()) > energy_before


def test_prefix_cache_reports_cached_tokens() -> None:
    clusters = [{"name": "east", "region": "us-east-1", "models": ["tiny-8b"]}]
    with Harness(fleet_config(clusters)) as h:
        c = openai.OpenAI(base_url=h.base_url + "/v1", api_key="k", max_retries=0)
        system: ChatCompletionMessageParam = {
            "role": "system",
            "content": "You are a careful assistant. " * 40,
        }
        first = c.chat.completions.create(
            model="tiny-8b", messages=[system, {"role": "user", "content": "a"}], max_tokens=1
        )
        second = c.chat.completions.create(
            model="tiny-8b", messages=[system, {"role": "user", "content": "b"}], max_tokens=1
        )
        assert first.usage is not None and second.usage is not None
        assert first.usage.prompt_tokens_details is None
        assert second.usage.prompt_tokens_details is not None
        cached = second.usage.prompt_tokens_details.cached_tokens or 0
        assert 200 <= cached < second.usage.prompt_tokens
        records = h.wait_records(2)
        assert records[1].cached_tokens == cached
        hits = sum(scrape(h, "east")["vllm:prefix_cache_hits_total"].values())
        assert hits == cached


def test_sim_stream_usage_chunk_shape() -> None:
    clusters = [{"name": "east", "region": "us-east-1", "models": ["tiny-8b"]}]
    with Harness(fleet_config(clusters)) as h:
        assert h.fleet is not None
        body = {
            "model": "tiny-8b",
            "prompt": "hello there",
            "max_tokens": 3,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        request = urllib.request.Request(
            f"http://127.0.0.1:{h.fleet.ports['east']}/v1/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as resp:
            events = [e for e in resp.read().decode().split("\n\n") if e]
        assert events[-1] == "data: [DONE]"
        usage = json.loads(events[-2][len("data: ") :])
        assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 3


def test_each_model_runs_on_its_own_power_profile_and_ground_truth_adds_up() -> None:
    """A 70B request on a cluster that also serves an 8B model costs what a 70B request costs, and the
    simulator's per-sequence ground truth sums to the energy its DCGM counter reports."""
    clusters = [{"name": "east", "region": "us-east-1", "models": ["llama-3.1-8b", "llama-3.1-70b"],
                 "sim": {"gpu_count": 4, "prefix_cache": False}}]  # fmt: skip
    with Harness(fleet_config(clusters, time_scale=0.2)) as h:
        assert h.fleet is not None
        sim = h.fleet.sim("east")
        sizes = {name: profile.active_params_b for name, profile in sim.profiles.items()}
        assert sizes["llama-3.1-70b"] > 8 * sizes["llama-3.1-8b"]
        client = openai.OpenAI(base_url=h.base_url + "/v1", api_key="k", max_retries=0)
        sim.meter.advance(time.monotonic())
        before_mj, before_s = sim.meter.energy_mj, sim.meter.last
        for model in ("llama-3.1-8b", "llama-3.1-70b"):
            client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "same prompt"}], max_tokens=40
            )
        sim.meter.advance(time.monotonic())
        small, large = sim.completed[0], sim.completed[1]
        assert (small.model, large.model) == ("llama-3.1-8b", "llama-3.1-70b")
        assert small.completion_tokens == large.completion_tokens == 40
        assert large.energy_j > 2.5 * small.energy_j  # 70B: ~9× the weights to read per token
        # One at a time: the sequences were charged everything the 4 GPUs drew, except idle time between.
        cluster_j = 4 * (sim.meter.energy_mj - before_mj) / 1000.0
        running_s = sum(c.ended_s - c.started_s for c in (small, large))
        idle_j = 4 * sim.profile.idle_w * (sim.meter.last - before_s - running_s)
        assert small.energy_j + large.energy_j == pytest.approx(cluster_j - idle_j, rel=1e-6)


def test_long_prompts_under_the_gateways_limit_reach_the_cluster() -> None:
    """The gateway accepts 4 MiB bodies; a simulated cluster must not refuse 1–4 MiB ones (vLLM has no 1 MiB
    cap): a 2 MiB prompt is answered, not a bare 413."""
    with Harness(fleet_config()) as h:
        c = openai.OpenAI(base_url=h.base_url + "/v1", api_key="k", max_retries=0)
        long_prompt = "word " * (2 * 1024 * 1024 // 5)
        answer = c.chat.completions.create(
            model="tiny-8b", messages=[{"role": "user", "content": long_prompt}], max_tokens=2
        )
        assert answer.choices[0].message.content
        assert answer.usage is not None and answer.usage.prompt_tokens > 100_000


async def test_an_oversize_body_gets_a_json_error_like_vllm() -> None:
    sim = SimCluster(SimClusterSettings(name="east", models=("tiny-8b",)), 0.0)
    runner = web.AppRunner(SimServer(sim, max_body_bytes=1000).app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            body = {"model": "tiny-8b", "messages": [{"role": "user", "content": "x" * 2000}]}
            async with session.post(url, json=body) as resp:
                assert resp.status == 413
                assert resp.content_type == "application/json"
                error = await resp.json()
            small = {"model": "tiny-8b", "messages": [{"role": "user", "content": "x"}], "max_tokens": 1}
            async with session.post(url, json=small) as resp:
                assert resp.status == 200
    finally:
        await runner.cleanup()
    assert error["object"] == "error" and error["code"] == 413 and "1000 bytes" in error["message"]
