"""Cluster choice for each request: a pure function of in-memory snapshots, cheap enough for the hot path.

Order of work: candidates (serving the model, not excluded, not cooling down) → latency filter
(absolute SLO and/or slack over the fastest) → threshold filter → priority score → spread among near-equal
scores, or keep a warm prefix cache within tolerance. Route reasons are a fixed set (``REASONS``) because they
become Prometheus label values.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..clusters import ClusterState, Fleet
from ..intensity.base import Intensity
from ..records import Capture
from .affinity import PrefixAffinity
from .config import GreenRoutingSettings, LatencySettings
from .latency import LatencyModel
from .policies import POLICIES, Option, RoutingPolicy
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
        self._next_refresh = -math.inf
        self._scraper = StatsScraper(fleet, self.latency, self._latency_settings)

    @classmethod
    def from_settings(
        cls, settings: Settings, fleet: Fleet, intensity: IntensitySnapshots, energy: EnergyModel
    ) -> Router:
        return cls(fleet, intensity, energy, settings.enterprise.green_routing, settings.latency)

    async def start(self) -> None:
        """Start background work (cluster stats scraping). The request path never waits on it."""
        if self._latency_settings.stats_scrape:
            await self._scraper.start()

    async def stop(self) -> None:
        await self._scraper.stop()

    def refresh(self) -> None:
        """Re-read intensity and energy figures now (also done lazily every ``snapshot_interval``)."""
        self.carbon.refresh()
        self._next_refresh = self._clock() + self._green.snapshot_interval

    # The decision path.

    def choose(self, request: RouteRequest) -> Decision:
        now = self._clock()
        if now >= self._next_refresh:
            self.refresh()
        candidates = [
            c
            for c in self._fleet.serving(request.model)
            if c.name not in request.exclude and c.available(now)
        ]
        if not candidates:
            return self._cooling_fallback(request, now)
        if not self._green.enabled:
            return self._least_loaded(candidates, request)
        options = [self._option(c, request) for c in candidates]
        fastest = min(options, key=_by_ttft)
        feasible = self._meets_latency(options, request, fastest.ttft_ms)
        if not feasible:
            return self._decide(fastest, "slo_fallback", request, fastest)
        pool = [o for o in feasible if o.g_per_kwh <= self._green.threshold_gco2]
        reason = self._policy.reason
        if not pool:
            if self._green.strict:
                raise NoRouteError(
                    f"no cluster for model {request.model!r} meets threshold_gco2 "
                    f"{self._green.threshold_gco2:g} gCO2eq/kWh within its latency requirement (strict mode)"
                )
            pool, reason = feasible, "threshold_fallback"
        chosen, reason = self._pick(pool, request, reason)
        return self._decide(chosen, reason, request, fastest)

    def _option(self, cluster: ClusterState, request: RouteRequest) -> Option:
        completion = request.max_tokens or self.latency.typical_completion_tokens
        fixed_g, prompt_g, completion_g, g_per_kwh = self.carbon.grams_model(
            cluster.settings.name, request.model
        )
        ttft_ms, load = self.latency.estimate(cluster, request.prompt_tokens)
        grams = fixed_g + prompt_g * request.prompt_tokens + completion_g * completion
        return Option(cluster, ttft_ms, grams, g_per_kwh, load)

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
        if self._green.kv_affinity and request.prefix_key:
            warm = self._affinity.get(request.prefix_key)
            limit = best + abs(best) * self._green.kv_affinity_tolerance
            for option, score in zip(pool, scores, strict=True):
                if option.cluster.name == warm and score <= limit:
                    return option, "kv_cache_affinity"
        limit = best + abs(best) * self._green.near_equal_tolerance
        near = [o for o, s in zip(pool, scores, strict=True) if s <= limit]
        return self._least_loaded_option(near), reason

    def _least_loaded_option(self, near: Sequence[Option]) -> Option:
        if len(near) == 1:
            return near[0]
        lowest = min(o.load for o in near)
        tied = [o for o in near if o.load == lowest]
        return tied[next(self._counter) % len(tied)]

    def _decide(self, chosen: Option, reason: str, request: RouteRequest, fastest: Option) -> Decision:
        if self._green.kv_affinity:
            self._affinity.remember(request.prefix_key, chosen.cluster.name)
        if request.exclude:
            reason = "failover"
        return Decision(chosen.cluster, reason, fastest.cluster)

    def _cooling_fallback(self, request: RouteRequest, now: float) -> Decision:
        """Every cluster serving the model is cooling down after failures: rather than refuse, try the one
        whose cool-down ends first (one blip must not take a model down for the whole cool-down)."""
        cooling = [c for c in self._fleet.serving(request.model) if c.name not in request.exclude]
        if not cooling:
            raise NoRouteError(f"no available cluster serves model {request.model!r}")
        chosen = min(cooling, key=lambda c: c.cooldown_until)
        return Decision(chosen, "failover" if request.exclude else "cooldown_fallback")

    def _least_loaded(self, candidates: list[ClusterState], request: RouteRequest) -> Decision:
        least = min(c.in_flight for c in candidates)
        tied = [c for c in candidates if c.in_flight == least]
        chosen = tied[next(self._counter) % len(tied)]
        return Decision(chosen, "failover" if request.exclude else "least_loaded")

    # After the request.

    def observe(self, capture: Capture) -> None:
        """Feed a finished request's token counts and TTFT to the latency model (typical sizes, base TTFT)."""
        if capture.cluster and capture.status == "ok":
            self.latency.observe_tokens(capture.cluster, capture.prompt_tokens, capture.completion_tokens)
            if capture.ttft_s is not None and capture.attempts <= 1:  # a failover's TTFT includes the retry
                self.latency.observe_ttft(capture.cluster, capture.ttft_s * 1000.0, capture.prompt_tokens)

    def avoided_carbon_g(self, capture: Capture, energy_j: float) -> tuple[float, float]:
        """(green_routing, kv_cache) grams avoided by this request's placement; never raises, never negative.

        green_routing: what the latency-first choice would have emitted for the same tokens minus what the
        chosen cluster emitted (the measured ``energy_j`` scaled by the two clusters' expected-energy ratio);
        clamped at 0, because Prometheus counters never go down and a slower-and-dirtier choice (a fallback
        or cache hit) is not "negative avoidance" of green routing. kv_cache: cached prompt tokens × prefill
        energy per token on the chosen cluster × PUE × intensity.
        """
        try:
            green = self._green_avoided_g(capture, energy_j)
            return _non_negative(green), _non_negative(self._kv_avoided_g(capture))
        except Exception:
            return (0.0, 0.0)

    def _green_avoided_g(self, capture: Capture, energy_j: float) -> float:
        other = capture.counterfactual_cluster
        if not other or other == capture.cluster or not self.carbon.knows(capture.cluster):
            return 0.0
        tokens = (capture.model, capture.prompt_tokens, capture.completion_tokens)
        chosen_expected = self.carbon.expected_g(capture.cluster, *tokens)
        other_expected = self.carbon.expected_g(other, *tokens)
        if energy_j > 0 and chosen_expected > 0:
            actual = energy_j * self.carbon.grams_per_j(capture.cluster)
            return actual * other_expected / chosen_expected - actual
        return other_expected - chosen_expected

    def _kv_avoided_g(self, capture: Capture) -> float:
        if capture.cached_tokens <= 0 or not capture.cluster:
            return 0.0
        per_token = self.carbon.coefficients(capture.cluster, capture.model).prompt_j_per_token
        return capture.cached_tokens * per_token * self.carbon.grams_per_j(capture.cluster)


def _by_ttft(option: Option) -> float:
    return option.ttft_ms


def _non_negative(grams: float) -> float:
    return grams if math.isfinite(grams) and grams > 0 else 0.0
