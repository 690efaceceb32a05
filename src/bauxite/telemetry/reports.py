"""Reporting windows: totals per department x model x region and per cluster for each ``reporting_interval``.

A window's figures are the difference between the running totals at its close and at its open, so the request
path pays nothing extra for reporting. Records are counted in the window during which they were drained; the
buffer is drained right before every close, so a window holds every request accounted before it closed
(measured-energy settlements that arrive after the close land in the next window).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import orjson

from .aggregate import (
    AVOIDED_GREEN,
    AVOIDED_KV,
    CACHED,
    CARBON,
    CL_CARBON,
    CL_COMPLETION,
    CL_ENERGY,
    CL_PROMPT,
    CL_REQUESTS,
    CLUSTER_SLOTS,
    COMPLETION,
    ENERGY,
    PROMPT,
    REQ_ERROR,
    REQ_OK,
    USAGE_SLOTS,
    Totals,
)
from .labels import LabelTables

REPORT_LOGGER = "bauxite.reports"
_SUMMED = (
    "requests", "errors", "prompt_tokens", "completion_tokens", "cached_tokens",
    "energy_j", "carbon_g", "avoided_green_routing_g", "avoided_kv_cache_g",
)  # fmt: skip


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _usage_row(acc: list[float]) -> dict[str, float | int]:
    return {
        "requests": int(acc[REQ_OK] + acc[REQ_ERROR]),
        "errors": int(acc[REQ_ERROR]),
        "prompt_tokens": int(acc[PROMPT]),
        "completion_tokens": int(acc[COMPLETION]),
        "cached_tokens": int(acc[CACHED]),
        "energy_j": acc[ENERGY],
        "carbon_g": acc[CARBON],
        "avoided_green_routing_g": acc[AVOIDED_GREEN],
        "avoided_kv_cache_g": acc[AVOIDED_KV],
    }


class Reports:
    """Opens and closes windows; keeps the most recent ``kept`` closed ones."""

    def __init__(
        self,
        totals: Totals,
        tables: LabelTables,
        cluster_regions: dict[str, str],
        cluster_meter: Callable[[], Iterable[Any]] | None,
        interval_s: float,
        kept: int,
    ) -> None:
        self._totals = totals
        self._t = tables
        self._cluster_regions = cluster_regions
        self._cluster_meter = cluster_meter
        self.interval_s = interval_s
        self.closed: deque[dict[str, Any]] = deque(maxlen=kept)
        self._log = logging.getLogger(REPORT_LOGGER)
        self._opened_at = 0.0
        self._usage0: dict[tuple[int, int, int], list[float]] = {}
        self._clusters0: dict[int, list[float]] = {}
        self._meter0: dict[str, tuple[float, float]] = {}
        self._dropped0 = 0

    def open(self, now: float, dropped: int) -> None:
        self._opened_at = now
        self._usage0 = self._totals.usage_snapshot()
        self._clusters0 = self._totals.cluster_snapshot()
        self._meter0 = self._meter()
        self._dropped0 = dropped

    def close(self, now: float, dropped: int) -> dict[str, Any]:
        """Close the open window (the caller drains the buffer first), keep it, log it, and open the next."""
        window: dict[str, Any] = {
            "start": _iso(self._opened_at),
            "end": _iso(now),
            "start_unix": self._opened_at,
            "end_unix": now,
            "usage": self._usage_rows(),
            "clusters": self._cluster_rows(),
            "records_dropped": dropped - self._dropped0,
        }
        window["totals"] = {k: sum(row[k] for row in window["usage"]) for k in _SUMMED}
        self.closed.append(window)
        self._emit(window)
        self.open(now, dropped)
        return window

    def _usage_rows(self) -> list[dict[str, Any]]:
        t = self._t
        rows = []
        for key, acc in self._totals.usage.items():
            before = self._usage0.get(key, [0.0] * USAGE_SLOTS)
            delta = [now - then for now, then in zip(acc, before, strict=True)]
            if not any(delta):
                continue
            m, r, d = key
            names = {
                "department": t.departments.value(d),
                "model": t.models.value(m),
                "region": t.regions.value(r),
            }
            rows.append(names | _usage_row(delta))
        rows.sort(key=lambda row: (row["department"], row["model"], row["region"]))
        return rows

    def _cluster_rows(self) -> list[dict[str, Any]]:
        meter = self._meter()
        rows = []
        for cluster, region in self._cluster_regions.items():
            acc = self._totals.clusters.get(self._t.clusters.id(cluster), [0.0] * CLUSTER_SLOTS)
            before = self._clusters0.get(self._t.clusters.id(cluster), [0.0] * CLUSTER_SLOTS)
            row: dict[str, Any] = {
                "cluster": cluster,
                "region": region,
                "requests": int(acc[CL_REQUESTS] - before[CL_REQUESTS]),
                "request_energy_j": acc[CL_ENERGY] - before[CL_ENERGY],
                "request_carbon_g": acc[CL_CARBON] - before[CL_CARBON],
                "prompt_tokens": int(acc[CL_PROMPT] - before[CL_PROMPT]),
                "completion_tokens": int(acc[CL_COMPLETION] - before[CL_COMPLETION]),
                "attributed_energy_j": None,
                "idle_energy_j": None,
            }
            if cluster in meter:
                start = self._meter0.get(cluster, (0.0, 0.0))
                row["attributed_energy_j"] = max(meter[cluster][0] - start[0], 0.0)
                row["idle_energy_j"] = max(meter[cluster][1] - start[1], 0.0)
            rows.append(row)
        return rows

    def _meter(self) -> dict[str, tuple[float, float]]:
        """Cluster energy counters (attributed, idle) from the energy service, where it offers them."""
        if self._cluster_meter is None:
            return {}
        try:
            return {
                str(row.cluster): (float(row.attributed_j_total), float(row.idle_j_total))
                for row in self._cluster_meter()
                if str(row.cluster) in self._cluster_regions
            }
        except Exception:  # reporting must not stop because the energy service misbehaves
            return {}

    def _emit(self, window: dict[str, Any]) -> None:
        """One line per window: totals and per-department figures — configured names and numbers only."""
        by_department: dict[str, dict[str, float]] = {}
        for row in window["usage"]:
            dept = by_department.setdefault(
                row["department"], {"requests": 0, "energy_j": 0.0, "carbon_g": 0.0}
            )
            for key in dept:
                dept[key] += row[key]
        line = {
            "event": "carbon_report",
            "start": window["start"],
            "end": window["end"],
            "totals": window["totals"],
            "departments": by_department,
            "records_dropped": window["records_dropped"],
        }
        self._log.info(orjson.dumps(line).decode())

    def as_json(self, limit: int | None = None) -> bytes:
        windows = list(self.closed)
        if limit is not None:
            windows = windows[-limit:] if limit > 0 else []
        body = {
            "reporting_interval_s": self.interval_s,
            "open_since": _iso(self._opened_at),
            "windows": windows,
        }
        return orjson.dumps(body)
