"""Time-integrated concurrency: how many requests a cluster (or one model on it) ran over any span of time.

``count_s`` is ∫ resident-requests dt since start; the mean batch over a request's life is the difference of
two readings divided by the span. Each request counts itself, so the mean over its own life is ≥ 1.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Occupancy:
    running: int = 0
    count_s: float = 0.0  # ∫ running dt (request-seconds)
    empty_s: float = 0.0  # seconds with nothing running
    last_s: float | None = None

    def advance(self, now_s: float) -> None:
        if self.last_s is not None and now_s > self.last_s:
            dt_s = now_s - self.last_s
            self.count_s += self.running * dt_s
            if self.running == 0:
                self.empty_s += dt_s
        if self.last_s is None or now_s > self.last_s:
            self.last_s = now_s

    def enter(self, now_s: float) -> float:
        """One more request from ``now_s``; returns the integral reading to remember for it."""
        self.advance(now_s)
        self.running += 1
        return self.count_s

    def leave(self, now_s: float) -> None:
        self.advance(now_s)
        self.running = max(self.running - 1, 0)

    def mean_since(self, reading: float, start_s: float, now_s: float) -> float:
        """Mean number of requests running over ``[start_s, now_s]`` (≥ 1: the asker ran throughout)."""
        self.advance(now_s)
        span_s = now_s - start_s
        if span_s <= 0:
            return float(max(self.running, 1))
        return max((self.count_s - reading) / span_s, 1.0)
