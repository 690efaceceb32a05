"""What the router learns from finished requests: the workload's completion length (expected grams) and each
gateway's own base TTFT (latency prediction), plus the simulator feeding both the way a gateway would."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from bauxite.proxy import Forwarder, Upstream
from bauxite.records import Capture
from bauxite.routing.config import LatencySettings
from bauxite.simulate.engine import _Run
from bauxite.simulate.model import intensity_table
from bauxite.simulate.policies import RouterPolicy
from test_routing import EAST, WEST, make_router, req
from test_simulate import small_config


@dataclass
class SplitEnergy:
    """east: cheap prefill, dear decode; west: the opposite (J per token)."""

    def expected_j(self, cluster: str, model: str, prompt_tokens: int, completion_tokens: int) -> float:
        prompt_j, completion_j = (0.02, 0.9) if cluster == "east" else (0.15, 0.3)
        return prompt_j * prompt_tokens + completion_j * completion_tokens


# Same grid for both; 3000 prompt tokens. Short outputs favour east (cheap prefill), long ones west.
@pytest.mark.parametrize(
    ("observed_completion", "max_tokens", "expected"),
    [
        (None, 0, "east"),  # prior: typical_completion_tokens (256)
        (100, 0, "east"),
        (2000, 0, "west"),  # the learned mean, not the 256 prior, sets the decode share of expected grams
        (2000, 50, "east"),  # a request's own max_tokens beats the learned mean
    ],
)
def test_expected_grams_use_the_learned_completion_length(
    observed_completion: int | None, max_tokens: int, expected: str
) -> None:
    router, _ = make_router((EAST, WEST), {"us-east": 300.0, "us-west": 300.0}, SplitEnergy())  # type: ignore[arg-type]
    if observed_completion is not None:
        for _ in range(300):  # long enough for the slow token average to converge
            router.latency.observe_tokens("east", 3000, observed_completion)
    assert router.choose(req(prompt_tokens=3000, max_tokens=max_tokens)).cluster.name == expected


@pytest.mark.parametrize(
    ("samples_ms", "prompt_tokens", "expected_base_ms"),
    [
        ([130.0], 0, 120.0),  # minus the 10 ms round trip
        ([130.0], 1000, 70.0),  # minus the prefill of *that* prompt (50 ms per 1k tokens)
        ([5.0], 0, 0.0),  # never negative
        ([130.0, 230.0], 0, 150.0),  # a slower sample (queueing?) raises it by 30% of the excess
        ([230.0, 130.0], 0, 120.0),  # a faster one lowers it at once: queueing only ever adds
    ],
)
def test_base_ttft_is_learned_from_own_observations(
    samples_ms: list[float], prompt_tokens: int, expected_base_ms: float
) -> None:
    router, fleet = make_router((EAST,))
    east = fleet.by_name["east"]
    router.choose(req())
    for sample in samples_ms:
        router.latency.observe_ttft("east", sample, prompt_tokens)
    predicted = router.latency.predict_ttft_ms(east, 0)
    assert predicted == pytest.approx(10.0 + expected_base_ms)


@pytest.mark.parametrize(
    ("attempts", "status", "learns"),
    [(1, "ok", True), (2, "ok", False), (1, "error", False)],
)
def test_proxy_feeds_ttft_only_from_clean_first_attempts(attempts: int, status: str, learns: bool) -> None:
    router, fleet = make_router((EAST,))
    router.choose(req())
    forwarder = Forwarder(Upstream([]), router, None)  # type: ignore[arg-type]  # no accounting here
    capture = Capture(model="m", department="d", endpoint="chat", started_at=0.0, started_mono=0.0)
    capture.cluster, capture.status, capture.attempts = "east", status, attempts  # type: ignore[assignment]
    capture.ttft_s, capture.prompt_tokens, capture.completion_tokens = 0.5, 0, 10
    router.dispatched("east")
    forwarder._feedback(capture)
    assert router.depth("east") == 0 and fleet.by_name["east"].in_flight == 0
    predicted = router.latency.predict_ttft_ms(fleet.by_name["east"], 0)
    assert (predicted == pytest.approx(500.0)) is learns


def test_queue_wait_quantile_defaults_to_a_rare_miss() -> None:
    assert LatencySettings().queue_wait_quantile == 0.9999


def test_simulated_first_token_reaches_only_the_sending_gateway() -> None:
    config = small_config(routing={"configure_profiles": False}, policies=["low_carbon"])
    run = _Run(config, intensity_table(config), "low_carbon")
    policy = run.policy
    assert isinstance(policy, RouterPolicy)
    policy.first_token(0, 1, 500.0, 0)  # cluster 0, client group 1, 500 ms, empty prompt
    routers = policy._routers
    state = routers[0]._fleet.clusters[0]
    rtt_ms = [group.rtt_ms[state.name] for group in config.clients]
    # the sender learned a base TTFT of 500 ms − its round trip; the other gateway still has its prior
    assert routers[1].latency.predict_ttft_ms(state, 0) == pytest.approx(500.0)
    default_ms = config.routing.latency.default_ttft_ms
    assert routers[0].latency.predict_ttft_ms(state, 0) == pytest.approx(rtt_ms[0] + default_ms)
