"""Live providers through their real HTTP client code, against a local fake speaking each wire format."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from bauxite.intensity.base import IntensityError, Location
from bauxite.intensity.config import ElectricityMapsSettings, UkCarbonIntensitySettings, WattTimeSettings
from bauxite.intensity.electricity_maps import ElectricityMapsProvider
from bauxite.intensity.http import HttpClient
from bauxite.intensity.uk import UkCarbonIntensityProvider
from bauxite.intensity.watttime import TOKEN_LIFETIME_S, WattTimeProvider
from intensity_fakes import EM_KEY, WT_PASSWORD, WT_USER, FakeProviders

TIMEOUT_S = 0.3
T_20240301_12 = datetime(2024, 3, 1, 12, tzinfo=UTC).timestamp()


@pytest.fixture
async def http() -> AsyncIterator[HttpClient]:
    client = HttpClient(TIMEOUT_S)
    yield client
    await client.close()


def _em(
    fake: FakeProviders, http: HttpClient, key: str | None = EM_KEY, **options: object
) -> ElectricityMapsProvider:
    settings = ElectricityMapsSettings(base_url=fake.base_url + "/em/v3", **options)  # type: ignore[arg-type]
    return ElectricityMapsProvider(http, settings, key, lambda: 5000.0)


# --- Electricity Maps -------------------------------------------------------------------------------------


async def test_em_latest_sends_key_header_and_parses_point(fake: FakeProviders, http: HttpClient) -> None:
    value = await _em(fake, http).current("DE")
    assert (value.zone, value.g_per_kwh, value.at) == ("DE", 302.0, T_20240301_12)
    assert (value.signal, value.basis, value.source, value.fetched_at) == (
        "average",
        "lifecycle",
        "electricity_maps",
        5000.0,
    )
    path, query, headers = fake.requests[-1]
    assert path == "/em/v3/carbon-intensity/latest"
    assert query == {"zone": "DE", "emissionFactorType": "lifecycle"}
    assert headers["auth-token"] == EM_KEY


async def test_em_data_center_query_and_direct_factor(fake: FakeProviders, http: HttpClient) -> None:
    provider = _em(fake, http, use_data_center=True, emission_factor_type="direct")
    key = provider.key_for(Location("europe-west4", "NL", True, "gcp", "europe-west4"))
    assert key == "gcp/europe-west4"
    await provider.current(key)
    _, query, _ = fake.requests[-1]
    assert query["dataCenterProvider"] == "gcp" and query["dataCenterRegion"] == "europe-west4"
    assert query["emissionFactorType"] == "direct" and "zone" not in query


async def test_em_missing_key_fails_without_calling(fake: FakeProviders, http: HttpClient) -> None:
    with pytest.raises(IntensityError, match="no API key") as info:
        await _em(fake, http, key=None).current("DE")
    assert info.value.status == 401 and fake.requests == []


async def test_em_bad_key_is_a_401_with_the_provider_message(fake: FakeProviders, http: HttpClient) -> None:
    with pytest.raises(IntensityError, match="Invalid auth-token") as info:
        await _em(fake, http, key="wrong").current("DE")
    assert info.value.status == 401
    assert "wrong" not in str(info.value)  # the key never appears in messages


async def test_em_429_reports_retry_after(fake: FakeProviders, http: HttpClient) -> None:
    fake.script("em", "429")
    with pytest.raises(IntensityError) as info:
        await _em(fake, http).current("DE")
    assert (info.value.status, info.value.retry_after_s) == (429, 7.0)


@pytest.mark.parametrize(
    ("mode", "message"), [("null", "null"), ("malformed", "not valid JSON"), ("500", "HTTP 500")]
)
async def test_em_bad_answers_raise(fake: FakeProviders, http: HttpClient, mode: str, message: str) -> None:
    fake.script("em", mode)
    with pytest.raises(IntensityError, match=message):
        await _em(fake, http).current("DE")


async def test_em_hanging_server_times_out(fake: FakeProviders, http: HttpClient) -> None:
    fake.script("em", "hang")
    with pytest.raises(IntensityError, match=r"no answer within 0\.3s"):
        await _em(fake, http).current("DE")


async def test_em_history_skips_null_points_and_forecast_parses(
    fake: FakeProviders, http: HttpClient
) -> None:
    fake.script("em", "null")
    history = await _em(fake, http).history("DE")
    assert len(history) == 23 and history[0].g_per_kwh == 301.0  # the first (null) point is left out
    assert [p.at for p in history] == sorted(p.at for p in history)
    forecast = await _em(fake, http).forecast("DE")
    assert forecast[0].g_per_kwh == 290.0 and forecast[0].at == T_20240301_12


# --- WattTime -----------------------------------------------------------------------------------------------


def _wt(
    fake: FakeProviders,
    http: HttpClient,
    clock: list[float] | None = None,
    user: str | None = WT_USER,
    password: str | None = WT_PASSWORD,
) -> WattTimeProvider:
    now = clock or [0.0]
    settings = WattTimeSettings(base_url=fake.base_url + "/wt", regions={"us-west-1": "CAISO_NORTH"})
    return WattTimeProvider(http, settings, user, password, lambda: now[0])


async def test_wt_logs_in_and_converts_lbs_per_mwh(fake: FakeProviders, http: HttpClient) -> None:
    provider = _wt(fake, http)
    key = provider.key_for(Location("us-west-1", "US-CAL-CISO", True, "aws", "us-west-1"))
    value = await provider.current(key or "")
    assert value.g_per_kwh == pytest.approx(900 * 0.45359237)
    assert (value.signal, value.source, value.zone) == ("marginal", "watttime", "CAISO_NORTH")
    assert fake.paths() == ["/wt/login", "/wt/v3/forecast"]
    _, query, headers = fake.requests[-1]
    assert query["horizon_hours"] == "0" and headers["Authorization"] == "Bearer token-1"


async def test_wt_region_from_coordinates_is_learnt_once(fake: FakeProviders, http: HttpClient) -> None:
    provider = _wt(fake, http)
    key = provider.key_for(Location("mine", "X", False, latitude=38.0, longitude=-122.0))
    assert key == "@38.0,-122.0"
    await provider.current(key)
    await provider.current(key)
    assert fake.paths("/wt/v3/region-from-loc") == ["/wt/v3/region-from-loc"]
    assert fake.requests[-1][1]["region"] == "CAISO_NORTH"


async def test_wt_missing_or_bad_credentials(fake: FakeProviders, http: HttpClient) -> None:
    with pytest.raises(IntensityError, match="no credentials"):
        await _wt(fake, http, user=None).current("CAISO_NORTH")
    assert fake.requests == []
    with pytest.raises(IntensityError, match="login: HTTP 401") as info:
        await _wt(fake, http, password="nope").current("CAISO_NORTH")
    assert info.value.status == 401 and "nope" not in str(info.value)


async def test_wt_expired_token_as_403_html_logs_in_again_once(fake: FakeProviders, http: HttpClient) -> None:
    provider = _wt(fake, http)
    await provider.current("CAISO_NORTH")
    fake.script("wt", "expired")
    value = await provider.current("CAISO_NORTH")
    assert value.g_per_kwh > 0 and provider.logins == 2 == fake.wt_logins
    fake.script("wt", "expired", "expired")  # still refused after a fresh login: give up, no loop
    with pytest.raises(IntensityError, match="HTTP 403"):
        await provider.current("CAISO_NORTH")
    assert provider.logins == 3


async def test_wt_token_renewed_before_it_lapses(fake: FakeProviders, http: HttpClient) -> None:
    clock = [0.0]
    provider = _wt(fake, http, clock)
    await provider.current("CAISO_NORTH")
    clock[0] += TOKEN_LIFETIME_S + 1
    await provider.current("CAISO_NORTH")
    assert fake.wt_logins == 2


async def test_wt_scope_403_is_not_a_login_problem(fake: FakeProviders, http: HttpClient) -> None:
    provider = _wt(fake, http)
    fake.script("wt", "scope")
    with pytest.raises(IntensityError, match="Invalid scope") as info:
        await provider.current("CAISO_NORTH")
    assert info.value.status == 403 and provider.logins == 1


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("429", "HTTP 429"),
        ("null", "no current value"),
        ("malformed", "not valid JSON"),
        ("hang", "no answer"),
    ],
)
async def test_wt_failures(fake: FakeProviders, http: HttpClient, mode: str, message: str) -> None:
    fake.script("wt", mode)
    with pytest.raises(IntensityError, match=message):
        await _wt(fake, http).current("CAISO_NORTH")


async def test_wt_forecast_is_marginal_and_ordered(fake: FakeProviders, http: HttpClient) -> None:
    points = await _wt(fake, http).forecast("CAISO_NORTH")
    assert len(points) == 12 and all(p.signal == "marginal" for p in points)
    assert points[0].at == T_20240301_12 and points[-1].g_per_kwh == pytest.approx(889 * 0.45359237)


# --- UK Carbon Intensity ---------------------------------------------------------------------------------


def _uk(fake: FakeProviders, http: HttpClient) -> UkCarbonIntensityProvider:
    settings = UkCarbonIntensitySettings(base_url=fake.base_url + "/uk")
    return UkCarbonIntensityProvider(http, settings, lambda: T_20240301_12)


async def test_uk_national_prefers_actual(fake: FakeProviders, http: HttpClient) -> None:
    provider = _uk(fake, http)
    assert provider.key_for(Location("eu-west-1", "IE", True, "aws", "eu-west-1")) is None
    assert provider.key_for(Location("my-gb", "GB", True)) == "national"
    value = await provider.current("national")
    assert (value.g_per_kwh, value.at, value.signal) == (190.0, T_20240301_12, "average")
    assert fake.requests[-1][2]["Accept"] == "application/json"


@pytest.mark.parametrize("mode", ["ok", "object"])
async def test_uk_regional_data_as_list_or_object(fake: FakeProviders, http: HttpClient, mode: str) -> None:
    provider = _uk(fake, http)
    key = provider.key_for(Location("eu-west-2", "GB", True, "aws", "eu-west-2"))
    assert key == "13"
    fake.script("uk", mode)
    assert (await provider.current(key)).g_per_kwh == 160.0
    assert fake.paths()[-1] == "/uk/regional/regionid/13"


async def test_uk_forecasts_fall_back_from_null_actual(fake: FakeProviders, http: HttpClient) -> None:
    provider = _uk(fake, http)
    national = await provider.forecast("national")
    assert national[0].g_per_kwh == 180.0  # actual is null in forecasts
    assert fake.paths()[-1] == "/uk/intensity/2024-03-01T12:00Z/fw24h"
    regional = await provider.forecast("13")  # this response carries data as an object
    assert regional[0].g_per_kwh == 150.0 and len(regional) > 1


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("null", "no current value"),
        ("malformed", "not valid JSON"),
        ("429", "HTTP 429"),
        ("hang", "no answer"),
    ],
)
async def test_uk_failures(fake: FakeProviders, http: HttpClient, mode: str, message: str) -> None:
    fake.script("uk", mode)
    with pytest.raises(IntensityError, match=message):
        await _uk(fake, http).current("13")


async def test_uk_error_body_message_is_reported(fake: FakeProviders, http: HttpClient) -> None:
    with pytest.raises(IntensityError, match="valid ISO 8601") as info:
        await _uk(fake, http).current("99")
    assert info.value.status == 400
