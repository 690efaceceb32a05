"""A provable lower bound on the carbon of any SLO-meeting placement of the simulated stream.

The bound sees the whole stream in advance (every arrival, every token count, every hour's grid intensity),
so no router can do better. It is the optimum of a linear relaxation of the placement problem, solved with
HiGHS through ``scipy.optimize.linprog``. Two relaxations, both valid:

- Per request (``bound_requests.py``; used while the stream has at most ``PER_REQUEST_COLUMNS`` requests ×
  clusters): one fractional column per request and cluster that meets its SLO when idle; rows for the slots
  requests certainly hold at every instant (a request starts within its slack, so it holds a slot from its
  latest start to its earliest end) and for each hour's slot-seconds with a per-request backlog. Its module
  docstring gives the argument.
- Pooled (below; for larger streams, and when the per-request programme is infeasible):

  - Requests are pooled per (trace hour × feasibility class). A request's class is the set of clusters
    whose *idle* time to first token from its client site (round trip + base TTFT + prefill of its prompt)
    meets the SLO (its own, when it sent x-bauxite-max-latency-ms); a request no cluster can serve in time
    even idle belongs to every cluster's class (it violates anyway).
  - Pools are further split by the request's prompt-to-completion token ratio into geometric buckets
    (factor ``RATIO_BUCKET``). Each pool's prompt tokens and completion tokens may be split across its
    clusters in any fractions, as long as each cluster's share keeps a ratio within the bucket's observed
    [min, max] — true of any subset of whole requests, so a real placement is a special case. (Without the
    ratio rows the LP would send every prompt token to the green cluster and every decode token elsewhere.)
  - Capacity: cluster k does at most ``capacity × seconds_per_hour`` slot-seconds of work per hour. Work of
    an hour's arrivals may spill into later hours through a backlog; at the end of an hour every request
    still in the system starts within the SLO and then runs for its service time, so cluster k's backlog at
    the end of hour h is at most Σ over every request arrived by then of its work still possibly left then
    (arrival + SLO + service on k − end of hour, capped at its service), and at most ``capacity × (SLO +
    longest service)``. Work is counted as prefill per prompt token and ITL per completion token; the
    per-request base TTFT is left out (a further relaxation). Requests no cluster can serve in time are
    left out of the capacity rows (their own wait is unbounded).

Energy is linear in tokens (the simulated clusters' J per prompt and per output token), emitted at the
arrival hour's intensity, as the simulator scores policies. Hence: for every placement that meets the SLO on
every request some cluster could serve in time, carbon ≥ bound. Policies with SLO violations may land below.
When no placement can meet the SLO (``slo_feasible`` false), the pooled programme drops its backlog limit.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linprog
from scipy.sparse import coo_matrix

from ..units import carbon_g
from .bound_requests import request_lp
from .config import SimConfig
from .workload import SimRequest, expected_requests, generate


class BoundError(Exception):
    """The solver did not reach an optimum (it should not: the relaxation is always feasible)."""


@dataclass(frozen=True)
class Bound:
    carbon_g: float
    variables: int
    unservable: int  # requests no cluster could serve within the SLO even when idle
    slo_feasible: bool = True  # False: the stream is more work than any SLO-meeting placement can do

    def summary(self) -> dict[str, float | int | bool]:
        return {
            "carbon_kg": math.floor(self.carbon_g / 1000.0 * 1e6) / 1e6,  # rounded down: still a bound
            "unservable_requests": self.unservable,
            "slo_feasible": self.slo_feasible,
        }


PER_REQUEST_COLUMNS = 5_000_000  # requests × clusters beyond which the pooled programme is used
RATIO_BUCKET = 1.25  # width of a prompt/completion ratio bucket: finer = tighter bound, larger programme


@dataclass
class _Pool:
    prompt_tokens: float = 0.0
    completion_tokens: float = 0.0
    ratio_min: float = math.inf  # prompt tokens per completion token, over the pooled requests
    ratio_max: float = 0.0

    def add(self, prompt_tokens: int, completion_tokens: int) -> None:
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens
        ratio = prompt_tokens / max(completion_tokens, 1)
        self.ratio_min = min(self.ratio_min, ratio)
        self.ratio_max = max(self.ratio_max, ratio)


def _ratio_bucket(prompt_tokens: int, completion_tokens: int) -> int:
    if prompt_tokens <= 0:
        return -(1 << 30)
    return math.floor(math.log(prompt_tokens / max(completion_tokens, 1)) / math.log(RATIO_BUCKET))


def _feasible_mask(config: SimConfig, request: SimRequest) -> int:
    """Bit k set when cluster k meets the SLO for this request when idle."""
    group = config.clients[request.group]
    mask = 0
    for k, c in enumerate(config.clusters):
        if config.outages and config.down(k, request.hour):
            continue  # refusing connections: nobody can place work there
        idle_ms = (
            group.rtt_ms[c.name] + c.ttft_ms + c.prefill_ms_per_1k_tokens / 1000.0 * request.prompt_tokens
        )
        if idle_ms <= (request.max_latency_ms or config.slo_ttft_ms):
            mask |= 1 << k
    return mask


def _pools(
    config: SimConfig, table: list[list[float]], requests: Iterable[SimRequest]
) -> tuple[dict[tuple[int, int, int], _Pool], float, int, list[list[float]]]:
    """(pools by (hour, mask, ratio bucket), grams of unservable requests, their count, backlog limit
    in slot-seconds per cluster per hour)."""
    pools: dict[tuple[int, int, int], _Pool] = {}
    fixed_g, unservable = 0.0, 0
    longest_s = [0.0] * len(config.clusters)
    hour_s = config.period.seconds_per_hour
    # The longest requirement any request has: every request in the system starts within it.
    slo_s = max(
        config.slo_ttft_ms, config.workload.header_latency_ms if config.workload.header_share else 0.0
    )
    slo_s /= 1000.0
    hours = config.period.days * 24
    spill = [[0.0] * hours for _ in config.clusters]  # Σ work possibly left at the end of each hour
    for request in requests:
        for k, c in enumerate(config.clusters):
            service_s = (
                c.ttft_ms
                + c.prefill_ms_per_1k_tokens / 1000.0 * request.prompt_tokens
                + c.itl_ms * request.completion_tokens
            ) / 1000.0
            longest_s[k] = max(longest_s[k], service_s)
            own_slo_s = (request.max_latency_ms or config.slo_ttft_ms) / 1000.0
            hour, done_by = request.hour, request.t + own_slo_s + service_s
            while hour < hours and done_by > (hour + 1) * hour_s:
                spill[k][hour] += min(service_s, done_by - (hour + 1) * hour_s)
                hour += 1
        mask = _feasible_mask(config, request)
        if mask == 0:
            unservable += 1
            fixed_g += min(
                (
                    carbon_g(
                        c.j_per_prompt_token * request.prompt_tokens
                        + c.j_per_output_token * request.completion_tokens,
                        table[k][request.hour],
                        c.pue,
                    )
                    for k, c in enumerate(config.clusters)
                    if not (config.outages and config.down(k, request.hour))
                ),
                default=0.0,  # every cluster down: refused by any policy, emits nothing
            )
            continue
        bucket = _ratio_bucket(request.prompt_tokens, request.completion_tokens)
        pools.setdefault((request.hour, mask, bucket), _Pool()).add(
            request.prompt_tokens, request.completion_tokens
        )
    backlog_s = [
        [min(c.capacity * (slo_s + longest_s[k]), left) for left in spill[k]]
        for k, c in enumerate(config.clusters)
    ]
    return pools, fixed_g, unservable, backlog_s


def lower_bound(
    config: SimConfig, table: list[list[float]], requests: Iterable[SimRequest] | None = None
) -> Bound:
    """Solve the relaxation for ``config``'s stream (or ``requests``); grams CO2e. Raises BoundError."""
    n_k = len(config.clusters)
    if requests is None and expected_requests(config) * n_k > 2 * PER_REQUEST_COLUMNS:
        return _pooled_bound(config, table, generate(config))  # streamed: never held in memory at once
    stream = list(generate(config) if requests is None else requests)
    if len(stream) * n_k <= PER_REQUEST_COLUMNS:
        try:
            exact = request_lp(config, table, stream)
        except RuntimeError as e:
            raise BoundError(str(e)) from e
        if exact.slo_feasible:
            return Bound(exact.carbon_g, exact.variables, exact.unservable)
        # Infeasible: a proof that no placement meets the SLO (the programme relaxes every one that does).
        return _pooled_bound(config, table, stream, slo_feasible=False)
    return _pooled_bound(config, table, stream)


def _pooled_bound(
    config: SimConfig, table: list[list[float]], requests: Iterable[SimRequest], slo_feasible: bool = True
) -> Bound:
    """The pooled relaxation (module docstring): grams CO2e. ``slo_feasible`` False: already known that no
    placement meets the SLO, so the backlog limit is dropped from the start. Raises BoundError."""
    pools, fixed_g, unservable, backlog_s = _pools(config, table, requests)
    clusters = config.clusters
    n_k, hours = len(clusters), config.period.days * 24
    hour_s = config.period.seconds_per_hour
    cost: list[float] = []
    eq_rows: list[int] = []
    eq_cols: list[int] = []
    cap_rows: list[int] = []
    cap_cols: list[int] = []
    cap_vals: list[float] = []
    # Variables: for each pool and each of its clusters, the share of its prompt and of its completion tokens.
    ratio_row = n_k * hours  # ratio rows follow the capacity rows
    for row, ((hour, mask, _), pool) in enumerate(pools.items()):
        for k, c in enumerate(clusters):
            if not mask >> k & 1:
                continue
            per_j = carbon_g(1.0, table[k][hour], c.pue)
            first = len(cost)
            for tokens, j_per_token, s_per_token, eq in (
                (pool.prompt_tokens, c.j_per_prompt_token, c.prefill_ms_per_1k_tokens / 1e6, 2 * row),
                (pool.completion_tokens, c.j_per_output_token, c.itl_ms / 1000.0, 2 * row + 1),
            ):
                column = len(cost)
                cost.append(tokens * j_per_token * per_j)
                eq_rows.append(eq)
                eq_cols.append(column)
                cap_rows.append(k * hours + hour)
                cap_cols.append(column)
                cap_vals.append(tokens * s_per_token)
            # ratio_min × completion ≤ prompt ≤ ratio_max × completion, on this cluster's share
            p, c_tok = pool.prompt_tokens, pool.completion_tokens
            cap_rows.extend((ratio_row, ratio_row, ratio_row + 1, ratio_row + 1))
            cap_cols.extend((first, first + 1, first, first + 1))
            cap_vals.extend((p, -pool.ratio_max * c_tok, -p, pool.ratio_min * c_tok))
            ratio_row += 2
    n_x = len(cost)
    # Backlog s[k, h] carried from hour h into h + 1: row (k, h) gets -s[k, h] and +s[k, h - 1].
    for k in range(n_k):
        for hour in range(hours):
            column = n_x + k * hours + hour
            cap_rows.append(k * hours + hour)
            cap_cols.append(column)
            cap_vals.append(-1.0)
            if hour + 1 < hours:
                cap_rows.append(k * hours + hour + 1)
                cap_cols.append(column)
                cap_vals.append(1.0)
    n_vars = n_x + n_k * hours
    cost.extend([0.0] * (n_k * hours))
    if n_x == 0:
        return Bound(fixed_g, 0, unservable, slo_feasible)
    a_eq = coo_matrix((np.ones(len(eq_rows)), (eq_rows, eq_cols)), shape=(2 * len(pools), n_vars))
    a_ub = coo_matrix((cap_vals, (cap_rows, cap_cols)), shape=(ratio_row, n_vars))
    b_ub = np.concatenate(
        [np.repeat([c.capacity * hour_s for c in clusters], hours), np.zeros(ratio_row - n_k * hours)]
    )
    bounds = [(0.0, 1.0)] * n_x + [(0.0, backlog_s[k][hour]) for k in range(n_k) for hour in range(hours)]
    problem = {
        "c": np.asarray(cost),
        "A_ub": a_ub.tocsr(),
        "b_ub": b_ub,
        "A_eq": a_eq.tocsr(),
        "b_eq": np.ones(2 * len(pools)),
        "method": "highs",
    }
    solved = linprog(bounds=bounds, **problem) if slo_feasible else None
    if solved is not None and solved.status == 2:
        slo_feasible = False
    if solved is None or not slo_feasible:
        # More work than any SLO-meeting placement can finish: every policy violates. Drop the backlog
        # limit (valid for any placement at all) so the figure is still a bound on what was emitted.
        solved = linprog(bounds=[*bounds[:n_x], *([(0.0, None)] * (n_k * hours))], **problem)
    if solved.status != 0 or not math.isfinite(solved.fun):
        raise BoundError(f"the lower-bound linear programme was not solved: {solved.message}")
    return Bound(float(solved.fun) + fixed_g, n_vars, unservable, slo_feasible)
