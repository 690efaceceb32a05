"""The ``telemetry:`` config section, and the one exception type telemetry raises at start-up."""

from __future__ import annotations

import itertools

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..durations import DurationS

DEFAULT_DURATION_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
DEFAULT_TTFT_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class TelemetryConfigError(Exception):
    """Telemetry cannot start as configured (e.g. Prometheus multiprocess mode, a missing token variable)."""


class TelemetrySettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # How often the ring buffer is drained into running totals besides every scrape. At 6,000 records/s the
    # 8,192-slot buffer (256-byte records) fills in ~1.4 s, so keep this well under that.
    drain_interval: DurationS = 0.5
    # Closed reporting windows kept in memory for GET /v1/carbon/reports (168 = one week of hourly windows).
    reports_kept: int = Field(default=168, ge=1, le=100_000)
    # Name of the environment variable holding a bearer token required on /metrics and /v1/carbon/*.
    # Unset: no token is required (bind the endpoints to a private listener instead, or trust the network).
    token_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    # When set, /metrics and /v1/carbon/reports are served on this separate listener instead of the API port.
    listen_host: str = "127.0.0.1"
    listen_port: int | None = Field(default=None, ge=0, le=65535)
    # Lock the buffer in RAM (mlock) so records never reach swap; silently skipped where the OS refuses.
    lock_memory: bool = True
    duration_buckets_s: tuple[float, ...] = DEFAULT_DURATION_BUCKETS_S
    ttft_buckets_s: tuple[float, ...] = DEFAULT_TTFT_BUCKETS_S

    @field_validator("drain_interval")
    @classmethod
    def _positive(cls, value: float) -> float:
        if not 0 < value <= 2.0:
            raise ValueError(
                "drain_interval must be above zero and at most 2s (the buffer fills in ~2.7s at load)"
            )
        return value

    @field_validator("duration_buckets_s", "ttft_buckets_s")
    @classmethod
    def _ascending(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value or any(b <= a for a, b in itertools.pairwise(value)) or value[0] <= 0:
            raise ValueError("histogram buckets must be positive and strictly ascending")
        return value
