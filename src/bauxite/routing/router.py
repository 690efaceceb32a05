"""Cluster choice for each request: a pure function of in-memory snapshots, cheap enough for the hot path.

Order of work: candidates (serving the model, not excluded, not cooling down) → latency filter
(absolute SLO and/or slack over the fastest) → threshold filter → priority score → spread among near-equal
scores, or keep a warm prefix cache within tolerance. Route reasons are a fixed set (``REASONS``) because they
become Prometheus label values.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..clusters import ClusterState, Fleet, cooldown_s, ewma
from ..intensity.base import Intensity
from ..records import Capture, Endpoint
from ..tasks import cancel
from .affinity import PrefixAffinity
from .config import GreenRoutingSettings, LatencySettings
from .latency import LatencyModel
from .policies import POLICIES, RoutingPolicy
from .server_times import ServerCounters
from .snapshot import CarbonSnapshot, EnergyModel, IntensitySnapshots
from .stats import ScrapeFactory, StatsScraper

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


RATE_ALPHA = 0.5  # weight of one scrape interval in the other clients' arrival rate
WAIT_REFRESH_S = 0.05  # a cluster's predicted wait is recomputed at least this often (see _refresh_waits)


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
        scrapes: ScrapeFactory = StatsScraper,
    ) -> None:
        self._fleet = fleet
        self._green = green or GreenRoutingSettings()
        self._latency_settings = latency or LatencySettings()
        self._clock = clock
        self.latency = LatencyModel(self._latency_settings, rtt_ms)
        self.carbon = CarbonSnapshot(fleet, intensity or _NoIntensity(), energy or _NoEnergy())
        self._policy: RoutingPolicy = POLICIES[self._green.priority](self._green)
        self._affinity = PrefixAffinity(self._green.kv_affinity_entries)
        self._turn = itertools.count()  # rotates ties among equally loaded near-equal choices
        self._turn_cf = itertools.count()  # the same for the latency-first counterfactual
        self._near = 1.0 + self._green.near_equal_tolerance
        self._refresher: asyncio.Task[None] | None = None
        self._now = 0.0  # the clock at the current decision
        # Everything the decision reads, as lists in fleet order (``_at``: cluster name → index), written
        # only by the feedback methods below and ``_refresh_waits``.
        self._states = list(fleet.clusters)
        self._at = {c.name: i for i, c in enumerate(self._states)}
        self._serving: dict[tuple[str, str], list[tuple[int, ClusterState]]] = {}
        n = len(self._states)
        # This replica's own view since its last scrape: requests it has running at each cluster, and its
        # dispatches minus completions since that scrape (so a slot freed since then is not counted busy).
        self._own = [0.0] * n
        self._since = [0.0] * n
        self._scraped = [0.0] * n  # running + waiting at the last scrape
        # Other replicas' (or sibling workers') requests running at each cluster, from shared state.
        self._peers = [0.0] * n
        # Other clients' requests in the last scrape, when it was taken (router clock), and their arrival rate
        # per second (-1 while unknown): they keep arriving and finishing unseen until the next scrape, so
        # the wait prediction widens with the scrape's age.
        self._others_n = [0.0] * n
        self._others_at = [0.0] * n
        self._others_rate = [-1.0] * n
        # Derived, per cluster: round trip + idle TTFT and prefill ms per token (the latency model's), and
        # the predicted waits and load, recomputed by ``_refresh_waits`` when ``_dirty`` or stale.
        self._head_ms = [0.0] * n
        self._per_token_ms = [0.0] * n
        self._wait_ms = [0.0] * n  # at the configured quantile
        self._typical_wait_ms = [math.nan] * n  # the mean, for the SLO fallback (NaN: not worked out)
        self._load = [0.0] * n
        self._dirty: set[int] = set()
        self._waits_at = -math.inf
        # For the others' rate: at the previous scrape (time, requests finished there, depth, our dispatches).
        self._previous_scrape: dict[str, tuple[float, float, int, int]] = {}
        self._dispatched_total: dict[str, int] = {}
        # Scrapes each cluster itself by default; a worker under ``serve --workers`` reads its hub's instead.
        self._scraper = scrapes(fleet, self.scraped, self._latency_settings)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        fleet: Fleet,
        intensity: IntensitySnapshots,
        energy: EnergyModel,
        scrapes: ScrapeFactory = StatsScraper,
    ) -> Router:
        green, latency = settings.enterprise.green_routing, settings.latency
        return cls(fleet, intensity, energy, green, latency, scrapes=scrapes)

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
        await cancel(task)
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

    # The decision path: plain loops over per-cluster lists in fleet order (``_at`` maps names to indices).

    def choose(self, request: RouteRequest) -> Decision:
        now = self._now = self._clock()
        candidates = self._candidates(request, now)
        if not candidates:
            return self._cooling_fallback(request, now)
        if not self._green.enabled:
            own, peers = self._own, self._peers
            return self._least_loaded([(i, own[i] + peers[i]) for i in candidates], request)
        self._refresh_waits(now)
        prompt = request.prompt_tokens
        waits, heads, per_token = self._wait_ms, self._head_ms, self._per_token_ms
        ttft = [(i, waits[i] + heads[i] + per_token[i] * prompt) for i in candidates]
        fastest_ms = min(t for _, t in ttft)
        limit = self._latency_limit(request, fastest_ms)
        feasible = ttft if limit == math.inf else [(i, t) for i, t in ttft if t <= limit]
        if not feasible:
            return self._slo_fallback(candidates, request)
        intensity = self.carbon.grams_arrays(request.model)[3]
        threshold = self._green.threshold_gco2
        pool = [(i, t) for i, t in feasible if intensity[i] <= threshold]
        reason = self._policy.reason
        if not pool:
            if self._green.strict:
                raise self._strict_refusal(request, "within its latency requirement")
            pool, reason = feasible, "threshold_fallback"
        chosen, reason = self._pick(pool, request, reason)
        loads, near_ms = self._load, fastest_ms * self._near
        counterfactual = self._least_loaded_of(
            [(i, loads[i]) for i, t in ttft if t <= near_ms], self._turn_cf
        )
        return self._decide(chosen, reason, request, counterfactual)

    def _candidates(self, request: RouteRequest, now: float) -> list[int]:
        """Indices of the clusters serving the model through the endpoint, not excluded, not cooling down."""
        key = (request.model, request.endpoint)
        serving = self._serving.get(key)
        if serving is None:
            serving = self._serving[key] = [
                (self._at[c.name], c) for c in self._fleet.serving(request.model, request.endpoint)
            ]
        exclude = request.exclude
        if exclude:
            return [i for i, c in serving if c.cooldown_until <= now and c.settings.name not in exclude]
        return [i for i, c in serving if c.cooldown_until <= now]

    def _refresh_waits(self, now: float) -> None:
        """Bring the per-cluster predicted waits up to date: those whose state or profile changed since the
        last decision, and all of them once ``WAIT_REFRESH_S`` has passed (only the scrape's age moves a
        wait otherwise, and in that time by a small fraction of one request's service time)."""
        changed = self.latency.changed()
        if changed is None or now - self._waits_at >= WAIT_REFRESH_S:
            self._waits_at = now
            dirty: Iterable[int] = range(len(self._states))
            self._dirty.clear()
        else:
            for name in changed:
                i = self._at.get(name)
                if i is not None:
                    self._dirty.add(i)
            if not self._dirty:
                return
            dirty, self._dirty = self._dirty, set()
        for i in dirty:
            state = self._states[i]
            head_ms, per_token_ms, _, _ = self.latency.fixed(state)
            self._head_ms[i], self._per_token_ms[i] = head_ms, per_token_ms
            self._wait_ms[i], self._load[i] = self._wait(i, False)
            self._typical_wait_ms[i] = math.nan  # worked out only if the SLO fallback needs it

    def _wait(self, i: int, typical: bool) -> tuple[float, float]:
        """(predicted queue wait ms, load) at cluster ``i`` as this replica sees it now."""
        depth = max(self._own[i] + self._peers[i], self._scraped[i] + self._since[i])
        age_s = self._now - self._others_at[i]
        return self.latency.wait(
            self._states[i], depth, self._others_n[i], age_s, self._others_rate[i], typical
        )

    def _slo_fallback(self, candidates: list[int], request: RouteRequest) -> Decision:
        """No cluster meets the requirement at the predicted quantile: take the one with the lowest *typical*
        TTFT, the likeliest to make it (a busy cluster's high quantile may be slower than a far idle one's
        certain miss, while it usually is not). The counterfactual does the same over every candidate, so
        nothing is claimed unless strict mode forced a greener one. Strict mode only falls back among
        clusters under the threshold: a latency miss never licenses a dirtier grid."""
        prompt, heads, per_token, waits = (
            request.prompt_tokens,
            self._head_ms,
            self._per_token_ms,
            self._typical_wait_ms,
        )
        for i in candidates:
            if math.isnan(waits[i]):
                waits[i] = self._wait(i, True)[0]
        typical = {i: heads[i] + per_token[i] * prompt + waits[i] for i in candidates}
        likeliest = min(candidates, key=typical.__getitem__)
        if self._green.strict:
            intensity = self.carbon.grams_arrays(request.model)[3]
            green = [i for i in candidates if self._under_threshold(intensity[i])]
            if not green:
                raise self._strict_refusal(request, "among clusters that could take it")
            return self._decide(min(green, key=typical.__getitem__), "slo_fallback", request, likeliest)
        return self._decide(likeliest, "slo_fallback", request, likeliest)

    def _under_threshold(self, g_per_kwh: float) -> bool:
        return g_per_kwh <= self._green.threshold_gco2

    def _strict_refusal(self, request: RouteRequest, where: str) -> NoRouteError:
        return NoRouteError(
            f"no cluster for model {request.model!r} meets threshold_gco2 "
            f"{self._green.threshold_gco2:g} gCO2eq/kWh {where} (strict mode)"
        )

    def _latency_limit(self, request: RouteRequest, fastest_ms: float) -> float:
        """Highest predicted TTFT (ms) this request accepts: its SLO, and/or a slack over the fastest."""
        slo, slack = self._latency_settings.requirement(request.model)
        if request.max_latency_ms is not None:
            slo = request.max_latency_ms
        limit = math.inf if slo is None else slo
        if slack is not None:
            limit = min(limit, fastest_ms + slack)
        return limit

    def _pick(self, pool: list[tuple[int, float]], request: RouteRequest, reason: str) -> tuple[int, str]:
        """The policy's best in ``pool`` ((index, predicted TTFT ms) pairs), spread by load among near-equal
        scores; then the warm prefix cache instead, if it costs at most the tolerance."""
        if len(pool) == 1:
            return pool[0][0], reason
        fixed_g, prompt_g, completion_g, _ = self.carbon.grams_arrays(request.model)
        prompt = request.prompt_tokens
        completion = request.max_tokens or self.latency.typical_completion_tokens
        grams = [fixed_g[i] + prompt_g[i] * prompt + completion_g[i] * completion for i, _ in pool]
        scores = self._policy.scores(grams, [t for _, t in pool])
        best = min(scores)
        limit = best + abs(best) * self._green.near_equal_tolerance
        loads = self._load
        near = [(i, loads[i]) for (i, _), score in zip(pool, scores, strict=True) if score <= limit]
        chosen = self._least_loaded_of(near, self._turn)
        if self._green.kv_affinity and request.prefix_key:
            warm = self._at.get(self._affinity.get(request.prefix_key) or "", -1)
            if warm >= 0 and warm != chosen:
                # Move to the warm cache only while that costs at most the tolerance, in carbon against the
                # choice made without it and in the policy's own score; labelled only when it moved.
                tolerance = self._green.kv_affinity_tolerance
                chosen_g = grams[[i for i, _ in pool].index(chosen)]
                for (i, _), g, score in zip(pool, grams, scores, strict=True):
                    if (
                        i == warm
                        and g <= chosen_g * (1.0 + tolerance)
                        and score <= best + abs(best) * tolerance
                    ):
                        return warm, "kv_cache_affinity"
        return chosen, reason

    def _least_loaded_of(self, near: list[tuple[int, float]], turn: Iterator[int]) -> int:
        """The index with the lowest load among (index, load) pairs (non-empty), rotating among ties."""
        if len(near) == 1:
            return near[0][0]
        lowest = min(load for _, load in near)
        tied = [i for i, load in near if load == lowest]
        return tied[next(turn) % len(tied)] if len(tied) > 1 else tied[0]

    def _decide(self, chosen: int, reason: str, request: RouteRequest, counterfactual: int) -> Decision:
        state = self._states[chosen]
        if self._green.kv_affinity:
            self._affinity.remember(request.prefix_key, state.settings.name)
        if request.exclude:
            reason = "failover"
        return Decision(state, reason, self._states[counterfactual])

    def _cooling_fallback(self, request: RouteRequest, now: float) -> Decision:
        """Every cluster serving the model is cooling down after failures: rather than refuse, try the one
        whose cool-down ends first (one blip must not take a model down for the whole cool-down)."""
        serving = self._fleet.serving(request.model, request.endpoint)
        cooling = [c for c in serving if c.name not in request.exclude]
        if not cooling:
            raise NoRouteError(f"no available cluster serves model {request.model!r}")
        if self._green.enabled and self._green.strict:
            intensity = self.carbon.grams_arrays(request.model)[3]
            cooling = [c for c in cooling if self._under_threshold(intensity[self._at[c.name]])]
            if not cooling:
                raise self._strict_refusal(request, "among clusters cooling down after failures")
        chosen = min(cooling, key=lambda c: c.cooldown_until)
        return Decision(chosen, "failover" if request.exclude else "cooldown_fallback")

    def _least_loaded(self, loads: list[tuple[int, float]], request: RouteRequest) -> Decision:
        chosen = self._states[self._least_loaded_of(loads, self._turn)]
        return Decision(chosen, "failover" if request.exclude else "least_loaded")

    # Feedback: the proxy and the simulator call these, and nothing else writes the router's view.

    def dispatched(self, cluster: str) -> None:
        """An attempt was sent to ``cluster``."""
        i = self._at[cluster]
        self._own[i] += 1.0
        self._since[i] += 1.0
        self._dirty.add(i)
        self._dispatched_total[cluster] = self._dispatched_total.get(cluster, 0) + 1
        self._states[i].in_flight += 1

    def first_token(self, cluster: str, ttft_ms: float, prompt_tokens: int) -> None:
        """The first token of a clean (not retried) attempt arrived after ``ttft_ms``, client side."""
        self.latency.observe_ttft(cluster, ttft_ms, prompt_tokens)

    def finished(self, cluster: str, outcome: Outcome) -> None:
        """An attempt ended (any way). Frees its slot in this replica's view; a success ends a cool-down."""
        i = self._at[cluster]
        self._own[i] = max(self._own[i] - 1.0, 0.0)
        self._since[i] -= 1.0
        self._dirty.add(i)
        state = self._states[i]
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
        i = self._at.get(cluster)
        if i is not None:
            count = max(int(in_flight), 0)
            self._peers[i] = count
            self._dirty.add(i)
            self._states[i].peer_in_flight = count

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
        i = self._at[cluster]
        state = self._states[i]
        state.queue_running, state.queue_waiting = running, waiting
        self._scraped[i] = running + waiting
        self._since[i] = 0.0
        self._dirty.add(i)
        now = self._clock()
        others = max(running + waiting - int(self._own[i]), 0)
        self._others_n[i], self._others_at[i] = others, now
        self._others_rate[i] = self._others_rate_now(cluster, now, running + waiting, server)
        self.latency.observe_scrape(cluster, running, waiting, elapsed_ms, server)

    def others(self, cluster: str) -> tuple[int, float, float]:
        """(other clients' requests at the last scrape, its router-clock time, their arrivals per s or -1)."""
        i = self._at[cluster]
        return int(self._others_n[i]), float(self._others_at[i]), float(self._others_rate[i])

    def _others_rate_now(self, cluster: str, now: float, depth: int, server: ServerCounters | None) -> float:
        """Other clients' arrivals per second at ``cluster``: requests that arrived there between two scrapes
        (finished + the change in depth) minus this replica's own dispatches; -1 while unknown (no request
        counter exported, or a first scrape)."""
        old_rate = float(self._others_rate[self._at[cluster]])
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
        """Requests at ``cluster`` as this replica knows: the last scrape plus its own dispatches and
        completions since, never fewer than its own (and its peers') running requests."""
        i = self._at[cluster]
        return int(max(self._own[i] + self._peers[i], self._scraped[i] + self._since[i]))
