"""``bauxite serve --workers N``: the shared telemetry buffer across real forked processes, and the whole
supervisor (real subprocess, real simulated fleet, real sockets): exact totals with two workers, and a
worker killed mid-request is restarted with its in-flight requests recorded as errors."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from bauxite.app import Handler
from bauxite.cli import main
from bauxite.clusters import Fleet
from bauxite.fleet.config import SimClusterSettings
from bauxite.fleet.server import SimServer
from bauxite.fleet.sim import SimCluster
from bauxite.intensity.base import Intensity, IntensityError
from bauxite.records import INDEX, enum_index
from bauxite.routing.config import LatencySettings
from bauxite.routing.router import Router
from bauxite.routing.server_times import ServerCounters
from bauxite.settings import ClusterSettings
from bauxite.telemetry.ring import RECORD_SIZE
from bauxite.workers.board import InFlightBoard
from bauxite.workers.feeds import FeedBoard, HubFeeds, WorkerFeeds
from bauxite.workers.scrapes import BoardReadings, ScrapeBoard, hub_scrapes, worker_scrapes
from bauxite.workers.shm import SharedRings
from bauxite.workers.supervisor import worker_count
from intensity_fakes import EM_KEY
from servers import FakeOnThread

MODEL = "tiny-8b"
PROMPT, STATUS = INDEX["prompt_tokens"], INDEX["status"]
STATUS_OK, STATUS_ERROR = enum_index("status", "ok"), enum_index("status", "error")


def _fields(i: int, status: int = STATUS_OK) -> tuple[Any, ...]:
    """A raw ring record (the ``records.LAYOUT`` order): id 1 for labels, ``i`` in the token counts."""
    values: list[Any] = [1] * len(INDEX)
    values[INDEX["prompt_tokens"]], values[INDEX["completion_tokens"]] = i, 2 * i
    values[INDEX["status"]], values[INDEX["finished_at"]] = status, float(i)
    return tuple(values)


# The buffer --------------------------------------------------------------------------------------------


def test_regions_split_two_mib_with_a_header_slot_each() -> None:
    shared = SharedRings(3, lock_memory=False)
    assert shared.capacity_bytes == 2 * 1024 * 1024
    assert len(shared.regions) == 3
    assert all(r.slots == shared.region_bytes // RECORD_SIZE - 1 for r in shared.regions)
    assert sum((r.slots + 1) * RECORD_SIZE for r in shared.regions) <= shared.capacity_bytes
    with pytest.raises(ValueError, match="per worker"):
        SharedRings(20_000, lock_memory=False)


def test_records_written_by_forked_children_are_drained_by_the_parent() -> None:
    shared = SharedRings(2, lock_memory=False)
    reader = shared.reader()
    pids = []
    for index, count in ((0, 500), (1, 700)):
        pid = os.fork()
        if pid == 0:  # child: write into its own region only, then leave without any cleanup
            region = shared.regions[index]
            for i in range(count):
                region.append(*_fields(i))
            region.set_in_flight(index + 3)
            os._exit(0)
        pids.append(pid)
    for pid in pids:
        assert os.waitpid(pid, 0)[1] == 0
    records = reader.drain()
    assert len(records) == 1200
    assert sorted(r[PROMPT] for r in records) == sorted([*range(500), *range(700)])
    assert [r.in_flight for r in shared.regions] == [3, 4]
    assert reader.drain() == []  # the tail moved past everything taken


def test_a_full_region_counts_drops_and_wraps_after_draining() -> None:
    shared = SharedRings(2, capacity_bytes=16 * RECORD_SIZE, lock_memory=False)
    region = shared.regions[0]
    reader = shared.reader()
    assert region.slots == 7
    assert all(region.append(*_fields(i)) for i in range(7))
    assert not region.append(*_fields(99))
    assert reader.dropped == 1
    assert [r[PROMPT] for r in reader.drain()] == list(range(7))
    for i in range(10, 15):  # crosses the end of the region's slots
        assert region.append(*_fields(i, STATUS_ERROR))
    drained = reader.drain()
    assert [r[PROMPT] for r in drained] == list(range(10, 15))
    assert all(r[STATUS] == STATUS_ERROR for r in drained)
    assert shared.regions[1].head == 0  # the neighbour region was never touched


def test_the_board_shares_in_flight_counts_between_forked_workers() -> None:
    board = InFlightBoard(3, ["green", "dirty"])
    pid = os.fork()
    if pid == 0:  # worker 1 publishes its counts from another process
        board.publish(1, [5, 1])
        os._exit(0)
    assert os.waitpid(pid, 0)[1] == 0
    board.publish(2, [2, 0])
    board.publish(0, [100, 100])  # a worker's own row is never its peer load
    assert board.others(0) == [7, 1]
    assert board.others(1) == [102, 100]
    board.clear(1)  # a dead worker's requests no longer count
    assert board.others(0) == [2, 0]


async def test_a_worker_sees_its_siblings_load_unless_shared_state_carries_it() -> None:
    board = InFlightBoard(2, ["green", "dirty"])
    fleet = Fleet(
        [
            ClusterSettings.model_validate(
                {"name": n, "region": "us-east-1", "url": "http://127.0.0.1:1/v1", "models": [MODEL]}
            )
            for n in ("green", "dirty")
        ]
    )
    board.publish(1, [6, 0])
    router = Router(fleet)
    for _ in range(3):
        router.dispatched("green")  # this worker's own requests
    shared = False
    task = asyncio.create_task(board.run(0, fleet, router, lambda: shared, interval_s=0.01))
    await asyncio.sleep(0.1)
    assert fleet.by_name["green"].peer_in_flight == 6
    assert router.depth("green") == 3 + 6  # its own running requests plus its siblings'
    assert board.others(1) == [3, 0]  # its own count went out too
    shared = True
    router.peers("green", 0)
    await asyncio.sleep(0.1)
    assert fleet.by_name["green"].peer_in_flight == 0  # left to the shared store
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _intensity(g: float, fetched_at: float) -> Intensity:
    return Intensity(zone="SE", g_per_kwh=g, at=fetched_at, source="electricity_maps", fetched_at=fetched_at)


def test_the_hub_publishes_intensity_that_forked_workers_read() -> None:
    board = FeedBoard()
    assert board.read("electricity_maps:SE") is None
    pid = os.fork()
    if pid == 0:  # the hub, in another process
        board.publish("electricity_maps:SE", _intensity(21.0, 1000.0))
        board.publish("electricity_maps:DE", _intensity(300.0, 1000.0))
        board.publish("electricity_maps:SE", _intensity(22.0, 1001.0))  # replaces, same slot
        os._exit(0)
    assert os.waitpid(pid, 0)[1] == 0
    se, de = board.read("electricity_maps:SE"), board.read("electricity_maps:DE")
    assert se is not None and (se.g_per_kwh, se.fetched_at) == (22.0, 1001.0)
    assert de is not None and de.g_per_kwh == 300.0
    assert board.read("watttime:CAISO_NORTH") is None


async def test_workers_never_call_the_provider_and_wait_for_the_hubs_value() -> None:
    board = FeedBoard()
    hub, worker = HubFeeds(board), WorkerFeeds(board)
    calls = 0

    async def fetch() -> Intensity:
        nonlocal calls
        calls += 1
        return _intensity(42.0, time.time())

    waiting = asyncio.create_task(worker.fetch_once("em:SE", 60.0, fetch, lock_s=5.0))
    await asyncio.sleep(0.2)
    assert not waiting.done()  # nothing published yet: the worker waits for the hub
    assert (await hub.fetch_once("em:SE", 60.0, fetch)).g_per_kwh == 42.0
    assert (await waiting).g_per_kwh == 42.0
    assert calls == 1  # only the hub fetched
    with pytest.raises(IntensityError, match="no fresh value"):
        await worker.fetch_once("em:SE", 0.0, fetch, lock_s=0.2)  # too old for max_age 0
    assert calls == 1


def _two_clusters(url: str = "http://127.0.0.1:1/v1") -> Fleet:
    return Fleet(
        [
            ClusterSettings.model_validate({"name": n, "region": "us-east-1", "url": url, "models": [MODEL]})
            for n in ("green", "dirty")
        ]
    )


def test_forked_workers_apply_each_hub_reading_once() -> None:
    board = ScrapeBoard(["green", "dirty"])
    counters = ServerCounters(prefill_s_sum=1.5, prefill_count=3.0, prompt_tokens_sum=900.0, prompt_count=3.0)
    pid = os.fork()
    if pid == 0:  # the hub, in another process
        board.publish("green", 4, 9, 12.5, counters)
        board.publish("dirty", 1, 0, None, None)
        board.publish("nowhere", 1, 1, 1.0, None)  # not configured: no slot
        os._exit(0)
    assert os.waitpid(pid, 0)[1] == 0
    seen: list[tuple[str, int, int, float | None, ServerCounters | None]] = []
    readings = BoardReadings(
        board, _two_clusters(), lambda *reading: seen.append(reading), LatencySettings(), poll_s=1.0
    )
    assert readings.apply_new() == 2
    assert seen == [("green", 4, 9, 12.5, counters), ("dirty", 1, 0, None, None)]
    assert readings.apply_new() == 0  # nothing new: the same reading is never applied twice
    board.publish("dirty", 2, 5, 3.0, None)
    assert readings.apply_new() == 1
    assert seen[-1] == ("dirty", 2, 5, 3.0, None)
    assert BoardReadings(board, _two_clusters(), lambda *r: None, LatencySettings(), 1.0).apply_new() == 2


async def test_only_successful_hub_scrapes_reach_the_workers_routers() -> None:
    metrics = "vllm:num_requests_running 3\nvllm:num_requests_waiting 40\n"
    broken = False

    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=500 if broken else 200, text=metrics)

    app = web.Application()
    app.router.add_get("/metrics", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    board = ScrapeBoard(["green", "dirty"])
    settings = LatencySettings(stats_interval=0.05)
    hub = Router(_two_clusters(f"http://127.0.0.1:{port}/v1"), latency=settings, scrapes=hub_scrapes(board))
    worker_fleet = _two_clusters("http://127.0.0.1:1/v1")  # a worker's own scrape would fail here
    worker = Router(worker_fleet, latency=settings, scrapes=worker_scrapes(board, poll_s=0.01))
    worker.dispatched("green")  # this worker's own request is part of the cluster's 43
    try:
        await worker.start()
        await hub.start()
        await asyncio.sleep(0.3)
        green = worker_fleet.by_name["green"]
        assert (green.queue_running, green.queue_waiting) == (3, 40)
        assert worker.depth("green") == 43
        assert worker.others("green")[0] == 42  # its own request is not another client's
        broken = True
        await asyncio.sleep(0.2)
        assert worker.depth("green") == 43  # a failed scrape leaves the previous reading in place
    finally:
        await hub.stop()
        await worker.stop()
        await runner.cleanup()


def test_worker_count_parses_auto_and_rejects_nonsense(tmp_path: Path) -> None:
    assert worker_count("3") == 3
    cpus = len(os.sched_getaffinity(0))
    assert worker_count("auto", tmp_path / "absent") == cpus
    limit = tmp_path / "cpu.max"
    limit.write_text("150000 100000\n")  # a container limited to 1.5 CPUs
    assert worker_count("auto", limit) == min(cpus, 2)
    limit.write_text("max 100000\n")
    assert worker_count("auto", limit) == cpus
    for bad in ("0", "-2", "many", "257", "4096", "1000000"):
        with pytest.raises(ValueError, match="--workers must be an integer from 1 to 256"):
            worker_count(bad)
    assert worker_count("256") == 256
    SharedRings(256, lock_memory=False)  # the largest accepted count fits the buffer


def test_serve_rejects_too_many_workers_and_warns_above_the_cpu_count(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    absent = str(tmp_path / "absent.yaml")
    for huge in ("1000000", "4096"):
        with pytest.raises(SystemExit) as exit_info:
            main(["serve", "--config", absent, "--workers", huge])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("usage: bauxite serve") and "integer from 1 to 256" in err, err
        assert "Traceback" not in err
    cpus = len(os.sched_getaffinity(0))
    assert main(["serve", "--config", absent, "--workers", str(cpus + 1)]) == 2  # the config is missing
    err = capsys.readouterr().err
    assert f"warning: --workers {cpus + 1} is more than the {cpus} CPUs" in err
    assert main(["serve", "--config", absent, "--workers", "auto"]) == 2
    assert "warning: --workers" not in capsys.readouterr().err


# The supervisor, end to end ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout_s: float = 60.0) -> None:
    async def probe() -> None:
        deadline = time.monotonic() + timeout_s
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                try:
                    async with session.get(url) as resp:
                        if resp.status < 500:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.2)
        raise AssertionError(f"{url} did not answer within {timeout_s:.0f}s")

    asyncio.run(probe())


def children(pid: int) -> list[int]:
    """Child pids of ``pid``, oldest first (by start time)."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == pid:
            found.append((int(fields[19]), int(entry.name)))
    return [p for _, p in sorted(found)]


def established(pid: int, port: int) -> int:
    """TCP connections ``pid`` holds with local port ``port`` (from /proc: fds and the socket table)."""
    inodes = set()
    for fd in os.scandir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(fd.path)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            if int(cols[1].rsplit(":", 1)[1], 16) == port and cols[3] == "01" and cols[9] in inodes:
                count += 1
    return count


class Deployment:
    """A simulated fleet and ``bauxite serve --workers 2`` as real subprocesses."""

    def __init__(
        self, tmp: Path, time_scale: float, em_url: str | None = None, reporting_interval: str = "1h"
    ) -> None:
        self.port = free_port()
        fleet_port = free_port()
        config: dict[str, Any] = {
            "auth": {"allow_anonymous": True},
            "enterprise": {"carbon_tracking": {"reporting_interval": reporting_interval}},
            "clusters": [
                {"name": "sim", "region": "us-east-1", "url": f"http://127.0.0.1:{fleet_port}/v1",
                 "models": [MODEL]},
            ],
            "fleet": {"time_scale": time_scale, "clusters": [
                {"name": "sim", "port": fleet_port, "models": [MODEL], "default_output_tokens": 8},
            ]},
        }  # fmt: skip
        env = dict(os.environ)
        if em_url is not None:  # live intensity from a fake Electricity Maps, refreshed every second
            config["enterprise"]["carbon_tracking"]["provider"] = "electricity_maps"
            config["clusters"][0]["zone"] = "SE"
            em = {"api_key_env": "TEST_EM_KEY", "base_url": em_url}
            config["intensity"] = {"refresh_interval": "1s", "retry_min": "0.5s", "electricity_maps": em}
            env["TEST_EM_KEY"] = EM_KEY
        path = tmp / "bauxite.yaml"
        path.write_text(yaml.safe_dump(config))
        self.config = path
        cli = [sys.executable, "-m", "bauxite.cli"]
        self.log = tmp / "serve.log"
        self.fleet = subprocess.Popen([*cli, "fleet", "--config", str(path)], stdout=subprocess.DEVNULL)
        with open(self.log, "wb") as log:
            self.serve = subprocess.Popen(
                [*cli, "serve", "--config", str(path), "--port", str(self.port), "--workers", "2"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        self.url = f"http://127.0.0.1:{self.port}"
        wait_http(f"http://127.0.0.1:{fleet_port}/health")
        wait_http(f"{self.url}/healthz")
        wait_http(f"{self.url}/metrics")

    def workers(self) -> list[int]:
        """Worker pids (the supervisor forks the hub first, so it is the oldest child)."""
        return children(self.serve.pid)[1:]

    def close(self) -> None:
        for proc in (self.serve, self.fleet):
            proc.send_signal(signal.SIGTERM)
        for proc in (self.serve, self.fleet):
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def fast(tmp_path: Path) -> Iterator[Deployment]:
    deployment = Deployment(tmp_path, time_scale=0.0)
    try:
        yield deployment
    finally:
        deployment.close()


@pytest.fixture
def slow(tmp_path: Path) -> Iterator[Deployment]:
    deployment = Deployment(tmp_path, time_scale=30.0)
    try:
        yield deployment
    finally:
        deployment.close()


def totals(metrics: str) -> dict[str, float]:
    out = {"ok": 0.0, "error": 0.0}
    pattern = r'^bauxite_requests_total\{[^}]*status="(ok|error)"[^}]*\} (\S+)$'
    for match in re.finditer(pattern, metrics, re.M):
        out[match.group(1)] += float(match.group(2))
    return out


async def scrape(url: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(url + "/metrics") as resp:
        assert resp.status == 200
        return await resp.text()


async def chat(session: aiohttp.ClientSession, url: str, stream: bool = False) -> int:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    async with session.post(url + "/v1/chat/completions", json=body) as resp:
        await resp.read()
        return resp.status


def test_two_workers_count_every_request_exactly(fast: Deployment) -> None:
    sent = 240

    async def load() -> list[int]:
        # Many short connections, so the kernel spreads them over both workers.
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:
            sem = asyncio.Semaphore(8)

            async def one(i: int) -> int:
                async with sem:
                    return await chat(session, fast.url, stream=i % 2 == 1)

            return await asyncio.gather(*(one(i) for i in range(sent)))

    statuses = asyncio.run(load())
    assert statuses == [200] * sent
    assert len(fast.workers()) == 2
    first = asyncio.run(scrape(fast.url))
    assert totals(first) == {"ok": float(sent), "error": 0.0}
    capacity = re.search(r"^bauxite_telemetry_buffer_capacity_bytes (\S+)$", first, re.M)
    assert capacity is not None and float(capacity.group(1)) == 2 * 1024 * 1024
    for _ in range(4):  # whichever worker takes the scrape, the answer comes from the one hub
        assert totals(asyncio.run(scrape(fast.url))) == {"ok": float(sent), "error": 0.0}


def test_a_second_workers_gateway_on_a_taken_port_refuses_like_a_single_process(fast: Deployment) -> None:
    cli = [sys.executable, "-m", "bauxite.cli", "serve", "--config", str(fast.config)]
    cli += ["--port", str(fast.port)]
    refusals = []
    for workers in ("2", "1"):
        second = subprocess.run([*cli, "--workers", workers], capture_output=True, text=True, timeout=30)
        assert second.returncode == 1, second.stderr
        refusals.append(second.stderr.strip().splitlines()[-1])
    assert refusals[0] == refusals[1]
    assert refusals[0].startswith("cannot start:") and refusals[0].endswith("Address already in use")
    assert len(fast.workers()) == 2  # the first gateway is untouched


def test_only_the_hub_logs_carbon_reports(tmp_path: Path) -> None:
    deployment = Deployment(tmp_path, time_scale=0.0, reporting_interval="1s")
    try:

        async def load() -> list[int]:
            connector = aiohttp.TCPConnector(force_close=True)
            async with aiohttp.ClientSession(connector=connector) as session:
                return await asyncio.gather(*(chat(session, deployment.url) for _ in range(20)))

        assert asyncio.run(load()) == [200] * 20
        time.sleep(3.5)  # three window boundaries or more
    finally:
        deployment.close()
    lines = [json.loads(line[line.index("{") :]) for line in deployment.log.read_text().splitlines()
             if '"event":"carbon_report"' in line]  # fmt: skip
    assert len(lines) >= 3
    # One process closes at most one window per 1 s boundary, plus its partial last one; one line per
    # process per window would be three times as many.
    stamps = [datetime.fromisoformat(line[k]).timestamp() for line in lines for k in ("start", "end")]
    assert len(lines) <= max(stamps) - min(stamps) + 2, [(line["start"], line["end"]) for line in lines]
    assert sum(line["totals"]["requests"] for line in lines) == 20


def test_a_killed_worker_is_restarted_and_its_in_flight_requests_recorded_as_errors(slow: Deployment) -> None:
    count = 12
    before = slow.workers()
    assert len(before) == 2

    async def run() -> tuple[list[int | str], int]:
        connector = aiohttp.TCPConnector(force_close=True, limit=0)
        timeout = aiohttp.ClientTimeout(total=120)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            started = asyncio.Event()
            first_bytes = 0

            async def one() -> int | str:
                nonlocal first_bytes
                body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True,
                        "max_tokens": 64}  # fmt: skip
                try:
                    async with session.post(slow.url + "/v1/chat/completions", json=body) as resp:
                        await resp.content.readany()  # the gateway is streaming: the request is in flight
                        first_bytes += 1
                        if first_bytes == count:
                            started.set()
                        await resp.read()
                        return resp.status
                except aiohttp.ClientError as exc:
                    return type(exc).__name__

            tasks = [asyncio.create_task(one()) for _ in range(count)]
            await asyncio.wait_for(started.wait(), 60)
            held = {pid: established(pid, slow.port) for pid in before}
            victim = max(held, key=lambda pid: held[pid])
            os.kill(victim, signal.SIGKILL)
            return list(await asyncio.gather(*tasks)), held[victim]

    results, on_victim = asyncio.run(run())
    failed = [r for r in results if r != 200]
    assert on_victim >= 1
    assert len(failed) == on_victim, results

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (len(slow.workers()) != 2 or set(slow.workers()) == set(before)):
        time.sleep(0.2)
    after = slow.workers()
    assert len(after) == 2 and set(after) != set(before), "the killed worker was not replaced"

    async def scrape_until_settled() -> dict[str, float]:
        deadline = time.monotonic() + 30
        while True:
            found = totals(await scrape(slow.url))
            if found["ok"] + found["error"] >= count or time.monotonic() > deadline:
                return found
            await asyncio.sleep(0.3)

    assert asyncio.run(scrape_until_settled()) == {"ok": float(count - on_victim), "error": float(on_victim)}
    assert "in-flight requests recorded as errors" in slow.log.read_text()

    async def more() -> list[int]:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
            return await asyncio.gather(*(chat(session, slow.url) for _ in range(6)))

    assert asyncio.run(more()) == [200] * 6  # the replacement serves


def alive(pid: int) -> bool:
    """Whether ``pid`` is a running process (a zombie, dead but not yet reaped, is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def wait_gone(pids: list[int], timeout_s: float) -> list[int]:
    """Wait until none of ``pids`` runs; returns those still running after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return [p for p in pids if alive(p)]


def test_a_repeated_sigterm_while_draining_still_stops_every_child(slow: Deployment) -> None:
    family = children(slow.serve.pid)
    assert len(family) == 3

    async def run() -> None:
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True,
                    "max_tokens": 64}  # fmt: skip
            with contextlib.suppress(aiohttp.ClientError):
                async with session.post(slow.url + "/v1/chat/completions", json=body) as resp:
                    await resp.content.readany()  # in flight: its worker drains it before stopping
                    slow.serve.send_signal(signal.SIGTERM)
                    await asyncio.sleep(0.5)
                    assert slow.serve.poll() is None, "the supervisor left before its workers drained"
                    slow.serve.send_signal(signal.SIGTERM)  # impatient: Ctrl-C twice
                    await resp.read()

    asyncio.run(run())
    assert slow.serve.wait(30) == 0
    assert wait_gone(family, 5) == []
    assert "while stopping" in slow.log.read_text()


def test_children_stop_when_the_supervisor_is_killed(fast: Deployment) -> None:
    family = children(fast.serve.pid)
    assert len(family) == 3
    fast.serve.kill()
    fast.serve.wait()
    assert wait_gone(family, 30) == []


@pytest.fixture
def providers() -> Iterator[FakeOnThread]:
    fake = FakeOnThread()
    fake.fake.em_values = {"SE": 21.0}
    try:
        yield fake
    finally:
        fake.close()


def test_only_the_hub_calls_the_intensity_provider(tmp_path: Path, providers: FakeOnThread) -> None:
    deployment = Deployment(tmp_path, time_scale=0.0, em_url=providers.fake.base_url + "/em/v3")
    try:
        time.sleep(1.5)  # past the first refresh of every process
        before, started = providers.em_calls(), time.monotonic()
        time.sleep(5.0)
        calls, elapsed = providers.em_calls() - before, time.monotonic() - started

        async def header() -> str:
            async with aiohttp.ClientSession() as session:
                body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
                async with session.post(deployment.url + "/v1/chat/completions", json=body) as resp:
                    await resp.read()
                    return resp.headers["x-bauxite-grid-intensity"]

        served = {asyncio.run(header()) for _ in range(6)}
    finally:
        deployment.close()
    # One zone refreshed every second by the hub alone; hub + 2 workers each polling would make ~3x.
    assert 2 <= calls <= elapsed + 2, calls
    assert served == {"21.0"}  # every worker serves the hub's live value, not the static table


class SimsOnThread:
    """Simulated vLLM clusters (the fleet server's application) on their own event-loop thread, recording
    when each ``GET /metrics`` arrives (monotonic seconds), so a test can count the gateway's scrapes."""

    def __init__(self, names: list[str]) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.sims = {
            n: SimCluster(SimClusterSettings(name=n, models=(MODEL,), default_output_tokens=8), 0.0)
            for n in names
        }
        self.scrapes: dict[str, list[float]] = {n: [] for n in names}
        self.ports = {n: free_port() for n in names}
        self._runners = [
            asyncio.run_coroutine_threadsafe(self._serve(n), self.loop).result(10) for n in names
        ]

    async def _serve(self, name: str) -> web.AppRunner:
        app = SimServer(self.sims[name]).app()

        @web.middleware
        async def count(request: web.Request, handler: Handler) -> web.StreamResponse:
            if request.path == "/metrics":
                self.scrapes[name].append(time.monotonic())
            return await handler(request)

        app.middlewares.append(count)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.ports[name]).start()
        return runner

    def set_waiting(self, name: str, waiting: int) -> None:
        """Other clients' requests queued at ``name`` (vLLM's waiting gauge)."""

        def assign() -> None:
            self.sims[name].waiting = waiting

        self.loop.call_soon_threadsafe(assign)

    def close(self) -> None:
        for runner in self._runners:
            asyncio.run_coroutine_threadsafe(runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


SCRAPE_INTERVAL_S = 0.5


def test_only_the_hub_scrapes_and_every_worker_routes_on_its_readings(tmp_path: Path) -> None:
    sims = SimsOnThread(["green", "dirty"])
    port = free_port()
    config = {
        "auth": {"allow_anonymous": True},
        "enterprise": {"green_routing": {"enabled": True, "priority": "low_carbon"}},
        "clusters": [
            {"name": "green", "region": "eu-north-1", "url": f"http://127.0.0.1:{sims.ports['green']}/v1",
             "models": [MODEL]},  # hydro and nuclear
            {"name": "dirty", "region": "ap-south-1", "url": f"http://127.0.0.1:{sims.ports['dirty']}/v1",
             "models": [MODEL]},  # coal-heavy grid
        ],
        "latency": {"slo_ttft_ms": 2000, "stats_interval": f"{SCRAPE_INTERVAL_S}s", "clusters": {
            "green": {"rtt_ms": 1, "ttft_ms": 30, "itl_ms": 20, "max_concurrency": 64},
            "dirty": {"rtt_ms": 1, "ttft_ms": 30, "itl_ms": 20, "max_concurrency": 256}}},
    }  # fmt: skip
    path = tmp_path / "bauxite.yaml"
    path.write_text(yaml.safe_dump(config))
    cli = [sys.executable, "-m", "bauxite.cli", "serve", "--config", str(path), "--port", str(port)]
    url = f"http://127.0.0.1:{port}"
    with open(tmp_path / "serve.log", "wb") as log:
        serve = subprocess.Popen([*cli, "--workers", "2"], stdout=log, stderr=subprocess.STDOUT)

    async def routes(count: int) -> set[str]:
        # Short connections, so the kernel spreads them over both workers.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:

            async def one() -> str:
                body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
                async with session.post(url + "/v1/chat/completions", json=body) as resp:
                    await resp.read()
                    assert resp.status == 200
                    return resp.headers["x-bauxite-cluster"]

            return set(await asyncio.gather(*(one() for _ in range(count))))

    try:
        wait_http(f"{url}/healthz")
        assert asyncio.run(routes(12)) == {"green"}  # an idle green cluster takes everything
        time.sleep(0.5)  # past every process's start
        started = time.monotonic()
        time.sleep(4 * SCRAPE_INTERVAL_S)
        window_s = time.monotonic() - started
        per_interval = {
            name: sum(started <= t < started + window_s for t in times) / (window_s / SCRAPE_INTERVAL_S)
            for name, times in sims.scrapes.items()
        }
        sims.set_waiting("green", 2000)  # other clients queue at green: far over the SLO for 64 slots
        time.sleep(2 * SCRAPE_INTERVAL_S + 0.3)
        after = asyncio.run(routes(12))
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(30)
        sims.close()
    print(f"/metrics requests per cluster per scrape interval: {per_interval}")
    # The hub alone: one scrape per interval per cluster (each process scraping would make three).
    assert all(0.5 <= rate <= 1.5 for rate in per_interval.values()), per_interval
    assert after == {"dirty"}  # both workers see green's queue, though neither scraped it
