"""A real Prometheus server scrapes a real gateway in front of the simulated fleet.

Prometheus runs from the shipped local scrape config (examples/prometheus/prometheus-local.yml) with only the
target and interval changed. After traffic, every query of every dashboard panel, read through Grafana's typed
models, returns data through Prometheus' HTTP API the way Grafana sends it (instant or range), and Prometheus'
totals equal the gateway's own accounting of the requests sent.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from bauxite.records import RequestRecord
from bauxite.settings import sha256_hex
from grafana_dashboard import expand, panels, queries
from harness import Harness, fleet_config
from servers import Prometheus

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "prometheus"
KEYS = {"research": "key-research-0001", "sales": "key-sales-0002"}


@pytest.fixture(autouse=True)
def _prometheus_installed() -> None:
    # A missing tool is a failed set-up, never a skipped test: `make test` installs it.
    if not Path(PROMETHEUS).exists():
        pytest.fail(f"{PROMETHEUS} not found: install the Debian package prometheus (make system-deps)")


def config() -> dict[str, Any]:
    cfg = fleet_config(
        auth={
            "allow_anonymous": True,
            "keys": [{"department": d, "sha256": sha256_hex(k)} for d, k in KEYS.items()],
        },
    )
    # A cluster meter (the static power model) feeds the cluster power and energy series.
    for cluster in cfg["clusters"]:
        cluster["power"] = {"source": "static", "scrape_interval": "500ms"}
    return cfg


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Harness, Prometheus]]:
    with Harness(config()) as harness:
        # The shipped local quick-start config, pointed at this gateway and scraping every second.
        shipped = yaml.safe_load((EXAMPLES / "prometheus-local.yml").read_text(encoding="utf-8"))
        target = harness.base_url.removeprefix("http://")
        prometheus = Prometheus(tmp_path_factory.mktemp("prometheus"), [target], config=shipped)
        try:
            yield harness, prometheus
        finally:
            prometheus.stop()


def send_traffic(harness: Harness) -> int:
    sent = 0
    for department, key in [*KEYS.items(), ("anonymous", "no-such-key-but-anonymous-is-allowed")]:
        client = openai.OpenAI(base_url=harness.base_url + "/v1", api_key=key, max_retries=0)
        for n in range(4):
            client.chat.completions.create(
                model="tiny-8b", messages=[{"role": "user", "content": f"hello {n}"}], max_tokens=3 + n
            )
            sent += 1
        for chunk in client.chat.completions.create(
            model="tiny-8b", messages=[{"role": "user", "content": "stream"}], max_tokens=4, stream=True
        ):
            assert chunk is not None
        client.embeddings.create(model="embed-small", input=f"embed for {department}")
        sent += 2
    return sent


def wait_for(prometheus: Prometheus, expr: str, expected: float, timeout: float = 30.0) -> float:
    deadline = time.monotonic() + timeout
    seen = float("nan")
    while time.monotonic() < deadline:
        seen = prometheus.scalar(expr)
        if seen == expected:
            return seen
        time.sleep(0.25)
    return seen


def panel_queries() -> list[tuple[str, str, bool]]:
    """(panel title, PromQL as Grafana sends it, whether it is an instant query) for every panel query."""
    return [(p.title or "", expand(q.expr), bool(q.instant)) for p in panels() for q in queries(p)]


@pytest.fixture(scope="module")
def traffic(stack: tuple[Harness, Prometheus]) -> list[RequestRecord]:
    """Send the traffic once per module; return the records once Prometheus has scraped all of them."""
    harness, prometheus = stack
    # Let Prometheus see the zero-valued series first, as it would for a long-running gateway.
    assert wait_for(prometheus, "sum(bauxite_requests_total)", 0) == 0
    sent = send_traffic(harness)
    records = harness.wait_records(sent)
    assert len(records) == sent
    assert wait_for(prometheus, "sum(bauxite_requests_total)", sent) == sent
    return records


def test_prometheus_totals_match_the_gateways_accounting(
    stack: tuple[Harness, Prometheus], traffic: list[RequestRecord]
) -> None:
    _, prometheus = stack
    records = traffic

    by_department: dict[str, list[float]] = {}
    for record in records:
        acc = by_department.setdefault(record.department, [0.0, 0.0, 0.0, 0.0])
        acc[0] += record.carbon_g
        acc[1] += record.energy_j
        acc[2] += record.prompt_tokens
        acc[3] += record.completion_tokens
    assert set(by_department) == {"research", "sales", "anonymous"}
    for department, (carbon_g, energy_j, prompt, completion) in by_department.items():
        sel = f'{{department="{department}"}}'
        assert carbon_g > 0 and energy_j > 0
        assert prometheus.scalar(f"sum(bauxite_request_carbon_grams_total{sel})") == pytest.approx(carbon_g)
        assert prometheus.scalar(f"sum(bauxite_request_energy_joules_total{sel})") == pytest.approx(energy_j)
        sel_prompt = f'{{department="{department}", kind="prompt"}}'
        sel_completion = f'{{department="{department}", kind="completion"}}'
        assert prometheus.scalar(f"sum(bauxite_tokens_total{sel_prompt})") == prompt
        assert prometheus.scalar(f"sum(bauxite_tokens_total{sel_completion})") == completion
        assert prometheus.scalar(f"sum(bauxite_requests_total{sel})") == sum(
            r.department == department for r in records
        )
    # Both clusters' meters are exported, each as attributed and idle energy.
    assert prometheus.scalar("count(bauxite_cluster_energy_joules_total)") == 4
    assert prometheus.scalar('sum(bauxite_cluster_energy_joules_total{kind="idle"})') > 0
    assert prometheus.scalar("sum(bauxite_telemetry_records_dropped_total)") == 0
    assert prometheus.scalar("bauxite_telemetry_buffer_capacity_bytes") == 2_097_152


def test_every_dashboard_panel_query_returns_data(
    stack: tuple[Harness, Prometheus], traffic: list[RequestRecord]
) -> None:
    _, prometheus = stack
    # Scrapes after the traffic, so rate() and increase() have at least two samples in their window.
    time.sleep(2.5)
    empty = []
    for title, expr, instant in panel_queries():
        result = prometheus.query(expr) if instant else prometheus.query_range(expr)
        if not result:
            empty.append((title, expr))
        elif title.startswith("Total CO2e"):
            assert float(result[0]["value"][1]) > 0
        elif title.startswith("KV-aware") and "kind=" in expr:
            # The cached share is a fraction of prompt tokens: never above 1.
            assert all(0 <= float(v) <= 1 for series in result for _, v in series["values"] if v != "NaN")
    assert empty == []


def test_dashboard_covers_the_required_panels() -> None:
    titles = [title.lower() for title, _, _ in panel_queries()]
    needed_titles = (
        "total co2e", "by department", "by model", "by region", "grid carbon intensity",
        "energy per 1,000 tokens per cluster", "routing decisions", "green routing and kv-cache",
        "kv-aware routing", "telemetry buffer",
    )  # fmt: skip
    for needed in needed_titles:
        assert any(needed in title for title in titles), needed


def test_example_scrape_config_is_valid(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is required: apt-get install prometheus"
    local = subprocess.run(
        [promtool, "check", "config", str(EXAMPLES / "prometheus-local.yml")], capture_output=True, timeout=30
    )
    assert local.returncode == 0, local.stdout + local.stderr
    example = EXAMPLES / "prometheus.yml"
    token = tmp_path / "token"
    token.write_text("example-token", encoding="utf-8")
    text = example.read_text(encoding="utf-8").replace("/etc/prometheus/bauxite-metrics.token", str(token))
    (tmp_path / "prometheus.yml").write_text(text, encoding="utf-8")
    check = subprocess.run(
        [promtool, "check", "config", str(tmp_path / "prometheus.yml")], capture_output=True, timeout=30
    )
    assert check.returncode == 0, check.stdout + check.stderr
