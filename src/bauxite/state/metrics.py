"""``bauxite_shared_state_up`` and ``bauxite_shared_state_fallbacks``: is this replica sharing state?"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .base import SharedState


class StateCollector(Collector):
    """``state``: this process's state. ``store_missing``: a store is configured but not in use (its
    ``state.url_env`` variable is unset), so the gauge reads 0 for kind "redis" rather than being absent."""

    def __init__(self, state: SharedState, store_missing: bool = False) -> None:
        self._state = state
        self._missing = store_missing

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "bauxite_shared_state_up",
            "1 while this replica uses the configured shared state store (or state is in process), "
            "0 while it falls back to its own state.",
            labels=["kind"],
        )
        if self._missing:
            up.add_metric(["redis"], 0.0)
        else:
            up.add_metric([self._state.kind], 1.0 if self._state.up else 0.0)
        yield up
        yield CounterMetricFamily(
            "bauxite_shared_state_fallbacks",
            "Times the shared state store became unreachable and this replica fell back to its own state.",
            float(getattr(self._state, "fallbacks", 0)),
        )
