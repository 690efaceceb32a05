"""The simulator's LP lower bound: never above a policy meeting the SLO, exact where the answer is known."""

from __future__ import annotations

import random
from typing import Any

import pytest

from bauxite.simulate.bound import lower_bound
from bauxite.simulate.config import SimConfig
from bauxite.simulate.engine import simulate
from bauxite.simulate.model import intensity_table
from bauxite.simulate.workload import generate
from bauxite.units import carbon_g

TRACES = ("PJM", "MISO", "CISO", "BPAT", "ERCO", "SOCO", "NYIS", "AZPS")


def random_config(rng: random.Random) -> SimConfig:
    """A small random world: 2-4 clusters, 1-3 client sites, one or two days, random load and sizes."""
    n = rng.randint(2, 4)
    names = [f"c{k}" for k in range(n)]
    clusters = [
        {
            "name": name,
            "region": f"r{k}",
            "trace": rng.choice(TRACES),
            "capacity": rng.randint(4, 32),
            "ttft_ms": rng.uniform(20, 120),
            "prefill_ms_per_1k_tokens": rng.uniform(20, 120),
            "itl_ms": rng.uniform(8, 30),
            "j_per_prompt_token": rng.uniform(0.01, 0.1),
            "j_per_output_token": rng.uniform(0.1, 0.5),
            "pue": rng.uniform(1.0, 1.6),
        }
        for k, name in enumerate(names)
    ]
    clients = [
        {"name": f"g{g}", "share": rng.uniform(0.2, 1.0), "rtt_ms": {c: rng.uniform(2, 150) for c in names}}
        for g in range(rng.randint(1, 3))
    ]
    data: dict[str, Any] = {
        "seed": rng.randint(0, 10_000),
        "slo_ttft_ms": rng.uniform(250, 900),
        "period": {"start": "2022-05-01", "days": rng.randint(1, 2), "seconds_per_hour": rng.uniform(2, 5)},
        "clusters": clusters,
        "clients": clients,
        "workload": {
            "requests_per_s": rng.uniform(0.5, 5),
            "prompt_tokens": {"median": rng.uniform(50, 800), "sigma": rng.uniform(0.2, 1.2), "max": 4000},
            "completion_tokens": {
                "median": rng.uniform(20, 300),
                "sigma": rng.uniform(0.2, 1.0),
                "max": 1500,
            },
            "header_share": rng.choice((0.0, 0.3)),  # some requests send their own latency requirement
            "header_latency_ms": rng.uniform(150, 600),
        },
        "routing": {
            "green_routing": {"threshold_gco2": rng.uniform(100, 600)},
            "configure_profiles": rng.random() < 0.5,
        },
    }
    return SimConfig.model_validate(data)


def test_no_policy_that_meets_the_slo_lands_below_the_bound() -> None:
    rng = random.Random(20260)
    checked = 0
    for _ in range(10):
        result = simulate(random_config(rng))
        bound_g = result.bound.carbon_g
        assert bound_g > 0
        for r in (*result.policies.values(), result.oracle):
            if r.slo_violations == 0 and result.bound.unservable == 0:
                assert r.carbon_g >= bound_g * (1 - 1e-6), (r.name, r.carbon_g, bound_g)
                checked += 1
    assert checked >= 10  # most random worlds let several policies meet the SLO


def known_world(capacity: int, green_rtt_ms: float) -> SimConfig:
    """East clients; a near dirty cluster (PJM) and a green one (BPAT) at ``green_rtt_ms``."""
    return SimConfig.model_validate(
        {
            "seed": 5,
            "slo_ttft_ms": 300,
            "period": {"start": "2022-03-01", "days": 1, "seconds_per_hour": 3},
            "clusters": [
                {
                    "name": "near",
                    "region": "east",
                    "trace": "PJM",
                    "capacity": 1000,
                    "ttft_ms": 50,
                    "prefill_ms_per_1k_tokens": 100,
                },
                {
                    "name": "green",
                    "region": "west",
                    "trace": "BPAT",
                    "capacity": capacity,
                    "ttft_ms": 50,
                    "prefill_ms_per_1k_tokens": 100,
                },
            ],
            "clients": [{"name": "east", "share": 1, "rtt_ms": {"near": 5, "green": green_rtt_ms}}],
            "workload": {"requests_per_s": 4, "prompt_tokens": {"median": 600, "sigma": 0.8, "max": 2400}},
        }
    )


def per_request_minimum_g(config: SimConfig) -> float:
    """Σ over requests of the greenest cluster that meets the SLO when idle: the optimum without queueing."""
    table = intensity_table(config)
    total = 0.0
    for r in generate(config):
        options = []
        for k, c in enumerate(config.clusters):
            idle_ms = (
                config.clients[r.group].rtt_ms[c.name]
                + c.ttft_ms
                + c.prefill_ms_per_1k_tokens * r.prompt_tokens / 1000
            )
            if idle_ms <= config.slo_ttft_ms:
                energy_j = c.j_per_prompt_token * r.prompt_tokens + c.j_per_output_token * r.completion_tokens
                options.append(carbon_g(energy_j, table[k][r.hour], c.pue))
        total += min(options)
    return total


@pytest.mark.parametrize("green_rtt_ms", [10.0, 150.0])
def test_bound_is_the_optimum_when_capacity_is_ample(green_rtt_ms: float) -> None:
    """Far green cluster: only short prompts fit its SLO; the bound is exactly the per-request minimum,
    and the greedy hindsight baseline (which never queues here) reaches it."""
    config = known_world(capacity=1000, green_rtt_ms=green_rtt_ms)
    expected = per_request_minimum_g(config)
    assert lower_bound(config, intensity_table(config)).carbon_g == pytest.approx(expected, rel=1e-7)
    result = simulate(config.model_copy(update={"policies": ("latency",)}))
    assert result.oracle.slo_violations == 0
    assert result.oracle.carbon_g == pytest.approx(expected, rel=1e-7)
    assert result.bound.carbon_g == pytest.approx(expected, rel=1e-7)


def test_one_cluster_bound_equals_what_every_policy_emits() -> None:
    config = known_world(capacity=1000, green_rtt_ms=10).model_copy(deep=True)
    single = SimConfig.model_validate(
        {
            **config.model_dump(mode="json"),
            "clusters": [config.clusters[0].model_dump()],
            "clients": [{"name": "east", "share": 1, "rtt_ms": {"near": 5}}],
        }
    )
    result = simulate(single)
    for r in (*result.policies.values(), result.oracle):
        assert r.carbon_g == pytest.approx(result.bound.carbon_g, rel=1e-7)


def test_scarce_green_capacity_raises_the_bound() -> None:
    """A one-slot green cluster cannot take the whole stream: the capacity rows bind."""
    ample = lower_bound(known_world(1000, 10), intensity_table(known_world(1000, 10))).carbon_g
    scarce_config = known_world(1, 10)
    scarce = lower_bound(scarce_config, intensity_table(scarce_config)).carbon_g
    assert scarce > ample * 1.5


def test_more_work_than_any_slo_meeting_placement_still_gives_a_bound() -> None:
    config = known_world(1, 10).model_copy(deep=True)
    data = config.model_dump(mode="json")
    data["clusters"][0]["capacity"] = 1
    data["workload"]["requests_per_s"] = 50
    overloaded = SimConfig.model_validate(data)
    result = simulate(overloaded.model_copy(update={"policies": ("latency", "low_carbon")}))
    assert not result.bound.slo_feasible
    for r in (*result.policies.values(), result.oracle):
        assert r.carbon_g >= result.bound.carbon_g * (1 - 1e-6)
