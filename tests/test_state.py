"""Shared state between replicas against a real ``redis-server``: one intensity fetch for all, shared
cool-downs, in-flight counts and affinity, merged report windows, and the local fallback when Redis goes."""

from __future__ import annotations

import asyncio
import csv
import io
import logging
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as redis_async
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from bauxite.app import create_app
from bauxite.clusters import Fleet
from bauxite.intensity.base import Intensity, IntensityError
from bauxite.intensity.config import IntensitySettings
from bauxite.intensity.service import IntensityService
from bauxite.routing.affinity import prefix_hash
from bauxite.routing.router import Outcome, Router
from bauxite.settings import ClusterSettings, settings_from_mapping
from bauxite.state.base import LocalState, make_state
from bauxite.state.config import StateSettings
from bauxite.state.redis_state import RedisState
from bauxite.state.reports import merge_windows
from bauxite.telemetry.service import Telemetry
from intensity_fakes import EM_KEY, FakeProviders
from record_factory import make_record
from servers import RedisServer, free_port

FAST = StateSettings(url="redis://unused", sync_interval=0.05, timeout=0.3, peer_stale_after=1.0)


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        server.stop()


def fleet() -> Fleet:
    return Fleet(
        [
            ClusterSettings.model_validate(
                {"name": n, "region": "us-east-1", "url": "http://127.0.0.1:1/v1", "models": ["m"]}
            )
            for n in ("green", "dirty")
        ]
    )


class Replica:
    def __init__(self, url: str, prefix: str) -> None:
        settings = FAST.model_copy(update={"url": url, "prefix": prefix})
        self.state = RedisState(settings, url)
        self.fleet = fleet()
        self.router = Router(self.fleet)
        self.affinity = self.router.affinity
        self.state.attach(self.fleet, self.router)


@pytest.fixture
async def replicas(redis_server: RedisServer, request: pytest.FixtureRequest) -> AsyncIterator[list[Replica]]:
    prefix = f"t{abs(hash(request.node.name)) % 10**8}"
    group = [Replica(redis_server.url, prefix) for _ in range(3)]
    for replica in group:
        await replica.state.start()
    try:
        yield group
    finally:
        for replica in group:
            await replica.state.stop()


async def settle(seconds: float = 0.4) -> None:
    await asyncio.sleep(seconds)  # a few sync intervals


def value(g_per_kwh: float) -> Intensity:
    return Intensity(zone="DE", g_per_kwh=g_per_kwh, at=time.time(), source="electricity_maps",
                     fetched_at=time.time())  # fmt: skip


async def test_one_replica_fetches_and_the_others_read_its_value(replicas: list[Replica]) -> None:
    calls = 0

    async def fetch() -> Intensity:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.2)  # slow provider: the others must wait, not call it too
        return value(123.0)

    got = await asyncio.gather(*(r.state.fetch_once("em:DE", 60.0, fetch) for r in replicas))
    assert calls == 1
    assert [v.g_per_kwh for v in got] == [123.0] * 3
    again = await replicas[2].state.fetch_once("em:DE", 60.0, fetch)
    assert calls == 1 and again.g_per_kwh == 123.0  # still fresh: read, not fetched
    await asyncio.sleep(0.3)
    await replicas[1].state.fetch_once("em:DE", 0.2, fetch)  # older than max_age now: one new fetch
    assert calls == 2


async def test_a_failed_refresh_is_reported_to_the_waiting_replicas(replicas: list[Replica]) -> None:
    async def failing() -> Intensity:
        await asyncio.sleep(0.1)
        raise IntensityError("provider down")

    results = await asyncio.gather(
        *(r.state.fetch_once("em:FR", 60.0, failing, lock_s=5.0) for r in replicas), return_exceptions=True
    )
    assert all(isinstance(r, IntensityError) for r in results)


async def test_cooldowns_in_flight_and_affinity_are_shared(replicas: list[Replica]) -> None:
    a, b, c = replicas
    a.router.dispatched("green")
    a.router.failed("green")
    a.router.finished("green", Outcome(ok=False))
    for _ in range(4):
        a.router.dispatched("dirty")
    for _ in range(3):
        b.router.dispatched("dirty")
    a.affinity.remember(777, "dirty")
    await settle()
    assert not c.fleet.by_name["green"].available()  # a's cool-down reached c
    assert c.fleet.by_name["dirty"].available()
    assert c.fleet.by_name["dirty"].peer_in_flight == 7
    assert a.fleet.by_name["dirty"].peer_in_flight == 3  # its own count is not a peer's
    assert c.router.depth("dirty") == 7 and a.router.depth("dirty") == 7  # own + peers, none scraped yet
    assert b.affinity.get(777) == "dirty" and c.affinity.get(777) == "dirty"
    assert a.state.hash_key == b.state.hash_key == c.state.hash_key
    assert prefix_hash(b"system prompt", a.state.hash_key) == prefix_hash(b"system prompt", c.state.hash_key)

    a.router.dispatched("green")
    a.router.finished("green", Outcome(ok=True))  # recovered: the shared cool-down ends too
    await settle()
    c.fleet.by_name["green"].cooldown_until = 0.0
    await settle()
    assert c.fleet.by_name["green"].available()


async def test_a_silent_replica_stops_counting(replicas: list[Replica]) -> None:
    a, b, _ = replicas
    a.fleet.by_name["green"].in_flight = 9
    await settle()
    assert b.fleet.by_name["green"].peer_in_flight == 9
    await a.state.stop()
    await asyncio.sleep(1.3)  # peer_stale_after = 1 s
    assert b.fleet.by_name["green"].peer_in_flight == 0
    await a.state.start()  # the fixture stops it again


async def test_inflight_entries_of_stopped_and_long_silent_replicas_are_deleted(
    redis_server: RedisServer,
) -> None:
    a, b = Replica(redis_server.url, "inflight-gc"), Replica(redis_server.url, "inflight-gc")
    store = redis_async.Redis.from_url(redis_server.url)
    key = "inflight-gc:inflight"
    now = time.time()
    await store.hset(key, "gone-long-ago", orjson.dumps({"t": now - 3600, "c": {"green": 50}}))
    await store.hset(key, "silent-a-moment", orjson.dumps({"t": now - 5, "c": {"green": 50}}))
    for replica in (a, b):
        await replica.state.start()
    try:
        await settle()
        fields = {f.decode() for f in await store.hkeys(key)}
        assert fields == {a.state.replica, b.state.replica, "silent-a-moment"}  # stale, not yet forgotten
        assert b.fleet.by_name["green"].peer_in_flight == 0  # neither old entry counts as load
        await a.state.stop()
        assert {f.decode() for f in await store.hkeys(key)} == {b.state.replica, "silent-a-moment"}
    finally:
        await b.state.stop()
        await store.aclose()


def window(end: float, requests: int, energy_j: float, idle_j: float) -> dict[str, Any]:
    row = {"department": "research", "model": "m", "region": "us-east-1", "requests": requests,
           "errors": 0, "prompt_tokens": 10 * requests, "completion_tokens": 5, "cached_tokens": 0,
           "energy_j": energy_j, "energy_j_min": energy_j / 2, "energy_j_max": energy_j * 2,
           "energy_j_measured": energy_j / 4, "requests_measured": requests - 1,
           "carbon_g": energy_j / 10, "avoided_green_routing_g": 0.0, "avoided_kv_cache_g": 0.0}  # fmt: skip
    cluster = {"cluster": "green", "region": "us-east-1", "requests": requests, "request_energy_j": energy_j,
               "request_energy_j_min": energy_j / 2, "request_energy_j_measured": energy_j / 4,
               "request_carbon_g": energy_j / 10, "prompt_tokens": 10 * requests, "completion_tokens": 5,
               "attributed_energy_j": None, "idle_energy_j": idle_j}  # fmt: skip
    return {"start": "", "end": "", "start_unix": end - 60, "end_unix": end, "usage": [row],
            "clusters": [cluster], "records_dropped": 0, "totals": {}}  # fmt: skip


async def test_closed_windows_from_every_replica_merge_per_period(replicas: list[Replica]) -> None:
    a, b, c = replicas
    a.state.publish_window(window(1_800_000_060.0, 3, 30.0, 100.0))
    b.state.publish_window(window(1_800_000_060.2, 4, 40.0, 101.0))  # same period, closed a moment later
    b.state.publish_window(window(1_800_000_120.0, 1, 10.0, 50.0))
    a.state.publish_window({**window(1_800_000_120.0, 0, 0.0, 0.0), "usage": []})  # empty: not shared
    await settle()
    windows = await c.state.windows()
    assert windows is not None and len(windows) == 3
    merged = merge_windows(windows, 60.0)
    assert [w["replicas"] for w in merged] == [2, 1]
    assert merged[0]["totals"]["requests"] == 7 and merged[0]["totals"]["energy_j"] == 70.0
    assert merged[0]["usage"][0]["prompt_tokens"] == 70
    # The reporting figures (ranges, measured share) are request sums like energy_j.
    totals = merged[0]["totals"]
    assert (totals["energy_j_min"], totals["energy_j_max"]) == (35.0, 140.0)
    assert (totals["energy_j_measured"], totals["requests_measured"]) == (17.5, 5)
    assert merged[0]["clusters"][0]["request_energy_j_min"] == 35.0
    assert merged[0]["clusters"][0]["request_energy_j_measured"] == 17.5
    # The same cluster is metered by every replica: its idle energy is taken once, not summed.
    assert merged[0]["clusters"][0]["idle_energy_j"] == 101.0
    assert merged[0]["clusters"][0]["requests"] == 7


async def test_csv_reports_show_the_same_merged_windows_as_json(replicas: list[Replica]) -> None:
    cluster = {"name": "green", "region": "us-east-1", "url": "http://127.0.0.1:1/v1", "models": ["m"]}
    settings = settings_from_mapping({"clusters": [cluster], "auth": {"allow_anonymous": True}})
    services = [Telemetry(settings) for _ in replicas[:2]]
    for service, replica in zip(services, replicas, strict=False):
        service.window_sinks.append(replica.state.publish_window)
        service.shared_windows = replica.state.windows
        service.submit(make_record(region="us-east-1", cluster="green", model="m"))
        service.close_window()
    await settle()
    app = web.Application()
    services[0].add_routes(app)
    client: TestClient[Any, Any] = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    try:
        doc = await (await client.get("/v1/carbon/reports")).json()
        text = await (await client.get("/v1/carbon/reports?format=csv")).text()
        clusters_text = await (await client.get("/v1/carbon/reports?format=csv&table=clusters")).text()
    finally:
        await client.close()
        for service in services:
            service.ring.close()
    assert doc["shared"] is True
    merged_requests = sum(row["requests"] for w in doc["windows"] for row in w["usage"])
    assert merged_requests == 2  # both replicas' windows, not only this one's
    rows = list(csv.DictReader(io.StringIO(text)))
    assert sum(int(r["requests"]) for r in rows) == merged_requests
    bounds = {(w["start"], w["end"]) for w in doc["windows"]}
    assert {(r["window_start"], r["window_end"]) for r in rows} == bounds
    cluster_rows = list(csv.DictReader(io.StringIO(clusters_text)))
    assert sum(int(r["requests"]) for r in cluster_rows) == merged_requests


async def test_redis_outage_falls_back_to_local_state_and_recovers(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    own = RedisServer(tmp_path)  # this test stops its server; the others keep theirs
    replica = Replica(own.url, "outage")
    peer = Replica(own.url, "outage")
    try:
        await replica.state.start()
        await peer.state.start()
        peer.fleet.by_name["green"].in_flight = 5
        await settle()
        assert replica.state.up and replica.fleet.by_name["green"].peer_in_flight == 5
        own.stop()
        await settle(1.0)
        assert not replica.state.up
        assert replica.state.fallbacks == 1
        assert replica.fleet.by_name["green"].peer_in_flight == 0  # nobody else's load is known now
        detail = replica.state.detail()
        assert detail["shared"] is False and "unreachable" in detail["reason"]
        fetched = await replica.state.fetch_once("em:DE", 60.0, lambda: _ready(value(42.0)))
        assert fetched.g_per_kwh == 42.0  # a refresh still works, from this replica alone
        assert await replica.state.windows() is None
        own.start()
        deadline = time.monotonic() + 10
        while not replica.state.up and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        assert replica.state.up and replica.state.detail()["shared"] is True
    finally:
        await replica.state.stop()
        await peer.state.stop()
        own.stop()


async def _ready(v: Intensity) -> Intensity:
    return v


async def test_three_intensity_services_call_the_provider_once_per_refresh(
    redis_server: RedisServer, fake: FakeProviders, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_EM_KEY", EM_KEY)
    settings = IntensitySettings.model_validate(
        {"refresh_interval": "1s", "retry_min": "0.2s",
         "electricity_maps": {"api_key_env": "TEST_EM_KEY", "base_url": fake.base_url + "/em/v3"}}
    )  # fmt: skip
    state_settings = FAST.model_copy(update={"url": redis_server.url, "prefix": "intensity-once"})
    states = [RedisState(state_settings, redis_server.url) for _ in range(3)]
    services = [
        IntensityService("electricity_maps", {"eu-central-1": "DE"}, settings, state=s) for s in states
    ]
    for state in states:
        await state.start()
    for service in services:
        await service.start()
    await asyncio.sleep(3.5)
    for service in services:
        await service.stop()
    for state in states:
        await state.stop()
    calls = len(fake.paths("/em/"))
    provider_calls = sum(feed.calls for s in services for feed in s.feeds())
    assert calls == provider_calls
    # 3.5 s at one refresh per second: about 4 calls in all, where three unshared services make about 12.
    assert 3 <= calls <= 6, calls
    assert all(s.current("eu-central-1").source == "electricity_maps" for s in services)


async def test_an_unreachable_store_at_start_up_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()  # nothing listens there
    state = RedisState(
        FAST.model_copy(update={"url": f"redis://127.0.0.1:{port}/0"}), f"redis://127.0.0.1:{port}/0"
    )
    with caplog.at_level(logging.WARNING, logger="bauxite.state"):
        await state.start()
        await asyncio.sleep(1.5)  # one reconnect attempt more: no second line
        await state.stop()
    lines = [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(lines) == 1 and "start-up" in lines[0], lines


async def test_the_state_gauge_is_exposed_whenever_a_store_is_configured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("BAUXITE_TEST_UNSET_REDIS_URL", raising=False)
    cluster = {"name": "a", "region": "us-east-1", "url": "http://127.0.0.1:1/v1", "models": ["m"]}
    base = {"clusters": [cluster]}
    found = []
    for state in ({}, {"url_env": "BAUXITE_TEST_UNSET_REDIS_URL"}):
        app = create_app(settings_from_mapping({**base, "state": state}))
        client: TestClient[Any, Any] = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        try:
            text = await (await client.get("/metrics")).text()
        finally:
            await client.close()
        found.append([line for line in text.splitlines() if line.startswith("bauxite_shared_state_up")])
    assert found == [[], ['bauxite_shared_state_up{kind="redis"} 0.0']]


def test_state_settings_validation_and_default() -> None:
    assert isinstance(make_state(StateSettings()), LocalState)
    unset = make_state(StateSettings(url_env="BAUXITE_TEST_UNSET_REDIS_URL"))
    assert "unset" in unset.detail()["reason"]
    with pytest.raises(ValueError, match="credentials"):
        StateSettings(url="redis://user:secret@redis:6379/0")
    with pytest.raises(ValueError, match="either"):
        StateSettings(url="redis://redis:6379/0", url_env="REDIS_URL")
    for bad in ("http://redis:6379/0", "not a url", "redis:6379"):
        with pytest.raises(ValueError, match="not a Redis URL"):
            StateSettings(url=bad)
    for good in ("redis://r:6379/0", "rediss://r:6380", "unix:///run/redis.sock"):
        assert StateSettings(url=good).url == good
