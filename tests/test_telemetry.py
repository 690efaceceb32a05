"""Ring buffer, label interning, running totals and the Prometheus exposition."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from bauxite.accounting import ClusterAccount
from bauxite.intensity.base import RegionIntensity
from bauxite.records import ENDPOINTS, INDEX, PACKED, RequestRecord
from bauxite.settings import Settings, settings_from_mapping
from bauxite.telemetry.config import TelemetryConfigError
from bauxite.telemetry.labels import Interner
from bauxite.telemetry.ring import CAPACITY_BYTES, RECORD, RECORD_SIZE, RingBuffer
from bauxite.telemetry.service import Telemetry
from record_factory import make_record

CONFIG: dict[str, Any] = {
    "clusters": [
        {
            "name": "iowa",
            "region": "us-central1",
            "url": "http://127.0.0.1:1/v1",
            "models": ["llama", "qwen"],
        },
        {"name": "belgium", "region": "europe-west1", "url": "http://127.0.0.1:2/v1", "models": ["llama"]},
    ],
    "auth": {
        "keys": [
            {"department": "research", "sha256": "a" * 64, "departments": ["ops"]},
            {"department": "sales", "sha256": "b" * 64},
        ]
    },
}


def make_settings(**telemetry: Any) -> Settings:
    return settings_from_mapping({**CONFIG, "telemetry": {"lock_memory": True, **telemetry}})


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    tel = Telemetry(make_settings())
    yield tel
    tel.ring.close()


def samples(exposition: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(exposition.decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(exposition: bytes, name: str, **labels: str) -> float:
    return samples(exposition)[(name, tuple(sorted(labels.items())))]


# Ring buffer ------------------------------------------------------------------------------------------------


def test_buffer_is_exactly_2_mib_of_fixed_size_records() -> None:
    ring = RingBuffer()
    try:
        assert ring.capacity_bytes == CAPACITY_BYTES == 2_097_152
        assert RECORD.size == RECORD_SIZE and ring.slots * RECORD_SIZE == CAPACITY_BYTES
        assert len(ring.raw_bytes()) == CAPACITY_BYTES
    finally:
        ring.close()


def _mapping_of(address: int) -> list[str]:
    with open("/proc/self/maps", encoding="ascii") as maps:
        for line in maps:
            fields = line.split()
            start, end = (int(part, 16) for part in fields[0].split("-"))
            if start <= address < end:
                return fields
    raise AssertionError("buffer address not found in /proc/self/maps")


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/maps"), reason="needs Linux /proc")
def test_buffer_is_anonymous_private_memory_without_backing_file() -> None:
    ring = RingBuffer()
    try:
        fields = _mapping_of(ring.address)
        # address perms offset dev inode [pathname]: no pathname, inode 0, private — not even /dev/zero.
        assert len(fields) == 5, fields
        assert fields[4] == "0" and fields[1].startswith("rw") and fields[1].endswith("p")
    finally:
        ring.close()


def _vm_locked_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmLck:"):
                return int(line.split()[1])
    return -1


def test_buffer_lock_state_is_reported_truthfully() -> None:
    before = _vm_locked_kib()
    ring = RingBuffer(lock_memory=True)
    locked = ring.locked
    if locked:  # the kernel's own accounting agrees: 2 MiB more locked memory while the buffer lives
        assert _vm_locked_kib() - before >= CAPACITY_BYTES // 1024
    ring.close()
    assert _vm_locked_kib() == before
    unlocked = RingBuffer(lock_memory=False)
    assert unlocked.locked is False and _vm_locked_kib() == before
    unlocked.close()


def _fields(n: int) -> tuple[Any, ...]:
    """A raw record whose prompt_tokens field is ``n``, built from the declared layout."""
    values = {
        "label": n % 7, "enum": 0, "u16": 200, "u32": 2 * n, "f64": float(n),
    }  # fmt: skip
    fields = [n if c.name == "prompt_tokens" else values[c.kind] for c in PACKED]
    return (*fields, 0)


_PROMPT = INDEX["prompt_tokens"]


def test_ring_is_fifo_across_wraparound_and_counts_overflow() -> None:
    ring = RingBuffer(RECORD_SIZE * 8)
    try:
        for n in range(6):
            assert ring.append(*_fields(n))
        assert [r[_PROMPT] for r in ring.drain()] == list(range(6))
        for n in range(6, 14):  # wraps: slots 6, 7, then 0..5
            assert ring.append(*_fields(n))
        assert ring.used_bytes == 8 * RECORD_SIZE
        assert not ring.append(*_fields(99)) and not ring.append(*_fields(100))
        assert ring.dropped == 2 and ring.high_water == 8
        assert [r[_PROMPT] for r in ring.drain()] == list(range(6, 14))
        assert ring.used == 0 and ring.drain() == []
    finally:
        ring.close()
    assert not ring.append(*_fields(1)) and ring.dropped == 3  # closed: still counted, never raises


def test_overflow_counts_in_dropped_metric() -> None:
    tel = Telemetry(make_settings(), capacity_bytes=RECORD_SIZE * 4)
    try:
        for _ in range(10):
            tel.submit(make_record())
        out = tel.render_metrics()
        assert value(out, "bauxite_telemetry_records_dropped_total") == 6
        assert value(out, "bauxite_requests_total", model="llama", region="us-central1",
                     department="research", status="ok") == 4  # fmt: skip
    finally:
        tel.ring.close()


def test_scrub_zeroes_the_buffer_and_close_is_idempotent() -> None:
    ring = RingBuffer()
    ring.append(*_fields(5))
    assert any(ring.raw_bytes())
    ring.scrub()
    assert not any(ring.raw_bytes())
    ring.close()
    ring.close()
    assert ring.closed and ring.drain() == []


# Labels -----------------------------------------------------------------------------------------------------


def test_interner_closed_tables_collapse_unknown_values() -> None:
    models = Interner(["a", "b"])
    assert models.id("a") == 1 and models.value(models.id("b")) == "b"
    assert models.id("unknown") == 0 and models.value(0) == "other"
    assert len(models) == 3


def test_interner_open_tables_admit_only_short_tokens_up_to_a_cap() -> None:
    reasons = Interner([], open_cap=2)
    assert reasons.value(reasons.id("low_carbon")) == "low_carbon"
    assert reasons.id("Hello World <x@y.z>") == 0
    assert reasons.value(reasons.id("latency")) == "latency"
    assert reasons.id("third_value") == 0


# Exposition -------------------------------------------------------------------------------------------------

REQUIRED = {
    "bauxite_request_carbon_grams_total": {"model", "region", "department"},
    "bauxite_request_energy_joules_total": {"model", "region", "department"},
    "bauxite_requests_total": {"model", "region", "department", "status"},
    "bauxite_tokens_total": {"model", "region", "department", "kind"},
    "bauxite_grid_carbon_intensity_gco2_per_kwh": {"region", "zone", "provider"},
    "bauxite_routing_decisions_total": {"model", "region", "reason"},
    "bauxite_carbon_avoided_grams_total": {"model", "department", "source"},
    "bauxite_cluster_power_watts": {"cluster", "region"},
    "bauxite_cluster_energy_joules_total": {"cluster", "region", "kind"},
    "bauxite_cluster_carbon_grams_total": {"cluster", "region", "kind"},
    "bauxite_request_embodied_carbon_grams_total": {"model", "region", "department"},
    "bauxite_telemetry_buffer_capacity_bytes": set(),
    "bauxite_telemetry_buffer_used_bytes": set(),
    "bauxite_telemetry_records_dropped_total": set(),
    "bauxite_request_duration_seconds_bucket": {"model", "region", "le"},
    "bauxite_time_to_first_token_seconds_bucket": {"model", "region", "le"},
}


def account(cluster: str, region: str, power_w: float, attributed_j: float, idle_j: float) -> ClusterAccount:
    """A metered cluster's account as the accountant keeps it."""
    return ClusterAccount(
        cluster, region, "scope2", power_w, True, attributed_j + idle_j, attributed_j, idle_j,
        idle_carbon_g_total=idle_j / 3.6e6 * 430.0, idle_carbon_market_g_total=idle_j / 3.6e6 * 430.0,
        idle_embodied_g_total=0.01,
    )  # fmt: skip


def full_telemetry(meter: list[ClusterAccount]) -> Telemetry:
    grid = [
        RegionIntensity(
            "us-central1", "US-MIDW-MISO", "google_cloud", 430.0, "average", "lifecycle", 12.0, False
        ),
        RegionIntensity("europe-west1", "BE", "static", 110.0, "average", "lifecycle", 3.0, True),
    ]
    return Telemetry(make_settings(), intensity=lambda: grid, cluster_energy=lambda: meter)


def test_every_contract_metric_with_exact_labels_and_promtool_passes() -> None:
    meter = [account("iowa", "us-central1", 700.0, 1000.0, 400.0)]
    tel = full_telemetry(meter)
    try:
        tel.submit(make_record())
        tel.submit(make_record(status="error", http_status=503, ttft_s=-1.0, department="sales"))
        out = tel.render_metrics()
    finally:
        tel.ring.close()
    seen: dict[str, set[str]] = {}
    for (name, labels), _ in samples(out).items():
        seen.setdefault(name, set()).update(k for k, _ in labels)
    for name, names in REQUIRED.items():
        assert name in seen, name
        assert seen[name] == names, (name, seen[name])
    assert value(out, "bauxite_telemetry_buffer_capacity_bytes") == 2_097_152
    assert value(out, "bauxite_grid_carbon_intensity_gco2_per_kwh",
                 region="europe-west1", zone="BE", provider="static") == 110.0  # fmt: skip
    assert value(out, "bauxite_cluster_energy_joules_total", cluster="iowa", region="us-central1",
                 kind="idle") == 400.0  # fmt: skip
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool not found: install the Debian package prometheus (make system-deps)")
    check = subprocess.run([promtool, "check", "metrics"], input=out, capture_output=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.strip() == b"" and check.stderr.strip() == b"", check.stdout + check.stderr


def test_counters_accumulate_exact_totals(telemetry: Telemetry) -> None:
    for _ in range(3):
        telemetry.submit(make_record())
    telemetry.submit(make_record(region="europe-west1", cluster="belgium", energy_j=10.0, carbon_g=0.0004))
    out = telemetry.render_metrics()
    labels = {"model": "llama", "region": "us-central1", "department": "research"}
    assert value(out, "bauxite_request_energy_joules_total", **labels) == pytest.approx(90.0)
    assert value(out, "bauxite_request_carbon_grams_total", **labels) == pytest.approx(3 * 0.0035)
    assert value(out, "bauxite_request_it_energy_joules_total", **labels) == pytest.approx(3 * 27.27)
    assert value(out, "bauxite_request_gpu_energy_joules_total", **labels) == pytest.approx(3 * 19.0)
    assert value(out, "bauxite_request_embodied_carbon_grams_total", **labels) == pytest.approx(3 * 0.0002)
    assert value(out, "bauxite_cluster_carbon_grams_total", cluster="iowa", region="us-central1",
                 kind="attributed") == pytest.approx(3 * 0.0035)  # fmt: skip
    assert value(out, "bauxite_tokens_total", kind="prompt", **labels) == 300
    assert value(out, "bauxite_tokens_total", kind="cached", **labels) == 60
    assert value(out, "bauxite_carbon_avoided_grams_total", model="llama", department="research",
                 source="green_routing") == pytest.approx(0.004)  # fmt: skip
    assert value(out, "bauxite_routing_decisions_total", model="llama", region="europe-west1",
                 reason="least_loaded") == 1  # fmt: skip
    assert value(out, "bauxite_request_duration_seconds_count", model="llama", region="us-central1") == 3
    assert value(out, "bauxite_time_to_first_token_seconds_bucket", model="llama", region="us-central1",
                 le="0.1") == 3  # fmt: skip


def test_configured_series_exist_at_zero_before_traffic(telemetry: Telemetry) -> None:
    out = telemetry.render_metrics()
    assert value(out, "bauxite_requests_total", model="qwen", region="us-central1",
                 department="ops", status="ok") == 0  # fmt: skip
    # qwen is not served in europe-west1: no such series.
    assert not any(
        dict(labels).get("model") == "qwen" and dict(labels).get("region") == "europe-west1"
        for _, labels in samples(out)
    )


def test_label_values_come_only_from_configuration(telemetry: Telemetry) -> None:
    secret = "alice@example.com 4111-1111-1111-1111"
    telemetry.submit(make_record(model=secret, region=secret, cluster=secret, department=secret,
                                 route_reason=secret, intensity_source=secret))  # fmt: skip
    out = telemetry.render_metrics()
    assert b"alice" not in out and b"4111" not in out
    allowed = {"llama", "qwen", "us-central1", "europe-west1", "iowa", "belgium", "research", "ops", "sales",
               "anonymous", "other", "none", "ok", "error", "prompt", "completion", "cached", "green_routing",
               "kv_cache", "least_loaded", "attributed", "idle", *ENDPOINTS}  # fmt: skip
    for (name, labels), _ in samples(out).items():
        for key, label in labels:
            if key != "le":
                assert label in allowed, (name, key, label)
    assert value(out, "bauxite_requests_total", model="other", region="other", department="other",
                 status="ok") == 1  # fmt: skip


def test_cardinality_is_bounded_whatever_the_traffic(telemetry: Telemetry) -> None:
    for n in range(500):
        telemetry.submit(make_record(model=f"m{n}", department=f"d{n}", route_reason=f"r{n}"))
    series = len(samples(telemetry.render_metrics()))
    for n in range(500, 2000):
        telemetry.submit(make_record(model=f"m{n}", department=f"d{n}", route_reason=f"r{n}"))
    # The open reason table filled up during the first batch; afterwards nothing can add a series.
    assert len(samples(telemetry.render_metrics())) == series


def test_bad_numbers_never_poison_or_lower_counters(telemetry: Telemetry) -> None:
    telemetry.submit(make_record())
    first = value(telemetry.render_metrics(), "bauxite_request_carbon_grams_total",
                  model="llama", region="us-central1", department="research")  # fmt: skip
    telemetry.submit(make_record(carbon_g=math.nan, energy_j=-5.0, avoided_green_g=math.inf))
    telemetry.submit(make_record(prompt_tokens=-3, completion_tokens=2**40))
    out = telemetry.render_metrics()
    labels = {"model": "llama", "region": "us-central1", "department": "research"}
    assert value(out, "bauxite_request_carbon_grams_total", **labels) == pytest.approx(2 * first)  # NaN: 0
    assert value(out, "bauxite_request_energy_joules_total", **labels) == 60.0
    assert value(out, "bauxite_requests_total", status="ok", **labels) == 3
    assert value(out, "bauxite_telemetry_records_dropped_total") == 0


def test_malformed_record_is_counted_not_raised(telemetry: Telemetry) -> None:
    telemetry.submit(make_record(energy_j="lots"))
    assert value(telemetry.render_metrics(), "bauxite_telemetry_records_dropped_total") == 1


def test_cluster_energy_counter_never_decreases() -> None:
    meter = [account("iowa", "us-central1", 700.0, 1000.0, 400.0),
             account("not-configured", "mars", 1.0, 1.0, 1.0)]  # fmt: skip
    tel = full_telemetry(meter)
    try:
        tel.render_metrics()
        meter[0] = account("iowa", "us-central1", 650.0, 10.0, 5.0)  # the source restarted
        out = tel.render_metrics()
    finally:
        tel.ring.close()
    assert value(out, "bauxite_cluster_energy_joules_total", cluster="iowa", region="us-central1",
                 kind="attributed") == 1000.0  # fmt: skip
    assert value(out, "bauxite_cluster_power_watts", cluster="iowa", region="us-central1") == 650.0
    assert b"mars" not in out


def test_failing_sources_do_not_break_a_scrape() -> None:
    def broken() -> list[Any]:
        raise RuntimeError("provider down")

    tel = Telemetry(make_settings(), intensity=broken, cluster_energy=broken)
    try:
        tel.submit(make_record())
        assert b"bauxite_requests_total" in tel.render_metrics()
    finally:
        tel.ring.close()


def test_uses_its_own_registry_not_the_global_one(telemetry: Telemetry) -> None:
    from prometheus_client import REGISTRY, generate_latest

    telemetry.submit(make_record())
    telemetry.render_metrics()
    assert b"bauxite_" not in generate_latest(REGISTRY)
    other = Telemetry(make_settings())
    try:
        assert value(other.render_metrics(), "bauxite_requests_total", model="llama", region="us-central1",
                     department="research", status="ok") == 0  # fmt: skip
    finally:
        other.ring.close()


@pytest.mark.parametrize("name", ["PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir"])
def test_refuses_prometheus_multiprocess_mode(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    from bauxite.clusters import Fleet
    from bauxite.energy.service import EnergyService
    from bauxite.intensity.service import IntensityService

    monkeypatch.setenv(name, "/somewhere")
    s = make_settings()
    fleet = Fleet(s.clusters)
    with pytest.raises(TelemetryConfigError, match="multiprocess"):
        Telemetry.from_settings(
            s, fleet, IntensityService.from_settings(s), EnergyService.from_settings(s, fleet).cluster_energy
        )


def test_token_env_must_be_set(monkeypatch: pytest.MonkeyPatch) -> None:
    from bauxite.clusters import Fleet
    from bauxite.energy.service import EnergyService
    from bauxite.intensity.service import IntensityService

    monkeypatch.delenv("BAUXITE_TEST_METRICS_TOKEN", raising=False)
    s = make_settings(token_env="BAUXITE_TEST_METRICS_TOKEN")
    fleet = Fleet(s.clusters)
    with pytest.raises(TelemetryConfigError, match="BAUXITE_TEST_METRICS_TOKEN"):
        Telemetry.from_settings(
            s, fleet, IntensityService.from_settings(s), EnergyService.from_settings(s, fleet).cluster_energy
        )


def test_bad_telemetry_config_is_rejected() -> None:
    from bauxite.settings import ConfigError

    for bad in ({"drain_interval": 0}, {"duration_buckets_s": [1, 0.5]}, {"reports_kept": 0}, {"nope": 1}):
        with pytest.raises(ConfigError):
            make_settings(**bad)


records = st.builds(
    make_record,
    model=st.sampled_from(["llama", "qwen"]),
    department=st.sampled_from(["research", "ops", "sales"]),
    status=st.sampled_from(["ok", "error"]),
    prompt_tokens=st.integers(0, 100_000),
    completion_tokens=st.integers(0, 100_000),
    energy_j=st.floats(0, 1e6),
    carbon_g=st.floats(0, 1e3),
)


@settings(max_examples=30, deadline=None)
@given(st.lists(records, max_size=60))
def test_totals_equal_sum_of_records(batch: list[RequestRecord]) -> None:
    tel = Telemetry(make_settings())
    try:
        for record in batch:
            tel.submit(record)
        out = samples(tel.render_metrics())
    finally:
        tel.ring.close()

    def total(name: str, **match: str) -> float:
        return sum(v for (n, labels), v in out.items() if n == name and match.items() <= dict(labels).items())

    assert total("bauxite_requests_total") == len(batch)
    assert total("bauxite_requests_total", status="error") == sum(r.status == "error" for r in batch)
    assert total("bauxite_tokens_total", kind="prompt") == sum(r.prompt_tokens for r in batch)
    assert total("bauxite_request_energy_joules_total") == pytest.approx(sum(r.energy_j for r in batch))
    for dept in ("research", "ops", "sales"):
        assert total("bauxite_request_carbon_grams_total", department=dept) == pytest.approx(
            sum(r.carbon_g for r in batch if r.department == dept)
        )


def test_exposition_has_no_duplicate_or_malformed_lines(telemetry: Telemetry) -> None:
    telemetry.submit(make_record())
    text = telemetry.render_metrics().decode()
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert len(lines) == len(set(line.rsplit(" ", 1)[0] for line in lines))
    assert all(re.match(r"^[a-z_]+(\{.*\})? \S+$", line) for line in lines)
