"""One sweep over an interval's request starts and ends: time shares and weighted token work, in O(n log n).

Between two successive events the set of resident requests is constant. In such a segment of length ``L``
with ``N`` requests resident, each gets ``L / N`` of cluster time. A decoding request of model ``m``, with
``n_m`` requests of that model resident, makes one token per decode step of ``t_m(n_m)`` seconds, each
costing ``w_m(n_m)`` modelled dynamic joules: it draws ``p_m = w_m / t_m`` watts. A request whose output
tokens are known has them placed where the model says they were made (in proportion to ``1 / t_m`` over its
decode span), so its decode work is ``C × ∫p_m dt / ∫(1/t_m) dt``; one still running is charged ``∫p_m dt``.
A prefilling request does ``ρ × w_prefill × L`` (``ρ`` its prompt tokens per second). When a segment's
modelled dynamic power exceeds the GPUs' power limit, its work is scaled down to it.

Running prefix sums of ``L / N``, ``p_m × scale × L`` and ``L / t_m`` (per model) and ``scale × L`` turn each
request's totals into lookups, so the cost is the sort, not requests × segments.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

Weigh = Callable[[str, int], tuple[float, float]]  # (model, its requests) -> (W per sequence, tokens/s)


@dataclass(slots=True)
class Piece:
    """One request's part of the interval. Spans are clipped to the interval; densities per second."""

    model: str
    resident: tuple[float, float]
    decode: tuple[float, float] = (0.0, 0.0)
    decode_tokens: float | None = None  # output tokens × weight factor; None: still running (time-based)
    factor: float = 1.0  # the request's own weight (1 when the model's weights come from ``weigh``)
    prefill: tuple[float, float] = (0.0, 0.0)
    prefill_density: float = 0.0  # tokens/s × prefill J per token
    point_work: float = 0.0  # work placed at an instant (a zero-length prefill or decode), not capped
    point_decode: tuple[float, float] | None = None  # (time, tokens × factor) of a zero-length decode


@dataclass(slots=True)
class _State:
    resident: int = 0
    by_model: dict[str, int] = field(default_factory=dict)
    decode: dict[str, float] = field(default_factory=dict)  # Σ weight factor of decoding requests per model
    prefill_w: float = 0.0  # Σ prefill density (already in watts)


def sweep(pieces: list[Piece], weigh: Weigh, headroom_w: float | None) -> tuple[list[float], list[float]]:
    """(time share in seconds, work) of each piece, in order."""
    events: dict[float, list[tuple[int, int]]] = {}  # time -> (kind, piece index); kind: see _apply
    for i, p in enumerate(pieces):
        for kind, span in ((0, p.resident), (1, p.decode), (2, p.prefill)):
            if span[1] > span[0]:
                events.setdefault(span[0], []).append((kind, i))
                events.setdefault(span[1], []).append((kind + 3, i))
    times = sorted(events)
    index = {t: k for k, t in enumerate(times)}
    models = {p.model for p in pieces}
    share = [0.0] * (len(times) + 1)
    cap = [0.0] * (len(times) + 1)
    power = {m: [0.0] * (len(times) + 1) for m in models}  # ∫ W per sequence × scale
    tokens = {m: [0.0] * (len(times) + 1) for m in models}  # ∫ tokens/s per sequence
    running_at: list[dict[str, int]] = []
    state = _State()
    for k, t in enumerate(times):
        for kind, i in events[t]:
            _apply(state, kind, pieces[i])
        running_at.append(dict(state.by_model))
        length = times[k + 1] - t if k + 1 < len(times) else 0.0
        weights = {m: weigh(m, max(n, 1)) for m, n in state.by_model.items() if n > 0}
        power_w = state.prefill_w + sum(d * weights[m][0] for m, d in state.decode.items() if m in weights)
        scale = headroom_w / power_w if headroom_w is not None and power_w > headroom_w > 0 else 1.0
        share[k + 1] = share[k] + (length / state.resident if state.resident > 0 else 0.0)
        cap[k + 1] = cap[k] + scale * length
        for m in models:
            seq_w, rate = weights.get(m, (0.0, 0.0))
            power[m][k + 1] = power[m][k] + seq_w * scale * length
            tokens[m][k + 1] = tokens[m][k] + rate * length
    shares, work = [], []
    for p in pieces:
        shares.append(_between(share, index, p.resident))
        w = p.point_work + p.prefill_density * _between(cap, index, p.prefill)
        drawn = _between(power[p.model], index, p.decode)
        if p.decode_tokens is None:
            w += p.factor * drawn
        else:
            made = _between(tokens[p.model], index, p.decode)
            w += p.decode_tokens * drawn / made if made > 0 else 0.0
        if p.point_decode is not None:
            at, amount = p.point_decode
            k = _at_or_before(times, at)
            if k >= 0:
                seq_w, rate = weigh(p.model, max(running_at[k].get(p.model, 1), 1))
                w += amount * seq_w / rate if rate > 0 else 0.0
        work.append(w)
    return shares, work


def _apply(state: _State, kind: int, piece: Piece) -> None:
    sign = 1 if kind < 3 else -1
    kind %= 3
    if kind == 0:
        state.resident += sign
        state.by_model[piece.model] = state.by_model.get(piece.model, 0) + sign
    elif kind == 1:
        state.decode[piece.model] = state.decode.get(piece.model, 0.0) + sign * piece.factor
    else:
        state.prefill_w += sign * piece.prefill_density


def _between(prefix: list[float], index: dict[float, int], span: tuple[float, float]) -> float:
    if span[1] <= span[0]:
        return 0.0
    # prefix[k] holds the sum up to times[k] (segments before it); the entry after index k is its end.
    return prefix[index[span[1]]] - prefix[index[span[0]]]


def _at_or_before(times: list[float], at: float) -> int:
    lo, hi = 0, len(times)
    while lo < hi:
        mid = (lo + hi) // 2
        if times[mid] <= at:
            lo = mid + 1
        else:
            hi = mid
    return lo - 1
