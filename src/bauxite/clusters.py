"""Runtime state of each configured cluster: load, health and observed latency, read by the router."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from .records import Endpoint
from .settings import ClusterSettings, ModelRoute

FAILURE_COOLDOWN_S = 10.0
EWMA_ALPHA = 0.2


@dataclass(slots=True, eq=False)
class ClusterState:
    """Shared figures about one cluster. The router is their only writer (its feedback API: ``dispatched``,
    ``first_token``, ``finished``, ``failed``, ``scraped``); everything else only reads them."""

    settings: ClusterSettings
    in_flight: int = 0  # this gateway's requests running there now
    peer_in_flight: int = 0  # other replicas' (or sibling workers') requests there, from shared state
    cooldown_until: float = 0.0  # router clock seconds; skipped by routing until then
    consecutive_failures: int = 0
    itl_ewma_s: float | None = None  # observed time between output tokens (read by energy attribution)
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


def cooldown_s(consecutive_failures: int) -> float:
    """Back-off after a failure (connection refused, 5xx): longer after repeated failures, capped."""
    return FAILURE_COOLDOWN_S * min(1 << (max(consecutive_failures, 1) - 1), 6)


def ewma(old: float | None, new: float) -> float:
    return new if old is None else old + EWMA_ALPHA * (new - old)


class Fleet:
    """All clusters, indexed by model."""

    def __init__(self, clusters: list[ClusterSettings] | tuple[ClusterSettings, ...]) -> None:
        self.clusters = [ClusterState(c) for c in clusters]
        self.by_name = {c.name: c for c in self.clusters}
        self.by_model: dict[str, list[ClusterState]] = {}
        for state in self.clusters:
            for model in state.routes:
                self.by_model.setdefault(model, []).append(state)

    def serving(self, model: str, endpoint: Endpoint = "chat") -> list[ClusterState]:
        """Clusters that serve ``model`` through ``endpoint`` (as configured in ``clusters[].endpoints``)."""
        return [c for c in self.by_model.get(model, []) if endpoint in c.settings.endpoints]
