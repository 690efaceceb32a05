"""The event loop: feed each request to a policy, queue it on the chosen cluster, keep score.

Between arrivals the loop replays what each client site's gateway would observe, through the router's own
feedback API (as the proxy calls it): its dispatches, first tokens of its requests, its finished requests,
and its own periodic ``/metrics`` scrape of every cluster (running and waiting counts, seconds old by the
time they are used). Routers read only that, never the future, and never another site's in-flight requests.
"""

from __future__ import annotations

import heapq
from array import array
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from ..routing.server_times import ServerCounters
from ..units import carbon_g
from .bound import Bound, lower_bound
from .config import SimConfig
from .model import ClusterQueue, SimIntensity, intensity_table
from .policies import POLICY_FACTORIES, REJECTED, SimClock, SimPolicy, World, build_fleet
from .workload import SimRequest, generate

_STARTED, _FIRST_TOKEN, _FINISHED = 0, 1, 2


@dataclass
class PolicyResult:
    name: str
    n_clusters: int
    hours: int
    carbon_g: float = 0.0
    avoided_g: float = 0.0  # net green-routing grams avoided, as the gateway would have counted them
    requests: int = 0
    rejected: int = 0
    slo_violations: int = 0
    under_threshold: int = 0
    ttft_ms: array[float] = field(default_factory=lambda: array("d"))
    reasons: Counter[str] = field(default_factory=Counter)
    hourly: list[array[int]] = field(default_factory=list)  # per cluster: requests placed per hour

    def __post_init__(self) -> None:
        self.hourly = [array("i", bytes(4 * self.hours)) for _ in range(self.n_clusters)]

    def p95_ttft_ms(self) -> float:
        if not self.ttft_ms:
            return 0.0
        ordered = sorted(self.ttft_ms)
        return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]

    def summary(self) -> dict[str, float | int]:
        served = max(self.requests, 1)
        return {
            "carbon_kg": round(self.carbon_g / 1000.0, 6),
            "requests": self.requests,
            "slo_violations": self.slo_violations,
            "p95_ttft_ms": round(self.p95_ttft_ms(), 3),
            "share_under_threshold": round(self.under_threshold / served, 6),
            "rejected": self.rejected,
            "avoided_net_kg": round(self.avoided_g / 1000.0, 6),
        }


class _Run:
    """One policy over the whole period."""

    def __init__(self, config: SimConfig, table: list[list[float]], name: str) -> None:
        self.config = config
        self.table = table
        clock = SimClock()
        self.world = World(
            config,
            build_fleet(config),
            [ClusterQueue(c) for c in config.clusters],
            table,
            SimIntensity(config, table),
            clock,
            [[g.rtt_ms[c.name] for c in config.clusters] for g in config.clients],
        )
        self.policy: SimPolicy = POLICY_FACTORIES[name](self.world)
        n = len(config.clusters)
        self.waiting = [0] * n  # the truth, as each cluster's /metrics would report it
        self.in_system = [0] * n
        # Each cluster's /metrics histogram counters (prefill s, prompt tokens, ITL s, and their counts),
        # recorded when a request finishes, as vLLM does.
        self.counters = [[0.0] * 4 for _ in range(n)]
        self.events: list[tuple[float, int, int, int, int, int, int]] = []
        self.seq = 0
        # Each client site's gateway scrapes on its own phase, so their views are stale by different amounts.
        interval = config.scrape_interval_s
        groups = len(config.clients)
        self.next_scrape = [interval * g / groups for g in range(groups)]
        self.threshold = config.routing.green_routing.threshold_gco2
        self.result = PolicyResult(name, n, config.period.days * 24)

    def run(self) -> PolicyResult:
        for request in generate(self.config):
            self.step(request)
        return self.result

    def _advance(self, now: float) -> None:
        events = self.events
        while events and events[0][0] <= now:
            _, _, kind, k, a, b, c = heapq.heappop(events)
            if kind == _STARTED:
                self.waiting[k] -= 1
            elif kind == _FIRST_TOKEN:
                # a = ttft in µs (ints keep the event tuples homogeneous), b = prompt tokens, c = client group
                self.policy.first_token(k, c, a / 1000.0, b)
            else:
                self.in_system[k] -= 1
                self._record(k, a, b)
                self.policy.finished(k, c, a, b)
        for group, due in enumerate(self.next_scrape):
            if now >= due:
                hour = int(now // self.config.period.seconds_per_hour)
                for k, total in enumerate(self.in_system):
                    if self.config.outages and self.config.down(k, hour):
                        continue  # a refused scrape leaves the previous figures in place
                    running, waiting = total - self.waiting[k], self.waiting[k]
                    self.policy.scraped(k, group, running, waiting, self._server(k))
                interval = self.config.scrape_interval_s
                self.next_scrape[group] = due + interval * ((now - due) // interval + 1.0)

    def _record(self, k: int, prompt_tokens: int, completion_tokens: int) -> None:
        counters, queue = self.counters[k], self.world.queues[k]
        counters[0] += queue.prefill_ms(prompt_tokens) / 1000.0
        counters[1] += 1.0
        counters[2] += prompt_tokens
        counters[3] += queue.config.itl_ms / 1000.0 * completion_tokens

    def _server(self, k: int) -> ServerCounters:
        prefill_s, requests, prompt_tokens, itl_s = self.counters[k]
        tokens = itl_s * 1000.0 / self.world.queues[k].config.itl_ms if itl_s > 0.0 else 0.0
        return ServerCounters(prefill_s, requests, prompt_tokens, requests, itl_s, tokens)

    def _push(self, at: float, kind: int, k: int, a: int, b: int, c: int = 0) -> None:
        self.seq += 1
        heapq.heappush(self.events, (at, self.seq, kind, k, a, b, c))

    def step(self, request: SimRequest) -> None:
        now = request.t
        self.world.clock.now = now
        self._advance(now)
        self.world.intensity.hour = request.hour
        k, reason = self.policy.choose(request)
        refused_ms = 0.0
        if k != REJECTED and self.config.outages and self.config.down(k, request.hour):
            # Connection refused after one round trip; the gateway cools the cluster down and fails over.
            refused_ms = self.world.rtt_ms[request.group][k]
            self.policy.failed(k, request.group)
            k, reason = self.policy.choose(request, exclude=k)
            if k != REJECTED and self.config.down(k, request.hour):
                self.policy.failed(k, request.group)  # the retry failed too: the client gets a 503
                k = REJECTED
        result = self.result
        result.reasons[reason] += 1
        if k == REJECTED:
            result.rejected += 1
            return
        queue = self.world.queues[k]
        start, prefill_ms, finish = queue.admit(now, request.prompt_tokens, request.completion_tokens)
        ttft_ms = refused_ms + self.world.rtt_ms[request.group][k] + (start - now) * 1000.0 + prefill_ms
        self.in_system[k] += 1
        self.policy.dispatched(k, request.group)
        if start > now:
            self.waiting[k] += 1
            self._push(start, _STARTED, k, 0, 0)
        ttft_us = int(ttft_ms * 1000)
        self._push(now + ttft_ms / 1000.0, _FIRST_TOKEN, k, ttft_us, request.prompt_tokens, request.group)
        self._push(finish, _FINISHED, k, request.prompt_tokens, request.completion_tokens, request.group)
        g_per_kwh = self.table[k][request.hour]
        energy_j = queue.energy_j(request.prompt_tokens, request.completion_tokens)
        result.carbon_g += carbon_g(energy_j, g_per_kwh, queue.config.pue)
        result.avoided_g += self.policy.avoided_g(request, k, reason, energy_j)
        result.requests += 1
        result.ttft_ms.append(ttft_ms)
        if ttft_ms > (request.max_latency_ms or self.config.slo_ttft_ms):
            result.slo_violations += 1
        if g_per_kwh <= self.threshold:
            result.under_threshold += 1
        result.hourly[k][request.hour] += 1


@dataclass
class SimulationResult:
    config: SimConfig
    table: list[list[float]]
    policies: dict[str, PolicyResult]
    oracle: PolicyResult  # the greedy hindsight baseline (JSON key "oracle" kept for compatibility)
    bound: Bound

    def as_json(self) -> dict[str, object]:
        return {
            "policies": {name: r.summary() for name, r in self.policies.items()},
            "oracle": self.oracle.summary(),
            "bound": self.bound.summary(),
        }


def simulate(config: SimConfig, progress: Callable[[str], None] | None = None) -> SimulationResult:
    """Run every configured policy and the greedy hindsight baseline over the same stream; solve the bound."""
    table = intensity_table(config)
    results: dict[str, PolicyResult] = {}
    for name in (*config.policies, "oracle"):
        if progress is not None:
            progress(name)
        results[name] = _Run(config, table, name).run()
    oracle = results.pop("oracle")
    if progress is not None:
        progress("bound")
    return SimulationResult(config, table, results, oracle, lower_bound(config, table))
