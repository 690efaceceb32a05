"""The ``intensity:`` config section (provider credentials, refresh cadence, fallbacks).

Credentials are always the NAMES of environment variables, never the secrets themselves.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..durations import DurationS

ProviderName = Literal[
    "google_cloud", "aws", "azure", "electricity_maps", "watttime", "uk_carbon_intensity", "static", "trace"
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ElectricityMapsSettings(_Section):
    api_key_env: str = "ELECTRICITY_MAPS_API_KEY"
    base_url: str = "https://api.electricitymaps.com/v3"
    emission_factor_type: Literal["lifecycle", "direct"] = "lifecycle"
    # Ask by dataCenterProvider/dataCenterRegion (the cloud region) instead of by grid zone.
    use_data_center: bool = False
    disable_estimations: bool = False


class WattTimeSettings(_Section):
    username_env: str = "WATTTIME_USERNAME"
    password_env: str = "WATTTIME_PASSWORD"
    base_url: str = "https://api.watttime.org"
    signal_type: str = "co2_moer"
    # Region or zone → WattTime region (e.g. "us-west-1": "CAISO_NORTH"); others resolved from coordinates.
    regions: dict[str, str] = Field(default_factory=dict)


class UkCarbonIntensitySettings(_Section):
    base_url: str = "https://api.carbonintensity.org.uk"
    # Region → UK regional id 1-17 (13 London, 7 South Wales); GB regions not listed use the built-in map,
    # then the national figure.
    region_ids: dict[str, int] = Field(default_factory=dict)

    @field_validator("region_ids")
    @classmethod
    def _in_range(cls, value: dict[str, int]) -> dict[str, int]:
        for region, region_id in value.items():
            if not 1 <= region_id <= 17:
                raise ValueError(f"UK region id for {region!r} must be between 1 and 17, got {region_id}")
        return value


class TraceSettings(_Section):
    # Region or zone → shipped balancing-authority trace ("PJM") or a CSV file (timestamp,g_per_kwh).
    traces: dict[str, str] = Field(default_factory=dict)
    default: str | None = None  # trace for regions with no mapping (None: they use the static value)
    # Moment of the trace that "now" maps to; None: the same moment of the year as now.
    start_at: datetime | None = None
    speedup: float = Field(default=1.0, gt=0, description="simulated seconds per real second")


class IntensitySettings(_Section):
    refresh_interval: DurationS = 300.0
    request_timeout: DurationS = 10.0
    stale_max_age: DurationS = 7200.0  # reuse a provider's last value this long before falling back
    retry_min: DurationS = 5.0  # first retry after a failure; doubles per consecutive failure
    retry_max: DurationS = 900.0
    breaker_failures: int = Field(default=5, ge=1)  # consecutive failures that open the circuit
    breaker_open: DurationS = 300.0  # how long an open circuit skips calls before one trial call
    # Providers tried, in order, after the configured one and before the static table.
    fallbacks: tuple[ProviderName, ...] = ()
    # With provider google_cloud/aws/azure and an Electricity Maps key present, serve live values first.
    enrich_with_electricity_maps: bool = True
    electricity_maps: ElectricityMapsSettings = ElectricityMapsSettings()
    watttime: WattTimeSettings = WattTimeSettings()
    uk_carbon_intensity: UkCarbonIntensitySettings = UkCarbonIntensitySettings()
    trace: TraceSettings = TraceSettings()

    @field_validator("refresh_interval", "request_timeout")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be longer than zero")
        return value
