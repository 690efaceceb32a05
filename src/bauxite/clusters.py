"""Runtime state of each configured cluster: load, health and observed latency, read by the router."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from .settings import ClusterSettings, ModelRoute

FAILURE_COOLDOWN_S = 10.0
EWMA_ALPHA = 0.2


@dataclass(slots=True, eq=False)
class ClusterState:
    settings: ClusterSettings
    in_flight: int = 0
    cooldown_until: float = 0.0  # monotonic seconds; skipped by routing until then
    consecutive_failures: int = 0
    ttft_ewma_s: float | None = None
    itl_ewma_s: float | None = None
    queue_waiting: int = 0  # from the cluster's own metrics, when scraped
    queue_running: int = 0
    routes: dict[str, ModelRoute] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.routes = {m.name: m for m in self.settings.models}

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def region(self) -> str:
        return self.settings.region

    def available(self, now_mono: float | None = None) -> bool:
        return (now_mono if now_mono is not None else time.monotonic()) >= self.cooldown_until

    def record_failure(self) -> None:
        """Connection refused or 5xx: keep traffic away for a while, longer after repeated failures."""
        self.consecutive_failures += 1
        backoff = FAILURE_COOLDOWN_S * min(2 ** (self.consecutive_failures - 1), 6)
        self.cooldown_until = time.monotonic() + backoff

    def record_success(self, ttft_s: float | None, itl_s: float | None) -> None:
        self.consecutive_failures = 0
        self.cooldown_until = 0.0
        if ttft_s is not None:
            self.ttft_ewma_s = ttft_s if self.ttft_ewma_s is None else _ewma(self.ttft_ewma_s, ttft_s)
        if itl_s is not None:
            self.itl_ewma_s = itl_s if self.itl_ewma_s is None else _ewma(self.itl_ewma_s, itl_s)


def _ewma(old: float, new: float) -> float:
    return old + EWMA_ALPHA * (new - old)


class Fleet:
    """All clusters, indexed by model."""

    def __init__(self, clusters: list[ClusterSettings] | tuple[ClusterSettings, ...]) -> None:
        self.clusters = [ClusterState(c) for c in clusters]
        self.by_name = {c.name: c for c in self.clusters}
        self.by_model: dict[str, list[ClusterState]] = {}
        for state in self.clusters:
            for model in state.routes:
                self.by_model.setdefault(model, []).append(state)

    def serving(self, model: str) -> list[ClusterState]:
        return self.by_model.get(model, [])
