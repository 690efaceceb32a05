"""The dashboard's in-memory series: sums by label, per-bucket increases, the last-hour window, the bound."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from bauxite.app import GATEWAY, create_app
from bauxite.settings import settings_from_mapping
from bauxite.telemetry.series import Pick, Series, snapshot
from harness import fleet_config

PICKS = (
    Pick("carbon_by_dept", "carbon_grams", "department", "counter", "g"),
    Pick("carbon_by_region", "carbon_grams", "region", "counter", "g"),
    Pick("idle_by_region", "cluster_carbon_grams", "region", "counter", "g", where=(("kind", "idle"),)),
    Pick("intensity", "intensity", "region", "gauge", "gCO2e/kWh"),
)


class Source:
    """Real prometheus_client metric families built from values the test sets."""

    def __init__(self) -> None:
        self.carbon: dict[tuple[str, str], float] = {}
        self.intensity: dict[str, float] = {}

    def collect(self) -> Iterator[Metric]:
        carbon = CounterMetricFamily("carbon_grams", "", labels=["department", "region"])
        for labels, value in self.carbon.items():
            carbon.add_metric(list(labels), value, created=1.0)
        gauge = GaugeMetricFamily("intensity", "", labels=["region"])
        for region, value in self.intensity.items():
            gauge.add_metric([region], value)
        yield from (carbon, gauge)


def test_snapshot_sums_by_label_and_ignores_created_and_absent_families() -> None:
    src = Source()
    src.carbon = {("eng", "eu"): 2.0, ("eng", "us"): 3.0, ("ops", "us"): 5.0}
    src.intensity = {"eu": 100.0}
    snap = snapshot(src.collect(), PICKS)
    assert snap["carbon_by_dept"] == {"eng": 5.0, "ops": 5.0}  # a "_created" sample would add 1.0 each
    assert snap["carbon_by_region"] == {"eu": 2.0, "us": 8.0}
    assert snap["idle_by_region"] == {}
    assert snap["intensity"] == {"eu": 100.0}


def test_where_filters_samples() -> None:
    family = CounterMetricFamily("cluster_carbon_grams", "", labels=["region", "kind"])
    family.add_metric(["eu", "idle"], 4.0)
    family.add_metric(["eu", "attributed"], 9.0)
    assert snapshot([family], PICKS)["idle_by_region"] == {"eu": 4.0}


def test_increases_per_bucket_last_hour_and_new_names() -> None:
    src = Source()
    series = Series(src.collect, bucket_s=10, window_s=30, picks=PICKS, threshold_g_per_kwh=200.0)
    src.carbon = {("eng", "eu"): 1.0}
    src.intensity = {"eu": 100.0}
    series.sample(0.0)
    src.carbon = {("eng", "eu"): 4.0}
    series.sample(10.0)
    src.carbon = {("eng", "eu"): 4.0, ("ops", "eu"): 2.0}  # a department seen for the first time
    src.intensity = {"eu": 120.0}
    series.sample(20.0)
    src.carbon = {("eng", "eu"): 10.0, ("ops", "eu"): 2.0}
    data = series.as_json(now=25.0)
    assert data["t"] == [10.0, 20.0, 25.0]
    assert data["dt_s"] == [10.0, 10.0, 5.0]
    assert data["series"]["carbon_by_dept"] == {"eng": [3.0, 0.0, 6.0], "ops": [0.0, 2.0, 0.0]}
    assert data["series"]["intensity"] == {"eu": [100.0, 120.0, 120.0]}
    assert data["since_start"]["carbon_by_dept"] == {"eng": 10.0, "ops": 2.0}
    # The window is 30 s: from t=0 (within 25 - 30) the increase is everything after the baseline.
    assert data["last_hour"]["carbon_by_dept"] == {"eng": 9.0, "ops": 2.0}
    assert data["last_hour"]["intensity"] == {"eu": 120.0}
    assert data["threshold_gco2_per_kwh"] == 200.0
    src.carbon = {("eng", "eu"): 10.0, ("ops", "eu"): 2.0}
    series.sample(30.0)
    series.sample(40.0)
    later = series.as_json(now=45.0)
    # Now the window starts at 15 s: the sample at 20 s is the oldest inside it.
    assert later["last_hour"]["carbon_by_dept"] == {"eng": 6.0, "ops": 0.0}


def test_memory_is_bounded_to_one_window() -> None:
    series = Series(Source().collect, bucket_s=10, window_s=3600, picks=PICKS)
    for i in range(1000):
        series.sample(float(i * 10))
    assert len(series) == 361


def test_rejects_a_window_shorter_than_a_bucket() -> None:
    with pytest.raises(ValueError, match="window_s"):
        Series(Source().collect, bucket_s=10, window_s=5, picks=PICKS)


def paths(app: web.Application) -> set[str]:
    return {route.resource.canonical for route in app.router.routes() if route.resource is not None}


def test_dashboard_is_served_where_metrics_are() -> None:
    same = create_app(settings_from_mapping(fleet_config(), "<test>"))
    assert {"/metrics", "/dashboard", "/dashboard/series"} <= paths(same)
    config = fleet_config(telemetry={"listen_port": 0})
    apart = create_app(settings_from_mapping(config, "<test>"))
    admin = apart[GATEWAY].telemetry.admin_app()
    assert admin is not None
    assert {"/metrics", "/dashboard", "/dashboard/series"} <= paths(admin)
    assert "/dashboard" not in paths(apart) and "/metrics" not in paths(apart)
