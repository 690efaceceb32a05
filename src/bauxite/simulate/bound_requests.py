"""The per-request linear relaxation behind the simulator's carbon lower bound (``bound.py`` uses it).

Columns x[r, k] ∈ [0, 1]: the share of request r placed on cluster k, only for clusters that meet r's
time-to-first-token requirement when idle and are up in r's hour; Σ_k x[r, k] = 1 for every servable request.
Cost: x[r, k] × r's grams on k (energy linear in tokens, the arrival hour's intensity, the cluster's PUE).

Take any placement that meets the SLO on every servable request, and r placed on k, with t its arrival,
σ = (SLO − round trip − base TTFT − prefill) / 1000 ≥ 0 its slack and d = (base TTFT + prefill + ITL ×
completion) / 1000 the seconds it holds a slot. It starts at some s ∈ [t, t + σ], so:

- Occupancy: it holds a slot throughout [s, s + d) ⊇ [t + σ, t + d), its *certain interval*. A cluster never
  runs more than ``capacity`` requests at once, so at every instant p: Σ over r whose certain interval on k
  contains p of x[r, k] ≤ capacity. These rows are generated: solve, add the row at the most overloaded
  instant of each overloaded stretch of the solution, solve again (a few rounds).
- Work conservation per window of ``window_s`` seconds (a trace hour), with a backlog B[k, m] = work of
  requests arrived by the window's end T_m still to do after T_m: B[k, m − 1] + Σ_(arrivals in m) x × d −
  B[k, m] ≤ capacity × window_s (the work done inside the window); Σ x × (t + d − T_m)⁺ ≤ B[k, m] ≤
  Σ x × min(d, t + σ + d − T_m)⁺ over requests arrived by T_m (left over at least as if r started on
  arrival, at most as if it started as late as the SLO allows); B[k, m] ≤ capacity × (longest requirement +
  longest service on k), the most the slots can do before everything in the system at T_m has finished.

An integral SLO-meeting placement satisfies every row, so the programme's optimum is at most its carbon; the
figure returned is the weak-duality value of the solver's multipliers (``_lagrangian_g``), a bound whatever
the solver's tolerances. Requests no cluster can serve in time are left out of every row (they only add load)
and charged their cheapest up cluster. The stream is solved in chunks of whole trace hours, cut at quiet
hours: a chunk starts with no backlog and no earlier request in its occupancy rows, and its final backlog is
never consumed — rows dropped, so the chunks' optima add up to at most the joint optimum.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.optimize import linprog
from scipy.sparse import coo_matrix, csr_matrix, vstack

from ..units import J_PER_KWH
from .config import SimConfig
from .workload import SimRequest

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

# Largest chunk of the stream solved as one programme (columns); larger chunks lose less at their seams but
# the solve time grows faster than linearly.
CHUNK_COLUMNS = 60_000
# Occupancy-cut rounds: at most MAX_ROUNDS, and about CUT_BUDGET / columns solves for the whole stream, so a
# large stream is solved once (each round re-solves from scratch: scipy's HiGHS has no warm start).
MAX_ROUNDS = 2
CUT_BUDGET = 800_000
CUTS_PER_CLUSTER = 1000  # occupancy rows added per cluster per round, at the most overloaded instants


@dataclass(frozen=True)
class RequestLp:
    """Outcome of the per-request relaxation: grams, variables, unservable requests, feasibility."""

    carbon_g: float
    variables: int
    unservable: int
    slo_feasible: bool


@dataclass
class _Vars:
    """One entry per (request, feasible cluster) pair: the LP's columns, in request order."""

    request: IntArray  # compact index of the request (servable requests only)
    cluster: IntArray
    cost_g: FloatArray
    t_s: FloatArray  # arrival
    slack_s: FloatArray  # latest start − arrival (σ ≥ 0)
    service_s: FloatArray  # slot time held (d)


def _columns(
    config: SimConfig, table: list[list[float]], requests: Sequence[SimRequest]
) -> tuple[_Vars, float, int, IntArray]:
    """(columns, grams of unservable requests, their count, hour of each servable request)."""
    n = len(requests)
    t = np.fromiter((r.t for r in requests), np.float64, n)
    hour = np.fromiter((r.hour for r in requests), np.int64, n)
    group = np.fromiter((r.group for r in requests), np.int64, n)
    prompt = np.fromiter((r.prompt_tokens for r in requests), np.float64, n)
    completion = np.fromiter((r.completion_tokens for r in requests), np.float64, n)
    slo_ms = np.fromiter((r.max_latency_ms or config.slo_ttft_ms for r in requests), np.float64, n)
    clusters = config.clusters
    n_k = len(clusters)
    feasible = np.zeros((n_k, n), dtype=bool)
    up = np.ones((n_k, n), dtype=bool)
    cost = np.zeros((n_k, n))
    slack = np.zeros((n_k, n))
    service = np.zeros((n_k, n))
    for k, c in enumerate(clusters):
        rtt_ms = np.asarray([g.rtt_ms[c.name] for g in config.clients])[group]
        prefill_ms = c.ttft_ms + c.prefill_ms_per_1k_tokens / 1000.0 * prompt
        if config.outages:
            down = np.asarray([config.down(k, h) for h in range(config.period.days * 24)])
            up[k] = ~down[hour]
        # A nanosecond more slack than computed: only loosens every row, and covers the rounding of the
        # simulator's own arithmetic of the wait.
        slack[k] = (slo_ms - rtt_ms - prefill_ms) / 1000.0 + 1e-9
        feasible[k] = up[k] & (rtt_ms + prefill_ms <= slo_ms)
        service[k] = (prefill_ms + c.itl_ms * completion) / 1000.0
        energy_j = c.j_per_prompt_token * prompt + c.j_per_output_token * completion
        cost[k] = energy_j * c.pue / J_PER_KWH * np.asarray(table[k])[hour]
    servable = feasible.any(axis=0)
    unservable = ~servable
    # An unservable request is charged its cheapest up cluster (every cluster down: refused, emits nothing).
    fixed = np.where(up[:, unservable], cost[:, unservable], np.inf).min(axis=0, initial=np.inf)
    fixed_g = float(np.where(np.isfinite(fixed), fixed, 0.0).sum())
    index = np.cumsum(servable) - 1
    # Columns in request order: transpose so pairs of one request are adjacent.
    r_idx, k_idx = np.nonzero(feasible.T)
    columns = _Vars(
        request=index[r_idx],
        cluster=k_idx.astype(np.int64),
        cost_g=cost[k_idx, r_idx],
        t_s=t[r_idx],
        slack_s=slack[k_idx, r_idx],
        service_s=service[k_idx, r_idx],
    )
    return columns, fixed_g, int(unservable.sum()), hour[servable]


def _spread(first: IntArray, last: IntArray) -> tuple[IntArray, IntArray]:
    """For ranges [first, last] (inclusive, last ≥ first − 1): (owner of each element, element value)."""
    counts = np.maximum(last - first + 1, 0)
    owner = np.repeat(np.arange(len(first)), counts)
    offsets = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    return owner, first[owner] + offsets


class _Rows:
    """A growing sparse inequality system A x ≤ b (COO triplets)."""

    def __init__(self) -> None:
        self.rows: list[IntArray] = []
        self.cols: list[IntArray] = []
        self.vals: list[FloatArray] = []
        self.rhs: list[FloatArray] = []
        self.count = 0

    def add(self, rows: IntArray, cols: IntArray, vals: FloatArray, rhs: FloatArray) -> None:
        self.rows.append(rows + self.count)
        self.cols.append(cols)
        self.vals.append(vals)
        self.rhs.append(rhs)
        self.count += len(rhs)


def _covering(cols: _Vars, cluster: IntArray, instant_s: FloatArray) -> tuple[IntArray, IntArray]:
    """(row, column) pairs: for each instant i (on cluster[i]), every column of that cluster whose certain
    interval [t + σ, t + d) contains it."""
    start, end = cols.t_s + cols.slack_s, cols.t_s + cols.service_s
    rows_out: list[IntArray] = []
    cols_out: list[IntArray] = []
    for k in np.unique(cluster):
        mine = np.nonzero((cols.cluster == k) & (end > start))[0]
        which = np.nonzero(cluster == k)[0]
        order = np.argsort(instant_s[which])
        which = which[order]
        times = instant_s[which]
        # instants i with start ≤ times[i] < end: a contiguous range of the sorted instants
        first = np.searchsorted(times, start[mine], side="left")
        last = np.searchsorted(times, end[mine], side="left") - 1
        owner, position = _spread(first, last)
        rows_out.append(which[position])
        cols_out.append(mine[owner])
    return np.concatenate(rows_out), np.concatenate(cols_out)


def _violated_instants(
    cols: _Vars, x: FloatArray, capacity: FloatArray, per_cluster: int
) -> tuple[IntArray, FloatArray]:
    """(cluster, instant) where the placement ``x`` has more than ``capacity`` certain intervals running: per
    cluster, the most loaded instant of each run of overloaded interval starts, at most ``per_cluster``."""
    start, end = cols.t_s + cols.slack_s, cols.t_s + cols.service_s
    out_k: list[IntArray] = []
    out_t: list[FloatArray] = []
    for k in range(len(capacity)):
        mine = np.nonzero((cols.cluster == k) & (end > start) & (x > 1e-9))[0]
        if len(mine) == 0:
            continue
        times = np.concatenate([start[mine], end[mine]])
        delta = np.concatenate([x[mine], -x[mine]])
        # ends before starts at equal times: the intervals are half-open
        order = np.lexsort((delta, times))
        load = np.cumsum(delta[order])
        is_start = delta[order] > 0
        over = is_start & (load > capacity[k] * (1 + 1e-7) + 1e-9)
        if not over.any():
            continue
        # runs of consecutive overloaded starts (split by any other event) → the peak of each run
        idx = np.nonzero(over)[0]
        breaks = np.nonzero(np.diff(idx) > 1)[0] + 1
        runs = np.split(idx, breaks)
        peaks = np.asarray([run[np.argmax(load[run])] for run in runs])
        if len(peaks) > per_cluster:
            peaks = peaks[np.argsort(-load[peaks])[:per_cluster]]
        out_k.append(np.full(len(peaks), k, dtype=np.int64))
        out_t.append(times[order][peaks])
    if not out_k:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    return np.concatenate(out_k), np.concatenate(out_t)


def _window_rows(
    cols: _Vars, capacity: FloatArray, window_s: float, backlog_cap_s: FloatArray, n_x: int, out: _Rows
) -> tuple[int, list[tuple[float, float]]]:
    """Work conservation with backlog variables (appended after the n_x placement columns); returns the
    number of backlog variables and their bounds."""
    n_k = len(capacity)
    window = np.floor(cols.t_s / window_s).astype(np.int64)
    base = int(window.min())
    last_window = int(np.floor((cols.t_s + cols.slack_s + cols.service_s).max() / window_s))
    n_w = last_window - base + 1
    window -= base

    def backlog(k: IntArray, m: IntArray) -> IntArray:
        return n_x + k * n_w + m

    # Row (k, m): Σ_{arrivals in m} x d + B[k, m − 1] − B[k, m] ≤ capacity × window_s
    var = np.arange(n_x)
    rows_w = cols.cluster * n_w + window
    ks = np.repeat(np.arange(n_k), n_w)
    ms = np.tile(np.arange(n_w), n_k)
    prev = ms > 0
    out.add(
        np.concatenate([rows_w, ks * n_w + ms, (ks * n_w + ms)[prev]]),
        np.concatenate([var, backlog(ks, ms), backlog(ks, ms - 1)[prev]]),
        np.concatenate([cols.service_s, -np.ones(n_k * n_w), np.ones(int(prev.sum()))]),
        np.repeat(capacity * window_s, n_w),
    )
    # Boundaries T_m = (base + m + 1) × window_s that each request may still be running past.
    t_end_hi = cols.t_s + cols.slack_s + cols.service_s
    first = window
    last_hi = np.ceil(t_end_hi / window_s).astype(np.int64) - 2 - base
    owner, m = _spread(first, last_hi)
    boundary = (base + m + 1) * window_s
    left_hi = np.minimum(cols.service_s[owner], t_end_hi[owner] - boundary)
    keep = left_hi > 0
    owner, m, left_hi, boundary = owner[keep], m[keep], left_hi[keep], boundary[keep]
    # B[k, m] − Σ x left_hi ≤ 0 (one row per (k, m), all of them, so the index is direct)
    k_of = cols.cluster[owner]
    out.add(
        np.concatenate([k_of * n_w + m, ks * n_w + ms]),
        np.concatenate([owner, backlog(ks, ms)]),
        np.concatenate([-left_hi, np.ones(n_k * n_w)]),
        np.zeros(n_k * n_w),
    )
    # Σ x left_lo − B[k, m] ≤ 0, left_lo = (t + d − T_m)⁺
    left_lo = cols.t_s[owner] + cols.service_s[owner] - boundary
    lo = left_lo > 0
    out.add(
        np.concatenate([(k_of * n_w + m)[lo], ks * n_w + ms]),
        np.concatenate([owner[lo], backlog(ks, ms)]),
        np.concatenate([left_lo[lo], -np.ones(n_k * n_w)]),
        np.zeros(n_k * n_w),
    )
    bounds = [(0.0, float(backlog_cap_s[k])) for k in range(n_k) for _ in range(n_w)]
    return n_k * n_w, bounds


def _lagrangian_g(
    cost: FloatArray,
    a_ub: csr_matrix,
    b_ub: FloatArray,
    a_eq: csr_matrix,
    b_eq: FloatArray,
    lower: FloatArray,
    upper: FloatArray,
    eq_duals: FloatArray,
    ub_duals: FloatArray,
) -> float:
    """Weak duality with the solver's multipliers: for any λ and any μ ≤ 0, every x with A_eq x = b_eq,
    A_ub x ≤ b_ub and lower ≤ x ≤ upper has cost·x ≥ λ·b_eq + μ·b_ub + Σ_j min(r_j lower_j, r_j upper_j),
    r = cost − A_eqᵀλ − A_ubᵀμ. So the figure is a bound whatever the solver's tolerances were."""
    mu = np.minimum(ub_duals, 0.0)
    reduced = cost - a_eq.T @ eq_duals - a_ub.T @ mu
    return float(eq_duals @ b_eq + mu @ b_ub + np.minimum(reduced * lower, reduced * upper).sum())


def solve_chunk(
    cols: _Vars,
    n_requests: int,
    capacity: FloatArray,
    backlog_cap_s: FloatArray,
    window_s: float,
    rounds: int,
) -> float | None:
    """The relaxation's optimum for one chunk in grams (a weak-duality bound), None when infeasible.

    The occupancy rows are generated: solve, add a row at the peak instants where the solution runs more
    certain intervals than a cluster has slots, solve again, ``rounds`` times at most. Every programme on the
    way holds only valid rows, so each optimum is a bound; the last is the tightest."""
    n_x = len(cols.cost_g)
    rows = _Rows()
    n_b, b_bounds = _window_rows(cols, capacity, window_s, backlog_cap_s, n_x, rows)
    n_vars = n_x + n_b
    cost = np.concatenate([cols.cost_g, np.zeros(n_b)])
    lower = np.zeros(n_vars)
    upper = np.concatenate([np.ones(n_x), [hi for _, hi in b_bounds]])
    bounds = np.stack([lower, upper], axis=1)
    a_eq = coo_matrix((np.ones(n_x), (cols.request, np.arange(n_x))), shape=(n_requests, n_vars)).tocsr()
    b_eq = np.ones(n_requests)
    a_base = coo_matrix(
        (np.concatenate(rows.vals), (np.concatenate(rows.rows), np.concatenate(rows.cols))),
        shape=(rows.count, n_vars),
    ).tocsr()
    b_base = np.concatenate(rows.rhs)
    cuts = csr_matrix((0, n_vars))
    cuts_rhs = np.zeros(0)
    value = -math.inf
    for round_ in range(rounds + 1):
        a_ub = vstack([a_base, cuts], format="csr")
        b_ub = np.concatenate([b_base, cuts_rhs])
        solved = linprog(cost, A_ub=a_ub, b_ub=b_ub, A_eq=a_eq, b_eq=b_eq, bounds=bounds, method="highs")
        if solved.status == 2:
            return None
        if solved.status != 0 or not math.isfinite(solved.fun):
            raise RuntimeError(f"the per-request lower-bound programme was not solved: {solved.message}")
        eq_duals, ub_duals = solved.eqlin.marginals, solved.ineqlin.marginals
        value = max(value, _lagrangian_g(cost, a_ub, b_ub, a_eq, b_eq, lower, upper, eq_duals, ub_duals))
        if round_ == rounds:
            break
        cluster, instant = _violated_instants(cols, solved.x[:n_x], capacity, CUTS_PER_CLUSTER)
        if len(cluster) == 0:
            break
        # Keep the cuts that bind (the others only slow the next solve), add the new ones.
        binding = solved.ineqlin.residual[a_base.shape[0] :] <= 1e-6 * np.maximum(cuts_rhs, 1.0)
        row, col = _covering(cols, cluster, instant)
        new = coo_matrix((np.ones(len(row)), (row, col)), shape=(len(cluster), n_vars)).tocsr()
        cuts = vstack([cuts[np.nonzero(binding)[0]], new], format="csr")
        cuts_rhs = np.concatenate([cuts_rhs[binding], capacity[cluster]])
    return value


def _chunks(per_hour: IntArray, chunk_columns: int) -> list[tuple[int, int]]:
    """Split hours [0, len(per_hour)) into runs of at most ``chunk_columns`` columns (at least one hour
    each), each cut where the following hour has the fewest columns in the second half of the run, so the
    dropped carry-over between chunks is small."""
    out = []
    start, n = 0, len(per_hour)
    while start < n:
        end, size = start, 0
        while end < n and (end == start or size + per_hour[end] <= chunk_columns):
            size += int(per_hour[end])
            end += 1
        if end < n and end - start > 1:
            half = start + (end - start + 1) // 2
            end = half + int(np.argmin(per_hour[half : end + 1]))  # cut before the quietest hour
            end = min(max(end, start + 1), n)
        out.append((start, end))
        start = end
    return out


def request_lp(
    config: SimConfig,
    table: list[list[float]],
    requests: Sequence[SimRequest],
    chunk_columns: int = CHUNK_COLUMNS,
    cut_budget: int = CUT_BUDGET,
) -> RequestLp:
    """The per-request relaxation of ``requests``' placement (grams, see the module docstring); carbon_g is
    NaN and slo_feasible False when the programme is infeasible (then no placement meets the SLO). Cut
    rounds: up to ``MAX_ROUNDS``, fewer for larger streams (about ``cut_budget`` / columns solves in all).
    Raises RuntimeError when the solver fails otherwise."""
    cols, fixed_g, unservable, hours = _columns(config, table, requests)
    n_x = len(cols.cost_g)
    if n_x == 0:
        return RequestLp(fixed_g, 0, unservable, True)
    capacity = np.asarray([float(c.capacity) for c in config.clusters])
    slo_s = (
        max(config.slo_ttft_ms, config.workload.header_latency_ms if config.workload.header_share else 0.0)
        / 1000.0
    )
    longest_s = np.zeros(len(capacity))
    np.maximum.at(longest_s, cols.cluster, cols.service_s)
    backlog_cap_s = capacity * (slo_s + longest_s)
    rounds = max(0, min(MAX_ROUNDS, cut_budget // n_x - 1))
    var_hour = hours[cols.request]
    total = 0.0
    for first_h, end_h in _chunks(np.bincount(var_hour), chunk_columns):
        pick = (var_hour >= first_h) & (var_hour < end_h)
        if not pick.any():
            continue
        # The chunk's requests, numbered from 0 (the stream need not arrive in order).
        chunk_requests, request = np.unique(cols.request[pick], return_inverse=True)
        chunk = _Vars(
            request=request,
            cluster=cols.cluster[pick],
            cost_g=cols.cost_g[pick],
            t_s=cols.t_s[pick],
            slack_s=cols.slack_s[pick],
            service_s=cols.service_s[pick],
        )
        value = solve_chunk(
            chunk,
            len(chunk_requests),
            capacity,
            backlog_cap_s,
            config.period.seconds_per_hour,
            rounds,
        )
        if value is None:
            return RequestLp(math.nan, n_x, unservable, False)
        total += value
    return RequestLp(total + fixed_g, n_x, unservable, True)
