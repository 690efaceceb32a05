"""The shipped Grafana dashboard fits Grafana's typed schema and its units say what its queries compute.

Every query is also run against a real Prometheus in ``test_prometheus_integration.py``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from grafana_foundation_sdk.models import dashboard, prometheus

from bauxite.routing.config import GreenRoutingSettings
from grafana_dashboard import encoded, panels, queries, raw, typed

G_PER_H = "suffix: g/h"


def leaves(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from leaves(item, f"{path}/{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from leaves(item, f"{path}/{index}")
    else:
        yield path, value


def unit_of(panel: dashboard.Panel, query: prometheus.Dataquery) -> str | None:
    """The unit Grafana shows for one query's series: a by-query override, else the panel default."""
    config = panel.field_config
    assert config is not None, panel.title
    for override in config.overrides or []:
        if override.matcher.id_val == "byFrameRefID" and override.matcher.options == query.ref_id:
            for prop in override.properties:
                if prop.id_val == "unit":
                    return str(prop.value)
    return config.defaults.unit


def panel(title_start: str, exact: bool = False) -> dashboard.Panel:
    found = [
        p
        for p in panels()
        if p.title == title_start or (not exact and (p.title or "").startswith(title_start))
    ]
    assert len(found) == 1, title_start
    return found[0]


def test_every_key_is_known_to_grafanas_typed_models() -> None:
    # Decoding into the SDK's models and encoding back loses any key the schema does not know and changes
    # any value of the wrong type: every value of the file must come back unchanged (the SDK adds defaults).
    back = dict(leaves(encoded(typed())))
    lost = {path: value for path, value in leaves(raw()) if back.get(path, "<absent>") != value}
    assert lost == {}


def test_panels_have_unique_ids_and_do_not_overlap() -> None:
    cells: dict[tuple[int, int], str] = {}
    ids = [p.id_val for p in panels()]
    assert len(ids) == len(set(ids))
    for p in panels():
        assert p.datasource is not None and p.datasource.uid == "${datasource}", p.title
        pos = p.grid_pos
        assert pos is not None and pos.x + pos.w <= 24, p.title
        for x in range(pos.x, pos.x + pos.w):
            for y in range(pos.y, pos.y + pos.h):
                assert (x, y) not in cells, (p.title, cells.get((x, y)))
                cells[(x, y)] = p.title or ""


def test_stat_panels_use_instant_queries_and_graphs_use_range_queries() -> None:
    stats = [p for p in panels() if p.type_val == "stat"]
    assert len(stats) >= 4
    for p in panels():
        for query in queries(p):
            if p.type_val == "stat":
                assert query.instant is True and not query.range_val, p.title
            else:
                assert query.range_val is True and not query.instant, p.title


def test_units_match_what_each_query_computes() -> None:
    for p in panels():
        for query in queries(p):
            unit = unit_of(p, query)
            expr = query.expr
            assert unit, (p.title, query.ref_id)
            if "* 3600" in expr:  # a per-second rate of grams scaled to an hour
                assert unit == G_PER_H, (p.title, expr)
            elif "rate(" in expr and " / " not in expr:  # a per-second rate is never a plain mass or energy
                assert unit not in ("massg", "joule", "watth"), (p.title, expr)
    assert unit_of(panel("Total CO2e"), queries(panel("Total CO2e"))[0]) == "massg"
    assert unit_of(panel("Energy", exact=True), queries(panel("Energy", exact=True))[0]) == "watth"


def test_intensity_panel_has_its_unit_and_the_threshold_line() -> None:
    p = panel("Grid carbon intensity")
    intensity, threshold = queries(p)
    assert unit_of(p, intensity) == unit_of(p, threshold) == "suffix: gCO2e/kWh"
    assert threshold.expr == "vector($threshold_gco2)"
    config = p.field_config
    assert config is not None
    dashed = [
        prop
        for o in config.overrides or []
        if o.matcher.options == threshold.ref_id
        for prop in o.properties
        if prop.id_val == "custom.lineStyle"
    ]
    assert dashed and isinstance(dashed[0].value, dict) and dashed[0].value["fill"] == "dash"
    templating = typed().templating
    variables = {v.name: v for v in templating.list_val or []}
    default = variables["threshold_gco2"]
    # The variable's default is the gateway's default threshold.
    assert default.query == str(int(GreenRoutingSettings().threshold_gco2))


def test_telemetry_panel_gives_each_series_its_own_unit() -> None:
    p = panel("Telemetry buffer")
    units = {re.findall(r"bauxite_\w+", q.expr)[0]: unit_of(p, q) for q in queries(p)}
    assert units == {
        "bauxite_telemetry_buffer_used_bytes": "bytes",
        "bauxite_telemetry_records_dropped_total": "suffix: records/s",
    }


def test_kv_efficiency_panel_shows_cached_share_and_avoided_grams() -> None:
    p = panel("KV-aware routing")
    share, avoided = queries(p)
    assert 'kind="cached"' in share.expr and 'kind="prompt"' in share.expr
    assert unit_of(p, share) == "percentunit"
    assert 'source="kv_cache"' in avoided.expr
    assert unit_of(p, avoided) == G_PER_H
