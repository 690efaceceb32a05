"""Telemetry buffer cost and capacity: append and drain cost per record, sustainable throughput, and a soak.

The soak submits records at a fixed rate on one event loop, exactly as the gateway does (the drain timer and
periodic scrapes run alongside), for ``--seconds``; it prints the records dropped (target: zero) and resident
memory at the start and end (target: flat). The rate is twice the gateway's maximum request rate, which the
script measures first (a real gateway in front of a zero-delay simulated cluster, non-streaming, concurrency
8 and 32; the best is kept) unless ``--gateway-rps`` gives it.

    python benchmarks/telemetry.py [--seconds 60] [--gateway-rps N] [--scrape-every 15]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bauxite.records import RECORD_SIZE, RequestRecord, Status
from bauxite.settings import Settings, settings_from_mapping
from bauxite.telemetry.service import Telemetry

MODELS = ("llama-3.1-8b", "llama-3.1-70b", "qwen-2.5-32b")
REGIONS = (("iowa", "us-central1"), ("belgium", "europe-west1"), ("oregon", "us-west1"))
DEPARTMENTS = ("research", "sales", "support", "legal", "platform")
STATUSES: tuple[Status, ...] = ("ok", "ok", "ok", "error")


def settings() -> Settings:
    return settings_from_mapping(
        {
            "clusters": [
                {
                    "name": name,
                    "region": region,
                    "url": f"http://127.0.0.1:{9000 + i}/v1",
                    "models": list(MODELS),
                }
                for i, (name, region) in enumerate(REGIONS)
            ],
            "auth": {"keys": [{"department": d, "sha256": f"{i:064x}"} for i, d in enumerate(DEPARTMENTS)]},
        }
    )


def records(n: int) -> list[RequestRecord]:
    """A varied pool, built up front so the measurement is the buffer's cost, not record construction."""
    combos = itertools.cycle(itertools.product(MODELS, REGIONS, DEPARTMENTS, STATUSES))
    out = []
    for i, (model, (cluster, region), dept, status) in zip(range(n), combos, strict=False):
        out.append(
            RequestRecord(
                model=model, region=region, cluster=cluster, department=dept, endpoint="chat",
                status=status, http_status=200 if status == "ok" else 503, prompt_tokens=200 + i % 300,
                completion_tokens=100 + i % 200, cached_tokens=i % 64, ttft_s=0.05 + (i % 10) / 100,
                duration_s=0.5 + (i % 30) / 10, energy_j=40.0 + i % 50, energy_j_min=20.0, energy_j_max=80.0,
                gpu_j=20.0, gpu_idle_j=5.0, host_j=8.6, energy_measured=bool(i % 2),
                intensity_g_per_kwh=380.0,
                intensity_source="static", intensity_signal="average", intensity_basis="lifecycle", pue=1.1,
                carbon_g=0.005, market_g_per_kwh=380.0, carbon_market_g=0.005, market_factor=False,
                embodied_g=0.0003, scope="scope2", sizes_default=False, avoided_green_g=0.001,
                avoided_kv_g=0.0002, route_reason="low_carbon", finished_at=time.time(),
            )
        )  # fmt: skip
    return out


def rss_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def micro(rounds: int) -> dict[str, float]:
    """Fill the whole buffer, drain it, render a scrape; best of ``rounds`` (least disturbed by others)."""
    tel = Telemetry(settings())
    pool = records(tel.ring.slots)
    best = {"append_ns": float("inf"), "drain_ns": float("inf"), "scrape_ms": float("inf")}
    try:
        gc.disable()
        for _ in range(rounds):
            submit = tel.submit
            t0 = time.perf_counter_ns()
            for record in pool:
                submit(record)
            t1 = time.perf_counter_ns()
            tel.drain()
            t2 = time.perf_counter_ns()
            tel.render_metrics()
            t3 = time.perf_counter_ns()
            best["append_ns"] = min(best["append_ns"], (t1 - t0) / len(pool))
            best["drain_ns"] = min(best["drain_ns"], (t2 - t1) / len(pool))
            best["scrape_ms"] = min(best["scrape_ms"], (t3 - t2) / 1e6)
        assert tel.ring.dropped == 0
    finally:
        gc.enable()
        tel.ring.close()
    best["sustained_per_s"] = 1e9 / (best["append_ns"] + best["drain_ns"])
    best["slots"] = float(len(pool))
    return best


async def soak(rate: float, seconds: float, scrape_every: float) -> dict[str, Any]:
    tel = Telemetry(settings())
    await tel.start()
    pool = records(4096)
    tick_s = 0.01
    submitted = 0
    rss_start = rss_kib()
    rss_warm = -1
    warm_at = min(5.0, seconds / 4)
    loop = asyncio.get_running_loop()
    started = loop.time()
    next_scrape = started + scrape_every
    records_iter = itertools.cycle(pool)
    try:
        while (now := loop.time()) - started < seconds:
            # Catch up on whatever the tick fell behind by, so the achieved rate is the asked one.
            owed = rate * (now - started) - submitted
            for _ in range(int(owed)):
                tel.submit(next(records_iter))
                submitted += 1
            if rss_warm < 0 and now - started >= warm_at:
                rss_warm = rss_kib()  # after the first scrape-free seconds: totals and caches exist
            if now >= next_scrape:
                tel.render_metrics()
                next_scrape += scrape_every
            await asyncio.sleep(tick_s)
        elapsed = loop.time() - started
        tel.drain()
        result = {
            "rate_asked": rate,
            "rate_achieved": submitted / elapsed,
            "seconds": elapsed,
            "submitted": submitted,
            "drained": tel.totals.records,
            "dropped": tel.ring.dropped,
            "high_water_slots": tel.ring.high_water,
            "slots": tel.ring.slots,
            "locked": tel.ring.locked,
            "rss_start_kib": rss_start,
            "rss_warm_kib": rss_warm,
            "warm_at_s": warm_at,
            "rss_end_kib": rss_kib(),
        }
    finally:
        await tel.stop()
    return result


def measure_gateway_max_rps(seconds: float = 3.0) -> float:
    """Best request rate of a real gateway (subprocess) on a zero-delay simulated cluster, all on loopback."""
    import overhead  # the sibling benchmark's process and load helpers

    tmp = Path(tempfile.mkdtemp(prefix="bauxite-telemetry-"))
    procs = []
    try:
        fleet_ports = [overhead.free_port(), overhead.free_port()]
        config = overhead.write_configs(tmp, fleet_ports)["bauxite"]
        port = overhead.free_port()
        fleet_cmd = [sys.executable, "-m", "bauxite.cli", "fleet", "--config", str(config), "--zero-delay"]
        procs.append(overhead.start(fleet_cmd))
        serve_cmd = [sys.executable, "-m", "bauxite.cli", "serve", "--config", str(config)]
        gateway = overhead.start([*serve_cmd, "--port", str(port), "--log-level", "WARNING"])
        procs.append(gateway)
        overhead.wait_ready(f"http://127.0.0.1:{fleet_ports[0]}/health", 60, procs[0], None)
        overhead.wait_ready(f"http://127.0.0.1:{port}/healthz", 60, gateway, None)
        target = overhead.Target("bauxite", f"http://127.0.0.1:{port}", gateway)
        work = overhead.WORKLOADS[0]
        script = overhead.write_script(tmp, target, work)
        return max(
            overhead.measure(target, work, script, concurrency, max(round(seconds), 1))["rps"]
            for concurrency in (8, 32)
        )
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=15)
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="soak duration (default 60)")
    parser.add_argument(
        "--gateway-rps",
        type=float,
        default=None,
        help="the gateway's maximum request rate (default: measured now); the soak runs at twice it",
    )
    parser.add_argument(
        "--scrape-every", type=float, default=15.0, help="seconds between scrapes in the soak"
    )
    parser.add_argument("--rounds", type=int, default=5, help="micro-benchmark repetitions (best is kept)")
    args = parser.parse_args()

    m = micro(args.rounds)
    print(f"telemetry buffer: 2,097,152 bytes, {m['slots']:.0f} slots of {RECORD_SIZE} bytes")
    print(f"{'measure':<36}{'value':>16}")
    print(f"{'append (submit) per record':<36}{m['append_ns'] / 1000:>13.2f} µs")
    print(f"{'drain into totals per record':<36}{m['drain_ns'] / 1000:>13.2f} µs")
    print(f"{'scrape render (after drain)':<36}{m['scrape_ms']:>13.2f} ms")
    print(f"{'sustainable (append+drain), 1 core':<36}{m['sustained_per_s']:>11,.0f} rec/s")

    if args.gateway_rps is None:
        args.gateway_rps = measure_gateway_max_rps()
        print(f"{'gateway maximum (measured)':<36}{args.gateway_rps:>10,.0f} req/s")
    rate = 2 * args.gateway_rps
    r = asyncio.run(soak(rate, args.seconds, args.scrape_every))
    print()
    print(f"soak: {r['rate_asked']:,.0f} rec/s asked (2 x {args.gateway_rps:,.0f}) for {r['seconds']:.1f} s")
    print(f"{'records submitted':<36}{r['submitted']:>16,}")
    print(f"{'achieved rate':<36}{r['rate_achieved']:>10,.0f} rec/s")
    print(f"{'records drained':<36}{r['drained']:>16,}")
    print(f"{'records dropped':<36}{r['dropped']:>16,}")
    print(f"{'buffer high water':<36}{r['high_water_slots']:>9,} / {r['slots']:,}")
    print(f"{'buffer locked in RAM':<36}{r['locked']!s:>16}")
    print(f"{'RSS start':<36}{r['rss_start_kib']:>12,} KiB")
    print(f"{'RSS after ' + format(r['warm_at_s'], '.0f') + ' s':<36}{r['rss_warm_kib']:>12,} KiB")
    print(f"{'RSS end':<36}{r['rss_end_kib']:>12,} KiB")
    print(f"{'RSS change, start to end':<36}{r['rss_end_kib'] - r['rss_start_kib']:>+12,} KiB")
    print(f"{'RSS change, warm to end':<36}{r['rss_end_kib'] - r['rss_warm_kib']:>+12,} KiB")
    ok = r["dropped"] == 0 and r["drained"] == r["submitted"]
    print("result:", "PASS (zero drops)" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
