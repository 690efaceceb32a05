"""Region catalogue, shipped traces, offline providers and the intensity config section."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bauxite.intensity.base import Intensity, MixedSignalError, lowest, require_one_signal
from bauxite.intensity.catalogue import Catalogue, UnknownRegionError, locate, validate_region
from bauxite.intensity.config import IntensitySettings, TraceSettings
from bauxite.intensity.local import CloudTableProvider, StaticProvider, TraceProvider
from bauxite.intensity.traces import SHIPPED_TRACES, TraceError, load_trace
from bauxite.intensity.validate import intensity_problems
from bauxite.settings import ConfigError, Settings, settings_from_mapping


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return Catalogue.load()


def _static(catalogue: Catalogue, region: str) -> Intensity:
    provider = StaticProvider(catalogue, lambda: 1000.0)
    key = provider.key_for(locate(catalogue, region))
    assert key is not None
    return provider.lookup(key)


@pytest.mark.parametrize(
    ("region", "g_per_kwh", "reference", "year"),
    [
        ("us-east-1", 379.069, "Cloud Carbon Footprint: EPA eGRID2020", 2020),
        ("eu-west-1", 278.6, "Cloud Carbon Footprint: EEA", None),
        ("ap-northeast-1", 465.8, "Cloud Carbon Footprint: carbonfootprint.com", 2021),
        ("eu-north-1", 8.8, "Cloud Carbon Footprint", None),
        ("europe-west4", 208.81, "Google region-carbon-info 2024", 2024),
        ("us-central1", 412.72, "Google region-carbon-info 2024", 2024),
        ("europe-north2", 2.73, "Google region-carbon-info 2024", 2024),
    ],
)
def test_offline_defaults_match_shipped_tables(
    catalogue: Catalogue, region: str, g_per_kwh: float, reference: str, year: int | None
) -> None:
    value = _static(catalogue, region)
    assert value.g_per_kwh == g_per_kwh
    assert value.reference.startswith(reference)
    if year is not None:
        assert value.year == year
    assert value.source == "static" and value.signal == "average"


def test_google_figures_carry_cfe_share_and_cloud_table_covers_only_its_cloud(catalogue: Catalogue) -> None:
    google = CloudTableProvider("google_cloud", "gcp", catalogue, lambda: 0.0)
    value = google.lookup(google.key_for(locate(catalogue, "europe-west4")) or "")
    assert (value.g_per_kwh, value.cfe_share, value.year, value.source) == (
        208.81,
        0.83,
        2024,
        "google_cloud",
    )
    assert google.key_for(locate(catalogue, "us-east-1")) is None
    aws = CloudTableProvider("aws", "aws", catalogue, lambda: 0.0)
    assert aws.lookup(aws.key_for(locate(catalogue, "us-east-1")) or "").g_per_kwh == 379.069


def test_doubtful_azure_zones_are_corrected(catalogue: Catalogue) -> None:
    assert locate(catalogue, "westus2").zone == "US-NW-BPAT"
    assert locate(catalogue, "westus3").zone == "US-SW-AZPS"
    assert locate(catalogue, "westus").zone == "US-CAL-CISO"  # untouched rows stay as shipped


def test_lookup_accepts_bare_and_prefixed_names(catalogue: Catalogue) -> None:
    bare = catalogue.find("us-east-1")
    assert bare is not None and bare.cloud == "aws"
    assert catalogue.find("aws:us-east-1") == bare
    assert catalogue.find("gcp/europe-west4") == catalogue.find("europe-west4")
    assert catalogue.find("google_cloud:us-central1") == catalogue.find("us-central1")
    assert catalogue.find("azure:westus2") is not None
    assert catalogue.find("aws:europe-west4") is None  # the prefix restricts the cloud


def test_unknown_region_names_closest_matches(catalogue: Catalogue) -> None:
    with pytest.raises(UnknownRegionError, match=r"us-east-1") as info:
        validate_region("us-est-1", catalogue=catalogue)
    assert "unknown region 'us-est-1'" in str(info.value)
    assert validate_region("my-datacentre", zone="DE", catalogue=catalogue) is None  # a zone makes it usable


def test_every_catalogued_region_has_a_static_value(catalogue: Catalogue) -> None:
    for entry in catalogue.entries():
        value = _static(catalogue, entry.key)
        assert value.g_per_kwh == entry.g_per_kwh >= 0


def test_zone_only_cluster_and_unknown_region_fall_back_sensibly(catalogue: Catalogue) -> None:
    provider = StaticProvider(catalogue, lambda: 0.0)
    germany = provider.lookup(provider.key_for(locate(catalogue, "onprem-berlin", "DE")) or "")
    assert germany.zone == "DE" and germany.g_per_kwh > 0
    nowhere = provider.lookup(provider.key_for(locate(catalogue, "mars-1")) or "")
    assert nowhere.g_per_kwh == catalogue.default.g_per_kwh == 392.7819


@pytest.mark.parametrize(
    ("region", "trace"),
    [
        ("us-east-1", "PJM"),
        ("us-east4", "PJM"),
        ("us-west-2", "BPAT"),
        ("us-west1", "BPAT"),
        ("us-west-1", "CISO"),
        ("us-central1", "MISO"),
        ("us-south1", "ERCO"),
        ("us-east1", "SOCO"),
        ("westus3", "AZPS"),
        ("us-east-2", "PJM"),
    ],
)
def test_regions_map_to_trace_balancing_authorities(catalogue: Catalogue, region: str, trace: str) -> None:
    assert locate(catalogue, region).balancing_authority == trace


def test_new_york_zone_maps_to_nyis(catalogue: Catalogue) -> None:
    assert locate(catalogue, "nyc-colo", "US-NY-NYIS").balancing_authority == "NYIS"


# --- traces -------------------------------------------------------------------------------------------


def test_shipped_trace_is_a_full_hourly_year_with_gaps_filled() -> None:
    trace = load_trace("PJM")
    assert len(trace.values_g_per_kwh) == 8760
    assert trace.start_s == datetime(2022, 1, 1, tzinfo=UTC).timestamp()
    assert trace.end_s == datetime(2023, 1, 1, tzinfo=UTC).timestamp()
    assert trace.mean_g_per_kwh() == pytest.approx(362.6, abs=0.1)
    # 2022-03-13 07:00-09:00 UTC are blank in the file: filled on the line between 06:00 and 10:00.
    hour = datetime(2022, 3, 13, 6, tzinfo=UTC).timestamp()
    before, first_gap, after = trace.at(hour), trace.at(hour + 3600), trace.at(hour + 4 * 3600)
    assert first_gap == pytest.approx(before + (after - before) / 4)
    assert trace.at(0) == trace.values_g_per_kwh[0]  # clamps before the start
    assert trace.at(4e9) == trace.values_g_per_kwh[-1]


@pytest.mark.parametrize(("code", "mean"), [("BPAT", 54.7), ("AZPS", 575.0), ("CISO", 256.2)])
def test_every_shipped_trace_loads(code: str, mean: float) -> None:
    assert code in SHIPPED_TRACES
    assert load_trace(code.lower()).mean_g_per_kwh() == pytest.approx(mean, abs=0.1)


def test_user_csv_trace_with_gap_and_gzip(tmp_path: Path) -> None:
    text = "timestamp,g_per_kwh\n2024-01-01T00:00Z,100\n2024-01-01T01:00Z,200\n2024-01-01T03:00Z,400\n"
    plain = tmp_path / "mine.csv"
    plain.write_text(text)
    trace = load_trace(str(plain))
    assert trace.values_g_per_kwh == [100.0, 200.0, 300.0, 400.0]
    packed = tmp_path / "mine.csv.gz"
    packed.write_bytes(gzip.compress(text.encode()))
    assert load_trace(str(packed)).values_g_per_kwh == trace.values_g_per_kwh


def test_bad_trace_sources_raise_readable_errors(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="neither a shipped trace"):
        load_trace("XYZ")
    bad = tmp_path / "bad.csv"
    bad.write_text("time,value\n1,2\n")
    with pytest.raises(TraceError, match="expected columns"):
        load_trace(str(bad))


def test_trace_replay_advances_with_speedup(catalogue: Catalogue) -> None:
    now = [1_700_000_000.0]
    settings = TraceSettings(start_at=datetime(2022, 1, 1, tzinfo=UTC), speedup=3600.0)
    provider = TraceProvider(settings, catalogue, lambda: now[0])
    key = provider.key_for(locate(catalogue, "us-east-1"))
    assert key == "PJM"
    provider.preload([key])
    pjm = load_trace("PJM")
    first = provider.lookup(key)
    assert first.g_per_kwh == pjm.values_g_per_kwh[0] and first.basis == "lifecycle"
    now[0] += 5.0  # five real seconds at 3600x: five simulated hours
    assert provider.lookup(key).g_per_kwh == pjm.values_g_per_kwh[5]
    assert "2022-01-01T05:00Z" in provider.lookup(key).reference


# --- comparison guard -----------------------------------------------------------------------------------


def test_require_one_signal_refuses_to_mix_marginal_and_average() -> None:
    average = Intensity("A", 100.0, 0.0, "static", signal="average")
    marginal = Intensity("B", 50.0, 0.0, "watttime", signal="marginal")
    with pytest.raises(MixedSignalError):
        require_one_signal({"a": average, "b": marginal})
    with pytest.raises(MixedSignalError):
        lowest({"a": average, "b": marginal})
    assert lowest({"a": average, "c": Intensity("C", 90.0, 0.0, "static")}) == "c"


# --- config -----------------------------------------------------------------------------------------------


def test_minimal_config_loads_with_intensity_defaults() -> None:
    settings = settings_from_mapping({"enterprise": {"carbon_tracking": {"provider": "google_cloud"}}})
    section = settings.intensity
    assert section == IntensitySettings()
    assert section.refresh_interval == 300.0 and section.stale_max_age == 7200.0
    assert section.electricity_maps.api_key_env == "ELECTRICITY_MAPS_API_KEY"


def test_intensity_config_parses_durations_and_rejects_typos() -> None:
    settings = settings_from_mapping({"intensity": {"refresh_interval": "5m", "trace": {"speedup": 600}}})
    assert settings.intensity.refresh_interval == 300.0 and settings.intensity.trace.speedup == 600
    with pytest.raises(ConfigError, match=r"intensity\.electricity_maps\.api_key"):
        settings_from_mapping({"intensity": {"electricity_maps": {"api_key": "secret"}}})
    with pytest.raises(ConfigError, match=r"intensity\.uk_carbon_intensity\.region_ids"):
        settings_from_mapping({"intensity": {"uk_carbon_intensity": {"region_ids": {"eu-west-2": 42}}}})


def test_config_validation_lists_unknown_regions_and_bad_traces(catalogue: Catalogue) -> None:
    # Loading runs the same checks and reports every problem with its key path.
    with pytest.raises(ConfigError) as info:
        settings_from_mapping(BAD_INTENSITY_CONFIG, "bad.yaml")
    assert [path for path, _ in info.value.problems] == [
        "clusters[1].region",
        "intensity.trace.traces.us-east-1",
    ]
    settings = Settings.model_validate(BAD_INTENSITY_CONFIG)
    problems = dict(intensity_problems(settings, catalogue))
    assert set(problems) == {"clusters[1].region", "intensity.trace.traces.us-east-1"}
    assert "europe-west4" in problems["clusters[1].region"]


BAD_INTENSITY_CONFIG = {
    "enterprise": {"carbon_tracking": {"provider": "trace"}},
    "clusters": [
        {"name": "a", "region": "us-east-1", "url": "http://127.0.0.1:9/v1", "models": ["m"]},
        {"name": "b", "region": "europe-wst4", "url": "http://127.0.0.1:9/v1", "models": ["m"]},
        {
            "name": "c",
            "region": "berlin-dc",
            "zone": "DE",
            "url": "http://127.0.0.1:9/v1",
            "models": ["m"],
        },
    ],
    "intensity": {"trace": {"traces": {"us-east-1": "/no/such/trace.csv"}}},
}
