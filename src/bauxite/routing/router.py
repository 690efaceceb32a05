"""Cluster choice for each request: a pure function of in-memory snapshots, cheap enough for the hot path.

Order of work: candidates (serving the model, not excluded, not cooling down) → latency filter
(absolute SLO and/or slack over the fastest) → threshold filter → priority score → spread among near-equal
scores, or keep a warm prefix cache within tolerance. Route reasons are a fixed set (``REASONS``) because they
become Prometheus label values.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..clusters import ClusterState, Fleet, cooldown_s, ewma
from ..intensity.base import Intensity
from ..records import Capture, Endpoint
from .affinity import PrefixAffinity
from .config import GreenRoutingSettings, LatencySettings
from .latency import LatencyModel
from .policies import POLICIES, Option, RoutingPolicy
from .server_times import ServerCounters
from .snapshot import CarbonSnapshot, EnergyModel, IntensitySnapshots
from .stats import StatsScraper

if TYPE_CHECKING:
    from ..settings import Settings

REASONS = (
    "least_loaded",  # green routing disabled: fewest requests in flight
    "failover",  # a retry after the first choice failed
    "low_carbon",  # lowest expected grams among clusters meeting latency and threshold
    "latency",  # lowest predicted latency among clusters meeting the threshold
    "balanced",  # best weighted carbon/latency score
    "threshold_fallback",  # nothing met threshold_gco2; best cluster meeting latency, flagged
    "slo_fallback",  # nothing met the latency requirement; the fastest cluster
    "kv_cache_affinity",  # the cluster holding this prompt prefix, within tolerance of the best
    "cooldown_fallback",  # every candidate was cooling down after failures; the soonest to recover
)


@dataclass(frozen=True, slots=True)
class Decision:
    cluster: ClusterState
    reason: str  # label value for x-bauxite-route-reason and bauxite_routing_decisions_total{reason}
    counterfactual: ClusterState | None = None  # the latency-first choice, for avoided carbon


class NoRouteError(Exception):
    """No cluster can take this request (none serves the model, all cooling down, or strict threshold)."""

    def __init__(self, message: str, status: int = 503) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class RouteRequest:
    model: str
    exclude: frozenset[str] = frozenset()
    # From the x-bauxite-max-latency-ms header; replaces the configured SLO for this request.
    max_latency_ms: float | None = None
    prefix_key: int = 0  # hash of the prompt prefix; 0 = unknown
    prompt_tokens: int = 0
    max_tokens: int = 0  # 0 = not given: the cluster's typical completion length is assumed
    endpoint: Endpoint = "chat"  # only clusters serving this wire API are candidates


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one attempt on a cluster ended, as the router learns from it (``Router.finished``)."""

    ok: bool
    prompt_tokens: int = 0
    completion_tokens: int = 0
    itl_s: float | None = None  # mean time between output tokens, when streamed

    @classmethod
    def from_capture(cls, capture: Capture, itl_s: float | None = None) -> Outcome:
        return cls(capture.status == "ok", capture.prompt_tokens, capture.completion_tokens, itl_s)


_NO_OTHERS = (0, 0.0, -1.0)
RATE_ALPHA = 0.5  # weight of one scrape interval in the other clients' arrival rate


class _NoIntensity:
    def for_ranking(self, regions: list[str]) -> Mapping[str, Intensity]:
        return {}


class _NoEnergy:
    def expected_j(self, cluster: str, model: str, prompt_tokens: int, completion_tokens: int) -> float:
        return 0.0


class Router:
    def __init__(
        self,
        fleet: Fleet,
        intensity: IntensitySnapshots | None = None,
        energy: EnergyModel | None = None,
        green: GreenRoutingSettings | None = None,
        latency: LatencySettings | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        rtt_ms: Mapping[str, float] | None = None,
    ) -> None:
        self._fleet = fleet
        self._green = green or GreenRoutingSettings()
        self._latency_settings = latency or LatencySettings()
        self._clock = clock
        self.latency = LatencyModel(self._latency_settings, rtt_ms)
        self.carbon = CarbonSnapshot(fleet, intensity or _NoIntensity(), energy or _NoEnergy())
        self._policy: RoutingPolicy = POLICIES[self._green.priority](self._green)
        self._affinity = PrefixAffinity(self._green.kv_affinity_entries)
        self._counter = itertools.count()
        self._counterfactual_turn = itertools.count()
        self._options: list[Option] = []  # the current decision's candidates
        self._refresher: asyncio.Task[None] | None = None
        self._now = 0.0  # the clock at the current decision
        # This replica's own view of each cluster since its last scrape (by cluster name): requests it has
        # running there, and its dispatches minus completions since that scrape. Kept behind the feedback
        # methods below so a shared store could replace them.
        self._in_flight: dict[str, int] = {c.name: 0 for c in fleet.clusters}
        # Other replicas' (or sibling workers') requests running at each cluster, from shared state.
        self._peer_in_flight: dict[str, int] = {c.name: 0 for c in fleet.clusters}
        self._since_scrape: dict[str, int] = {c.name: 0 for c in fleet.clusters}
        self._scraped_depth: dict[str, int] = {c.name: 0 for c in fleet.clusters}
        # Other replicas' requests in that scrape, and when it was taken (router clock): they keep arriving
        # and finishing unseen until the next one, so the wait prediction widens with the scrape's age.
        # (their requests, scrape time, their arrival rate per s or -1 when unknown), by cluster name.
        self._others: dict[str, tuple[int, float, float]] = {}
        # For that rate: at the previous scrape (time, requests finished there, depth, our dispatches so far).
        self._previous_scrape: dict[str, tuple[float, float, int, int]] = {}
        self._dispatched_total: dict[str, int] = {}
        self._scraper = StatsScraper(fleet, self.scraped, self._latency_settings)

    @classmethod
    def from_settings(
        cls, settings: Settings, fleet: Fleet, intensity: IntensitySnapshots, energy: EnergyModel
    ) -> Router:
        return cls(fleet, intensity, energy, settings.enterprise.green_routing, settings.latency)

    async def start(self) -> None:
        """Start background work: the carbon snapshot's refresh timer (only with green routing on) and the
        cluster stats scrape. The request path never waits on either, and never refreshes anything."""
        if self._green.enabled and self._refresher is None:
            self.refresh()
            self._refresher = asyncio.create_task(self._refresh_every_interval(), name="bauxite-snapshot")
        if self._latency_settings.stats_scrape:
            await self._scraper.start()

    async def stop(self) -> None:
        task, self._refresher = self._refresher, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._scraper.stop()

    async def _refresh_every_interval(self) -> None:
        while True:
            await asyncio.sleep(self._green.snapshot_interval)
            self.refresh()

    @property
    def affinity(self) -> PrefixAffinity:
        """The prefix → cluster map (shared state pushes and pulls its entries)."""
        return self._affinity

    def refresh(self) -> None:
        """Re-read intensity and energy figures now (the timer started by ``start`` does this every
        ``snapshot_interval``; the simulator calls it at each trace hour)."""
        self.carbon.refresh()

    # The decision path.

    def choose(self, request: RouteRequest) -> Decision:
        now = self._now = self._clock()
        candidates = [
            c
            for c in self._fleet.serving(request.model, request.endpoint)
            if c.name not in request.exclude and c.available(now)
        ]
        if not candidates:
            return self._cooling_fallback(request, now)
        if not self._green.enabled:
            return self._least_loaded(candidates, request)
        options = self._options = self._candidate_options(candidates, request)
        fastest = min(options, key=_by_ttft)
        feasible = self._meets_latency(options, request, fastest.ttft_ms)
        if not feasible:
            return self._slo_fallback(candidates, request)
        pool = [o for o in feasible if self._under_threshold(o.g_per_kwh)]
        reason = self._policy.reason
        if not pool:
            if self._green.strict:
                raise self._strict_refusal(request, "within its latency requirement")
            pool, reason = feasible, "threshold_fallback"
        chosen, reason = self._pick(pool, request, reason)
        return self._decide(chosen, reason, request, self._latency_first(fastest))

    def _candidate_options(
        self, candidates: list[ClusterState], request: RouteRequest, typical: bool = False
    ) -> list[Option]:
        """Every candidate as this replica sees it for this request (the hot loop: plain lookups only)."""
        completion = request.max_tokens or self.latency.typical_completion_tokens
        prompt = request.prompt_tokens
        grams_model, estimate, now = self.carbon.grams_model, self.latency.estimate, self._now
        own, peers, scraped, since, others_at = (
            self._in_flight,
            self._peer_in_flight,
            self._scraped_depth,
            self._since_scrape,
            self._others,
        )
        options = []
        for cluster in candidates:
            name = cluster.settings.name
            fixed_g, prompt_g, completion_g, g_per_kwh = grams_model(name, request.model)
            others, scraped_at, rate = others_at.get(name, _NO_OTHERS)
            # All gateways' running requests (own + peers): a floor under the last scrape plus ours since.
            depth = max(own.get(name, 0) + peers.get(name, 0), scraped.get(name, 0) + since.get(name, 0))
            ttft_ms, load = estimate(cluster, prompt, depth, others, now - scraped_at, rate, typical)
            grams = fixed_g + prompt_g * prompt + completion_g * completion
            options.append(Option(cluster, ttft_ms, grams, g_per_kwh, load))
        return options

    def _slo_fallback(self, candidates: list[ClusterState], request: RouteRequest) -> Decision:
        """No cluster meets the requirement at the predicted quantile: take the one with the lowest *typical*
        TTFT, the likeliest to make it (a busy cluster's high quantile may be slower than a far idle one's
        certain miss, while it usually is not). The counterfactual does the same over every candidate, so
        nothing is claimed unless strict mode forced a greener one. Strict mode only falls back among
        clusters under the threshold: a latency miss never licenses a dirtier grid."""
        options = self._candidate_options(candidates, request, typical=True)
        likeliest = min(options, key=_by_ttft)
        if self._green.strict:
            green = [o for o in options if self._under_threshold(o.g_per_kwh)]
            if not green:
                raise self._strict_refusal(request, "among clusters that could take it")
            return self._decide(min(green, key=_by_ttft), "slo_fallback", request, likeliest)
        return self._decide(likeliest, "slo_fallback", request, likeliest)

    def _under_threshold(self, g_per_kwh: float) -> bool:
        return g_per_kwh <= self._green.threshold_gco2

    def _strict_refusal(self, request: RouteRequest, where: str) -> NoRouteError:
        return NoRouteError(
            f"no cluster for model {request.model!r} meets threshold_gco2 "
            f"{self._green.threshold_gco2:g} gCO2eq/kWh {where} (strict mode)"
        )

    def _meets_latency(self, options: list[Option], request: RouteRequest, fastest_ms: float) -> list[Option]:
        slo, slack = self._latency_settings.requirement(request.model)
        if request.max_latency_ms is not None:
            slo = request.max_latency_ms
        limit = math.inf if slo is None else slo
        if slack is not None:
            limit = min(limit, fastest_ms + slack)
        return options if limit == math.inf else [o for o in options if o.ttft_ms <= limit]

    def _pick(self, pool: list[Option], request: RouteRequest, reason: str) -> tuple[Option, str]:
        if len(pool) == 1:
            return pool[0], reason
        scores = self._policy.scores(pool)
        best = min(scores)
        limit = best + abs(best) * self._green.near_equal_tolerance
        chosen = self._least_loaded_option([o for o, s in zip(pool, scores, strict=True) if s <= limit])
        if self._green.kv_affinity and request.prefix_key:
            warm = self._affinity.get(request.prefix_key)
            if warm is not None and warm != chosen.cluster.name:
                # Move to the warm cache only while that costs at most the tolerance, in carbon against the
                # choice made without it and in the policy's own score; labelled only when it moved.
                tolerance = self._green.kv_affinity_tolerance
                for option, score in zip(pool, scores, strict=True):
                    if (
                        option.cluster.name == warm
                        and option.grams <= chosen.grams * (1.0 + tolerance)
                        and score <= best + abs(best) * tolerance
                    ):
                        return option, "kv_cache_affinity"
        return chosen, reason

    def _least_loaded_option(self, near: Sequence[Option]) -> Option:
        if len(near) == 1:
            return near[0]
        lowest = min(o.load for o in near)
        tied = [o for o in near if o.load == lowest]
        return tied[next(self._counter) % len(tied)]

    def _decide(self, chosen: Option, reason: str, request: RouteRequest, counterfactual: Option) -> Decision:
        if self._green.kv_affinity:
            self._affinity.remember(request.prefix_key, chosen.cluster.name)
        if request.exclude:
            reason = "failover"
        return Decision(chosen.cluster, reason, counterfactual.cluster)

    def _latency_first(self, fastest: Option) -> Option:
        """What a carbon-blind gateway would pick with the same predictions: the fastest, spread among
        near-equal ones by load like any choice (so equally fast clusters share the counterfactual)."""
        limit = fastest.ttft_ms * (1.0 + self._green.near_equal_tolerance)
        near = [o for o in self._options if o.ttft_ms <= limit]
        if len(near) == 1:
            return fastest
        lowest = min(o.load for o in near)
        tied = [o for o in near if o.load == lowest]
        return tied[next(self._counterfactual_turn) % len(tied)]

    def _cooling_fallback(self, request: RouteRequest, now: float) -> Decision:
        """Every cluster serving the model is cooling down after failures: rather than refuse, try the one
        whose cool-down ends first (one blip must not take a model down for the whole cool-down)."""
        serving = self._fleet.serving(request.model, request.endpoint)
        cooling = [c for c in serving if c.name not in request.exclude]
        if not cooling:
            raise NoRouteError(f"no available cluster serves model {request.model!r}")
        if self._green.enabled and self._green.strict:
            grams_model = self.carbon.grams_model
            cooling = [c for c in cooling if self._under_threshold(grams_model(c.name, request.model)[3])]
            if not cooling:
                raise self._strict_refusal(request, "among clusters cooling down after failures")
        chosen = min(cooling, key=lambda c: c.cooldown_until)
        return Decision(chosen, "failover" if request.exclude else "cooldown_fallback")

    def _least_loaded(self, candidates: list[ClusterState], request: RouteRequest) -> Decision:
        own, peers = self._in_flight, self._peer_in_flight
        load = {c.name: own.get(c.name, 0) + peers.get(c.name, 0) for c in candidates}
        least = min(load.values())
        tied = [c for c in candidates if load[c.name] == least]
        chosen = tied[next(self._counter) % len(tied)]
        return Decision(chosen, "failover" if request.exclude else "least_loaded")

    # Feedback: the proxy and the simulator call these, and nothing else writes the router's view.

    def dispatched(self, cluster: str) -> None:
        """An attempt was sent to ``cluster``."""
        self._in_flight[cluster] = self._in_flight.get(cluster, 0) + 1
        self._since_scrape[cluster] = self._since_scrape.get(cluster, 0) + 1
        self._dispatched_total[cluster] = self._dispatched_total.get(cluster, 0) + 1
        self._fleet.by_name[cluster].in_flight += 1

    def first_token(self, cluster: str, ttft_ms: float, prompt_tokens: int) -> None:
        """The first token of a clean (not retried) attempt arrived after ``ttft_ms``, client side."""
        self.latency.observe_ttft(cluster, ttft_ms, prompt_tokens)

    def finished(self, cluster: str, outcome: Outcome) -> None:
        """An attempt ended (any way). Frees its slot in this replica's view; a success ends a cool-down."""
        self._in_flight[cluster] = max(self._in_flight.get(cluster, 0) - 1, 0)
        self._since_scrape[cluster] = self._since_scrape.get(cluster, 0) - 1
        state = self._fleet.by_name[cluster]
        state.in_flight = max(state.in_flight - 1, 0)
        if not outcome.ok:
            return
        state.consecutive_failures = 0
        state.cooldown_until = 0.0
        if outcome.itl_s is not None:
            state.itl_ewma_s = ewma(state.itl_ewma_s, outcome.itl_s)
            self.latency.observe_itl(cluster, outcome.itl_s * 1000.0)
        self.latency.observe_tokens(cluster, outcome.prompt_tokens, outcome.completion_tokens)

    def failed(self, cluster: str, at_least_s: float | None = None) -> None:
        """``cluster`` refused or failed an attempt: keep traffic away for a while, longer after repeated
        failures, and at least ``at_least_s`` (an upstream's Retry-After). Call ``finished`` too."""
        state = self._fleet.by_name[cluster]
        state.consecutive_failures += 1
        backoff_s = max(cooldown_s(state.consecutive_failures), at_least_s or 0.0)
        state.cooldown_until = max(state.cooldown_until, self._clock() + backoff_s)

    def peers(self, cluster: str, in_flight: int) -> None:
        """Shared state reports ``in_flight`` requests of other replicas (or sibling workers) running at
        ``cluster`` now; they count towards its depth until the next report."""
        if cluster in self._peer_in_flight:
            count = max(int(in_flight), 0)
            self._peer_in_flight[cluster] = count
            self._fleet.by_name[cluster].peer_in_flight = count

    def shared_cooldown(self, cluster: str, remaining_s: float) -> None:
        """Another replica keeps traffic away from ``cluster`` for ``remaining_s`` more seconds."""
        state = self._fleet.by_name.get(cluster)
        if state is not None and remaining_s > 0:
            state.cooldown_until = max(state.cooldown_until, self._clock() + remaining_s)

    def scraped(
        self,
        cluster: str,
        running: int,
        waiting: int,
        elapsed_ms: float | None,
        server: ServerCounters | None = None,
    ) -> None:
        """A fresh ``/metrics`` reading: it already counts this replica's requests, so restart the delta."""
        state = self._fleet.by_name[cluster]
        state.queue_running, state.queue_waiting = running, waiting
        self._scraped_depth[cluster] = running + waiting
        self._since_scrape[cluster] = 0
        now = self._clock()
        others = max(running + waiting - self._in_flight.get(cluster, 0), 0)
        self._others[cluster] = (others, now, self._others_rate(cluster, now, running + waiting, server))
        self.latency.observe_scrape(cluster, running, waiting, elapsed_ms, server)

    def _others_rate(self, cluster: str, now: float, depth: int, server: ServerCounters | None) -> float:
        """Other clients' arrivals per second at ``cluster``: requests that arrived there between two scrapes
        (finished + the change in depth) minus this replica's own dispatches; -1 while unknown (no request
        counter exported, or a first scrape)."""
        old_rate = self._others.get(cluster, _NO_OTHERS)[2]
        if server is None:
            return old_rate
        mine = self._dispatched_total.get(cluster, 0)
        previous = self._previous_scrape.get(cluster)
        self._previous_scrape[cluster] = (now, server.prompt_count, depth, mine)
        if previous is None or now <= previous[0] or server.prompt_count < previous[1]:
            return old_rate
        arrived = server.prompt_count - previous[1] + depth - previous[2] - (mine - previous[3])
        sample = max(arrived, 0.0) / (now - previous[0])
        return sample if old_rate < 0.0 else old_rate + RATE_ALPHA * (sample - old_rate)

    def depth(self, cluster: str) -> int:
        """Requests at ``cluster`` as this replica knows: the last scrape plus its own dispatches minus its
        own completions since, never fewer than its own running requests."""
        own = self._in_flight.get(cluster, 0) + self._peer_in_flight.get(cluster, 0)
        return max(own, self._scraped_depth.get(cluster, 0) + self._since_scrape.get(cluster, 0))


def _by_ttft(option: Option) -> float:
    return option.ttft_ms
