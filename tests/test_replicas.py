"""Three gateway replicas (real ``bauxite serve`` processes) behind one client, sharing one real Redis,
scraped by one real Prometheus, in front of a real simulated fleet, with intensity from a fake Electricity
Maps server.

- Prometheus' totals over the three targets equal the requests sent;
- Electricity Maps is called once per zone and refresh for the whole deployment, not once per replica;
- under a paced burst, the small green cluster is herded on much less than by three replicas without shared
  state (each of which only sees its own in-flight requests until the next stats scrape).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest
import redis as redis_client
import yaml

from intensity_fakes import EM_KEY
from servers import FakeOnThread, Prometheus, RedisServer, free_port

MODEL = "tiny-8b"
GREEN_SLOTS = 8
REFRESH_S = 2.0
ZONES = {"green": ("eu-north-1", "SE", 20.0), "dirty": ("us-east-1", "US-MIDA-PJM", 400.0)}


def config(fleet_ports: dict[str, int], em_url: str, state_url: str | None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "enterprise": {
            "green_routing": {"enabled": True, "priority": "low_carbon"},
            "carbon_tracking": {"provider": "electricity_maps"},
        },
        "auth": {"allow_anonymous": True},
        "intensity": {"refresh_interval": f"{REFRESH_S}s", "retry_min": "1s",
                      "electricity_maps": {"api_key_env": "TEST_EM_KEY", "base_url": em_url}},
        "clusters": [
            {"name": name, "region": ZONES[name][0], "zone": ZONES[name][1],
             "url": f"http://127.0.0.1:{port}/v1", "models": [MODEL]}
            for name, port in fleet_ports.items()
        ],
        # No stats scrape: between scrapes a replica knows only the load it (and shared state) sees.
        "latency": {"slo_ttft_ms": 500, "stats_scrape": False, "clusters": {
            "green": {"rtt_ms": 1, "ttft_ms": 30, "itl_ms": 20, "max_concurrency": GREEN_SLOTS},
            "dirty": {"rtt_ms": 1, "ttft_ms": 30, "itl_ms": 20, "max_concurrency": 256}}},
        "fleet": {"time_scale": 1.0, "clusters": [
            {"name": "green", "port": fleet_ports["green"], "models": [MODEL], "max_num_seqs": GREEN_SLOTS},
            {"name": "dirty", "port": fleet_ports["dirty"], "models": [MODEL], "max_num_seqs": 256}]},
    }  # fmt: skip
    if state_url is not None:
        doc["state"] = {"url": state_url, "prefix": "replicas-test"}
    return doc


def wait_http(url: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer within {timeout_s:.0f}s")


@dataclass
class Group:
    procs: list[subprocess.Popen[bytes]]
    urls: list[str]

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def start_group(tmp: Path, name: str, doc: dict[str, Any], env: dict[str, str]) -> Group:
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    procs, urls = [], []
    for i in range(3):
        port = free_port()
        log = open(tmp / f"{name}-{i}.log", "wb")  # noqa: SIM115 - handed to the child
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "bauxite.cli", "serve", "--config", str(path), "--port", str(port)],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        ))  # fmt: skip
        log.close()
        urls.append(f"http://127.0.0.1:{port}")
    for url in urls:
        wait_http(url + "/healthz")
    return Group(procs, urls)


@dataclass
class Deployment:
    shared: Group
    alone: Group
    prometheus: Prometheus
    providers: FakeOnThread  # the shared group's Electricity Maps
    providers_alone: FakeOnThread  # the unshared group's, so each group's calls are counted apart
    redis: RedisServer


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    tmp = tmp_path_factory.mktemp("replicas")
    env = {**os.environ, "TEST_EM_KEY": EM_KEY}
    providers, providers_alone = FakeOnThread(), FakeOnThread()
    for fake in (providers, providers_alone):
        fake.fake.em_values = {zone: g for _, zone, g in ZONES.values()}
    redis = RedisServer(tmp)
    fleet_ports = {"green": free_port(), "dirty": free_port()}
    em_url = providers.fake.base_url + "/em/v3"
    shared_doc = config(fleet_ports, em_url, redis.url)
    (tmp / "fleet.yaml").write_text(yaml.safe_dump(shared_doc))
    fleet = subprocess.Popen(
        [sys.executable, "-m", "bauxite.cli", "fleet", "--config", str(tmp / "fleet.yaml")],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )  # fmt: skip
    groups: list[Group] = []
    prometheus = None
    try:
        for port in fleet_ports.values():
            wait_http(f"http://127.0.0.1:{port}/health")
        groups.append(start_group(tmp, "shared", shared_doc, env))
        alone_url = providers_alone.fake.base_url + "/em/v3"
        groups.append(start_group(tmp, "alone", config(fleet_ports, alone_url, None), env))
        prometheus = Prometheus(tmp, [u.removeprefix("http://") for u in groups[0].urls])
        yield Deployment(groups[0], groups[1], prometheus, providers, providers_alone, redis)
    finally:
        if prometheus is not None:
            prometheus.stop()
        for group in groups:
            group.stop()
        fleet.terminate()
        fleet.wait(30)
        redis.stop()
        providers.close()
        providers_alone.close()


@dataclass
class Outcome:
    statuses: list[int]
    green_peak: int  # most requests in flight on the green cluster at once
    green_share: float


async def paced_burst(urls: list[str], count: int, every_s: float) -> Outcome:
    """One client sending ``count`` requests round-robin over the replicas, one every ``every_s``."""
    spans: list[tuple[float, float, str]] = []
    statuses: list[int] = []

    async def one(session: aiohttp.ClientSession, url: str) -> None:
        body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100}
        started = time.monotonic()
        async with session.post(url + "/v1/chat/completions", json=body) as resp:
            await resp.read()
            statuses.append(resp.status)
            spans.append((started, time.monotonic(), resp.headers.get("x-bauxite-cluster", "")))

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        tasks = []
        for i in range(count):
            tasks.append(asyncio.create_task(one(session, urls[i % len(urls)])))
            await asyncio.sleep(every_s)
        await asyncio.gather(*tasks)
    green = [(a, b) for a, b, cluster in spans if cluster == "green"]
    events = sorted([(a, 1) for a, _ in green] + [(b, -1) for _, b in green])
    peak = running = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return Outcome(statuses, peak, len(green) / max(len(spans), 1))


def total_requests(prometheus: Prometheus, expected: float, timeout_s: float = 30.0) -> float:
    deadline = time.monotonic() + timeout_s
    found = float("nan")
    while time.monotonic() < deadline:
        found = prometheus.scalar("sum(bauxite_requests_total)")
        if found == expected:
            return found
        time.sleep(0.5)
    return found


def test_replicas_share_intensity_fetches_count_exactly_and_herd_less(deployment: Deployment) -> None:
    d = deployment
    # Intensity: count provider calls over a few refresh intervals once everything runs.
    time.sleep(REFRESH_S)
    calls_before, started = d.providers.em_calls(), time.monotonic()
    alone_before = d.providers_alone.em_calls()
    shared = asyncio.run(paced_burst(d.shared.urls, 90, 0.03))
    alone = asyncio.run(paced_burst(d.alone.urls, 90, 0.03))
    elapsed = time.monotonic() - started
    calls = d.providers.em_calls() - calls_before
    alone_calls = d.providers_alone.em_calls() - alone_before
    print(
        f"\ngreen cluster ({GREEN_SLOTS} slots), 90 requests at ~33/s over 3 replicas: "
        f"peak in flight {shared.green_peak} with shared state vs {alone.green_peak} without; "
        f"share routed green {shared.green_share:.0%} vs {alone.green_share:.0%}"
    )
    assert shared.statuses == [200] * 90 and alone.statuses == [200] * 90
    assert shared.green_peak < alone.green_peak
    assert alone.green_peak > GREEN_SLOTS + 4  # without shared counts each replica fills the slots itself
    assert shared.green_share > 0.05  # the green cluster was still used, only not herded onto

    # Two zones, one refresh each per interval for the whole shared group; each unshared replica its own.
    refreshes = 2 * (elapsed / REFRESH_S + 1)
    print(f"Electricity Maps calls in {elapsed:.1f}s ({refreshes:.0f} zone refreshes): {calls} by the "
          f"three replicas sharing state, {alone_calls} by the three without")  # fmt: skip
    assert calls <= refreshes + 2
    assert alone_calls >= 2 * calls  # about three times: every replica refreshes every zone itself

    # Prometheus over the three shared replicas: every request counted once.
    assert total_requests(d.prometheus, 90.0) == 90.0
    targets = d.prometheus.query('up{job="bauxite"}')
    assert len(targets) == 3 and all(t["value"][1] == "1" for t in targets)
    assert d.prometheus.scalar("sum(bauxite_shared_state_up)") == 3.0


def test_redis_holds_no_request_text_or_keys(deployment: Deployment) -> None:
    marker = "CONFIDENTIAL-SYSTEM-PROMPT-7f3a"
    key = "sk-CALLER-KEY-never-stored"

    async def send() -> list[int]:
        body = {
            "model": MODEL,
            "max_tokens": 4,
            "messages": [
                {"role": "system", "content": marker},
                {"role": "user", "content": marker + " question"},
            ],
        }
        headers = {"Authorization": f"Bearer {key}"}
        async with aiohttp.ClientSession() as session:
            statuses = []
            for url in deployment.shared.urls:
                async with session.post(url + "/v1/chat/completions", json=body, headers=headers) as resp:
                    await resp.read()
                    statuses.append(resp.status)
            return statuses

    assert asyncio.run(send()) == [200] * 3
    time.sleep(1.0)  # a few sync intervals: affinity entries and counts are in Redis by now
    client = redis_client.Redis.from_url(deployment.redis.url)
    try:
        keys = list(client.scan_iter("*"))
        dump = b"".join(_values(client, k) for k in keys)
        assert any(k.endswith(b":affinity") for k in keys)  # the prefix map was written
    finally:
        client.close()
    assert dump
    for secret in (marker, key):
        assert secret.encode() not in dump


def _values(client: redis_client.Redis, key: bytes) -> bytes:
    """Every byte stored under ``key``, whatever its type (the sync client's results are typed loosely)."""
    kind = cast(bytes, client.type(key))
    stored: Any
    if kind == b"string":
        stored = client.get(key)
    elif kind == b"hash":
        stored = client.hgetall(key.decode())
    elif kind == b"stream":
        stored = client.xrange(key)
    elif kind == b"zset":
        stored = client.zrange(key, 0, -1)
    else:
        stored = None
    return key + repr(stored).encode()


def test_redis_outage_keeps_requests_flowing_and_is_reported(deployment: Deployment) -> None:
    d = deployment
    d.redis.stop()
    try:
        time.sleep(1.5)
        outcome = asyncio.run(paced_burst(d.shared.urls, 9, 0.01))
        assert outcome.statuses == [200] * 9
        with urllib.request.urlopen(d.shared.urls[0] + "/readyz", timeout=5) as resp:
            ready = yaml.safe_load(resp.read())
        assert ready["ready"] is True
        assert ready["state"]["shared"] is False and "unreachable" in ready["state"]["reason"]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and d.prometheus.scalar("sum(bauxite_shared_state_up)") != 0.0:
            time.sleep(0.5)
        assert d.prometheus.scalar("sum(bauxite_shared_state_up)") == 0.0
        assert d.prometheus.scalar("sum(bauxite_shared_state_fallbacks_total)") == 3.0
    finally:
        d.redis.start()
