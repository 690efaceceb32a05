"""Attribution of measured interval energy to requests: golden split, conservation, fairness."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bauxite.energy.attribution import ClusterLedger, Job

IDLE_W = 288.0  # 2 GPUs resident idle
DYNAMIC_W = 400.0  # extra power per running request in the test cluster's power model
Span = tuple[float, float, float, int, int]  # start, duration, ttft, prompt tokens, completion tokens


def finished(start_s: float, end_s: float, prefill_end_s: float, prompt: int, completion: int) -> Job:
    job = Job(start_s, decode_w=1.0, prefill_w=0.25)
    job.finish(end_s, prefill_end_s, prompt, completion)
    return job


def test_prompt_tokens_are_placed_over_ttft_and_output_tokens_after_it() -> None:
    """A request across two intervals: 100 prompt tokens (weight 0.25) over [0, 2), 80 output tokens over
    [2, 10); the first interval holds 25 + 30 units of work, the second 50."""
    finals: dict[str, Job] = {}
    ledger = ClusterLedger(idle_w=0.0)
    job, other = Job(0.0, prefill_w=0.25), Job(0.0, prefill_w=0.25)
    for j, prompt, completion in ((job, 100, 80), (other, 0, 55)):
        ledger.open(j)
        j.finish(10.0, 2.0 if j is job else 0.0, prompt, completion)
    _settled(ledger, job, finals, "job")
    _settled(ledger, other, finals, "other")
    ledger.close_interval(0.0, 5.0, 1100.0)  # work: job 25 + 30 = 55, other 5/10 × 55 = 27.5
    ledger.close_interval(5.0, 10.0, 1000.0)  # work: job 50, other 27.5
    assert finals["job"].gpu_j == pytest.approx(1100.0 * 55 / 82.5 + 1000.0 * 50 / 77.5)


def test_running_request_is_charged_its_models_power_over_its_decode_time() -> None:
    """Tokens of a request still running are not known yet: it is charged its model's modelled power per
    sequence over its time in the interval; a finished one, its tokens at the model's energy per token."""
    finals: dict[str, Job] = {}
    # 0.1 J per token, a token every 0.1 s: 1 W per sequence
    ledger = ClusterLedger(idle_w=0.0, weigh=lambda m, n: (0.1, 0.0, 0.1))
    running, done = Job(1.0, "m"), Job(0.0, "m")
    ledger.open(running)
    ledger.open(done)
    done.finish(5.0, 0.0, 0, 120)
    _settled(ledger, done, finals, "done")
    ledger.close_interval(0.0, 5.0, 1000.0)
    # running: 1 W × 4 s = 4; done: 120 tokens × 0.1 J = 12 → 1000 J split 4 : 12
    assert finals["done"].gpu_j == pytest.approx(750.0) and running.gpu_j == pytest.approx(250.0)


def _settled(ledger: ClusterLedger, job: Job, into: dict[str, Job], name: str) -> None:
    job.on_final = lambda j, ok: into.__setitem__(name, j)
    ledger.close_job(job)


def test_golden_split_of_one_interval() -> None:
    finals: dict[str, Job] = {}
    ledger = ClusterLedger(idle_w=100.0)
    a, b = Job(0.0, prefill_w=0.0), Job(5.0, prefill_w=0.0)
    ledger.open(a)
    ledger.open(b)
    a.finish(10.0, 0.0, 0, 30)
    b.finish(10.0, 5.0, 0, 10)
    _settled(ledger, a, finals, "a")
    _settled(ledger, b, finals, "b")
    ledger.close_interval(0.0, 10.0, energy_j=3000.0)
    # static = min(3000, 100 W × 10 s) = 1000 J, all busy; each instant's idle power is shared by whoever is
    # resident then: a alone for 5 s, then a and b for 5 s → 7.5 s : 2.5 s.
    # dynamic = 2000 J split by output tokens 30 : 10
    assert finals["a"].gpu_j == pytest.approx(1000 * 7.5 / 10 + 2000 * 30 / 40)
    assert finals["b"].gpu_j == pytest.approx(1000 * 2.5 / 10 + 2000 * 10 / 40)
    assert finals["a"].static_j == pytest.approx(750.0) and finals["a"].occupancy_s == pytest.approx(7.5)
    assert ledger.idle_j == pytest.approx(0.0)


def test_energy_with_nothing_resident_is_idle() -> None:
    ledger = ClusterLedger(idle_w=100.0)
    ledger.close_interval(0.0, 5.0, energy_j=600.0)
    assert (ledger.idle_j, ledger.attributed_j, ledger.unallocated_s) == (600.0, 0.0, 5.0)


def test_request_across_a_boundary_is_charged_only_its_own_residency() -> None:
    """A 0.6 s request starting 0.1 s before a 5 s boundary on an otherwise idle cluster is charged what the
    cluster used while it ran — not the idle energy of either whole interval."""
    finals: dict[str, Job] = {}
    ledger = ClusterLedger(idle_w=IDLE_W)
    job = Job(4.9)
    ledger.open(job)
    ledger.close_interval(0.0, 5.0, IDLE_W * 5.0 + DYNAMIC_W * 0.1)
    job.finish(5.5, 5.0, 200, 50)
    _settled(ledger, job, finals, "job")
    ledger.close_interval(5.0, 10.0, IDLE_W * 5.0 + DYNAMIC_W * 0.5)
    used_j = (IDLE_W + DYNAMIC_W) * 0.6
    assert finals["job"].gpu_j == pytest.approx(used_j)
    assert finals["job"].occupancy_s == pytest.approx(0.6)
    assert ledger.idle_j == pytest.approx(IDLE_W * 9.4)


def test_dropped_job_charges_move_to_idle_so_the_account_stays_whole() -> None:
    ledger = ClusterLedger(idle_w=IDLE_W)
    job = Job(0.0)
    ledger.open(job)
    ledger.close_interval(0.0, 5.0, 3000.0)
    assert ledger.attributed_j == pytest.approx(3000.0)
    ledger.drop(job)
    ledger.close_interval(5.0, 10.0, 1500.0)
    assert ledger.attributed_j == pytest.approx(0.0) and ledger.idle_j == pytest.approx(4500.0)
    assert ledger.unallocated_s == pytest.approx(10.0)


def test_token_work_is_weighted_at_each_model_batch_and_capped_at_the_power_limit() -> None:
    """Decode energy per token falls with the batch: a request alone at first is charged more per token then
    than while it shares the batch; a segment never holds more dynamic energy than the GPUs can draw."""
    finals: dict[str, Job] = {}
    seen: list[tuple[str, float]] = []

    def weigh(model: str, batch: float) -> tuple[float, float, float]:
        seen.append((model, batch))
        return 1.0 / batch, 0.0, 1.0

    ledger = ClusterLedger(idle_w=0.0, weigh=weigh, headroom_w=1e9)
    a, b = Job(0.0, "m"), Job(5.0, "m")
    for job, start_s in ((a, 0.0), (b, 5.0)):
        ledger.open(job)
        job.finish(10.0, start_s, 0, 100 if job is a else 50)
    _settled(ledger, a, finals, "a")
    _settled(ledger, b, finals, "b")
    ledger.close_interval(0.0, 10.0, 1000.0)
    # a: 50 tokens alone (weight 1) + 50 tokens at batch 2 (weight ½) = 75; b: 50 at batch 2 = 25
    assert finals["a"].gpu_j == pytest.approx(750.0) and finals["b"].gpu_j == pytest.approx(250.0)
    assert sorted(set(seen)) == [("m", 1.0), ("m", 2.0)]
    # small: 0.1 J per token, a token every 0.1 s (1 W); big: 1 J per token every 0.01 s (100 W)
    capped = ClusterLedger(
        idle_w=0.0, weigh=lambda m, n: (1.0, 0.0, 0.01) if m == "big" else (0.1, 0.0, 0.1), headroom_w=5.0
    )
    small, big = Job(0.0, "small"), Job(5.0, "big")
    for job, start_s, end_s in ((small, 0.0, 10.0), (big, 5.0, 6.0)):
        capped.open(job)
        job.finish(end_s, start_s, 0, 100)
    _settled(capped, small, finals, "small")
    _settled(capped, big, finals, "big")
    capped.close_interval(0.0, 10.0, 1000.0)
    # modelled: small 1 W all along; big 100 W in [5, 6), where the 101 W modelled is scaled to the 5 W
    # limit together: small 5 + 5/101 + 4, big 500/101 (uncapped, big would get 100/110 of the energy).
    small_w, big_w = 9.0 + 5.0 / 101.0, 500.0 / 101.0
    assert finals["big"].gpu_j == pytest.approx(1000.0 * big_w / (small_w + big_w))


def test_requests_of_a_costlier_model_get_more_dynamic_energy() -> None:
    finals: dict[str, Job] = {}
    ledger = ClusterLedger(idle_w=0.0)
    small, large = Job(0.0, "8b", decode_w=0.1), Job(0.0, "70b", decode_w=0.9)
    for job in (small, large):
        ledger.open(job)
        job.finish(10.0, 0.0, 0, 100)
    _settled(ledger, small, finals, "small")
    _settled(ledger, large, finals, "large")
    ledger.close_interval(0.0, 10.0, 1000.0)
    assert finals["large"].gpu_j == pytest.approx(900.0) and finals["small"].gpu_j == pytest.approx(100.0)


# Property tests over random timelines ------------------------------------------------------------------


@st.composite
def workloads(draw: st.DrawFn) -> tuple[list[Span], float]:
    count = draw(st.integers(0, 20))
    requests: list[Span] = []
    for _ in range(count):
        start_s = draw(st.floats(0.0, 40.0))
        duration_s = draw(st.floats(0.05, 20.0))
        ttft_s = draw(st.floats(0.0, 1.0)) * duration_s
        requests.append((start_s, duration_s, ttft_s, draw(st.integers(0, 4000)), draw(st.integers(1, 1000))))
    twin: bool = draw(st.booleans())
    if requests and twin:  # an identical twin of one request
        requests.append(requests[draw(st.integers(0, len(requests) - 1))])
    return requests, draw(st.sampled_from([0.5, 1.0, 2.5, 5.0]))


def _running(requests: list[Span], t_s: float) -> int:
    return sum(1 for start_s, dur_s, *_ in requests if start_s <= t_s < start_s + dur_s)


def _energy_j(requests: list[Span], t0_s: float, t1_s: float) -> float:
    """GPU energy of the test cluster: idle floor plus a dynamic part per running request."""
    edges = sorted({t0_s, t1_s, *(s for s, *_ in requests), *(s + d for s, d, *_ in requests)})
    edges = [e for e in edges if t0_s <= e <= t1_s]
    return sum(
        (IDLE_W + DYNAMIC_W * _running(requests, a_s)) * (b_s - a_s) for a_s, b_s in itertools.pairwise(edges)
    )


def _replay(requests: list[Span], interval_s: float, grace_s: float, report_delay_s: float) -> tuple[
    ClusterLedger, list[Job]
]:  # fmt: skip
    """Open each request at its start, close it at its end and report its tokens ``report_delay_s`` later;
    split intervals ``grace_s`` after their end. Returns the ledger and the settled jobs."""
    ledger = ClusterLedger(idle_w=IDLE_W)
    jobs = [Job(start_s) for start_s, *_ in requests]
    settled: list[Job] = []
    events: list[tuple[float, int, Callable[[], None]]] = []
    for job, (start_s, dur_s, ttft_s, prompt, completion) in zip(jobs, requests, strict=True):
        events.append((start_s, 0, functools.partial(ledger.open, job)))
        events.append((start_s + dur_s, 0, functools.partial(job.leave, start_s + dur_s)))

        def report(job: Job = job, span: Span = (start_s, dur_s, ttft_s, prompt, completion)) -> None:
            job.finish(span[0] + span[1], span[0] + span[2], span[3], span[4])
            job.on_final = lambda j, ok: settled.append(j)
            ledger.close_job(job)

        events.append((start_s + dur_s + report_delay_s, 2, report))
    t_s = 0.0
    while t_s < 75.0:
        t0_s, t1_s = t_s, t_s + interval_s
        split = lambda a=t0_s, b=t1_s: ledger.close_interval(a, b, _energy_j(requests, a, b))  # noqa: E731
        events.append((t1_s + grace_s, 1, split))
        t_s = t1_s
    for _, _, action in sorted(events, key=lambda e: (e[0], e[1])):
        action()
    return ledger, settled


@settings(max_examples=80, deadline=None)
@given(workloads(), st.sampled_from([0.0, 0.3]), st.sampled_from([0.0, 0.2, 7.0]))
def test_conservation_and_fairness_over_random_timelines(
    workload: tuple[list[Span], float], grace_s: float, report_delay_s: float
) -> None:
    requests, interval_s = workload
    ledger, settled = _replay(requests, interval_s, grace_s, report_delay_s)
    ledger.flush()
    # Conservation, exact: every measured joule is a request's or idle; every second occupied or not.
    assert ledger.attributed_j + ledger.idle_j == pytest.approx(ledger.measured_j, rel=1e-9)
    assert sum(j.gpu_j for j in settled) == pytest.approx(ledger.attributed_j, rel=1e-9, abs=1e-6)
    assert ledger.occupied_s + ledger.unallocated_s == pytest.approx(75.0, rel=1e-9)
    assert len(settled) == len(requests)
    # Fairness: nobody pays for idle time or cluster time outside their own residency.
    for job in settled:
        residency_s = (job.end_s or 0.0) - job.start_s
        assert job.static_j <= IDLE_W * residency_s * (1 + 1e-9) + 1e-9
        assert job.occupancy_s <= residency_s * (1 + 1e-9) + 1e-9
    # Identical requests are charged identically.
    by_span: dict[tuple[float, float, int, int], list[float]] = {}
    for job in settled:
        key = (job.start_s, job.end_s or 0.0, job.prompt_tokens, job.completion_tokens)
        by_span.setdefault(key, []).append(job.gpu_j)
    for charges in by_span.values():
        assert max(charges) == pytest.approx(min(charges), rel=1e-9, abs=1e-9)


@settings(max_examples=80, deadline=None)
@given(
    st.floats(0.0, 30.0), st.floats(0.05, 20.0), st.sampled_from([0.5, 1.0, 2.5, 5.0]),
    st.sampled_from([0.0, 0.2, 7.0]),
)  # fmt: skip
def test_lone_request_is_charged_exactly_what_the_cluster_used_while_it_ran(
    start_s: float, duration_s: float, interval_s: float, report_delay_s: float
) -> None:
    request: Span = (start_s, duration_s, 0.1 * duration_s, 300, 100)
    _, settled = _replay([request], interval_s, 0.0, report_delay_s)
    used_j = (IDLE_W + DYNAMIC_W) * duration_s
    assert settled[0].gpu_j == pytest.approx(used_j, rel=1e-9)
    assert settled[0].static_j == pytest.approx(IDLE_W * duration_s, rel=1e-9)


def _reference_split(
    spans: list[Span], models: list[str], t0_s: float, t1_s: float, energy_j: float, headroom_w: float
) -> list[float]:
    """A direct, slow reading of the rule: walk every segment between any two events; share its idle power
    equally among the requests resident in it; a decoding request draws its model's power per sequence at
    that model's running count (a token per second here), a prefilling one its prompt rate × 0.5 J; scale a
    segment to the power limit; a request's decode work is its tokens × its mean drawn power per token."""
    events = (e for s, d, f, _, _ in spans for e in (s, s + f, s + d) if t0_s < e < t1_s)
    edges = sorted({t0_s, t1_s, *events})
    static_j = min(energy_j, IDLE_W * (t1_s - t0_s))
    shares = [0.0] * len(spans)
    prefill = [0.0] * len(spans)
    drawn = [0.0] * len(spans)
    decoding = [0.0] * len(spans)
    for a_s, b_s in itertools.pairwise(edges):
        active = [i for i, (s, d, *_) in enumerate(spans) if s <= a_s and s + d >= b_s]
        if not active:
            continue
        running: dict[str, int] = {}
        for i in active:
            running[models[i]] = running.get(models[i], 0) + 1
        powers = []
        for i in active:
            start_s, _, ttft_s, prompt, _ = spans[i]
            shares[i] += (b_s - a_s) / len(active)
            in_prefill = a_s < start_s + ttft_s
            powers.append(prompt / ttft_s * 0.5 if in_prefill else _w(models[i], running))
        total = sum(powers)
        scale = min(1.0, headroom_w / total) if total > 0 else 1.0
        for i, p in zip(active, powers, strict=True):
            start_s, _, ttft_s, _, _ = spans[i]
            if a_s < start_s + ttft_s:
                prefill[i] += p * scale * (b_s - a_s)
            else:
                drawn[i] += p * scale * (b_s - a_s)
                decoding[i] += b_s - a_s
    work = [
        prefill[i] + (spans[i][4] * drawn[i] / decoding[i] if decoding[i] > 0 else 0.0)
        for i in range(len(spans))
    ]
    busy_s = sum(shares)
    dynamic_j = energy_j - static_j
    return [
        static_j * busy_s / (t1_s - t0_s) * sh / busy_s + dynamic_j * w / sum(work)
        for sh, w in zip(shares, work, strict=True)
    ]


def _w(model: str, running: dict[str, int]) -> float:
    return (3.0 if model == "big" else 1.0) / running[model]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0.0, 8.0), st.floats(0.1, 6.0), st.floats(0.05, 0.9), st.integers(1, 500),
                  st.integers(1, 500), st.sampled_from(["big", "small"])),
        min_size=1, max_size=12,
    ),
    st.sampled_from([1e9, 400.0, 50.0]),
)  # fmt: skip
def test_the_sweep_equals_a_direct_segment_walk(
    drawn: list[tuple[float, float, float, int, int, str]], headroom_w: float
) -> None:
    spans: list[Span] = [(s, d, f * d, p, c) for s, d, f, p, c, _ in drawn]
    models = [m for *_, m in drawn]
    ledger = ClusterLedger(
        idle_w=IDLE_W, weigh=lambda m, n: (_w(m, {m: int(n)}), 0.5, 1.0), headroom_w=headroom_w
    )
    finals: list[Job] = []
    jobs = []
    for (start_s, dur_s, ttft_s, prompt, completion), model in zip(spans, models, strict=True):
        job = Job(start_s, model)
        ledger.open(job)
        job.finish(start_s + dur_s, start_s + ttft_s, prompt, completion)
        job.on_final = lambda j, ok: finals.append(j)
        ledger.close_job(job)
        jobs.append(job)
    energy_j = IDLE_W * 15.0 + 5000.0
    ledger.close_interval(0.0, 15.0, energy_j)
    expected = _reference_split(spans, models, 0.0, 15.0, energy_j, headroom_w)
    assert [j.gpu_j for j in jobs] == pytest.approx(expected, rel=1e-6, abs=1e-6)
