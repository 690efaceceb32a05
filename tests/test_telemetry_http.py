"""Telemetry over HTTP: /metrics, /v1/carbon/reports, token protection, the separate listener, timers."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from bauxite.accounting import ClusterAccount
from bauxite.errors import CODES
from bauxite.settings import Settings, settings_from_mapping
from bauxite.telemetry.http import token_matches
from bauxite.telemetry.reports import REPORT_LOGGER
from bauxite.telemetry.service import Telemetry
from record_factory import make_record

CONFIG: dict[str, Any] = {
    "clusters": [
        {"name": "iowa", "region": "us-central1", "url": "http://127.0.0.1:1/v1", "models": ["llama"]},
        {"name": "belgium", "region": "europe-west1", "url": "http://127.0.0.1:2/v1", "models": ["llama"]},
    ],
    "auth": {"keys": [{"department": "research", "sha256": "a" * 64}]},
}
TOKEN = "s3cret-metrics-token"


def make_settings(reporting_interval: str = "1h", **telemetry: Any) -> Settings:
    return settings_from_mapping(
        {
            **CONFIG,
            "enterprise": {"carbon_tracking": {"reporting_interval": reporting_interval}},
            "telemetry": telemetry,
        }
    )


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def _intensity(request: web.Request) -> web.Response:
    return web.json_response({"regions": []})


async def serve(tel: Telemetry, app: web.Application | None = None) -> TestClient[Any, Any]:
    if app is None:
        app = web.Application()
        app.router.add_get("/healthz", _healthz)
        app.router.add_get("/v1/carbon/intensity", _intensity)  # another module's route under /v1/carbon/
        tel.add_routes(app)
    client: TestClient[Any, Any] = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    return client


@pytest.fixture
async def plain() -> AsyncIterator[tuple[Telemetry, TestClient[Any, Any]]]:
    tel = Telemetry(make_settings())
    client = await serve(tel)
    yield tel, client
    await client.close()
    tel.ring.close()


async def test_metrics_drains_the_buffer_before_rendering(plain: tuple[Telemetry, Any]) -> None:
    tel, client = plain
    for _ in range(7):
        tel.submit(make_record())
    assert tel.ring.used == 7
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = await response.text()
    assert (
        'bauxite_requests_total{department="research",model="llama",region="us-central1",status="ok"} 7.0'
        in text
    )
    assert tel.ring.used == 0


async def test_reports_serve_closed_windows_only(plain: tuple[Telemetry, Any]) -> None:
    tel, client = plain
    body = await (await client.get("/v1/carbon/reports")).json()
    assert body["windows"] == [] and body["reporting_interval_s"] == 3600.0
    tel.submit(make_record(energy_j=3.0))
    tel.submit(
        make_record(
            energy_j=3.0, department="research", status="error", region="europe-west1", cluster="belgium"
        )
    )
    tel.close_window()
    tel.submit(make_record())  # lands in the open window: not served yet
    body = await (await client.get("/v1/carbon/reports")).json()
    assert len(body["windows"]) == 1
    window = body["windows"][0]
    assert window["totals"]["requests"] == 2 and window["totals"]["errors"] == 1
    assert {(row["department"], row["model"], row["region"]) for row in window["usage"]} == {
        ("research", "llama", "us-central1"),
        ("research", "llama", "europe-west1"),
    }
    assert window["totals"]["energy_j"] == pytest.approx(6.0)
    assert {row["cluster"]: row["requests"] for row in window["clusters"]} == {"iowa": 1, "belgium": 1}
    tel.close_window()
    body = await (await client.get("/v1/carbon/reports?limit=1")).json()
    assert len(body["windows"]) == 1 and body["windows"][0]["totals"]["requests"] == 1
    for bad in ("x", "-1", "-100", "1.5"):
        response = await client.get(f"/v1/carbon/reports?limit={bad}")
        error = (await response.json())["error"]
        assert response.status == 400 and error["code"] in CODES and CODES[error["code"]] == 400
        assert error["param"] == "limit" and error["type"] == "invalid_request_error"
    assert (await (await client.get("/v1/carbon/reports?limit=0")).json())["windows"] == []


async def test_window_totals_use_cluster_meter_deltas() -> None:
    iowa_account = ClusterAccount("iowa", "us-central1", "scope2", 500.0, True, 150.0, 100.0, 50.0, 0.5)
    belgium_account = ClusterAccount("belgium", "europe-west1", "scope3_cat1")
    tel = Telemetry(make_settings(), cluster_energy=lambda: [iowa_account, belgium_account])
    try:
        iowa_account.attributed_j_total, iowa_account.idle_j_total = 130.0, 90.0
        iowa_account.idle_carbon_g_total = 0.75
        tel.submit(make_record())  # iowa, carbon 0.0035 g
        tel.submit(make_record(cluster="belgium", region="europe-west1", carbon_g=0.002,
                               carbon_market_g=0.001, embodied_g=0.0004, scope="scope3_cat1"))  # fmt: skip
        window = tel.close_window()
    finally:
        tel.ring.close()
    iowa = next(row for row in window["clusters"] if row["cluster"] == "iowa")
    assert iowa["attributed_energy_j"] == pytest.approx(30.0) and iowa["idle_energy_j"] == pytest.approx(40.0)
    assert iowa["idle_carbon_g"] == pytest.approx(0.25)
    belgium = next(row for row in window["clusters"] if row["cluster"] == "belgium")
    assert belgium["attributed_energy_j"] is None  # no meter for it: said so, not invented
    # Scope 2: iowa's requests and its idle energy; Scope 3 cat. 1: the external API's requests.
    assert window["scopes"]["scope2"]["location_g"] == pytest.approx(0.0035 + 0.25)
    assert window["scopes"]["scope3_cat1"]["location_g"] == pytest.approx(0.002)
    assert window["scopes"]["scope3_cat1"]["market_g"] == pytest.approx(0.001)
    assert window["scopes"]["scope3_cat1"]["embodied_g"] == pytest.approx(0.0004)
    totals = window["totals"]
    assert totals["fleet_carbon_g"] == pytest.approx(0.0035 + 0.002 + 0.25)
    # SCI = (E x I + M) per request: every operational gram plus every embodied gram, over 2 requests.
    assert totals["sci_g_per_request"] == pytest.approx((0.2555 + 0.0002 + 0.0004) / 2)


async def test_reports_as_csv() -> None:
    tel = Telemetry(make_settings())
    client = await serve(tel)
    try:
        tel.submit(make_record())
        tel.submit(make_record(region="europe-west1", cluster="belgium", prompt_tokens=60,
                               completion_tokens=40))  # fmt: skip
        tel.close_window()
        response = await client.get("/v1/carbon/reports?format=csv")
        assert response.status == 200 and response.content_type == "text/csv"
        rows = list(csv.DictReader(io.StringIO(await response.text())))
        clusters = await client.get("/v1/carbon/reports?format=csv&table=clusters")
        cluster_rows = list(csv.DictReader(io.StringIO(await clusters.text())))
        for query in ("format=xml", "format=csv&table=x"):
            bad = await client.get(f"/v1/carbon/reports?{query}")
            assert bad.status == 400 and (await bad.json())["error"]["code"] == "invalid_query"
    finally:
        await client.close()
        tel.ring.close()
    assert [(r["department"], r["model"], r["region"]) for r in rows] == [
        ("research", "llama", "europe-west1"), ("research", "llama", "us-central1"),
    ]  # fmt: skip
    sales = rows[0]
    assert float(sales["carbon_g"]) == pytest.approx(0.0035) and sales["intensity_basis"] == "lifecycle"
    assert float(sales["sci_g_per_1k_tokens"]) == pytest.approx((0.0035 + 0.0002) / 0.1)
    iowa = next(r for r in cluster_rows if r["cluster"] == "iowa")
    assert iowa["scope"] == "scope2" and int(iowa["requests"]) == 1


async def test_windows_kept_are_bounded() -> None:
    tel = Telemetry(make_settings(reports_kept=3))
    try:
        for _ in range(10):
            tel.close_window()
        assert len(tel.reports.closed) == 3
    finally:
        tel.ring.close()


async def test_token_protects_metrics_and_every_carbon_path() -> None:
    tel = Telemetry(make_settings(), token=TOKEN)
    client = await serve(tel)
    try:
        for path in ("/metrics", "/v1/carbon/reports", "/v1/carbon/intensity"):
            assert (await client.get(path)).status == 401
            wrong = await client.get(path, headers={"Authorization": "Bearer nope"})
            assert wrong.status == 401 and wrong.headers["WWW-Authenticate"].startswith("Bearer")
            error = (await wrong.json())["error"]
            assert CODES[error["code"]] == 401 and error["type"] == "authentication_error"
            ok = await client.get(path, headers={"Authorization": f"Bearer {TOKEN}"})
            assert ok.status == 200, path
        assert (await client.get("/healthz")).status == 200  # other paths are not the guard's business
    finally:
        await client.close()
        tel.ring.close()


def test_token_comparison() -> None:
    assert token_matches(f"Bearer {TOKEN}", TOKEN) and token_matches(f"bearer  {TOKEN} ", TOKEN)
    assert not token_matches(TOKEN, TOKEN) and not token_matches(f"Basic {TOKEN}", TOKEN)
    assert not token_matches("Bearer ", TOKEN)


async def test_separate_listener_moves_the_routes_off_the_api_app() -> None:
    tel = Telemetry(make_settings(listen_port=0))
    api = await serve(tel)
    admin_app = tel.admin_app()
    assert admin_app is not None
    admin = await serve(tel, admin_app)
    try:
        assert (await api.get("/metrics")).status == 404
        assert (await api.get("/healthz")).status == 200
        assert (await admin.get("/metrics")).status == 200
        assert (await admin.get("/v1/carbon/reports")).status == 200
    finally:
        await api.close()
        await admin.close()
        tel.ring.close()
    plain = Telemetry(make_settings())
    assert plain.admin_app() is None
    plain.ring.close()


async def test_timers_drain_and_close_windows_with_one_log_line_each(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=REPORT_LOGGER)
    tel = Telemetry(make_settings(reporting_interval="1s", drain_interval="50ms"))
    await tel.start()
    try:
        tel.submit(make_record())
        await asyncio.sleep(0.2)
        assert tel.ring.used == 0 and tel.totals.records == 1  # the timer drained it, no scrape needed
        await asyncio.sleep(1.2)
    finally:
        await tel.stop()
    windows = list(tel.reports.closed)
    assert len(windows) >= 2  # at least one timed close, plus the partial one closed by stop()
    assert sum(w["totals"]["requests"] for w in windows) == 1
    lines = [r for r in caplog.records if r.name == REPORT_LOGGER]
    assert len(lines) == len(windows)
    for record in lines:
        payload = json.loads(record.getMessage())
        assert payload["event"] == "carbon_report" and "totals" in payload
    assert tel.ring.closed


async def test_submit_from_another_thread_hops_onto_the_loop() -> None:
    tel = Telemetry(make_settings())
    await tel.start()
    try:

        def produce() -> None:
            for _ in range(50):
                tel.submit(make_record())

        worker = threading.Thread(target=produce)
        worker.start()
        await asyncio.to_thread(worker.join)
        await asyncio.sleep(0.05)
        tel.drain()
        assert tel.totals.records == 50 and tel.ring.dropped == 0
    finally:
        await tel.stop()


async def test_reports_carry_energy_ranges_and_the_measured_share() -> None:
    """docs/reporting.md tells the signer to sum energy_j_min/energy_j_max and quote the measured share:
    every window's totals, usage rows and cluster rows (JSON and CSV) and /metrics carry those sums."""
    tel = Telemetry(make_settings())
    client = await serve(tel)
    try:
        tel.submit(make_record(energy_j=30.0, energy_j_min=15.0, energy_j_max=60.0))  # estimated
        tel.submit(make_record(energy_j=20.0, energy_j_min=19.0, energy_j_max=21.0, energy_measured=True))
        tel.submit(make_record(energy_j=float("nan"), energy_j_min=-1.0, energy_j_max=float("inf"),
                               energy_measured=True))  # fmt: skip
        tel.close_window()
        window = (await (await client.get("/v1/carbon/reports")).json())["windows"][0]
        usage_csv = await (await client.get("/v1/carbon/reports?format=csv")).text()
        cluster_csv = await (await client.get("/v1/carbon/reports?format=csv&table=clusters")).text()
        metrics = tel.render_metrics().decode()
    finally:
        await client.close()
        tel.ring.close()
    expected = {"energy_j": 50.0, "energy_j_min": 34.0, "energy_j_max": 81.0, "energy_j_measured": 20.0}
    for row in (window["totals"], window["usage"][0]):
        assert {k: row[k] for k in expected} == pytest.approx(expected)
        assert row["requests_measured"] == 2 and row["requests"] == 3
    [csv_row] = list(csv.DictReader(io.StringIO(usage_csv)))
    assert {k: float(csv_row[k]) for k in expected} == pytest.approx(expected)
    assert int(csv_row["requests_measured"]) == 2
    iowa = next(r for r in csv.DictReader(io.StringIO(cluster_csv)) if r["cluster"] == "iowa")
    assert float(iowa["request_energy_j_min"]) == pytest.approx(34.0)
    assert float(iowa["request_energy_j_max"]) == pytest.approx(81.0)
    assert float(iowa["request_energy_j_measured"]) == pytest.approx(20.0)
    labels = '{department="research",model="llama",region="us-central1"}'
    for name, figure in (("bauxite_request_energy_min_joules_total", 34.0),
                         ("bauxite_request_energy_max_joules_total", 81.0),
                         ("bauxite_request_measured_energy_joules_total", 20.0)):  # fmt: skip
        assert f"{name}{labels} {figure}" in metrics, name
