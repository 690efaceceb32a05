"""Table-driven tests of the pure router: every filter, priority, tie and fallback."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from bauxite.clusters import Fleet
from bauxite.intensity.base import Intensity
from bauxite.routing.config import GreenRoutingSettings, LatencySettings
from bauxite.routing.router import REASONS, NoRouteError, Outcome, Router, RouteRequest
from bauxite.routing.server_times import ServerCounters
from bauxite.settings import ClusterSettings, settings_from_mapping

# name, region, rtt_ms, models
EAST = ("east", "us-east", 10.0)
WEST = ("west", "us-west", 70.0)
MID = ("mid", "us-central", 30.0)


class FakeIntensity:
    def __init__(self, g_per_kwh: Mapping[str, float]) -> None:
        self.g_per_kwh = dict(g_per_kwh)

    def for_ranking(self, regions: list[str]) -> dict[str, Intensity]:
        return {r: Intensity(r, self.g_per_kwh[r], 0.0, "test") for r in regions if r in self.g_per_kwh}


@dataclass
class FakeEnergy:
    """J per token per cluster (prefill tokens cost a quarter of decode tokens); optional PUE per cluster."""

    j_per_token: dict[str, float] = field(default_factory=dict)
    pues: dict[str, float] = field(default_factory=dict)

    def expected_j(self, cluster: str, model: str, prompt_tokens: int, completion_tokens: int) -> float:
        return self.j_per_token.get(cluster, 1.0) * (completion_tokens + 0.25 * prompt_tokens)

    def pue(self, cluster: str) -> float:
        return self.pues.get(cluster, 1.0)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_router(
    clusters: tuple[tuple[str, str, float], ...] = (EAST, WEST, MID),
    intensity: Mapping[str, float] | None = None,
    energy: FakeEnergy | None = None,
    green: dict[str, Any] | None = None,
    latency: dict[str, Any] | None = None,
    models: tuple[str, ...] = ("m",),
    clock: Clock | None = None,
) -> tuple[Router, Fleet]:
    fleet = Fleet(
        [
            ClusterSettings.model_validate(
                {"name": n, "region": r, "url": f"http://{n}.test/v1", "models": models, "rtt_ms": rtt}
            )
            for n, r, rtt in clusters
        ]
    )
    grid = intensity if intensity is not None else {"us-east": 400.0, "us-west": 50.0, "us-central": 450.0}
    green_settings = GreenRoutingSettings(**{"enabled": True, **(green or {})})
    latency_settings = LatencySettings(**{"default_ttft_ms": 100.0, **(latency or {})})
    router = Router(
        fleet,
        FakeIntensity(grid),
        energy or FakeEnergy(),
        green_settings,
        latency_settings,
        clock=clock or Clock(),
    )
    router.refresh()  # what start() does first; the timer is not running in these tests
    return router, fleet


def req(**kwargs: Any) -> RouteRequest:
    return RouteRequest(**{"model": "m", "prompt_tokens": 100, "max_tokens": 100, **kwargs})


# ---------------------------------------------------------------- candidates


@pytest.mark.parametrize(
    ("request_", "cooling", "expected"),
    [
        (req(), (), "west"),
        (req(exclude=frozenset({"west"})), (), "east"),  # a failover retry skips the failed cluster
        (req(), ("west",), "east"),  # cooling down after failures
        (req(exclude=frozenset({"west"})), ("east",), "mid"),
    ],
)
def test_candidates_skip_excluded_and_cooling(
    request_: RouteRequest, cooling: tuple[str, ...], expected: str
) -> None:
    router, fleet = make_router(green={"threshold_gco2": 1000})
    for name in cooling:
        fleet.by_name[name].cooldown_until = 1e12  # far past the test clock
    assert router.choose(request_).cluster.name == expected


@pytest.mark.parametrize(
    ("request_", "cooling"),
    [
        (req(model="unknown"), ()),
        (req(exclude=frozenset({"east", "west", "mid"})), ()),
    ],
)
def test_no_candidate_is_503(request_: RouteRequest, cooling: tuple[str, ...]) -> None:
    router, fleet = make_router()
    for name in cooling:
        fleet.by_name[name].cooldown_until = 1e12  # far past the test clock
    with pytest.raises(NoRouteError) as info:
        router.choose(request_)
    assert info.value.status == 503


@pytest.mark.parametrize("green", [True, False])
def test_all_cooling_tries_the_soonest_to_recover(green: bool) -> None:
    router, fleet = make_router(green={"enabled": green})
    for offset, name in enumerate(("east", "west", "mid")):
        fleet.by_name[name].cooldown_until = 1e12 + (5 - offset)  # mid recovers first
    decision = router.choose(req())
    assert (decision.cluster.name, decision.reason) == ("mid", "cooldown_fallback")


# ---------------------------------------------------------------- disabled


def test_disabled_is_least_loaded_rotating_ties() -> None:
    router, _fleet = make_router(green={"enabled": False})
    for _ in range(5):
        router.dispatched("mid")
    picks = [router.choose(req()) for _ in range(4)]
    assert [d.cluster.name for d in picks] == ["east", "west", "east", "west"]
    assert {d.reason for d in picks} == {"least_loaded"}
    assert all(d.counterfactual is None for d in picks)
    assert router.choose(req(exclude=frozenset({"east"}))).reason == "failover"


# ---------------------------------------------------------------- latency filter
# Predictions with default_ttft_ms 100 and 50 ms per 1k prompt tokens at 100 tokens: rtt + 105 ms.
# east 115, mid 135, west 175.


@pytest.mark.parametrize(
    ("latency", "request_", "expected", "reason"),
    [
        ({}, req(), "west", "low_carbon"),  # no requirement: greenest
        ({"slo_ttft_ms": 200}, req(), "west", "low_carbon"),
        ({"slo_ttft_ms": 150}, req(), "east", "threshold_fallback"),  # west too slow, others dirty
        ({"max_slack_ms": 30}, req(), "east", "threshold_fallback"),  # 175 > 115 + 30
        ({"max_slack_ms": 60}, req(), "west", "low_carbon"),
        ({"slo_ttft_ms": 150}, req(max_latency_ms=500), "west", "low_carbon"),  # header loosens
        ({"slo_ttft_ms": 500}, req(max_latency_ms=150), "east", "threshold_fallback"),  # header tightens
        ({"slo_ttft_ms": 500, "models": {"m": {"slo_ttft_ms": 150}}}, req(), "east", "threshold_fallback"),
        (
            {"slo_ttft_ms": 150, "models": {"other": {"slo_ttft_ms": 500}}},
            req(),
            "east",
            "threshold_fallback",
        ),
        ({"slo_ttft_ms": 50}, req(), "east", "slo_fallback"),  # nobody meets it: the fastest
        ({"slo_ttft_ms": 250}, req(prompt_tokens=2000), "east", "threshold_fallback"),  # long prefill
    ],
)
def test_latency_filter(latency: dict[str, Any], request_: RouteRequest, expected: str, reason: str) -> None:
    router, _ = make_router(latency=latency)
    decision = router.choose(request_)
    assert (decision.cluster.name, decision.reason) == (expected, reason)
    assert decision.counterfactual is not None and decision.counterfactual.name == "east"


def test_rising_queue_pushes_predicted_latency_up() -> None:
    router, fleet = make_router(
        latency={"slo_ttft_ms": 300, "clusters": {"west": {"max_concurrency": 4, "itl_ms": 10}}}
    )
    west = fleet.by_name["west"]
    before = router.latency.predict_ttft_ms(west, 100)
    for _ in range(3):  # a free slot left: no wait
        router.dispatched("west")
    assert router.latency.predict_ttft_ms(west, 100, router.depth("west")) == before
    assert router.choose(req()).cluster.name == "west"
    router.dispatched("west")  # full: the next request waits for a slot, beyond the SLO
    assert router.latency.predict_ttft_ms(west, 100, router.depth("west")) > 300
    assert router.choose(req()).cluster.name == "east"
    router.finished("west", Outcome(True, 100, 10))  # a slot freed: back to the green cluster at once
    assert router.choose(req()).cluster.name == "west"


def test_a_slot_freed_since_the_scrape_is_not_counted_busy() -> None:
    """The scrape counted this replica's own request; its completion since must free the slot, and its
    dispatches since must add to the scraped depth (no double counting either way)."""
    router, _ = make_router(latency={"slo_ttft_ms": 300, "clusters": {"west": {"max_concurrency": 4}}})
    router.dispatched("west")
    router.scraped("west", running=4, waiting=0, elapsed_ms=None)  # full: 3 of others + ours
    assert router.depth("west") == 4
    assert router.choose(req()).cluster.name == "east"
    router.finished("west", Outcome(True, 100, 10))
    assert router.depth("west") == 3
    assert router.choose(req()).cluster.name == "west"
    router.dispatched("west")
    router.dispatched("west")
    assert router.depth("west") == 5
    router.scraped("west", running=2, waiting=0, elapsed_ms=None)  # fresh truth replaces the estimate
    assert router.depth("west") == 2


def test_failures_cool_a_cluster_down_and_a_success_ends_it() -> None:
    clock = Clock()
    router, fleet = make_router(clock=clock)
    router.dispatched("west")
    router.failed("west")
    router.finished("west", Outcome(False))
    assert not fleet.by_name["west"].available(clock.now)
    assert router.choose(req()).cluster.name != "west"
    clock.now += 10.0  # the first back-off is over
    assert router.choose(req()).cluster.name == "west"
    router.failed("west")
    router.failed("west")  # third failure in a row, no success between: 10 s × 4
    assert fleet.by_name["west"].cooldown_until == pytest.approx(clock.now + 40.0)
    router.dispatched("west")
    router.finished("west", Outcome(True, 10, 10))
    assert fleet.by_name["west"].available(clock.now)


def test_scraped_waiting_counts_when_capacity_unknown() -> None:
    router, _fleet = make_router(latency={"slo_ttft_ms": 300})
    router.scraped("west", running=2, waiting=3, elapsed_ms=None)
    assert router.choose(req()).cluster.name == "east"


# ---------------------------------------------------------------- threshold


@pytest.mark.parametrize(
    ("green", "grid", "expected", "reason"),
    [
        ({"threshold_gco2": 200}, {"us-east": 400, "us-west": 50, "us-central": 450}, "west", "low_carbon"),
        (
            {"threshold_gco2": 40},
            {"us-east": 400, "us-west": 50, "us-central": 450},
            "west",
            "threshold_fallback",
        ),
        ({"threshold_gco2": 420}, {"us-east": 400, "us-west": 50, "us-central": 450}, "west", "low_carbon"),
        # latency priority: fastest cluster among those under the threshold
        (
            {"priority": "latency", "threshold_gco2": 420},
            {"us-east": 400, "us-west": 50, "us-central": 450},
            "east",
            "latency",
        ),
        (
            {"priority": "latency", "threshold_gco2": 300},
            {"us-east": 400, "us-west": 50, "us-central": 450},
            "west",
            "latency",
        ),
        (
            {"priority": "latency", "threshold_gco2": 10},
            {"us-east": 400, "us-west": 50, "us-central": 450},
            "east",
            "threshold_fallback",
        ),
    ],
)
def test_threshold(green: dict[str, Any], grid: dict[str, float], expected: str, reason: str) -> None:
    router, _ = make_router(green=green, intensity=grid)
    decision = router.choose(req())
    assert (decision.cluster.name, decision.reason) == (expected, reason)


def test_strict_threshold_is_503() -> None:
    router, _ = make_router(green={"threshold_gco2": 10, "strict": True})
    with pytest.raises(NoRouteError, match="threshold") as info:
        router.choose(req())
    assert info.value.status == 503


def test_strict_threshold_counts_only_clusters_meeting_latency() -> None:
    router, _ = make_router(green={"threshold_gco2": 100, "strict": True}, latency={"slo_ttft_ms": 150})
    with pytest.raises(NoRouteError):
        router.choose(req())  # west is green but too slow


# Strict mode holds in every path: no fallback, retry or warm cache lands on a cluster over the threshold.
STRICT_10 = {"threshold_gco2": 10, "strict": True}


def test_strict_holds_when_nothing_meets_the_latency_requirement() -> None:
    """A 1 ms bound (the x-bauxite-max-latency-ms header) is met by no cluster: the SLO fallback must not
    hand the request to a cluster over the threshold."""
    router, _ = make_router(green=STRICT_10)
    with pytest.raises(NoRouteError, match="strict") as info:
        router.choose(req(max_latency_ms=1.0))
    assert info.value.status == 503


def test_strict_slo_fallback_takes_the_fastest_green_cluster() -> None:
    router, _ = make_router(green={"threshold_gco2": 100, "strict": True})  # only west (50 g/kWh) is green
    decision = router.choose(req(max_latency_ms=1.0))
    assert (decision.cluster.name, decision.reason) == ("west", "slo_fallback")
    assert decision.counterfactual is not None and decision.counterfactual.name == "east"  # the fastest


@pytest.mark.parametrize(("threshold", "expected"), [(10, None), (100, "west")])
def test_strict_holds_when_every_cluster_is_cooling_down(threshold: float, expected: str | None) -> None:
    router, fleet = make_router(green={"threshold_gco2": threshold, "strict": True})
    for offset, name in enumerate(("east", "mid", "west")):
        fleet.by_name[name].cooldown_until = 1e12 + offset  # east would recover first
    if expected is None:
        with pytest.raises(NoRouteError, match="strict"):
            router.choose(req())
    else:
        decision = router.choose(req())
        assert (decision.cluster.name, decision.reason) == (expected, "cooldown_fallback")


def test_strict_holds_for_a_failover_retry() -> None:
    router, _ = make_router(green={"threshold_gco2": 100, "strict": True})
    assert router.choose(req()).cluster.name == "west"
    with pytest.raises(NoRouteError, match="strict"):
        router.choose(req(exclude=frozenset({"west"})))  # east and mid remain, both over 100 g/kWh


def test_strict_ignores_a_warm_prefix_cache_on_a_dirty_cluster() -> None:
    grid = {"us-east": 400.0, "us-west": 50.0, "us-central": 60.0}
    green = {"threshold_gco2": 100, "strict": True, "kv_affinity_tolerance": 10.0}
    router, _ = make_router(intensity=grid, green=green)
    router.affinity.remember(42, "east")  # east holds the prefix; 10x the grams would be tolerated
    for _ in range(5):
        assert router.choose(req(prefix_key=42)).cluster.name in {"west", "mid"}
        router.affinity.remember(42, "east")


# ---------------------------------------------------------------- priorities


@pytest.mark.parametrize(
    ("priority", "energy", "grid", "expected"),
    [
        # expected grams, not intensity: west's grid is cleaner but its hardware uses 5x the energy per token
        ("low_carbon", {"west": 5.0}, {"us-east": 100, "us-west": 80, "us-central": 120}, "east"),
        ("low_carbon", {}, {"us-east": 100, "us-west": 80, "us-central": 120}, "west"),
        ("latency", {}, {"us-east": 100, "us-west": 80, "us-central": 120}, "east"),
        # balanced 50/50: west is 1.25x greener but 1.52x slower than east -> east
        ("balanced", {}, {"us-east": 100, "us-west": 80, "us-central": 120}, "east"),
        # balanced: west 4x greener outweighs 1.52x slower
        ("balanced", {}, {"us-east": 100, "us-west": 25, "us-central": 120}, "west"),
    ],
)
def test_priority(priority: str, energy: dict[str, float], grid: dict[str, float], expected: str) -> None:
    router, _ = make_router(
        green={"priority": priority, "threshold_gco2": 1000}, intensity=grid, energy=FakeEnergy(energy)
    )
    decision = router.choose(req())
    assert (decision.cluster.name, decision.reason) == (expected, priority)


@pytest.mark.parametrize(("carbon_weight", "expected"), [(0.9, "west"), (0.1, "east")])
def test_balanced_weights(carbon_weight: float, expected: str) -> None:
    router, _ = make_router(
        green={
            "priority": "balanced",
            "threshold_gco2": 1000,
            "balanced_carbon_weight": carbon_weight,
            "balanced_latency_weight": 1 - carbon_weight,
        },
        intensity={"us-east": 100, "us-west": 50, "us-central": 120},
    )
    assert router.choose(req()).cluster.name == expected


def test_pue_scales_expected_grams() -> None:
    # west's grid is cleaner (80 vs 100) but its PUE of 1.5 makes it dirtier per request (120 vs 100)
    grid = {"us-east": 100, "us-west": 80, "us-central": 120}
    router, _ = make_router(
        intensity=grid, energy=FakeEnergy(pues={"west": 1.5}), green={"threshold_gco2": 1000}
    )
    assert router.choose(req()).cluster.name == "east"


# ---------------------------------------------------------------- ties and spreading


def test_near_equal_candidates_share_the_load() -> None:
    twins = (("a", "us-west", 10.0), ("b", "us-west", 10.0), EAST)
    router, _fleet = make_router(clusters=twins)
    chosen = []
    for _ in range(6):
        decision = router.choose(req())
        router.dispatched(decision.cluster.name)  # what the proxy does while the request runs
        chosen.append(decision.cluster.name)
    assert sorted(chosen) == ["a", "a", "a", "b", "b", "b"]
    for _ in range(7):
        router.dispatched("a")
    assert router.choose(req()).cluster.name == "b"


def test_outside_tolerance_is_not_spread() -> None:
    twins = (("a", "us-west", 10.0), ("b", "us-west-2", 10.0), EAST)
    grid = {"us-west": 50, "us-west-2": 60, "us-east": 400}
    router, _fleet = make_router(clusters=twins, intensity=grid)
    for _ in range(3):
        router.dispatched("a")
    assert router.choose(req()).cluster.name == "a"


# ---------------------------------------------------------------- KV-cache affinity


@pytest.mark.parametrize(
    ("west_g", "tolerance", "expected", "reason"),
    [
        (55.0, 0.2, "west", "kv_cache_affinity"),  # warm and within 20% of the best
        (70.0, 0.2, "mid", "low_carbon"),  # warm but 40% dirtier: carbon wins
        (55.0, 0.0, "mid", "low_carbon"),  # affinity tolerance 0
        (40.0, 0.2, "west", "low_carbon"),  # warm and the best anyway: affinity changed nothing, no label
    ],
)
def test_kv_affinity(west_g: float, tolerance: float, expected: str, reason: str) -> None:
    grid = {"us-east": 400.0, "us-west": 10.0, "us-central": 450.0}
    clock = Clock()
    router, _ = make_router(
        intensity=grid, green={"kv_affinity_tolerance": tolerance, "snapshot_interval": 1.0}, clock=clock
    )
    assert router.choose(req(prefix_key=42)).cluster.name == "west"
    router.carbon._intensity.g_per_kwh.update({"us-west": west_g, "us-central": 50.0})  # type: ignore[attr-defined]
    router.refresh()
    decision = router.choose(req(prefix_key=42))
    assert (decision.cluster.name, decision.reason) == (expected, reason)
    plain = expected if reason == "low_carbon" else "mid"
    assert router.choose(req(prefix_key=7)).cluster.name == plain  # an unseen prefix: plain ranking


def test_affinity_lru_is_bounded() -> None:
    router, _ = make_router(green={"kv_affinity_entries": 3})
    for key in range(1, 10):
        router.choose(req(prefix_key=key))
    assert len(router._affinity) == 3


# ---------------------------------------------------------------- snapshots


class CountingIntensity(FakeIntensity):
    reads: int = 0

    def for_ranking(self, regions: list[str]) -> dict[str, Intensity]:
        self.reads += 1
        return super().for_ranking(regions)


async def test_snapshot_refreshes_on_its_timer_never_inside_a_request() -> None:
    grid = CountingIntensity({"us-east": 400.0, "us-west": 50.0, "us-central": 450.0})
    fleet = make_router()[1]
    green = GreenRoutingSettings(enabled=True, snapshot_interval=0.05)
    router = Router(fleet, grid, FakeEnergy(), green, LatencySettings(stats_scrape=False))
    await router.start()
    try:
        assert router.choose(req()).cluster.name == "west"
        reads = grid.reads
        grid.g_per_kwh.update({"us-west": 500.0, "us-central": 30.0})
        for _ in range(100):
            router.choose(req())
        assert grid.reads == reads  # a decision never reads the services
        for _ in range(200):  # the timer picks the flip up within an interval or so
            await asyncio.sleep(0.01)
            if router.choose(req()).cluster.name == "mid":
                break
        assert router.choose(req()).cluster.name == "mid"
    finally:
        await router.stop()


async def test_no_snapshot_timer_when_green_routing_is_off() -> None:
    grid = CountingIntensity({"us-east": 400.0})
    fleet = make_router()[1]
    router = Router(fleet, grid, FakeEnergy(), GreenRoutingSettings(enabled=False, snapshot_interval=0.01))
    await router.start()
    try:
        await asyncio.sleep(0.05)
        router.choose(req())
        assert grid.reads == 0
    finally:
        await router.stop()


def test_region_without_intensity_is_not_treated_as_green() -> None:
    router, _ = make_router(intensity={"us-east": 300.0}, green={"threshold_gco2": 1000})
    assert router.choose(req()).cluster.name == "east"


def test_failing_services_do_not_break_choice() -> None:
    class Broken:
        def for_ranking(self, regions: list[str]) -> dict[str, Intensity]:
            raise RuntimeError("down")

        def expected_j(self, cluster: str, model: str, prompt_tokens: int, completion_tokens: int) -> float:
            raise RuntimeError("down")

    settings = ClusterSettings.model_validate(
        {"name": "a", "region": "r", "url": "http://a.test/v1", "models": ["m"]}
    )
    fleet = Fleet([settings])
    router = Router(fleet, Broken(), Broken(), GreenRoutingSettings(enabled=True))
    assert router.choose(req()).cluster.name == "a"


# ---------------------------------------------------------------- reasons and config


def test_every_reason_is_documented_and_fixed() -> None:
    assert set(REASONS) == {
        "least_loaded",
        "failover",
        "low_carbon",
        "latency",
        "balanced",
        "threshold_fallback",
        "slo_fallback",
        "kv_cache_affinity",
        "cooldown_fallback",
    }


def test_minimal_keys_load_and_extensions_default() -> None:
    settings = settings_from_mapping(
        {
            "enterprise": {
                "green_routing": {"enabled": True, "priority": "low_carbon", "threshold_gco2": 200},
            },
            "latency": {
                "slo_ttft_ms": 800,
                "models": {"big": {"slo_ttft_ms": 2000}},
                "stats_interval": "10s",
            },
        }
    )
    green = settings.enterprise.green_routing
    assert (green.enabled, green.priority, green.strict) == (True, "low_carbon", False)
    assert green.threshold_gco2 == 200
    assert green.snapshot_interval == 1.0 and green.kv_affinity
    assert settings.latency.requirement("big") == (2000, None)
    assert settings.latency.requirement("small") == (800, None)
    assert settings.latency.stats_interval == 10.0


def test_observed_ttft_replaces_the_prior() -> None:
    router, fleet = make_router(latency={"prefill_ms_per_1k_tokens": 0})
    east = fleet.by_name["east"]
    assert router.latency.predict_ttft_ms(east, 0) == pytest.approx(110.0)
    router.first_token("east", 500.0, 0)
    # the observation already includes the network round trip
    assert router.latency.predict_ttft_ms(east, 0) == pytest.approx(500.0)


def test_scrape_teaches_slots_and_round_trip() -> None:
    router, fleet = make_router(clusters=(("x", "us-east", 0.0),))
    x = fleet.by_name["x"]
    x.settings = x.settings.model_copy(update={"rtt_ms": None})
    router.latency.observe_scrape("x", running=8, waiting=2, elapsed_ms=40.0)
    assert router.latency.slots(x) == 8
    assert router.latency.rtt_ms(x) == 40.0
    router.latency.observe_scrape("x", running=3, waiting=0, elapsed_ms=None)
    assert router.latency.slots(x) == 8  # no queue: says nothing about capacity


def test_configured_rtt_beats_a_scrape_seen_first() -> None:
    router, fleet = make_router()
    router.latency.observe_scrape("west", running=1, waiting=0, elapsed_ms=500.0)
    assert router.latency.rtt_ms(fleet.by_name["west"]) == 70.0


def test_other_clients_arrival_rate_counts_before_the_next_scrape() -> None:
    """Between two scrapes 8 requests arrived that this replica did not send: 8 per second. A second after
    the last scrape the cluster is probably 8 fuller than it looked, so queueing is predicted early."""
    latency = {"slo_ttft_ms": 400, "clusters": {"west": {"max_concurrency": 12, "itl_ms": 20}}}

    def predicted(counters: bool) -> float:
        clock = Clock()
        router, fleet = make_router(latency=latency, clock=clock)
        first = ServerCounters(prompt_count=100.0, prefill_count=100.0) if counters else None
        router.scraped("west", running=2, waiting=0, elapsed_ms=None, server=first)
        clock.now += 1.0
        second = ServerCounters(prompt_count=100.0, prefill_count=100.0) if counters else None
        router.scraped("west", running=10, waiting=0, elapsed_ms=None, server=second)
        clock.now += 1.0
        router.choose(req())  # sets the decision clock
        others, _scraped_at, rate = router.others("west")
        assert (others, rate) == ((10, 8.0) if counters else (10, -1.0))
        return router.latency.estimate(fleet.by_name["west"], 100, router.depth("west"), others, 1.0, rate)[0]

    assert predicted(counters=True) > predicted(counters=False)


def test_when_nothing_meets_the_requirement_the_likeliest_cluster_is_tried() -> None:
    """east is full (one request ahead: a small typical wait, a long 99.99% tail); west is idle but its round
    trip alone misses the bound. The quantile ranks west first, yet east usually makes it: east is chosen."""
    latency = {"slo_ttft_ms": 140, "clusters": {"east": {"max_concurrency": 4, "itl_ms": 0.1}}}
    router, fleet = make_router(clusters=(EAST, WEST), latency=latency)
    for _ in range(4):
        router.dispatched("east")
    east = fleet.by_name["east"]
    assert router.latency.predict_ttft_ms(east, 100, router.depth("east")) > 175.0  # the quantile: slower
    decision = router.choose(req())
    assert (decision.cluster.name, decision.reason) == ("east", "slo_fallback")
    assert decision.counterfactual is not None and decision.counterfactual.name == "east"  # nothing claimed


def test_a_dispatch_changes_the_next_decision_at_the_same_instant() -> None:
    """Predicted waits are kept between decisions, but a dispatch (or completion) refreshes its cluster's at
    once: filling west's slots moves the next request, with no time passing in between."""
    latency = {"slo_ttft_ms": 400, "clusters": {"west": {"max_concurrency": 2, "itl_ms": 20}}}
    router, _ = make_router(clusters=(EAST, WEST), latency=latency, clock=Clock())
    assert router.choose(req()).cluster.name == "west"  # the greener one, idle
    router.dispatched("west")
    router.dispatched("west")
    assert router.choose(req()).cluster.name == "east"  # west full: its 99.99% wait misses 400 ms
    router.finished("west", Outcome(True, 100, 10))
    assert router.choose(req()).cluster.name == "west"  # a slot free again


def test_a_scrape_aged_wait_is_recomputed_as_time_passes() -> None:
    """With nothing happening but the clock, a cluster's kept wait is recomputed as its scrape ages: other
    clients' unseen arrivals make a three-quarters full cluster too risky two seconds later."""
    clock = Clock()
    latency = {"slo_ttft_ms": 400, "clusters": {"west": {"max_concurrency": 20, "itl_ms": 20}}}
    router, _ = make_router(clusters=(EAST, WEST), latency=latency, clock=clock)
    router.scraped("west", running=15, waiting=0, elapsed_ms=None)
    clock.now += 0.01
    assert router.choose(req()).cluster.name == "west"
    clock.now += 2.0
    assert router.choose(req()).cluster.name == "east"
