"""Predicted time to first token per cluster, from configuration, observations and current queue depth.

predicted_ttft_ms = rtt + prefill(prompt) + queue_wait, where

- rtt: per-cluster latency config, else the cluster's ``rtt_ms``, else the measured scrape round trip,
  else a prior;
- prefill = base + per-token rate × prompt tokens; the base is configured, or learned from the proxy's
  observed TTFT (which already includes network and typical queueing, so the learned value errs on the
  slow side);
- queue_wait = a high quantile (``queue_wait_quantile``) of the wait behind the requests ahead. A full cluster
  frees slots at roughly random moments (many independent requests finishing), about one per
  mean service time / slots, so the wait behind k others is close to Erlang(k) with that mean gap.
  Slots are the configured ``max_concurrency``, else learned from the cluster's own metrics (requests running
  while others wait), else unknown, in which case only the scraped waiting count counts as "ahead".

Everything here is plain arithmetic on in-memory values. The wait does not depend on the prompt, so the router
keeps each cluster's (``wait``) until something changes it; a decision adds only the prefill per candidate.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from statistics import NormalDist

from ..clusters import ClusterState
from .config import ClusterLatencySettings, LatencySettings
from .server_times import ServerCounters, ServerTimes

_NOTHING: frozenset[str] = frozenset()
TOKEN_EWMA_ALPHA = 0.05  # token means move slowly: they describe the workload, not the moment
RTT_EWMA_ALPHA = 0.3
TTFT_EWMA_ALPHA = 0.2  # ITL samples: recent behaviour, smoothed
TTFT_RISE = 0.3  # how fast the learned TTFT follows samples above it (queueing now: tell the next request)
_NO_OVERRIDES = ClusterLatencySettings()


@dataclass(slots=True)
class _Profile:
    """One cluster's configured figures (None = learn or default) and what has been observed about it."""

    fixed_rtt_ms: float | None
    ttft_ms: float | None
    per_token_ms: float
    itl_ms: float | None
    max_concurrency: int | None
    measured_rtt_ms: float | None = None
    learned_slots: int | None = None
    mean_prompt_tokens: float = 0.0
    mean_completion_tokens: float = 0.0
    learned_ttft_ms: float | None = None  # base TTFT learned from this gateway's own observations
    learned_itl_ms: float | None = None
    fastest_ttft_ms: float | None = None  # lowest base TTFT sample: the idle figure, queueing aside
    fixed_per_token: bool = False  # prefill ms per token configured (else learned from the cluster's metrics)
    server: ServerTimes = field(default_factory=ServerTimes)
    saw_cluster_settings: bool = False  # False when created by an observation before any decision


class LatencyModel:
    def __init__(self, settings: LatencySettings, rtt_ms: Mapping[str, float] | None = None) -> None:
        self._settings = settings
        # Explicit per-router round trips (e.g. one gateway per client site in the simulator) beat all else.
        self._rtt_override = dict(rtt_ms or {})
        self._profiles: dict[str, _Profile] = {}
        self._quantile = ErlangQuantile(settings.queue_wait_quantile)
        self._z = NormalDist().inv_cdf(settings.queue_wait_quantile)
        # A cluster never observed gets the mean idle TTFT of those that were (same fleet, likely similar
        # hardware), not the configured prior: otherwise an untried cluster looks slower than a tried one
        # only because it was not tried, and a latency-first counterfactual would never pick it.
        self._fleet_base_ms = settings.default_ttft_ms
        self._fixed: dict[str, tuple[float, float, int, float]] = {}  # by cluster: see ``fixed``
        self._changed: set[str] = set()  # clusters whose ``_fixed`` entry was dropped since ``changed()``
        self._all_changed = True  # nothing was read yet
        # Mean completion length over every cluster: what a request without max_tokens is expected to
        # generate. Expected grams scale with it (decode energy per token differs by cluster), so the
        # configured prior must give way to the workload's real mean, not stay at it.
        self.typical_completion_tokens = float(settings.typical_completion_tokens)

    def _profile(self, state: ClusterState) -> _Profile:
        found = self._profiles.get(state.settings.name)
        if found is None:
            found = self._new_profile(state.settings.name, state.settings.rtt_ms)
        if not found.saw_cluster_settings:
            found.saw_cluster_settings = True
            if found.fixed_rtt_ms is None:
                found.fixed_rtt_ms = state.settings.rtt_ms
        return found

    def _new_profile(self, name: str, cluster_rtt_ms: float | None) -> _Profile:
        over = self._settings.clusters.get(name, _NO_OVERRIDES)
        fixed_rtt = self._rtt_override.get(name)
        if fixed_rtt is None:
            fixed_rtt = over.rtt_ms if over.rtt_ms is not None else cluster_rtt_ms
        per_1k = over.prefill_ms_per_1k_tokens
        profile = _Profile(
            fixed_rtt_ms=fixed_rtt,
            ttft_ms=over.ttft_ms,
            per_token_ms=(per_1k if per_1k is not None else self._settings.prefill_ms_per_1k_tokens) / 1000.0,
            itl_ms=over.itl_ms,
            max_concurrency=over.max_concurrency,
            fixed_per_token=per_1k is not None,
            mean_completion_tokens=float(self._settings.typical_completion_tokens),
        )
        self._profiles[name] = profile
        return profile

    def _observed(self, name: str) -> _Profile:
        found = self._profiles.get(name)
        return found if found is not None else self._new_profile(name, None)

    def _rtt(self, p: _Profile) -> float:
        if p.fixed_rtt_ms is not None:
            return p.fixed_rtt_ms
        return p.measured_rtt_ms if p.measured_rtt_ms is not None else self._settings.default_rtt_ms

    def rtt_ms(self, state: ClusterState) -> float:
        return self._rtt(self._profile(state))

    def slots(self, state: ClusterState) -> int | None:
        return _slots(self._profile(state))

    def predict_ttft_ms(self, state: ClusterState, prompt_tokens: int, depth: int = 0) -> float:
        return self.estimate(state, prompt_tokens, depth)[0]

    def estimate(
        self,
        state: ClusterState,
        prompt_tokens: int,
        depth: int = 0,
        others: int = 0,
        age_s: float = 0.0,
        others_rate: float = -1.0,
        typical: bool = False,
    ) -> tuple[float, float]:
        """(predicted TTFT in ms, load) of one cluster: ``fixed`` + prefill of the prompt + ``wait``."""
        head_ms, per_token_ms, _, _ = self.fixed(state)
        wait_ms, load = self.wait(state, depth, others, age_s, others_rate, typical)
        return head_ms + per_token_ms * prompt_tokens + wait_ms, load

    def wait(
        self,
        state: ClusterState,
        depth: float = 0,
        others: float = 0,
        age_s: float = 0.0,
        others_rate: float = -1.0,
        typical: bool = False,
    ) -> tuple[float, float]:
        """(predicted queue wait in ms, load) at ``state``'s cluster, the same for every prompt.

        ``depth`` is the requests at the cluster as the router's replica knows them (its last scrape plus its
        own dispatches and completions since). ``others`` of them were other clients' at that scrape,
        ``age_s`` ago: their arrivals and completions since are unseen, two roughly Poisson streams —
        arrivals at ``others_rate`` per second (measured between scrapes; when unknown, assumed equal to
        their completions), completions at others / mean service time. The depth is then expected to have
        moved by arrivals − completions, with their sum as variance; the prediction takes the same quantile
        of that spread as of the wait, so queueing is counted before every slot looks full. Load is
        occupancy (a fraction of slots when known), used to spread near-equal choices. ``typical``: the
        mean wait instead of the quantile (to find the likeliest cluster when none meets the requirement).
        """
        _, _, slots, service_ms = self.fixed(state)
        if slots:
            wait = 0.0
            if (others or others_rate > 0.0) and age_s > 0.0 and service_ms > 0.0:
                finishing = min(min(others, slots) * age_s * 1000.0 / service_ms, others)
                arriving = others_rate * age_s if others_rate >= 0.0 else finishing
                wait = self._uncertain_wait_ms(
                    depth + arriving - finishing, slots, 0.0 if typical else arriving + finishing, service_ms
                )
            elif depth >= slots:
                ahead = int(depth) - slots + 1
                wait = (ahead if typical else self._quantile.gaps(ahead)) * service_ms / slots
            return wait, depth / slots
        if state.queue_waiting > 0:
            waiting, running = state.queue_waiting, max(state.queue_running, 1)
            return (waiting if typical else self._quantile.gaps(waiting)) * service_ms / running, float(depth)
        return 0.0, float(depth)

    def fixed(self, state: ClusterState) -> tuple[float, float, int, float]:
        """(round trip + idle base TTFT ms, prefill ms per prompt token, slots or 0, mean service ms): what
        a prediction needs that changes only with an observation, cached until one arrives."""
        found = self._fixed.get(state.settings.name)
        return found if found is not None else self._fix(state)

    def changed(self) -> AbstractSet[str] | None:
        """Clusters whose ``fixed`` figures changed since the last call (None: maybe all), then forget."""
        if self._all_changed:
            self._all_changed = False
            self._changed.clear()
            return None
        if not self._changed:
            return _NOTHING
        found, self._changed = self._changed, set()
        return found

    def _fix(self, state: ClusterState) -> tuple[float, float, int, float]:
        p = self._profile(state)
        if p.ttft_ms is not None:
            base = p.ttft_ms
        elif p.learned_ttft_ms is not None:
            base = p.learned_ttft_ms
        elif p.server.base_ms is not None:
            base = p.server.base_ms
        else:
            base = self._fleet_base_ms
        fixed = (self._rtt(p) + base, p.per_token_ms, _slots(p) or 0, self._service_ms(p, base))
        self._fixed[state.settings.name] = fixed
        return fixed

    def _service_ms(self, p: _Profile, base: float) -> float:
        """Mean time a request holds a slot: prefill of the mean prompt, then the mean completion."""
        if p.itl_ms is not None:
            itl = p.itl_ms
        elif p.learned_itl_ms is not None:
            itl = p.learned_itl_ms
        elif p.server.itl_ms is not None:
            itl = p.server.itl_ms
        else:
            itl = self._settings.default_itl_ms
        return base + p.per_token_ms * p.mean_prompt_tokens + itl * p.mean_completion_tokens

    def _uncertain_wait_ms(self, depth: float, slots: int, depth_var: float, service_ms: float) -> float:
        """Quantile of the wait when the depth itself is uncertain (variance ``depth_var``): the wait is a
        sum of K gaps of mean service/slots, K = depth − slots + 1 when positive; a normal approximation of
        that compound sum (mean K, variance K + var K, in gaps) at the configured quantile, 0 if negative."""
        ahead = depth - slots + 1
        gaps = ahead + self._z * math.sqrt(max(ahead, 0) + depth_var)
        return gaps * service_ms / slots if gaps > 0.0 else 0.0

    def _forget(self, cluster: str) -> None:
        self._fixed.pop(cluster, None)
        self._changed.add(cluster)

    # Observations (background scrape and finished requests); never on the decision path.

    def observe_tokens(self, cluster: str, prompt_tokens: int, completion_tokens: int) -> None:
        self._forget(cluster)
        p = self._observed(cluster)
        p.mean_prompt_tokens += TOKEN_EWMA_ALPHA * (prompt_tokens - p.mean_prompt_tokens)
        p.mean_completion_tokens += TOKEN_EWMA_ALPHA * (completion_tokens - p.mean_completion_tokens)
        typical = self.typical_completion_tokens
        self.typical_completion_tokens = typical + TOKEN_EWMA_ALPHA * (completion_tokens - typical)

    def observe_ttft(self, cluster: str, ttft_ms: float, prompt_tokens: int) -> None:
        """Learn the idle base TTFT from one of this gateway's own requests: observed minus its round trip and
        the prefill of *its* prompt (not the mean prompt).

        A sample is the idle figure plus whatever queueing that request met (never less), and queueing is
        predicted separately from the depth, so the estimate follows the samples' lower edge: down at once,
        up slowly (``TTFT_RISE``), so a cluster that really became slower is noticed within tens of
        requests, while one burst of queueing does not mark a cluster unusable (after which it would never
        be tried again and never be re-learned). For the same reason each scrape halves the distance back
        to the fastest sample seen: a cluster that stopped getting traffic is retried, and re-learned.

        Per gateway, not per cluster: gateways at different sites see the same cluster at different round
        trips, so a TTFT figure shared between them would be wrong for every one of them.
        """
        self._forget(cluster)
        p = self._observed(cluster)
        sample = max(ttft_ms - self._rtt(p) - p.per_token_ms * prompt_tokens, 0.0)
        old = p.learned_ttft_ms
        if old is None or sample <= old:
            p.learned_ttft_ms = sample
        else:
            p.learned_ttft_ms = old + TTFT_RISE * (sample - old)
        p.fastest_ttft_ms = sample if p.fastest_ttft_ms is None else min(p.fastest_ttft_ms, sample)
        self._update_fleet_base()

    def _update_fleet_base(self) -> None:
        learned = [q.fastest_ttft_ms for q in self._profiles.values() if q.fastest_ttft_ms is not None]
        if learned and sum(learned) / len(learned) != self._fleet_base_ms:
            self._fleet_base_ms = sum(learned) / len(learned)
            self._fixed.clear()
            self._all_changed = True

    def observe_itl(self, cluster: str, itl_ms: float) -> None:
        self._forget(cluster)
        p = self._observed(cluster)
        old = p.learned_itl_ms
        p.learned_itl_ms = itl_ms if old is None else old + TTFT_EWMA_ALPHA * (itl_ms - old)

    def observe_scrape(
        self,
        cluster: str,
        running: int,
        waiting: int,
        elapsed_ms: float | None,
        server: ServerCounters | None = None,
    ) -> None:
        self._forget(cluster)
        p = self._observed(cluster)
        if server is not None:
            p.server.observe(server)
            if p.server.ms_per_token is not None and not p.fixed_per_token:
                p.per_token_ms = p.server.ms_per_token
        if p.learned_ttft_ms is not None and p.fastest_ttft_ms is not None:
            p.learned_ttft_ms = p.fastest_ttft_ms + 0.5 * (p.learned_ttft_ms - p.fastest_ttft_ms)
        if waiting > 0 and running > 0:
            # vLLM queues only when every slot (or the KV cache) is taken: running is the real capacity.
            p.learned_slots = running
        if elapsed_ms is not None:
            old = p.measured_rtt_ms
            p.measured_rtt_ms = elapsed_ms if old is None else old + RTT_EWMA_ALPHA * (elapsed_ms - old)


def _slots(p: _Profile) -> int | None:
    """Sequences the cluster runs at once: configured, else learned from its metrics, else unknown."""
    return p.max_concurrency if p.max_concurrency is not None else p.learned_slots


class ErlangQuantile:
    """Quantile ``p`` of an Erlang(k) wait, in mean gaps: exact for k = 1, Wilson–Hilferty above."""

    def __init__(self, p: float) -> None:
        self._one = -math.log(1.0 - p)
        self._z = NormalDist().inv_cdf(p)
        self._cache: dict[int, float] = {1: self._one}

    def gaps(self, k: int) -> float:
        found = self._cache.get(k)
        if found is None:
            c = 1.0 / (9.0 * k)
            found = k * (1.0 - c + self._z * math.sqrt(c)) ** 3
            if len(self._cache) < 4096:
                self._cache[k] = found
        return found
