"""The lower bound against the true optimum: tiny worlds where every placement is tried, and larger random
worlds where greedy hindsight and random SLO-meeting placements must never land below the bound."""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest

from bauxite.simulate import bound as bound_module
from bauxite.simulate.bound import _pooled_bound, lower_bound
from bauxite.simulate.bound_requests import request_lp
from bauxite.simulate.config import SimConfig
from bauxite.simulate.engine import _Run
from bauxite.simulate.model import ClusterQueue, intensity_table
from bauxite.simulate.workload import SimRequest, generate
from bauxite.units import carbon_g

TRACES = ("PJM", "MISO", "CISO", "BPAT", "ERCO", "SOCO", "NYIS", "AZPS")


def tiny_config(rng: random.Random, n_clusters: int, n_groups: int) -> SimConfig:
    """1-2 slot clusters with slow prefill and decode and a tight SLO, so queueing decides what fits."""
    names = [f"c{k}" for k in range(n_clusters)]
    data: dict[str, Any] = {
        "seed": 1,
        "slo_ttft_ms": rng.uniform(150, 500),
        "period": {"start": "2022-06-01", "days": 1, "seconds_per_hour": rng.uniform(0.5, 3.0)},
        "clusters": [
            {
                "name": name,
                "region": f"r{k}",
                "trace": rng.choice(TRACES),
                "capacity": rng.randint(1, 2),
                "ttft_ms": rng.uniform(10, 80),
                "prefill_ms_per_1k_tokens": rng.uniform(20, 100),
                "itl_ms": rng.uniform(5, 30),
                "j_per_prompt_token": rng.uniform(0.01, 0.1),
                "j_per_output_token": rng.uniform(0.1, 0.5),
                "pue": rng.uniform(1.0, 1.5),
            }
            for k, name in enumerate(names)
        ],
        "clients": [
            {"name": f"g{g}", "share": 1.0, "rtt_ms": {c: rng.uniform(2, 120) for c in names}}
            for g in range(n_groups)
        ],
        "workload": {"header_share": 0.3, "header_latency_ms": rng.uniform(150, 500)},
    }
    return SimConfig.model_validate(data)


def tiny_stream(rng: random.Random, config: SimConfig, n: int) -> list[SimRequest]:
    """``n`` arrivals within the first two simulated hours, some sending their own latency requirement."""
    hour_s = config.period.seconds_per_hour
    times = sorted(rng.uniform(0, 2 * hour_s) for _ in range(n))
    return [
        SimRequest(
            t,
            int(t // hour_s),
            rng.randrange(len(config.clients)),
            rng.randint(10, 3000),
            rng.randint(1, 120),
            config.workload.header_latency_ms if rng.random() < 0.3 else 0.0,
        )
        for t in times
    ]


def placement_g(
    config: SimConfig, table: list[list[float]], stream: list[SimRequest], clusters: tuple[int, ...]
) -> float | None:
    """Grams of placing ``stream[i]`` on ``clusters[i]`` (queued first-come first-served, as the simulator
    does), or None when a request that some cluster could serve in time misses its SLO."""
    queues = [ClusterQueue(c) for c in config.clusters]
    total = 0.0
    for r, k in zip(stream, clusters, strict=True):
        queue = queues[k]
        start_s, prefill_ms, _ = queue.admit(r.t, r.prompt_tokens, r.completion_tokens)
        rtt_ms = config.clients[r.group].rtt_ms
        ttft_ms = rtt_ms[queue.config.name] + (start_s - r.t) * 1000.0 + prefill_ms
        slo_ms = r.max_latency_ms or config.slo_ttft_ms
        servable = any(
            rtt_ms[c.name] + c.ttft_ms + c.prefill_ms_per_1k_tokens * r.prompt_tokens / 1000.0 <= slo_ms
            for c in config.clusters
        )
        if servable and ttft_ms > slo_ms:
            return None
        energy_j = queue.energy_j(r.prompt_tokens, r.completion_tokens)
        total += carbon_g(energy_j, table[k][r.hour], queue.config.pue)
    return total


def brute_force_optimum_g(
    config: SimConfig, table: list[list[float]], stream: list[SimRequest]
) -> float | None:
    """The least carbon over every placement that meets the SLO (None when none does)."""
    best: float | None = None
    for clusters in itertools.product(range(len(config.clusters)), repeat=len(stream)):
        grams = placement_g(config, table, stream, clusters)
        if grams is not None and (best is None or grams < best):
            best = grams
    return best


def test_bound_never_exceeds_the_brute_force_optimum_of_tiny_worlds() -> None:
    rng = random.Random(7103)
    compared, binding = 0, 0
    for _ in range(60):
        config = tiny_config(rng, rng.randint(2, 3), rng.randint(1, 2))
        table = intensity_table(config)
        stream = tiny_stream(rng, config, rng.randint(3, 7))
        optimum = brute_force_optimum_g(config, table, stream)
        if optimum is None:
            continue
        bound = lower_bound(config, table, stream)
        assert bound.slo_feasible
        assert bound.carbon_g <= optimum * (1 + 1e-9), (bound.carbon_g, optimum)
        # The per-request relaxation holds every row of the pooled one on a single chunk: never looser.
        assert bound.carbon_g >= _pooled_bound(config, table, stream).carbon_g * (1 - 1e-6)
        compared += 1
        unconstrained = sum(
            min(
                carbon_g(
                    c.j_per_prompt_token * r.prompt_tokens + c.j_per_output_token * r.completion_tokens,
                    table[k][r.hour],
                    c.pue,
                )
                for k, c in enumerate(config.clusters)
            )
            for r in stream
        )
        binding += optimum > unconstrained * (1 + 1e-6)
    assert compared >= 40
    assert binding >= 10  # queueing decides the optimum in many of these worlds, so the rows are exercised


def test_one_free_slot_is_seen_at_the_instant_not_per_hour() -> None:
    """Two requests arrive together; the green cluster has one slot and neither can wait for it. A fluid
    per-hour capacity would let both run green; the occupancy rows give exactly the optimum."""
    config = SimConfig.model_validate(
        {
            "seed": 1,
            "slo_ttft_ms": 300,
            "period": {"start": "2022-03-01", "days": 1, "seconds_per_hour": 60},
            "clusters": [
                {"name": "near", "region": "east", "trace": "PJM", "capacity": 8, "ttft_ms": 50},
                {"name": "green", "region": "west", "trace": "BPAT", "capacity": 1, "ttft_ms": 50},
            ],
            "clients": [{"name": "east", "share": 1, "rtt_ms": {"near": 5, "green": 60}}],
        }
    )
    table = intensity_table(config)
    stream = [SimRequest(1.0, 0, 0, 1000, 100), SimRequest(1.01, 0, 0, 1000, 100)]
    optimum = brute_force_optimum_g(config, table, stream)
    assert optimum is not None
    both_green = placement_g(config, table, stream, (1, 1))
    assert both_green is None  # the second would wait 2 s for the slot
    bound = lower_bound(config, table, stream).carbon_g
    assert bound == pytest.approx(optimum, rel=1e-7)
    assert _pooled_bound(config, table, stream).carbon_g < optimum * 0.95  # what the hourly rows alone see


def random_world(rng: random.Random) -> SimConfig:
    """A small random world with a few hundred requests and scarce slots."""
    n = rng.randint(2, 4)
    names = [f"c{k}" for k in range(n)]
    data: dict[str, Any] = {
        "seed": rng.randint(0, 10_000),
        "slo_ttft_ms": rng.uniform(250, 700),
        "period": {"start": "2022-05-01", "days": 1, "seconds_per_hour": rng.uniform(1, 3)},
        "clusters": [
            {
                "name": name,
                "region": f"r{k}",
                "trace": rng.choice(TRACES),
                "capacity": rng.randint(1, 6),
                "ttft_ms": rng.uniform(20, 120),
                "prefill_ms_per_1k_tokens": rng.uniform(20, 120),
                "itl_ms": rng.uniform(8, 30),
                "j_per_prompt_token": rng.uniform(0.01, 0.1),
                "j_per_output_token": rng.uniform(0.1, 0.5),
                "pue": rng.uniform(1.0, 1.6),
            }
            for k, name in enumerate(names)
        ],
        "clients": [
            {
                "name": f"g{g}",
                "share": rng.uniform(0.2, 1.0),
                "rtt_ms": {c: rng.uniform(2, 150) for c in names},
            }
            for g in range(rng.randint(1, 3))
        ],
        "workload": {
            "requests_per_s": rng.uniform(1, 6),
            "prompt_tokens": {"median": rng.uniform(50, 800), "sigma": rng.uniform(0.2, 1.2), "max": 4000},
            "completion_tokens": {"median": rng.uniform(10, 100), "sigma": rng.uniform(0.2, 1.0), "max": 400},
            "header_share": rng.choice((0.0, 0.3)),
            "header_latency_ms": rng.uniform(150, 600),
        },
    }
    return SimConfig.model_validate(data)


def random_slo_meeting_placement(
    rng: random.Random, config: SimConfig, stream: list[SimRequest]
) -> tuple[int, ...] | None:
    """Each request on a random cluster that can still start it in time (None: one had no such cluster)."""
    queues = [ClusterQueue(c) for c in config.clusters]
    chosen = []
    for r in stream:
        rtt_ms = config.clients[r.group].rtt_ms
        slo_ms = r.max_latency_ms or config.slo_ttft_ms
        fits = [
            k
            for k, q in enumerate(queues)
            if rtt_ms[q.config.name] + (q.start_s(r.t) - r.t) * 1000.0 + q.prefill_ms(r.prompt_tokens)
            <= slo_ms
        ]
        if not fits:
            return None
        k = rng.choice(fits)
        queues[k].admit(r.t, r.prompt_tokens, r.completion_tokens)
        chosen.append(k)
    return tuple(chosen)


def test_greedy_hindsight_and_random_slo_meeting_placements_stay_above_the_bound() -> None:
    rng = random.Random(4411)
    placements, greedy = 0, 0
    for _ in range(12):
        config = random_world(rng)
        table = intensity_table(config)
        stream = list(generate(config))
        bound = lower_bound(config, table, stream)
        if not bound.slo_feasible:
            continue
        oracle = _Run(config, table, "oracle").run()
        if oracle.slo_violations == 0 and oracle.rejected == 0 and bound.unservable == 0:
            assert oracle.carbon_g >= bound.carbon_g * (1 - 1e-9), (oracle.carbon_g, bound.carbon_g)
            greedy += 1
        for _ in range(20):
            clusters = random_slo_meeting_placement(rng, config, stream)
            if clusters is None:
                continue
            grams = placement_g(config, table, stream, clusters)
            assert grams is not None
            assert grams >= bound.carbon_g * (1 - 1e-9), (grams, bound.carbon_g)
            placements += 1
    assert greedy >= 4
    assert placements >= 60


def test_chunks_add_up_to_no_more_than_the_joint_programme() -> None:
    """Solving the stream in chunks drops the rows that link them: never above the one-programme figure."""
    rng = random.Random(95)
    for _ in range(4):
        config = random_world(rng).model_copy(deep=True)
        table = intensity_table(config)
        stream = list(generate(config))
        joint = request_lp(config, table, stream, chunk_columns=10**9)
        chunked = request_lp(config, table, stream, chunk_columns=200)
        if joint.slo_feasible and chunked.slo_feasible:
            assert chunked.carbon_g <= joint.carbon_g * (1 + 1e-7)


def test_the_order_of_the_stream_does_not_change_the_bound() -> None:
    rng = random.Random(31)
    compared = 0
    for _ in range(6):
        config = random_world(rng)
        table = intensity_table(config)
        stream = list(generate(config))
        shuffled = stream[:]
        rng.shuffle(shuffled)
        in_order = request_lp(config, table, stream, chunk_columns=300)
        any_order = request_lp(config, table, shuffled, chunk_columns=300)
        assert any_order.slo_feasible == in_order.slo_feasible
        if in_order.slo_feasible:
            assert any_order.carbon_g == pytest.approx(in_order.carbon_g, rel=1e-7)
            compared += 1
    assert compared >= 2


def test_streams_beyond_the_per_request_limit_use_the_pooled_programme(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = random.Random(8)
    while True:  # a world some placement can serve within the SLO
        config = random_world(rng)
        table = intensity_table(config)
        per_request = lower_bound(config, table)
        if per_request.slo_feasible:
            break
    monkeypatch.setattr(bound_module, "PER_REQUEST_COLUMNS", 10)
    pooled = lower_bound(config, table)
    assert pooled.carbon_g == pytest.approx(_pooled_bound(config, table, generate(config)).carbon_g, rel=1e-9)
    assert pooled.carbon_g <= per_request.carbon_g * (1 + 1e-6)
