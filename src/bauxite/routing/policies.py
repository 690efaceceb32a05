"""Routing priorities: one small Protocol, implementations registered in a plain dict.

A policy turns the candidates that survived the latency and threshold filters into scores (lower is better).
Picking, tie-spreading and cache affinity are the router's job, so a policy stays a few lines.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from ..clusters import ClusterState
from .config import GreenRoutingSettings

_TINY = 1e-12


@dataclass(slots=True)  # not frozen: built for every candidate of every request, and frozen init is slower
class Option:
    """One candidate cluster as the router sees it for this request."""

    cluster: ClusterState
    ttft_ms: float  # predicted time to first token, network included
    grams: float  # expected grams CO2e of this request there
    g_per_kwh: float  # grid intensity of its region
    load: float  # occupancy, for spreading near-equal choices


class RoutingPolicy(Protocol):
    reason: str  # route reason label when this policy's ranking decides

    def scores(self, options: Sequence[Option]) -> list[float]: ...


class LowCarbon:
    reason = "low_carbon"

    def scores(self, options: Sequence[Option]) -> list[float]:
        return [o.grams for o in options]


class LatencyFirst:
    reason = "latency"

    def scores(self, options: Sequence[Option]) -> list[float]:
        return [o.ttft_ms for o in options]


class Balanced:
    """Weighted sum of grams and latency, each relative to the best candidate (so units cancel)."""

    reason = "balanced"

    def __init__(self, carbon_weight: float, latency_weight: float) -> None:
        total = carbon_weight + latency_weight
        self._carbon = carbon_weight / total
        self._latency = latency_weight / total

    def scores(self, options: Sequence[Option]) -> list[float]:
        best_g = max(min(o.grams for o in options), _TINY)
        best_ms = max(min(o.ttft_ms for o in options), _TINY)
        return [self._carbon * o.grams / best_g + self._latency * o.ttft_ms / best_ms for o in options]


POLICIES: dict[str, Callable[[GreenRoutingSettings], RoutingPolicy]] = {
    "low_carbon": lambda s: LowCarbon(),
    "latency": lambda s: LatencyFirst(),
    "balanced": lambda s: Balanced(s.balanced_carbon_weight, s.balanced_latency_weight),
}
