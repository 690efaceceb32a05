"""Split each measured interval of a cluster's GPU energy among the requests resident in it. Pure bookkeeping.

Every request is registered when it reaches the cluster (``open``), so the ledger knows each one's exact
residency even while it runs. Per interval ``[t0, t1]`` with measured GPU energy ``E``:

* static part ``S = min(E, idle_w × dt)``: the cluster's resident-idle power over the interval. The share
  ``S × busy / dt`` (``busy`` = time with at least one request resident) is split by residency — the seconds
  each request overlapped the interval; ``S × (dt − busy) / dt`` is the cluster's unallocated idle energy;
* dynamic part ``E − S``: split by token work inside the interval, each token weighted by its model's
  modelled dynamic energy (prompt tokens spread uniformly over the time to first token at the prefill
  weight, output tokens uniformly after it at the decode weight). A request still running at ``t1`` has not
  reported its tokens yet: its work is its decode time in the interval × the decode rate learned for its
  model on this cluster;
* cluster time (for embodied emissions) is split the same way as the static part: ``busy`` seconds by
  residency, the rest unallocated.

Invariant, exact at every close: attributed + idle = measured (energy), occupied + unallocated = elapsed
(time). Each share uses the request's own overlap with the interval only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .sweep import Piece, sweep

Finished = Callable[["Job", bool], None]  # (job, trustworthy)
MIN_SPAN_S = 1e-9  # shorter prefill or decode spans are an instant (their tokens a point, not a density)


@dataclass(slots=True, eq=False)
class Job:
    """One request on a metered cluster (monotonic seconds). ``end_s`` is None while it runs; its tokens are
    known once ``reported`` (the gateway learns them as the response ends, possibly after its last byte).

    ``decode_w``/``prefill_w`` are the model's modelled dynamic joules per output/prompt token: only their
    ratios between requests matter.
    """

    start_s: float
    model: str = ""
    decode_w: float = 1.0
    prefill_w: float = 0.25
    end_s: float | None = None
    prefill_end_s: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    on_final: Finished | None = None
    gpu_j: float = 0.0  # everything charged (static share + dynamic share)
    static_j: float = 0.0  # the resident-idle share inside ``gpu_j``
    occupancy_s: float = 0.0  # cluster seconds charged (residency share of busy time)
    tainted: bool = False
    reported: bool = False

    def leave(self, end_s: float) -> None:
        """The request left the cluster at ``end_s``."""
        self.end_s = max(end_s, self.start_s)

    def finish(self, end_s: float, prefill_end_s: float, prompt_tokens: int, completion_tokens: int) -> None:
        """The request's tokens (and end) are known."""
        self.end_s = max(end_s, self.start_s)
        self.prefill_end_s = min(max(prefill_end_s, self.start_s), self.end_s)
        self.prompt_tokens, self.completion_tokens = max(prompt_tokens, 0), max(completion_tokens, 0)
        self.reported = True


@dataclass(slots=True)
class ClusterLedger:
    """Per-cluster attribution state. ``idle_w`` is the cluster's total resident-idle GPU power."""

    idle_w: float
    # (model, its requests resident) -> (decode J per token, prefill J per token, decode step seconds):
    # modelled dynamic energy. None: each job's own weights.
    weigh: Callable[[str, float], tuple[float, float, float]] | None = None
    headroom_w: float | None = None  # the most dynamic power the GPUs can draw (board power − idle), watts
    attributed_j: float = 0.0
    idle_j: float = 0.0
    measured_j: float = 0.0
    occupied_s: float = 0.0
    unallocated_s: float = 0.0
    closed_until_s: float = float("-inf")
    jobs: list[Job] = field(default_factory=list)
    _weights: dict[tuple[str, int], tuple[float, float, float]] = field(default_factory=dict)  # weigh() cache

    def open(self, job: Job) -> None:
        """Register a request that has just reached the cluster."""
        self.jobs.append(job)

    def close_job(self, job: Job) -> None:
        """The request's end and tokens are now known (``job.finish`` was called): settle it once its
        last interval is split — at once if that already happened."""
        if not job.reported:
            return
        if job.end_s is not None and job.end_s <= self.closed_until_s:
            self.jobs = [j for j in self.jobs if j is not job]
            _settle(job)

    def close_interval(self, t0_s: float, t1_s: float, energy_j: float, tainted: bool = False) -> None:
        """Split one measured interval; settle every finished job whose last interval this was."""
        dt_s = max(t1_s - t0_s, 1e-9)
        self.measured_j += energy_j
        resident = [j for j in self.jobs if j.start_s < t1_s and (j.end_s is None or j.end_s > t0_s)]
        spans = [(max(j.start_s, t0_s), min(t1_s if j.end_s is None else j.end_s, t1_s)) for j in resident]
        if sum(b_s - a_s for a_s, b_s in spans) <= 0.0:
            self.idle_j += energy_j
            self.unallocated_s += dt_s
        else:
            self._split(resident, spans, t0_s, t1_s, energy_j, tainted)
        self.closed_until_s = max(self.closed_until_s, t1_s)
        done = [j for j in self.jobs if j.reported and j.end_s is not None and j.end_s <= t1_s]
        if done:
            gone = {id(j) for j in done}
            self.jobs = [j for j in self.jobs if id(j) not in gone]
            for job in done:
                _settle(job)

    def _split(
        self,
        resident: list[Job],
        spans: list[tuple[float, float]],
        t0_s: float,
        t1_s: float,
        energy_j: float,
        tainted: bool,
    ) -> None:
        dt_s = max(t1_s - t0_s, 1e-9)
        shares_s, work = self._segments(resident, spans, t0_s, t1_s)
        busy_s = min(sum(shares_s), dt_s)
        static_j = min(energy_j, self.idle_w * dt_s)
        static_busy_j = static_j * busy_s / dt_s
        dynamic_j = energy_j - static_j
        total_share_s, total_work = sum(shares_s), sum(work)
        for job, share_s, w in zip(resident, shares_s, work, strict=True):
            by_time = share_s / total_share_s if total_share_s > 0.0 else 1.0 / len(resident)
            static_share_j = static_busy_j * by_time
            dynamic_share_j = dynamic_j * (w / total_work if total_work > 0.0 else by_time)
            job.static_j += static_share_j
            job.gpu_j += static_share_j + dynamic_share_j
            job.occupancy_s += busy_s * by_time
            job.tainted = job.tainted or tainted
        self.attributed_j += energy_j - (static_j - static_busy_j)
        self.idle_j += static_j - static_busy_j
        self.occupied_s += busy_s
        self.unallocated_s += dt_s - busy_s

    def _segments(
        self, resident: list[Job], spans: list[tuple[float, float]], t0_s: float, t1_s: float
    ) -> tuple[list[float], list[float]]:
        """Each request's time share and weighted token work in the interval (see ``sweep``): every
        segment's resident-idle power is shared equally by the requests resident in it, and a token's work is
        its model's energy per token at the number of that model's requests resident then; a segment's
        modelled dynamic power is scaled down to what the GPUs' power limit allows."""
        pieces = [self._piece(job, span, t0_s, t1_s) for job, span in zip(resident, spans, strict=True)]

        def per_sequence(model: str, running: int) -> tuple[float, float]:
            found = self._weigh(model, running)
            if found is None:  # each job's own weight, one token per second
                return 1.0, 1.0
            decode_j, _, step_s = found
            return decode_j / step_s, 1.0 / step_s

        return sweep(pieces, per_sequence, self.headroom_w)

    def _piece(self, job: Job, span: tuple[float, float], t0_s: float, t1_s: float) -> Piece:
        found = self._weigh(job.model, 1)  # None without weigh(): the job's own weights
        factor = job.decode_w if found is None else 1.0
        prefill_w = job.prefill_w if found is None else found[1]
        piece = Piece(job.model, span, factor=factor)
        prefill_end_s = job.prefill_end_s if job.prefill_end_s is not None else job.start_s
        if not job.reported or job.end_s is None:
            until_s = job.end_s if job.end_s is not None else t1_s
            piece.decode = (max(prefill_end_s, t0_s), min(until_s, t1_s))
            return piece
        if prefill_end_s - job.start_s > MIN_SPAN_S:
            piece.prefill = (max(job.start_s, t0_s), min(prefill_end_s, t1_s))
            piece.prefill_density = job.prompt_tokens / (prefill_end_s - job.start_s) * prefill_w
        elif t0_s <= job.start_s < t1_s:
            piece.point_work += job.prompt_tokens * prefill_w
        if job.end_s - prefill_end_s > MIN_SPAN_S:
            piece.decode = (max(prefill_end_s, t0_s), min(job.end_s, t1_s))
            # Its tokens in this interval: its share of the decode span (placed within the interval by the
            # model's token rate).
            share = (piece.decode[1] - piece.decode[0]) / (job.end_s - prefill_end_s)
            piece.decode_tokens = job.completion_tokens * factor * max(share, 0.0)
        elif t0_s <= prefill_end_s < t1_s:
            piece.point_decode = (prefill_end_s, job.completion_tokens * factor)
        return piece

    def _weigh(self, model: str, running: int) -> tuple[float, float, float] | None:
        if self.weigh is None:
            return None
        key = (model, running)
        found = self._weights.get(key)
        if found is None:
            found = self._weights[key] = self.weigh(model, float(running))
        return found

    def drop(self, job: Job) -> None:
        """Stop charging a job whose measured share will never be reported (its figure was settled from the
        estimate, or the attempt failed over): what it was charged so far, and the time it still occupies,
        become the cluster's idle energy and unallocated time, so the account stays conserved."""
        job.on_final = None
        self.jobs = [j for j in self.jobs if j is not job]
        self.attributed_j -= job.gpu_j
        self.idle_j += job.gpu_j
        self.occupied_s -= job.occupancy_s
        self.unallocated_s += job.occupancy_s
        job.gpu_j = job.static_j = job.occupancy_s = 0.0

    def flush(self) -> None:
        """Settle every finished job now with what it was charged so far (shutdown)."""
        done = [j for j in self.jobs if j.reported]
        self.jobs = [j for j in self.jobs if not j.reported]
        for job in done:
            _settle(job)


def _settle(job: Job) -> None:
    callback, job.on_final = job.on_final, None
    if callback is not None:
        callback(job, not job.tainted)
