"""The shipped Grafana dashboard, read through the Grafana foundation SDK's typed models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.models import dashboard, prometheus

DASHBOARD = Path(__file__).resolve().parent.parent / "dashboards" / "bauxite-carbon.json"
# Template variables as a viewer with "All" selected (and the default threshold) would send them.
VARIABLES = {
    "$department": ".*",
    "$model": ".*",
    "$region": ".*",
    "$threshold_gco2": "200",
    "$__rate_interval": "1m",
    "$__range": "10m",
}

register_default_plugins()  # decodes panel options and queries into their typed models


def raw() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def typed() -> dashboard.Dashboard:
    return dashboard.Dashboard.from_json(raw())


def encoded(model: dashboard.Dashboard) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(json.dumps(model, cls=JSONEncoder))
    return data


def panels() -> list[dashboard.Panel]:
    return [p for p in typed().panels or [] if isinstance(p, dashboard.Panel)]


def queries(panel: dashboard.Panel) -> list[prometheus.Dataquery]:
    out = []
    for target in panel.targets or []:
        assert isinstance(target, prometheus.Dataquery), (panel.title, type(target))
        out.append(target)
    return out


def expand(expr: str) -> str:
    """The PromQL Grafana sends once the template variables are filled in."""
    for name, value in sorted(VARIABLES.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(name, value)
    assert "$" not in expr, expr
    return expr
