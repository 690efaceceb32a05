"""Predicted time to first token per cluster, from configuration, observations and current queue depth.

predicted_ttft_ms = rtt + prefill(prompt) + queue_wait, where

- rtt: per-cluster latency config, else the cluster's ``rtt_ms``, else the measured scrape round trip,
  else a prior;
- prefill = base + per-token rate × prompt tokens; the base is configured, or learned from the proxy's
  observed TTFT (which already includes network and typical queueing, so the learned value errs on the
  slow side);
- queue_wait = requests ahead of this one × mean service time / slots × ``queue_safety``. Slots are the
  configured ``max_concurrency``, else learned from the cluster's own metrics (requests running while others
  wait), else unknown, in which case only the scraped waiting count counts as "ahead".

Everything here is plain arithmetic on in-memory values: the request path calls it for every candidate.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..clusters import ClusterState
from .config import ClusterLatencySettings, LatencySettings

TOKEN_EWMA_ALPHA = 0.05  # token means move slowly: they describe the workload, not the moment
RTT_EWMA_ALPHA = 0.3
_NO_OVERRIDES = ClusterLatencySettings()


@dataclass(slots=True)
class _Learned:
    """What the gateway has observed about one cluster beyond ClusterState's own averages."""

    rtt_ms: float | None = None
    slots: int | None = None
    mean_prompt_tokens: float = 0.0
    mean_completion_tokens: float = 0.0


class LatencyModel:
    def __init__(self, settings: LatencySettings, rtt_ms: Mapping[str, float] | None = None) -> None:
        self._settings = settings
        # Explicit per-router round trips (e.g. one gateway per client site in the simulator) beat all else.
        self._rtt_override = dict(rtt_ms or {})
        self._learned: dict[str, _Learned] = {}
        self._per_1k = settings.prefill_ms_per_1k_tokens

    def _state(self, name: str) -> _Learned:
        learned = self._learned.get(name)
        if learned is None:
            learned = _Learned(mean_completion_tokens=float(self._settings.typical_completion_tokens))
            self._learned[name] = learned
        return learned

    def _overrides(self, name: str) -> ClusterLatencySettings:
        return self._settings.clusters.get(name, _NO_OVERRIDES)

    def rtt_ms(self, state: ClusterState) -> float:
        fixed = self._rtt_override.get(state.name)
        if fixed is not None:
            return fixed
        configured = self._overrides(state.name).rtt_ms
        if configured is None:
            configured = state.settings.rtt_ms
        if configured is not None:
            return configured
        measured = self._state(state.name).rtt_ms
        return measured if measured is not None else self._settings.default_rtt_ms

    def slots(self, state: ClusterState) -> int | None:
        configured = self._overrides(state.name).max_concurrency
        return configured if configured is not None else self._state(state.name).slots

    def depth(self, state: ClusterState) -> int:
        """Requests at the cluster now: our own in-flight count is live, the scraped one includes others."""
        return max(state.in_flight, state.queue_running + state.queue_waiting)

    def load(self, state: ClusterState) -> float:
        """Occupancy used to spread near-equal choices (a fraction of slots when those are known)."""
        slots = self.slots(state)
        depth = self.depth(state)
        return depth / slots if slots else float(depth)

    def predict_ttft_ms(self, state: ClusterState, prompt_tokens: int) -> float:
        over = self._overrides(state.name)
        learned = self._state(state.name)
        rtt = self.rtt_ms(state)
        per_1k = over.prefill_ms_per_1k_tokens if over.prefill_ms_per_1k_tokens is not None else self._per_1k
        base = self._base_ttft_ms(state, over, learned, rtt, per_1k)
        prefill = base + per_1k * prompt_tokens / 1000.0
        return rtt + prefill + self._queue_wait_ms(state, over, learned, base, per_1k)

    def _base_ttft_ms(
        self, state: ClusterState, over: ClusterLatencySettings, learned: _Learned, rtt: float, per_1k: float
    ) -> float:
        if over.ttft_ms is not None:
            return over.ttft_ms
        if state.ttft_ewma_s is None:
            return self._settings.default_ttft_ms
        observed = state.ttft_ewma_s * 1000.0 - rtt - per_1k * learned.mean_prompt_tokens / 1000.0
        return max(observed, 0.0)

    def _queue_wait_ms(
        self, state: ClusterState, over: ClusterLatencySettings, learned: _Learned, base: float, per_1k: float
    ) -> float:
        slots = over.max_concurrency if over.max_concurrency is not None else learned.slots
        if slots:
            depth = self.depth(state)
            ahead = depth - slots + 1 if depth >= slots else 0
        else:
            ahead = state.queue_waiting
            slots = max(state.queue_running, 1)
        if ahead <= 0:
            return 0.0
        if over.itl_ms is not None:
            itl = over.itl_ms
        elif state.itl_ewma_s is not None:
            itl = state.itl_ewma_s * 1000.0
        else:
            itl = self._settings.default_itl_ms
        service = base + per_1k * learned.mean_prompt_tokens / 1000.0 + itl * learned.mean_completion_tokens
        return ahead * service / slots * self._settings.queue_safety

    # Observations (background scrape and finished requests); never on the decision path.

    def observe_tokens(self, cluster: str, prompt_tokens: int, completion_tokens: int) -> None:
        learned = self._state(cluster)
        learned.mean_prompt_tokens += TOKEN_EWMA_ALPHA * (prompt_tokens - learned.mean_prompt_tokens)
        learned.mean_completion_tokens += TOKEN_EWMA_ALPHA * (
            completion_tokens - learned.mean_completion_tokens
        )

    def observe_scrape(self, cluster: str, running: int, waiting: int, elapsed_ms: float | None) -> None:
        learned = self._state(cluster)
        if waiting > 0 and running > 0:
            # vLLM queues only when every slot (or the KV cache) is taken: running is the real capacity.
            learned.slots = running
        if elapsed_ms is not None:
            old = learned.rtt_ms
            learned.rtt_ms = elapsed_ms if old is None else old + RTT_EWMA_ALPHA * (elapsed_ms - old)
