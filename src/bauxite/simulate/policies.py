"""Placement policies the simulator compares. Three of them are the gateway's ``Router`` itself."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from ..avoided import avoided_carbon
from ..clusters import Fleet
from ..records import Capture
from ..routing.config import ClusterLatencySettings, LatencySettings
from ..routing.router import NoRouteError, Outcome, Router, RouteRequest
from ..routing.server_times import ServerCounters
from ..settings import ClusterSettings
from .config import SimConfig
from .model import ClusterQueue, SimEnergy, SimIntensity
from .workload import SimRequest

REJECTED = -1  # choose() returns this index when the policy refuses the request (strict threshold)


class SimClock:
    """Simulated seconds, shared by the engine and the routers (their snapshot timer and health checks)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class World:
    """What a policy may look at: the routers build their own views from feedback; the greedy hindsight
    baseline reads the queues directly (perfect knowledge)."""

    config: SimConfig
    fleet: Fleet
    queues: list[ClusterQueue]
    table: list[list[float]]  # g/kWh per cluster per hour
    intensity: SimIntensity
    clock: SimClock
    rtt_ms: list[list[float]] = field(default_factory=list)  # per client group, per cluster


class SimPolicy(Protocol):
    """The router's feedback API, indexed by cluster and client site (each site is one gateway replica)."""

    def choose(self, request: SimRequest, exclude: int = REJECTED) -> tuple[int, str]: ...

    def failed(self, cluster: int, group: int) -> None: ...

    def avoided_g(self, request: SimRequest, cluster: int, reason: str, energy_j: float) -> float: ...

    def dispatched(self, cluster: int, group: int) -> None: ...

    def first_token(self, cluster: int, group: int, ttft_ms: float, prompt_tokens: int) -> None: ...

    def finished(self, cluster: int, group: int, prompt_tokens: int, completion_tokens: int) -> None: ...

    def scraped(
        self, cluster: int, group: int, running: int, waiting: int, server: ServerCounters
    ) -> None: ...


class RouterPolicy:
    """One gateway ``Router`` per client site, each with its own view of the fleet: its own in-flight
    requests, its own scrapes, its own learned profiles. Nothing is shared between sites but the clusters."""

    def __init__(self, world: World, priority: str) -> None:
        config = world.config
        # Intensity changes only at trace hours, so the snapshot is refreshed exactly then (``choose``);
        # a gateway's one-second refresh is as prompt relative to a real hour.
        green = config.routing.green_routing.model_copy(
            update={
                "enabled": True,
                "priority": priority,
                "snapshot_interval": config.period.seconds_per_hour,
            }
        )
        if priority == "latency":
            # The latency-first baseline: what a gateway without carbon awareness does.
            green = green.model_copy(update={"threshold_gco2": math.inf})
        latency = router_latency_settings(config)
        self._routers = [
            Router(
                build_fleet(config),
                world.intensity,
                SimEnergy(config, site=g),
                green,
                latency,
                clock=world.clock,
                rtt_ms={c.name: rtts[k] for k, c in enumerate(config.clusters)},
            )
            for g, rtts in enumerate(world.rtt_ms)
        ]
        self._names = [c.name for c in config.clusters]
        self._index = {name: k for k, name in enumerate(self._names)}
        self._itl_s = [c.itl_ms / 1000.0 for c in config.clusters]
        self._model = config.model
        self._send_max_tokens = config.workload.send_max_tokens
        self._hour = -1
        self._counterfactual = ""

    def choose(self, request: SimRequest, exclude: int = REJECTED) -> tuple[int, str]:
        if request.hour != self._hour:
            self._hour = request.hour
            for router in self._routers:
                router.refresh()
        route = RouteRequest(
            self._model,
            prompt_tokens=request.prompt_tokens,
            max_tokens=request.completion_tokens if self._send_max_tokens else 0,
            max_latency_ms=request.max_latency_ms or None,
            exclude=frozenset((self._names[exclude],)) if exclude != REJECTED else frozenset(),
        )
        try:
            decision = self._routers[request.group].choose(route)
        except NoRouteError:
            return REJECTED, "rejected"
        self._counterfactual = decision.counterfactual.name if decision.counterfactual else ""
        return self._index[decision.cluster.name], decision.reason

    def avoided_g(self, request: SimRequest, cluster: int, reason: str, energy_j: float) -> float:
        """Net green-routing grams avoided by the last decision, by the gateway's own accounting code."""
        capture = Capture(
            model=self._model,
            department="sim",
            endpoint="chat",
            started_at=0.0,
            started_mono=0.0,
            cluster=self._names[cluster],
            route_reason=reason,
            prompt_tokens=request.prompt_tokens,
            completion_tokens=request.completion_tokens,
            status="ok",
            counterfactual_cluster=self._counterfactual,
        )
        return avoided_carbon(self._routers[request.group].carbon, capture, energy_j).green_net_g

    def dispatched(self, cluster: int, group: int) -> None:
        self._routers[group].dispatched(self._names[cluster])

    def failed(self, cluster: int, group: int) -> None:
        """An attempt refused at once: dispatched, failed, finished — as the proxy reports it."""
        router, name = self._routers[group], self._names[cluster]
        router.dispatched(name)
        router.failed(name)
        router.finished(name, Outcome(False))

    def first_token(self, cluster: int, group: int, ttft_ms: float, prompt_tokens: int) -> None:
        # Only the gateway that sent the request sees its TTFT (at its own round trip to the cluster).
        self._routers[group].first_token(self._names[cluster], ttft_ms, prompt_tokens)

    def finished(self, cluster: int, group: int, prompt_tokens: int, completion_tokens: int) -> None:
        outcome = Outcome(True, prompt_tokens, completion_tokens, self._itl_s[cluster])
        self._routers[group].finished(self._names[cluster], outcome)

    def scraped(self, cluster: int, group: int, running: int, waiting: int, server: ServerCounters) -> None:
        self._routers[group].scraped(self._names[cluster], running, waiting, None, server)


def build_fleet(config: SimConfig) -> Fleet:
    """The simulated clusters as the gateway's configuration would list them."""
    m = config.model
    return Fleet(
        [
            ClusterSettings.model_validate(
                {"name": c.name, "region": c.region, "url": f"http://{c.name}.sim/v1", "models": [m]}
            )
            for c in config.clusters
        ]
    )


def router_latency_settings(config: SimConfig) -> LatencySettings:
    """The router's latency section: the user's, plus the SLO and (optionally) each cluster's profile."""
    latency = config.routing.latency
    update: dict[str, object] = {}
    if latency.slo_ttft_ms is None:
        update["slo_ttft_ms"] = config.slo_ttft_ms
    if config.routing.configure_profiles:
        profiles = {
            c.name: ClusterLatencySettings(
                ttft_ms=c.ttft_ms,
                prefill_ms_per_1k_tokens=c.prefill_ms_per_1k_tokens,
                itl_ms=c.itl_ms,
                max_concurrency=c.capacity,
            )
            for c in config.clusters
        }
        update["clusters"] = {**profiles, **latency.clusters}
    return latency.model_copy(update=update)


class _NoFeedback:
    """Policies that learn nothing from what happens after their choice (and claim no avoided carbon)."""

    def avoided_g(self, request: SimRequest, cluster: int, reason: str, energy_j: float) -> float:
        return 0.0

    def dispatched(self, cluster: int, group: int) -> None:
        return None

    def failed(self, cluster: int, group: int) -> None:
        return None

    def first_token(self, cluster: int, group: int, ttft_ms: float, prompt_tokens: int) -> None:
        return None

    def finished(self, cluster: int, group: int, prompt_tokens: int, completion_tokens: int) -> None:
        return None

    def scraped(self, cluster: int, group: int, running: int, waiting: int, server: ServerCounters) -> None:
        return None


class RoundRobin(_NoFeedback):
    def __init__(self, world: World) -> None:
        self._n = len(world.queues)
        self._next = 0

    def choose(self, request: SimRequest, exclude: int = REJECTED) -> tuple[int, str]:
        chosen = self._next
        self._next = (chosen + 1) % self._n
        if chosen == exclude and self._n > 1:
            return self.choose(request, exclude)
        return chosen, "round_robin" if exclude == REJECTED else "failover"


class GreedyHindsight(_NoFeedback):
    """Lowest-carbon cluster that meets the SLO, knowing every queue's exact wait; else the fastest.

    A per-arrival heuristic, not an optimum: it ignores the threshold, reserves no scarce green capacity, and
    routers can beat it. The optimum's lower bound is ``bound.lower_bound``. Registered as "oracle" (the
    ``--json`` key) for compatibility.
    """

    def __init__(self, world: World) -> None:
        self._world = world
        self._config = world.config
        self._slo_ms = world.config.slo_ttft_ms
        self._pues = [c.pue for c in world.config.clusters]

    def choose(self, request: SimRequest, exclude: int = REJECTED) -> tuple[int, str]:
        world, config = self._world, self._config
        now = world.clock.now
        rtts = world.rtt_ms[request.group]
        best, best_g = -1, math.inf
        fastest, fastest_ms = 0, math.inf
        slo_ms = request.max_latency_ms or self._slo_ms
        for k, queue in enumerate(world.queues):
            if config.outages and config.down(k, request.hour):
                continue  # hindsight: it knows the outage and never tries the cluster
            ttft_ms = rtts[k] + (queue.start_s(now) - now) * 1000.0 + queue.prefill_ms(request.prompt_tokens)
            if ttft_ms < fastest_ms:
                fastest, fastest_ms = k, ttft_ms
            if ttft_ms <= slo_ms:
                grams = queue.energy_j(request.prompt_tokens, request.completion_tokens)
                grams *= self._pues[k] * world.table[k][request.hour]
                if grams < best_g:
                    best, best_g = k, grams
        return (best, "oracle") if best >= 0 else (fastest, "oracle_fastest")


POLICY_FACTORIES: dict[str, Callable[[World], SimPolicy]] = {
    "latency": lambda w: RouterPolicy(w, "latency"),
    "low_carbon": lambda w: RouterPolicy(w, "low_carbon"),
    "balanced": lambda w: RouterPolicy(w, "balanced"),
    "round_robin": RoundRobin,
    "oracle": GreedyHindsight,
}
