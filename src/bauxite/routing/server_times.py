"""What a cluster's own ``/metrics`` say about its speed: prefill time per request and per prompt token, and
time per output token, learned from the histogram counters vLLM exports, for every cluster scraped (also
those this gateway has not sent a request to yet, so nothing stays at a default because it was never tried).

vLLM records, per finished request, the time it spent in prefill (``vllm:request_prefill_time_seconds``, no
queueing), its prompt length (``vllm:request_prompt_tokens``) and its time per output token. Between two
scrapes the counters' deltas give one interval's mean prompt and mean prefill time; a least-squares line
through those interval means (decaying weights) gives base prefill ms and ms per prompt token.
"""

from __future__ import annotations

from dataclasses import dataclass

FIT_ALPHA = 0.1  # weight of one scrape interval in the running fit
_MIN_SPREAD_TOKENS2 = 1.0  # variance of interval mean prompts below which the slope is not identifiable


@dataclass(frozen=True, slots=True)
class ServerCounters:
    """Cumulative histogram sums and counts from one scrape (seconds, tokens)."""

    prefill_s_sum: float = 0.0
    prefill_count: float = 0.0
    prompt_tokens_sum: float = 0.0
    prompt_count: float = 0.0
    itl_s_sum: float = 0.0
    itl_count: float = 0.0


class ServerTimes:
    """Running fit of one cluster's prefill line and ITL, from successive ``ServerCounters``."""

    __slots__ = ("_last", "_mx", "_mxx", "_mxy", "_my", "base_ms", "itl_ms", "ms_per_token")

    def __init__(self) -> None:
        self._last: ServerCounters | None = None
        self._mx = self._my = self._mxx = self._mxy = 0.0
        self.base_ms: float | None = None  # prefill time of an empty prompt, no queueing, no network
        self.ms_per_token: float | None = None
        self.itl_ms: float | None = None

    def observe(self, now: ServerCounters) -> None:
        last, self._last = self._last, now
        if last is None:
            return
        requests = now.prefill_count - last.prefill_count
        prompts = now.prompt_count - last.prompt_count
        if requests > 0 and prompts > 0:  # a counter reset (restart) gives negative deltas: skipped
            self._fit(
                (now.prompt_tokens_sum - last.prompt_tokens_sum) / prompts,
                (now.prefill_s_sum - last.prefill_s_sum) / requests * 1000.0,
            )
        tokens = now.itl_count - last.itl_count
        if tokens > 0:
            sample = (now.itl_s_sum - last.itl_s_sum) / tokens * 1000.0
            self.itl_ms = sample if self.itl_ms is None else self.itl_ms + FIT_ALPHA * (sample - self.itl_ms)

    def _fit(self, x: float, y: float) -> None:
        if self.base_ms is None and self._mx == 0.0:
            self._mx, self._my, self._mxx, self._mxy = x, y, x * x, x * y
        else:
            a = FIT_ALPHA
            self._mx += a * (x - self._mx)
            self._my += a * (y - self._my)
            self._mxx += a * (x * x - self._mxx)
            self._mxy += a * (x * y - self._mxy)
        spread = self._mxx - self._mx * self._mx
        if spread > _MIN_SPREAD_TOKENS2:
            slope = max((self._mxy - self._mx * self._my) / spread, 0.0)
            self.ms_per_token = slope
            self.base_ms = max(self._my - slope * self._mx, 0.0)
        elif self.ms_per_token is not None:
            self.base_ms = max(self._my - self.ms_per_token * self._mx, 0.0)
