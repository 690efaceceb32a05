"""Configuration: the ``enterprise.yaml`` schema, loading, and errors naming file, key path and expectation.

The brief's ``enterprise:`` snippet loads unchanged; every other section is optional with a sensible default.
Each capability owns its own section model (``intensity.config``, ``energy.config``, ``routing.config``,
``telemetry.config``); this module composes them.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .durations import DurationS
from .energy.config import EnergySettings, PowerSettings
from .fleet.config import FleetSettings
from .intensity.config import IntensitySettings
from .routing.config import GreenRoutingSettings, LatencySettings
from .telemetry.config import TelemetrySettings

MIB = 1024 * 1024


class Strict(BaseModel):
    """Base for config sections: unknown keys are errors, so typos do not pass silently."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class CarbonTrackingSettings(Strict):
    enabled: bool = True
    provider: Literal[
        "google_cloud",
        "aws",
        "azure",
        "electricity_maps",
        "watttime",
        "uk_carbon_intensity",
        "static",
        "trace",
    ] = "static"
    reporting_interval: DurationS = 3600.0

    @field_validator("reporting_interval")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("reporting_interval must be longer than zero")
        return value


class EnterpriseSettings(Strict):
    carbon_tracking: CarbonTrackingSettings = CarbonTrackingSettings()
    green_routing: GreenRoutingSettings = GreenRoutingSettings()


class ServerSettings(Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    max_body_bytes: int = Field(default=4 * MIB, gt=0, description="request bodies above this get 413")
    use_uvloop: bool = True


class KeySettings(Strict):
    """One API key. Give ``sha256`` (hex digest of the key) or ``key_env`` (env var holding the key)."""

    department: str
    sha256: str | None = None
    key_env: str | None = None
    # Departments the caller may choose with the department header, when telemetry allows it.
    departments: tuple[str, ...] = ()
    name: str | None = None

    @field_validator("sha256")
    @classmethod
    def _hex(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", value):
            raise ValueError("sha256 must be 64 hexadecimal characters (the SHA-256 digest of the key)")
        return value.lower() if value else value

    @model_validator(mode="after")
    def _one_source(self) -> KeySettings:
        if (self.sha256 is None) == (self.key_env is None):
            raise ValueError("give exactly one of 'sha256' or 'key_env'")
        return self


class AuthSettings(Strict):
    allow_anonymous: bool = False
    anonymous_department: str = "anonymous"
    # Lets a caller pick one of its key's ``departments`` with this header; off unless configured.
    department_header: str | None = None
    keys: tuple[KeySettings, ...] = ()


class TimeoutSettings(Strict):
    connect_s: DurationS = 5.0  # TCP connect to the cluster
    read_s: DurationS = 60.0  # longest silence allowed: until headers arrive, and between two chunks
    total_s: DurationS = 600.0  # whole request, streaming included


class GpuSettings(Strict):
    type: str = "H100"
    count: int = Field(default=1, ge=1)


class ModelRoute(Strict):
    """A model as clients name it, and as the cluster names it upstream."""

    name: str
    upstream: str | None = None

    @property
    def upstream_name(self) -> str:
        return self.upstream or self.name


class ClusterSettings(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    region: str = Field(min_length=1, max_length=64)
    zone: str | None = None  # a grid zone named directly instead of derived from the region
    url: str = Field(description="base URL of the OpenAI-compatible API, including /v1")
    models: tuple[ModelRoute, ...] = Field(min_length=1)
    kind: Literal["vllm", "external"] = "vllm"
    api_key_env: str | None = None
    metrics_url: str | None = None  # vLLM /metrics; default: url with /v1 replaced by /metrics
    timeouts: TimeoutSettings = TimeoutSettings()
    gpu: GpuSettings = GpuSettings()
    pue: float | None = Field(default=None, ge=1.0, le=3.0)
    power: PowerSettings = PowerSettings()
    rtt_ms: float | None = Field(default=None, ge=0)

    @field_validator("models", mode="before")
    @classmethod
    def _plain_names(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return [{"name": v} if isinstance(v, str) else v for v in value]
        return value

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("url must start with http:// or https:// and name a host")
        return value.rstrip("/")

    @property
    def effective_metrics_url(self) -> str:
        if self.metrics_url:
            return self.metrics_url
        base = self.url[:-3] if self.url.endswith("/v1") else self.url
        return base + "/metrics"

    def api_key(self) -> str | None:
        return os.environ.get(self.api_key_env) if self.api_key_env else None


class Settings(Strict):
    enterprise: EnterpriseSettings = EnterpriseSettings()
    server: ServerSettings = ServerSettings()
    auth: AuthSettings = AuthSettings()
    clusters: tuple[ClusterSettings, ...] = ()
    intensity: IntensitySettings = IntensitySettings()
    energy: EnergySettings = EnergySettings()
    latency: LatencySettings = LatencySettings()
    telemetry: TelemetrySettings = TelemetrySettings()
    fleet: FleetSettings | None = None  # only read by `bauxite fleet` and `bauxite demo`

    @model_validator(mode="after")
    def _unique_clusters(self) -> Settings:
        seen: set[str] = set()
        for cluster in self.clusters:
            if cluster.name in seen:
                raise ValueError(f"cluster name {cluster.name!r} is used twice; names must be unique")
            seen.add(cluster.name)
        return self

    def model_names(self) -> list[str]:
        """Every model any cluster serves, in configuration order, without repeats."""
        names: dict[str, None] = {}
        for cluster in self.clusters:
            for model in cluster.models:
                names[model.name] = None
        return list(names)


class ConfigError(Exception):
    """A configuration problem, phrased for the person who wrote the file."""

    def __init__(self, file: str, problems: list[tuple[str, str]]) -> None:
        self.file = file
        self.problems = problems
        lines = [f"{file}: {path}: {message}" if path else f"{file}: {message}" for path, message in problems]
        super().__init__("\n".join(lines))


def _key_path(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + item)
    return "".join(parts)


def settings_from_mapping(data: Any, file: str = "<config>") -> Settings:
    """Validate a parsed YAML document; raise ``ConfigError`` listing every problem with its key path."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            file, [("", "expected a mapping of sections (enterprise:, clusters:, …) at the top")]
        )
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            message = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                message = "unknown key (check spelling; see the README for the accepted keys)"
            elif err["type"] == "literal_error":
                message = f"{message}, got {err.get('input')!r}"
            problems.append((_key_path(tuple(err["loc"])), message))
        raise ConfigError(file, problems) from None
    # Checks that need package data (region catalogue, traces); imported here to keep import time small.
    from .intensity.validate import intensity_problems

    problems = intensity_problems(settings)
    if problems:
        raise ConfigError(file, problems)
    return settings


def load_settings(path: str | Path) -> Settings:
    """Read and validate a YAML config file."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(file, [("", f"cannot read file: {exc.strerror or exc}")]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(file, [("", f"{where}invalid YAML: {problem}")]) from None
    return settings_from_mapping(data, file)


def sha256_hex(key: str) -> str:
    """The digest under which API keys are stored in configuration."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()
