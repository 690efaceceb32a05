"""One sweep over an interval's request starts and ends: time shares and weighted token work, in O(n log n).

Between two successive events the set of resident requests is constant. In such a segment of length ``L``
with ``N`` requests resident, each gets ``L / N`` of cluster time; a decoding request of model ``m`` with
token density ``ρ`` (tokens per second) does ``ρ × w_m(n_m) × L`` of work, where ``w_m(n)`` is the model's
modelled dynamic energy per token with ``n`` of its requests resident; a prefilling one ``ρ × w_prefill × L``.
When the segment's modelled dynamic power exceeds the GPUs' power limit, its work is scaled down to it.

Running prefix sums of ``L / N``, ``w_m(n_m) × scale × L`` (per model) and ``scale × L`` turn each request's
totals into two lookups, so the cost is the sort, not requests × segments.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

Weigh = Callable[[str, int], float]  # (model, its requests resident) -> dynamic J per decode token


@dataclass(slots=True)
class Piece:
    """One request's part of the interval. Spans are clipped to the interval; densities per second."""

    model: str
    resident: tuple[float, float]
    decode: tuple[float, float] = (0.0, 0.0)
    decode_density: float = 0.0  # tokens/s × the request's own weight factor
    prefill: tuple[float, float] = (0.0, 0.0)
    prefill_density: float = 0.0  # tokens/s × prefill J per token
    point_work: float = 0.0  # work placed at an instant (a zero-length prefill or decode), not capped
    point_decode: tuple[float, float] | None = None  # (time, tokens × factor) of a zero-length decode


@dataclass(slots=True)
class _State:
    resident: int = 0
    by_model: dict[str, int] = field(default_factory=dict)
    decode: dict[str, float] = field(default_factory=dict)  # Σ decode density per model
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
    per_model = {m: [0.0] * (len(times) + 1) for m in models}
    running_at: list[dict[str, int]] = []
    state = _State()
    for k, t in enumerate(times):
        for kind, i in events[t]:
            _apply(state, kind, pieces[i])
        running_at.append(dict(state.by_model))
        length = times[k + 1] - t if k + 1 < len(times) else 0.0
        weights = {m: weigh(m, max(n, 1)) for m, n in state.by_model.items() if n > 0}
        power_w = state.prefill_w + sum(d * weights.get(m, 0.0) for m, d in state.decode.items())
        scale = headroom_w / power_w if headroom_w is not None and power_w > headroom_w > 0 else 1.0
        share[k + 1] = share[k] + (length / state.resident if state.resident > 0 else 0.0)
        cap[k + 1] = cap[k] + scale * length
        for m, acc in per_model.items():
            acc[k + 1] = acc[k] + weights.get(m, 0.0) * scale * length
    shares, work = [], []
    for p in pieces:
        shares.append(_between(share, index, p.resident))
        w = p.point_work + p.prefill_density * _between(cap, index, p.prefill)
        w += p.decode_density * _between(per_model[p.model], index, p.decode)
        if p.point_decode is not None:
            at, amount = p.point_decode
            k = _at_or_before(times, at)
            w += amount * weigh(p.model, max(running_at[k].get(p.model, 1), 1)) if k >= 0 else 0.0
        work.append(w)
    return shares, work


def _apply(state: _State, kind: int, piece: Piece) -> None:
    sign = 1 if kind < 3 else -1
    kind %= 3
    if kind == 0:
        state.resident += sign
        state.by_model[piece.model] = state.by_model.get(piece.model, 0) + sign
    elif kind == 1:
        state.decode[piece.model] = state.decode.get(piece.model, 0.0) + sign * piece.decode_density
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
