"""Split each measured interval of one cluster's GPU energy among the requests in flight. Pure bookkeeping.

Per interval ``[t0, t1]`` with measured energy ``E``:

* static part ``min(E, idle_w × dt)``: the share of it covering time when at least one request was in flight
  is split by residency (seconds each request overlapped the interval); the rest is cluster idle energy;
* dynamic part ``E − static``: split by token work in the interval (prompt tokens placed uniformly over the
  request's time to first token and weighted by ``prefill_weight``, output tokens uniformly after it);
* requests still running at ``t1`` whose tokens are not known yet (the gateway learns them at the end) are
  counted from the cluster's in-flight gauge; their share waits in a pool that each of them claims when it
  finishes (a pool nobody claims before it expires becomes idle energy).

Invariant: attributed + idle = measured, exactly, once the pools are claimed or expired.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

Finished = Callable[[float, bool], None]  # (energy_j, trustworthy)
POOL_HOLD_S = 900.0  # how long an unclaimed share waits for its request (longer than any request timeout)


@dataclass(slots=True, eq=False)
class Job:
    """A finished request on a metered cluster (monotonic seconds)."""

    start_s: float
    end_s: float
    prefill_end_s: float
    prompt_tokens: int
    completion_tokens: int
    on_final: Finished | None = None
    energy_j: float = 0.0
    tainted: bool = False


@dataclass(slots=True)
class _Pool:
    end_s: float
    energy_j: float
    claims_left: int
    expires_s: float


def overlap_s(a0_s: float, a1_s: float, b0_s: float, b1_s: float) -> float:
    """Seconds two time spans share."""
    return max(0.0, min(a1_s, b1_s) - max(a0_s, b0_s))


def _spread(count: float, span0_s: float, span1_s: float, t0_s: float, t1_s: float) -> float:
    """Share of ``count`` items spread uniformly over a span that falls in ``[t0, t1)``."""
    if span1_s <= span0_s:
        return count if t0_s <= span0_s < t1_s else 0.0
    return count * overlap_s(span0_s, span1_s, t0_s, t1_s) / (span1_s - span0_s)


def work_in(job: Job, t0_s: float, t1_s: float, prefill_weight: float) -> float:
    """Token work of ``job`` inside ``[t0, t1)`` in output-token equivalents."""
    prefill = _spread(job.prompt_tokens, job.start_s, job.prefill_end_s, t0_s, t1_s)
    decode = _spread(job.completion_tokens, job.prefill_end_s, job.end_s, t0_s, t1_s)
    return prefill_weight * prefill + decode


def union_s(spans: list[tuple[float, float]]) -> float:
    """Total length covered by possibly overlapping spans."""
    total, reach = 0.0, float("-inf")
    for a_s, b_s in sorted(spans):
        if b_s > reach:
            total += b_s - max(a_s, reach)
            reach = b_s
    return total


@dataclass(slots=True)
class ClusterLedger:
    """Per-cluster attribution state. ``idle_w`` is the cluster's total resident-idle power."""

    idle_w: float
    prefill_weight: float = 0.25
    attributed_j: float = 0.0
    idle_j: float = 0.0
    measured_j: float = 0.0
    closed_until_s: float = float("-inf")
    jobs: list[Job] = field(default_factory=list)
    pools: list[_Pool] = field(default_factory=list)

    def add(self, job: Job) -> None:
        """Register a finished request: claim its share of past intervals in which it ran anonymously."""
        for pool in self.pools:
            if pool.claims_left > 0 and job.start_s < pool.end_s < job.end_s:
                share_j = pool.energy_j / pool.claims_left
                pool.energy_j -= share_j
                pool.claims_left -= 1
                job.energy_j += share_j
                self.attributed_j += share_j
        self.pools = [p for p in self.pools if p.claims_left > 0]
        if job.end_s <= self.closed_until_s:  # reported after its last interval was split: final now
            _finish(job)
        else:
            self.jobs.append(job)

    def close_interval(
        self,
        t0_s: float,
        t1_s: float,
        energy_j: float,
        in_flight: int,
        open_tokens_per_s: float,
        tainted: bool = False,
    ) -> None:
        """Split one measured interval; finish every job that ended inside it."""
        dt_s = max(t1_s - t0_s, 1e-9)
        self.measured_j += energy_j
        known = [j for j in self.jobs if j.start_s < t1_s and j.end_s > t0_s]
        anonymous = max(in_flight - sum(1 for j in known if j.end_s > t1_s), 0)
        residency = [overlap_s(j.start_s, j.end_s, t0_s, t1_s) for j in known]
        work = [work_in(j, t0_s, t1_s, self.prefill_weight) for j in known]
        anon_residency_s = anonymous * dt_s
        anon_work = anonymous * dt_s * open_tokens_per_s
        spans = [(max(j.start_s, t0_s), min(j.end_s, t1_s)) for j in known]
        occupied_s = dt_s if anonymous else union_s(spans)
        static_j = min(energy_j, self.idle_w * dt_s)
        static_busy_j = static_j * min(occupied_s / dt_s, 1.0)
        dynamic_j = energy_j - static_j
        total_res = sum(residency) + anon_residency_s
        total_work = sum(work) + anon_work
        if total_res <= 0.0:
            self.idle_j += energy_j
        else:
            self.idle_j += static_j - static_busy_j
            by_work = total_work > 0.0
            for job, res_s, w in zip(known, residency, work, strict=True):
                share_j = static_busy_j * res_s / total_res
                share_j += dynamic_j * (w / total_work if by_work else res_s / total_res)
                job.energy_j += share_j
                job.tainted = job.tainted or tainted
                self.attributed_j += share_j
            if anonymous:
                anon_j = static_busy_j * anon_residency_s / total_res
                anon_j += dynamic_j * (anon_work / total_work if by_work else anon_residency_s / total_res)
                self.pools.append(_Pool(t1_s, anon_j, anonymous, t1_s + POOL_HOLD_S))
        self.closed_until_s = max(self.closed_until_s, t1_s)
        for job in [j for j in self.jobs if j.end_s <= t1_s]:
            _finish(job)
        self.jobs = [j for j in self.jobs if j.end_s > t1_s]
        self.expire(t1_s)

    def drop(self, job: Job) -> None:
        """Stop tracking a job (its deadline passed); its energy so far stays attributed."""
        job.on_final = None
        self.jobs = [j for j in self.jobs if j is not job]

    def expire(self, now_s: float) -> None:
        """Unclaimed pool energy older than its hold time becomes idle energy."""
        for pool in self.pools:
            if pool.expires_s <= now_s:
                self.idle_j += pool.energy_j
        self.pools = [p for p in self.pools if p.expires_s > now_s]

    def flush(self) -> None:
        """Expire every pool now (shutdown, tests)."""
        self.expire(float("inf"))

    @property
    def pending_j(self) -> float:
        return sum(p.energy_j for p in self.pools)


def _finish(job: Job) -> None:
    callback, job.on_final = job.on_final, None
    if callback is not None:
        callback(job.energy_j, not job.tainted)
