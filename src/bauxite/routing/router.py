"""Cluster choice. Until green routing lands: the least-loaded available cluster, rotating among ties."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from ..clusters import ClusterState, Fleet
from ..energy.service import EnergyService
from ..intensity.service import IntensityService
from ..records import Capture
from ..settings import Settings


@dataclass(frozen=True, slots=True)
class Decision:
    cluster: ClusterState
    reason: str  # label value for x-bauxite-route-reason and bauxite_routing_decisions_total{reason}
    counterfactual: ClusterState | None = None  # the latency-first choice, for avoided carbon


class NoRouteError(Exception):
    """No cluster can take this request (none serves the model, or all are cooling down)."""

    def __init__(self, message: str, status: int = 503) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class RouteRequest:
    model: str
    exclude: frozenset[str] = frozenset()
    max_latency_ms: float | None = None
    prefix_key: int = 0
    prompt_tokens: int = 0
    max_tokens: int = 0


class Router:
    def __init__(self, fleet: Fleet) -> None:
        self._fleet = fleet
        self._counter = itertools.count()

    @classmethod
    def from_settings(
        cls, settings: Settings, fleet: Fleet, intensity: IntensityService, energy: EnergyService
    ) -> Router:
        return cls(fleet)

    async def start(self) -> None:
        """Start background work (cluster stats scraping). The request path never waits on it."""
        return None

    async def stop(self) -> None:
        return None

    def avoided_carbon_g(self, capture: Capture, energy_j: float) -> tuple[float, float]:
        """(green_routing, kv_cache) grams avoided by this request's placement; never raises."""
        return (0.0, 0.0)

    def choose(self, request: RouteRequest) -> Decision:
        candidates = [
            c for c in self._fleet.serving(request.model) if c.name not in request.exclude and c.available()
        ]
        if not candidates:
            raise NoRouteError(f"no available cluster serves model {request.model!r}")
        least = min(c.in_flight for c in candidates)
        tied = [c for c in candidates if c.in_flight == least]
        chosen = tied[next(self._counter) % len(tied)]
        reason = "failover" if request.exclude else "least_loaded"
        return Decision(chosen, reason)
