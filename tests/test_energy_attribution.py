"""Attribution of measured interval energy to requests: golden split, conservation, monotonicity."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bauxite.energy.attribution import ClusterLedger, Job, union_s, work_in
from bauxite.fleet.model import gpu_power_w, profile_for


def test_work_places_prompt_tokens_over_ttft_and_output_tokens_after_it() -> None:
    job = Job(start_s=0.0, end_s=10.0, prefill_end_s=2.0, prompt_tokens=100, completion_tokens=80)
    # [0, 5): all 100 prompt tokens (weight 0.25 → 25) + 3/8 of 80 output tokens (30)
    assert work_in(job, 0.0, 5.0, 0.25) == pytest.approx(25.0 + 30.0)
    assert work_in(job, 5.0, 10.0, 0.25) == pytest.approx(50.0)


def test_union_of_overlapping_spans() -> None:
    assert union_s([(0.0, 2.0), (1.0, 3.0), (5.0, 6.0)]) == pytest.approx(4.0)


def test_golden_split_of_one_interval() -> None:
    finals: dict[str, float] = {}
    ledger = ClusterLedger(idle_w=100.0, prefill_weight=0.0)
    a = Job(0.0, 10.0, 0.0, 0, 30, on_final=lambda j, ok: finals.__setitem__("a", j))
    b = Job(5.0, 10.0, 5.0, 0, 10, on_final=lambda j, ok: finals.__setitem__("b", j))
    ledger.add(a)
    ledger.add(b)
    ledger.close_interval(0.0, 10.0, energy_j=3000.0, in_flight=0, open_tokens_per_s=0.0)
    # static = min(3000, 100 W × 10 s) = 1000 J, all busy; split by residency 10 s : 5 s
    # dynamic = 2000 J split by output tokens 30 : 10
    assert finals["a"] == pytest.approx(1000 * 10 / 15 + 2000 * 30 / 40)
    assert finals["b"] == pytest.approx(1000 * 5 / 15 + 2000 * 10 / 40)
    assert ledger.idle_j == pytest.approx(0.0)


def test_energy_with_nothing_in_flight_is_idle() -> None:
    ledger = ClusterLedger(idle_w=100.0)
    ledger.close_interval(0.0, 5.0, energy_j=600.0, in_flight=0, open_tokens_per_s=30.0)
    assert (ledger.idle_j, ledger.attributed_j) == (600.0, 0.0)


def test_running_request_claims_its_pooled_share_when_it_finishes() -> None:
    finals: list[float] = []
    ledger = ClusterLedger(idle_w=0.0)
    ledger.close_interval(0.0, 5.0, energy_j=500.0, in_flight=1, open_tokens_per_s=10.0)
    assert ledger.pending_j == pytest.approx(500.0)
    ledger.add(Job(0.0, 8.0, 0.0, 0, 80, on_final=lambda j, ok: finals.append(j)))
    ledger.close_interval(5.0, 10.0, energy_j=300.0, in_flight=0, open_tokens_per_s=10.0)
    assert finals == [pytest.approx(800.0)]
    assert ledger.attributed_j == pytest.approx(800.0)


def test_unclaimed_pool_expires_into_idle() -> None:
    ledger = ClusterLedger(idle_w=0.0)
    ledger.close_interval(0.0, 5.0, energy_j=500.0, in_flight=2, open_tokens_per_s=10.0)
    ledger.flush()
    assert (ledger.idle_j, ledger.pending_j) == (500.0, 0.0)


def test_longer_request_gets_more_dynamic_energy_at_the_same_token_rate() -> None:
    finals: dict[str, float] = {}
    ledger = ClusterLedger(idle_w=0.0)
    rate_per_s = 20.0
    ledger.add(
        Job(0.0, 8.0, 0.0, 0, int(8 * rate_per_s), on_final=lambda j, ok: finals.__setitem__("long", j))
    )
    ledger.add(
        Job(6.0, 8.0, 6.0, 0, int(2 * rate_per_s), on_final=lambda j, ok: finals.__setitem__("short", j))
    )
    ledger.close_interval(0.0, 10.0, 1000.0, 0, rate_per_s)
    assert finals["long"] > finals["short"]


@st.composite
def workloads(draw: st.DrawFn) -> tuple[list[tuple[float, float, float, int, int]], float]:
    count = draw(st.integers(0, 25))
    requests = []
    for _ in range(count):
        start_s = draw(st.floats(0.0, 40.0))
        duration_s = draw(st.floats(0.05, 20.0))
        ttft_s = draw(st.floats(0.0, 1.0)) * duration_s
        requests.append((start_s, duration_s, ttft_s, draw(st.integers(0, 4000)), draw(st.integers(0, 1000))))
    return requests, draw(st.sampled_from([0.5, 1.0, 2.5, 5.0]))


def _running(requests: list[tuple[float, float, float, int, int]], t_s: float) -> int:
    return sum(1 for start_s, dur_s, *_ in requests if start_s <= t_s < start_s + dur_s)


def _energy_j(requests: list[tuple[float, float, float, int, int]], t0_s: float, t1_s: float) -> float:
    """GPU energy of a simulated 2×H100 cluster: fleet power model integrated between events."""
    profile = profile_for("llama-3.1-70b", "H100", 2)
    edges = sorted({t0_s, t1_s, *(s for s, *_ in requests), *(s + d for s, d, *_ in requests)})
    edges = [e for e in edges if t0_s <= e <= t1_s]
    total_j = 0.0
    for a_s, b_s in itertools.pairwise(edges):
        total_j += profile.gpu_count * gpu_power_w(profile, _running(requests, a_s)) * (b_s - a_s)
    return total_j


@settings(max_examples=60, deadline=None)
@given(workloads(), st.sampled_from([0.0, 0.3]), st.booleans())
def test_attributed_plus_idle_equals_measured(
    workload: tuple[list[tuple[float, float, float, int, int]], float], grace_s: float, report_late: bool
) -> None:
    requests, interval_s = workload
    ledger = ClusterLedger(idle_w=2 * 144.0, prefill_weight=0.25)
    per_request_j: list[float] = []
    events: list[tuple[float, int, object]] = []
    for start_s, dur_s, ttft_s, prompt, completion in requests:
        job = Job(
            start_s,
            start_s + dur_s,
            start_s + ttft_s,
            prompt,
            completion,
            on_final=lambda j, ok: per_request_j.append(j),
        )
        events.append((start_s + dur_s + (interval_s * 3 if report_late else 0.0), 0, job))
    t_s = 0.0
    while t_s < 75.0:
        events.append((t_s + interval_s + grace_s, 1, (t_s, t_s + interval_s)))
        t_s += interval_s
    for _, kind, item in sorted(events, key=lambda e: (e[0], e[1])):
        if kind == 0:
            assert isinstance(item, Job)
            ledger.add(item)
        else:
            assert isinstance(item, tuple)
            t0_s, t1_s = item
            ledger.close_interval(t0_s, t1_s, _energy_j(requests, t0_s, t1_s), _running(requests, t1_s), 25.0)
    ledger.flush()
    assert ledger.attributed_j + ledger.idle_j == pytest.approx(ledger.measured_j, rel=0.01)
    assert sum(per_request_j) == pytest.approx(ledger.attributed_j, rel=1e-6, abs=1e-6)
    assert len(per_request_j) == len(requests)
