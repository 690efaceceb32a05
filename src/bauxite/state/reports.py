"""Closed report windows from several replicas, merged into one window per reporting period.

Windows close on wall-clock multiples of the reporting interval, so every replica's window for one period ends
at (about) the same boundary: windows are grouped by their end rounded to the interval. Request figures
(counts, tokens, energy and carbon charged to requests) are summed. A cluster's metered figures (measured,
attributed and idle energy and their carbon) are read by every replica from the same power source, so they
are taken once (the largest reading), not summed. Ratios (SCI) are recomputed from the merged sums.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ..telemetry import reports as single

LABELS = ("department", "model", "region")
SUMMED_CLUSTER = ("requests", "prompt_tokens", "completion_tokens")  # plus every request_* figure


def merge_windows(windows: list[dict[str, Any]], interval_s: float) -> list[dict[str, Any]]:
    """One window per period, oldest first; each says how many replica windows it merges."""
    periods: dict[int, list[dict[str, Any]]] = {}
    for window in windows:
        periods.setdefault(round(window["end_unix"] / interval_s), []).append(window)
    return [_merge(periods[key]) for key in sorted(periods)]


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _merge(group: list[dict[str, Any]]) -> dict[str, Any]:
    usage: dict[tuple[str, ...], dict[str, Any]] = {}
    clusters: dict[str, dict[str, Any]] = {}
    for window in group:
        for row in window["usage"]:
            into = usage.setdefault(tuple(row[k] for k in LABELS), {})
            for name, value in row.items():
                if name.startswith("sci_"):
                    continue
                into[name] = into.get(name, 0) + value if _number(value) else into.get(name, value)
        for row in window["clusters"]:
            into = clusters.setdefault(row["cluster"], {})
            for name, value in row.items():
                into[name] = _cluster_value(name, into.get(name), value)
    rows = [_with_sci(usage[key]) for key in sorted(usage)]
    cluster_rows = [clusters[name] for name in sorted(clusters)]
    start = min(w["start_unix"] for w in group)
    end = max(w["end_unix"] for w in group)
    merged: dict[str, Any] = {
        "start": _iso(start),
        "end": _iso(end),
        "start_unix": start,
        "end_unix": end,
        "replicas": len(group),
        "usage": rows,
        "clusters": cluster_rows,
        "records_dropped": sum(w.get("records_dropped", 0) for w in group),
        "totals": _totals(rows),
    }
    scopes = getattr(single, "_scopes", None)  # the single-replica report's own derivation
    if callable(scopes) and "scopes" in group[0]:
        merged["scopes"] = scopes(cluster_rows)
    return merged


def _cluster_value(name: str, old: Any, new: Any) -> Any:
    if not _number(new):
        return old if old is not None else new
    if old is None:
        return new
    if name in SUMMED_CLUSTER or name.startswith("request_"):
        return old + new
    return max(old, new)  # metered by every replica from the same source


def _with_sci(row: dict[str, Any]) -> dict[str, Any]:
    sci = getattr(single, "sci", None)
    if callable(sci) and "embodied_g" in row:
        tokens = row.get("prompt_tokens", 0) + row.get("completion_tokens", 0)
        row["sci_g_per_request"] = sci(row["carbon_g"], row["embodied_g"], row["requests"])
        row["sci_g_per_1k_tokens"] = sci(row["carbon_g"], row["embodied_g"], tokens / 1000.0)
    return row


def _totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    totals: dict[str, Any] = {}
    for row in rows:
        for name, value in row.items():
            if _number(value) and not name.startswith("sci_"):
                totals[name] = totals.get(name, 0) + value
    return totals


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
