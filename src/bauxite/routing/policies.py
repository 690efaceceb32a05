"""Routing priorities: one small Protocol, implementations registered in a plain dict.

A policy turns the candidates that survived the latency and threshold filters into scores (lower is better).
Picking, tie-spreading and cache affinity are the router's job, so a policy stays a few lines.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from .config import GreenRoutingSettings

_TINY = 1e-12


class RoutingPolicy(Protocol):
    """Scores (lower is better) of the candidates that survived the latency and threshold filters, given as
    two lists of one length: each one's expected grams CO2e and predicted time to first token in ms."""

    reason: str  # route reason label when this policy's ranking decides

    def scores(self, grams: Sequence[float], ttft_ms: Sequence[float]) -> Sequence[float]: ...


class LowCarbon:
    reason = "low_carbon"

    def scores(self, grams: Sequence[float], ttft_ms: Sequence[float]) -> Sequence[float]:
        return grams


class LatencyFirst:
    reason = "latency"

    def scores(self, grams: Sequence[float], ttft_ms: Sequence[float]) -> Sequence[float]:
        return ttft_ms


class Balanced:
    """Weighted sum of grams and latency, each relative to the best candidate (so units cancel)."""

    reason = "balanced"

    def __init__(self, carbon_weight: float, latency_weight: float) -> None:
        total = carbon_weight + latency_weight
        self._carbon = carbon_weight / total
        self._latency = latency_weight / total

    def scores(self, grams: Sequence[float], ttft_ms: Sequence[float]) -> Sequence[float]:
        per_g = self._carbon / max(min(grams), _TINY)
        per_ms = self._latency / max(min(ttft_ms), _TINY)
        return [per_g * g + per_ms * t for g, t in zip(grams, ttft_ms, strict=True)]


POLICIES: dict[str, Callable[[GreenRoutingSettings], RoutingPolicy]] = {
    "low_carbon": lambda s: LowCarbon(),
    "latency": lambda s: LatencyFirst(),
    "balanced": lambda s: Balanced(s.balanced_carbon_weight, s.balanced_latency_weight),
}
