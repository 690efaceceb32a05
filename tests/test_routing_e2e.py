"""Green routing end to end: real gateway, simulated fleet, the ``trace`` provider replaying a grid flip.

Traffic follows the flip within one refresh interval; latency and threshold hold; fallback is flagged.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness import Harness, fleet_config

HOUR_REAL_S = 2.0  # one trace hour lasts this long in the replay
REFRESH = "200ms"
SNAPSHOT_S = 0.1
CHAT = {"model": "tiny-8b", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


def write_trace(path: Path, values: list[int]) -> str:
    rows = [f"2022-01-01T{h:02d}:00:00Z,{v}" for h, v in enumerate(values)]
    path.write_text("timestamp,g_per_kwh\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return str(path)


FLIP = ([50, 600, 600, 600, 600, 600], [600, 50, 50, 50, 50, 50])  # east green first, then west
WEST_GREEN = ([600] * 6, [50] * 6)


def config(
    tmp_path: Path,
    green: dict[str, Any],
    latency: dict[str, Any] | None = None,
    traces: tuple[list[int], list[int]] = FLIP,
) -> dict[str, Any]:
    east = write_trace(tmp_path / "east.csv", traces[0])
    west = write_trace(tmp_path / "west.csv", traces[1])
    return fleet_config(
        enterprise={
            "carbon_tracking": {"enabled": True, "provider": "trace"},
            "green_routing": {"enabled": True, "snapshot_interval": SNAPSHOT_S, **green},
        },
        intensity={
            "refresh_interval": REFRESH,
            "trace": {
                "traces": {"us-east-1": east, "us-west-2": west},
                "start_at": "2022-01-01T00:00:00Z",
                "speedup": 3600.0 / HOUR_REAL_S,
            },
        },
        latency=latency or {"stats_scrape": False},
    )


@dataclass
class Reply:
    status_code: int
    headers: dict[str, str]
    body: dict[str, Any]


def chat(h: Harness, headers: dict[str, str] | None = None) -> Reply:
    request = urllib.request.Request(
        f"{h.base_url}/v1/chat/completions",
        data=json.dumps(CHAT).encode(),
        headers={"content-type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return Reply(response.status, _lower(response.headers.items()), json.loads(response.read()))
    except urllib.error.HTTPError as error:
        return Reply(error.code, _lower(error.headers.items()), json.loads(error.read()))


def _lower(items: Any) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in items}


def grid(h: Harness) -> dict[str, float]:
    with urllib.request.urlopen(f"{h.base_url}/v1/carbon/intensity", timeout=5) as response:
        rows = json.loads(response.read())["data"]
    return {row["region"]: row["gco2_per_kwh"] for row in rows}


def test_traffic_follows_the_grid_flip_within_one_refresh(tmp_path: Path) -> None:
    with Harness(config(tmp_path, {"threshold_gco2": 1000})) as h:
        first = chat(h)
        assert first.status_code == 200
        if grid(h)["us-east-1"] > grid(h)["us-west-2"]:
            pytest.skip("the replay already flipped before the first request (very slow machine)")
        assert first.headers["x-bauxite-cluster"] == "east"
        assert first.headers["x-bauxite-route-reason"] == "low_carbon"
        deadline = time.monotonic() + HOUR_REAL_S * 3
        while grid(h)["us-east-1"] < grid(h)["us-west-2"]:
            assert time.monotonic() < deadline, "the intensity service never saw the flip"
            time.sleep(0.02)
        time.sleep(SNAPSHOT_S + 0.05)  # the router's snapshot catches up within its interval
        after = [chat(h).headers["x-bauxite-cluster"] for _ in range(5)]
        assert after == ["west"] * 5


def test_threshold_fallback_is_flagged_and_strict_mode_is_503(tmp_path: Path) -> None:
    with Harness(config(tmp_path, {"threshold_gco2": 10})) as h:
        response = chat(h)
        assert response.status_code == 200
        assert response.headers["x-bauxite-route-reason"] == "threshold_fallback"
    with Harness(config(tmp_path, {"threshold_gco2": 10, "strict": True})) as h:
        response = chat(h)
        assert response.status_code == 503
        assert "threshold" in response.body["error"]["message"]
        # A latency bound nobody meets must not open a way around strict mode (the SLO fallback).
        hurried = chat(h, {"x-bauxite-max-latency-ms": "1"})
        assert hurried.status_code == 503
        assert hurried.body["error"]["code"] == "no_available_cluster"


def test_a_cluster_beyond_the_latency_requirement_is_never_chosen(tmp_path: Path) -> None:
    # west is green all along but 150 ms away; east is near and dirty
    latency = {"stats_scrape": False, "default_ttft_ms": 20, "clusters": {"west": {"rtt_ms": 150}}}
    with Harness(config(tmp_path, {"threshold_gco2": 1000}, latency, WEST_GREEN)) as h:
        assert chat(h).headers["x-bauxite-cluster"] == "west"  # no requirement: the green one
        for _ in range(5):
            tight = chat(h, {"x-bauxite-max-latency-ms": "100"})
            assert tight.headers["x-bauxite-cluster"] == "east"
        nothing = chat(h, {"x-bauxite-max-latency-ms": "1"})
        assert nothing.headers["x-bauxite-route-reason"] == "slo_fallback"
        assert nothing.headers["x-bauxite-cluster"] == "east"  # the fastest


def test_threshold_is_respected_over_a_faster_dirty_cluster_and_fallback_reaches_the_record(
    tmp_path: Path,
) -> None:
    # latency priority: east is faster, but only west is under the threshold
    latency = {"stats_scrape": False, "default_ttft_ms": 20, "clusters": {"west": {"rtt_ms": 150}}}
    green = {"threshold_gco2": 100, "priority": "latency"}
    with Harness(config(tmp_path, green, latency, WEST_GREEN)) as h:
        for _ in range(5):
            reply = chat(h)
            assert reply.headers["x-bauxite-cluster"] == "west"
            assert reply.headers["x-bauxite-route-reason"] == "latency"
    with Harness(config(tmp_path, {"threshold_gco2": 10}, latency, WEST_GREEN)) as h:
        reply = chat(h)
        assert reply.headers["x-bauxite-route-reason"] == "threshold_fallback"
        assert reply.headers["x-bauxite-cluster"] == "west"  # still the lowest-carbon feasible one
        deadline = time.monotonic() + 5.0
        while not h.tap.records:  # the accountant settles after the response; the metric reads this label
            assert time.monotonic() < deadline, "no request record"
            time.sleep(0.02)
        assert h.tap.records[-1].route_reason == "threshold_fallback"
