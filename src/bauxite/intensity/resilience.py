"""Backoff and circuit breaking for the background refresh of live providers.

Neither touches the request path: they only decide when the next background call happens.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from .base import Intensity


def backoff_s(
    failures: int,
    min_s: float,
    max_s: float,
    retry_after_s: float | None = None,
    jitter: Callable[[], float] = random.random,
) -> float:
    """Delay before retry number ``failures``: doubling from ``min_s`` up to ``max_s``, ±10 % jitter so many
    zones failing together do not retry in lockstep, and never sooner than the provider's Retry-After."""
    base_s = min(max_s, min_s * 2 ** max(0, failures - 1))
    delay_s = base_s * (0.9 + 0.2 * jitter())
    if retry_after_s is not None:
        delay_s = max(delay_s, retry_after_s)
    return float(delay_s)


class CircuitBreaker:
    """Opens after ``failures_to_open`` consecutive failures; while open, calls are skipped for ``open_s``,
    then one trial call is let through (half-open): success closes it, failure re-opens it."""

    def __init__(self, failures_to_open: int, open_s: float, clock: Callable[[], float]) -> None:
        self._failures_to_open = failures_to_open
        self._open_s = open_s
        self._clock = clock
        self.failures = 0
        self._opened_at_s: float | None = None

    @property
    def state(self) -> str:
        if self._opened_at_s is None:
            return "closed"
        return "open" if self.remaining_s() > 0 else "half_open"

    def remaining_s(self) -> float:
        if self._opened_at_s is None:
            return 0.0
        return max(0.0, self._opened_at_s + self._open_s - self._clock())

    def allow(self) -> bool:
        return self.state != "open"

    def record_success(self) -> None:
        self.failures = 0
        self._opened_at_s = None

    def record_failure(self) -> None:
        self.failures += 1
        if self.failures >= self._failures_to_open or self._opened_at_s is not None:
            self._opened_at_s = self._clock()


@dataclass(slots=True)
class Feed:
    """One (provider, query key) pair refreshed in the background; several regions may share it."""

    provider_name: str
    key: str
    last: Intensity | None = None
    failures: int = 0  # consecutive, since the last success
    last_error: str = ""
    calls: int = 0
    regions: list[str] = field(default_factory=list)

    def fresh_enough(self, now_s: float, max_age_s: float) -> Intensity | None:
        """The last value if it is younger than ``max_age_s``."""
        if self.last is not None and now_s - self.last.fetched_at <= max_age_s:
            return self.last
        return None
