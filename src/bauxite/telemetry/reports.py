"""Reporting windows: totals per department x model x region and per cluster for each ``reporting_interval``.

A window's figures are the difference between the running totals at its close and at its open, so the request
path pays nothing extra for reporting. Records are counted in the window during which they were drained; the
buffer is drained right before every close, so a window holds every request accounted before it closed
(measured-energy settlements that arrive after the close land in the next window).
"""

from __future__ import annotations

import csv
import io
import logging
from collections import deque
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import orjson

from ..records import enum_value
from .aggregate import REQ_ERROR, REQ_OK, SLOT, USAGE_SLOTS, Totals
from .labels import LabelTables

REPORT_LOGGER = "bauxite.reports"
_SUMMED = (
    "requests", "errors", "prompt_tokens", "completion_tokens", "cached_tokens", "energy_j", "energy_j_min",
    "energy_j_max", "energy_j_measured", "requests_measured", "it_energy_j", "gpu_energy_j", "carbon_g",
    "carbon_market_g", "embodied_g", "avoided_green_routing_g", "avoided_kv_cache_g",
)  # fmt: skip
USAGE_CSV_COLUMNS = (
    "window_start", "window_end", "department", "model", "region", *_SUMMED, "sci_g_per_request",
    "sci_g_per_1k_tokens", "intensity_source", "intensity_signal", "intensity_basis",
)  # fmt: skip
CLUSTER_CSV_COLUMNS = (
    "window_start", "window_end", "cluster", "region", "scope", "requests", "prompt_tokens",
    "completion_tokens", "request_energy_j", "request_energy_j_min", "request_energy_j_max",
    "request_energy_j_measured", "request_carbon_g", "request_carbon_market_g",
    "request_embodied_g", "measured_energy_j", "attributed_energy_j", "idle_energy_j", "idle_carbon_g",
    "idle_carbon_market_g", "idle_embodied_g",
)  # fmt: skip
_CLUSTER_TOTALS = {  # accountant running total -> report column (the window's difference)
    "measured_j_total": "measured_energy_j",
    "attributed_j_total": "attributed_energy_j",
    "idle_j_total": "idle_energy_j",
    "idle_carbon_g_total": "idle_carbon_g",
    "idle_carbon_market_g_total": "idle_carbon_market_g",
    "idle_embodied_g_total": "idle_embodied_g",
}
MeterTotals = dict[str, float]


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def sci(carbon_g: float, embodied_g: float, units: float) -> float | None:
    """Green Software Foundation SCI (ISO/IEC 21031:2024): (E × I + M) per functional unit, grams CO2e."""
    return (carbon_g + embodied_g) / units if units > 0 else None


def _usage_row(acc: list[float]) -> dict[str, Any]:
    requests = int(acc[REQ_OK] + acc[REQ_ERROR])
    tokens = acc[SLOT["prompt_tokens"]] + acc[SLOT["completion_tokens"]]
    carbon_g, embodied_g = acc[SLOT["carbon_g"]], acc[SLOT["embodied_g"]]
    per_1k = sci(carbon_g, embodied_g, tokens / 1000.0)
    return {
        "requests": requests,
        "errors": int(acc[REQ_ERROR]),
        "prompt_tokens": int(acc[SLOT["prompt_tokens"]]),
        "completion_tokens": int(acc[SLOT["completion_tokens"]]),
        "cached_tokens": int(acc[SLOT["cached_tokens"]]),
        "energy_j": acc[SLOT["energy_j"]],
        "energy_j_min": acc[SLOT["energy_j_min"]],
        "energy_j_max": acc[SLOT["energy_j_max"]],
        "energy_j_measured": acc[SLOT["energy_j_measured"]],
        "requests_measured": int(acc[SLOT["requests_measured"]]),
        "it_energy_j": acc[SLOT["gpu_j"]] + acc[SLOT["host_j"]],
        "gpu_energy_j": acc[SLOT["gpu_j"]],
        "carbon_g": carbon_g,
        "carbon_market_g": acc[SLOT["carbon_market_g"]],
        "embodied_g": embodied_g,
        "avoided_green_routing_g": acc[SLOT["avoided_green_g"]],
        "avoided_kv_cache_g": acc[SLOT["avoided_kv_g"]],
        "sci_g_per_request": sci(carbon_g, embodied_g, requests),
        "sci_g_per_1k_tokens": per_1k,
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
        # False in a ``--workers`` worker: its windows hold none of the host's requests (the hub counts
        # them) but the fleet's idle energy, which the hub's line already carries.
        self.log_windows = True
        self._opened_at = 0.0
        self._usage0: dict[tuple[int, int, int], list[float]] = {}
        self._clusters0: dict[int, list[float]] = {}
        self._meter0: dict[str, MeterTotals] = {}
        self._dropped0 = 0

    def open(self, now: float, dropped: int) -> None:
        self._opened_at = now
        self._usage0 = self._totals.usage_snapshot()
        self._clusters0 = self._totals.cluster_snapshot()
        self._meter0 = self._meter()[1]
        self._dropped0 = dropped

    def close(self, now: float, dropped: int) -> dict[str, Any]:
        """Close the open window (the caller drains the buffer first), keep it, log it, and open the next."""
        usage = self._usage_rows()
        clusters = self._cluster_rows()
        totals: dict[str, Any] = {k: sum(row[k] for row in usage) for k in _SUMMED}
        window: dict[str, Any] = {
            "start": _iso(self._opened_at),
            "end": _iso(now),
            "start_unix": self._opened_at,
            "end_unix": now,
            "usage": usage,
            "clusters": clusters,
            "totals": totals,
            "scopes": _scopes(clusters),
            "records_dropped": dropped - self._dropped0,
        }
        idle_g = sum(row["idle_carbon_g"] or 0.0 for row in clusters)
        idle_embodied_g = sum(row["idle_embodied_g"] or 0.0 for row in clusters)
        totals["idle_carbon_g"] = idle_g
        totals["idle_embodied_g"] = idle_embodied_g
        totals["fleet_carbon_g"] = totals["carbon_g"] + idle_g
        # The fleet's SCI: every gram (requests and idle, operational and embodied) per functional unit.
        fleet_g, fleet_m = totals["fleet_carbon_g"], totals["embodied_g"] + idle_embodied_g
        tokens = totals["prompt_tokens"] + totals["completion_tokens"]
        totals["sci_g_per_request"] = sci(fleet_g, fleet_m, totals["requests"])
        totals["sci_g_per_1k_tokens"] = sci(fleet_g, fleet_m, tokens / 1000.0)
        self.closed.append(window)
        if self.log_windows:
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
            rows.append(names | _usage_row(delta) | self._basis(r))
        rows.sort(key=lambda row: (row["department"], row["model"], row["region"]))
        return rows

    def _basis(self, region: int) -> dict[str, str]:
        """Source, signal and basis of the region's latest intensity (the records carry each one's own)."""
        found = self._totals.region_basis.get(region)
        if found is None:
            return {"intensity_source": "", "intensity_signal": "", "intensity_basis": ""}
        source, signal, basis = found
        return {
            "intensity_source": self._t.sources.value(source),
            "intensity_signal": enum_value("intensity_signal", signal),
            "intensity_basis": enum_value("intensity_basis", basis),
        }

    def _cluster_rows(self) -> list[dict[str, Any]]:
        scopes, meter = self._meter()
        rows = []
        for cluster, region in self._cluster_regions.items():
            ident = self._t.clusters.id(cluster)
            acc = self._totals.clusters.get(ident, [0.0] * USAGE_SLOTS)
            before = self._clusters0.get(ident, [0.0] * USAGE_SLOTS)
            d = [now - then for now, then in zip(acc, before, strict=True)]
            row: dict[str, Any] = {
                "cluster": cluster,
                "region": region,
                "scope": scopes.get(cluster, "scope2"),
                "requests": int(d[REQ_OK] + d[REQ_ERROR]),
                "prompt_tokens": int(d[SLOT["prompt_tokens"]]),
                "completion_tokens": int(d[SLOT["completion_tokens"]]),
                "request_energy_j": d[SLOT["energy_j"]],
                "request_energy_j_min": d[SLOT["energy_j_min"]],
                "request_energy_j_max": d[SLOT["energy_j_max"]],
                "request_energy_j_measured": d[SLOT["energy_j_measured"]],
                "request_carbon_g": d[SLOT["carbon_g"]],
                "request_carbon_market_g": d[SLOT["carbon_market_g"]],
                "request_embodied_g": d[SLOT["embodied_g"]],
            }
            now_totals, start = meter.get(cluster), self._meter0.get(cluster, {})
            for name, key in _CLUSTER_TOTALS.items():
                if now_totals is None or name not in now_totals:
                    row[key] = None  # not metered: said so, not invented
                else:
                    row[key] = max(now_totals[name] - start.get(name, 0.0), 0.0)
            rows.append(row)
        return rows

    def _meter(self) -> tuple[dict[str, str], dict[str, MeterTotals]]:
        """Each cluster's scope, and its running totals from the accountant: all of them for a metered
        cluster; an unmetered self-hosted one its (estimated) idle figures only; an external API none."""
        if self._cluster_meter is None:
            return {}, {}
        try:
            rows = [row for row in self._cluster_meter() if str(row.cluster) in self._cluster_regions]
        except Exception:  # reporting must not stop because the accountant misbehaves
            return {}, {}
        scopes = {str(row.cluster): str(row.scope) for row in rows}
        totals = {
            str(row.cluster): {
                name: float(getattr(row, name))
                for name in _CLUSTER_TOTALS
                if row.metered or name.startswith("idle_")
            }
            for row in rows
            if row.metered or row.scope == "scope2"
        }
        return scopes, totals

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
            "scopes": window["scopes"],
            "departments": by_department,
            "records_dropped": window["records_dropped"],
        }
        self._log.info(orjson.dumps(line).decode())

    def _windows(self, limit: int | None) -> list[dict[str, Any]]:
        windows = list(self.closed)
        if limit is not None:
            windows = windows[-limit:] if limit > 0 else []
        return windows

    def as_csv(self, limit: int | None = None, table: str = "usage") -> bytes:
        """This process's closed windows as CSV (see ``windows_csv``)."""
        return windows_csv(self._windows(limit), table)

    def as_json(self, limit: int | None = None) -> bytes:
        windows = self._windows(limit)
        body = {
            "reporting_interval_s": self.interval_s,
            "open_since": _iso(self._opened_at),
            "windows": windows,
        }
        return orjson.dumps(body)


def windows_csv(windows: list[dict[str, Any]], table: str = "usage") -> bytes:
    """Report windows (oldest first, as in the JSON report) as CSV, one row per department × model × region
    (``table="usage"``) or per cluster with its scope, metered, idle and embodied figures
    (``table="clusters"``); each row starts with its window's bounds."""
    columns = CLUSTER_CSV_COLUMNS if table == "clusters" else USAGE_CSV_COLUMNS
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for window in windows:
        bounds = {"window_start": window["start"], "window_end": window["end"]}
        for row in window["clusters" if table == "clusters" else "usage"]:
            writer.writerow(bounds | {k: "" if v is None else v for k, v in row.items()})
    return out.getvalue().encode()


def _scopes(clusters: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """GHG Protocol split: Scope 2 = self-hosted clusters' electricity (requests and idle), location- and
    market-based; Scope 3 category 1 = external APIs (their operational and embodied share). The embodied
    share of self-hosted hardware is reported apart (SCI's M; amortised, not a year-of-purchase figure)."""
    out = {
        "scope2": {"location_g": 0.0, "market_g": 0.0, "energy_j": 0.0},
        "scope3_cat1": {"location_g": 0.0, "market_g": 0.0, "energy_j": 0.0, "embodied_g": 0.0},
        "embodied_self_hosted_g": {"embodied_g": 0.0},
    }
    for row in clusters:
        scope = out[row["scope"]]
        scope["location_g"] += row["request_carbon_g"] + (row["idle_carbon_g"] or 0.0)
        scope["market_g"] += row["request_carbon_market_g"] + (row["idle_carbon_market_g"] or 0.0)
        scope["energy_j"] += row["request_energy_j"] + (row["idle_energy_j"] or 0.0)
        embodied_g = row["request_embodied_g"] + (row["idle_embodied_g"] or 0.0)
        if row["scope"] == "scope3_cat1":
            scope["embodied_g"] += embodied_g
        else:
            out["embodied_self_hosted_g"]["embodied_g"] += embodied_g
    return out
