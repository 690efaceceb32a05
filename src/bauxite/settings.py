"""Configuration: the ``enterprise.yaml`` schema, loading, and errors naming file, key path and expectation.

The README's minimal ``enterprise:`` config loads on its own; every other section is optional, with a default.
Each capability owns its own section model (``intensity.config``, ``energy.config``, ``routing.config``,
``telemetry.config``); this module composes them.
"""

from __future__ import annotations

import codecs
import hashlib
import math
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .durations import DurationS
from .embodied import AccountingSettings
from .energy.config import EnergySettings, PowerSettings
from .fleet.config import FleetSettings
from .intensity.config import IntensitySettings
from .records import ENDPOINTS, Endpoint
from .routing.config import GreenRoutingSettings, LatencySettings
from .state.config import StateSettings
from .telemetry.config import TelemetrySettings

MIB = 1024 * 1024
MIN_REPORTING_INTERVAL_S = 1.0
MAX_NESTING = 64  # deeper YAML than this is refused before validation (no config needs more than ~6)


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
        # One report line is logged per window: shorter windows would flood the log.
        if not value >= MIN_REPORTING_INTERVAL_S:
            raise ValueError(f"reporting_interval must be at least {MIN_REPORTING_INTERVAL_S:g}s")
        return value


class EnterpriseSettings(Strict):
    carbon_tracking: CarbonTrackingSettings = CarbonTrackingSettings()
    green_routing: GreenRoutingSettings = GreenRoutingSettings()


class ServerSettings(Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    max_body_bytes: int = Field(default=4 * MIB, gt=0, description="request bodies above this get 413")
    use_uvloop: bool = True
    # A connection must deliver a complete request head this soon after it opens (or after the previous
    # response on a keep-alive connection), else it is closed: slow-header clients cannot hold sockets.
    header_timeout: DurationS = Field(default=15.0, gt=0)
    body_timeout: DurationS = Field(default=60.0, gt=0)  # whole request body, else 408
    raise_fd_limit: bool = True  # raise the soft open-files limit to the hard limit at start-up


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
    connect_s: DurationS = Field(default=5.0, gt=0)  # TCP connect to the cluster
    read_s: DurationS = Field(default=60.0, gt=0)  # longest silence: until headers, and between two chunks
    total_s: DurationS = Field(default=600.0, gt=0)  # whole request, streaming included


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
    # False for OpenAI-compatible upstreams that reject ``stream_options`` (the gateway also learns this
    # from their first 400): their streams are then accounted from estimated tokens, flagged as such.
    stream_options: bool = True
    # The wire APIs this cluster serves; requests for another API are routed only among clusters that
    # serve it. vLLM serves all five; an external provider often only some (e.g. no Anthropic Messages).
    endpoints: tuple[Endpoint, ...] = Field(default=ENDPOINTS, min_length=1)

    @field_validator("endpoints")
    @classmethod
    def _no_repeats(cls, value: tuple[Endpoint, ...]) -> tuple[Endpoint, ...]:
        if len(set(value)) != len(value):
            raise ValueError("each endpoint may be listed once")
        return value

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
    accounting: AccountingSettings = AccountingSettings()  # market-based factors, embodied emissions
    fleet: FleetSettings | None = None  # only read by `bauxite fleet` and `bauxite demo`
    state: StateSettings = StateSettings()  # shared between replicas; in process by default

    @model_validator(mode="after")
    def _unique_clusters(self) -> Settings:
        seen: set[str] = set()
        for cluster in self.clusters:
            if cluster.name in seen:
                raise ValueError(f"cluster name {cluster.name!r} is used twice; names must be unique")
            seen.add(cluster.name)
        regions = {cluster.region for cluster in self.clusters}
        for region in self.accounting.market_factors:
            if region not in regions:
                raise ValueError(f"accounting.market_factors names region {region!r}, which no cluster is in")
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


def non_finite_problems(value: Any, path: tuple[int | str, ...]) -> list[tuple[str, str]]:
    """Every NaN or infinity in the validated settings: no setting means anything with them."""
    if isinstance(value, float) and not math.isfinite(value):
        return [(_key_path(path), f"expected a finite number, got {value}")]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in non_finite_problems(v, (*path, str(k)))]
    if isinstance(value, list | tuple):
        return [p for i, v in enumerate(value) for p in non_finite_problems(v, (*path, i))]
    return []


# Addresses that bind every interface: a listener on one of them takes the port on all hosts.
_WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::", "*"})
_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1"})


def _same_interface(a: str, b: str) -> bool:
    a, b = a.strip().lower(), b.strip().lower()
    if a in _WILDCARD_HOSTS or b in _WILDCARD_HOSTS:
        return True
    return a == b or (a in _LOOPBACK_NAMES and b in _LOOPBACK_NAMES)


def listener_problems(settings: Settings) -> list[tuple[str, str]]:
    """(key path, message) when the telemetry listener would bind the API's own address and port: the
    gateway would fail to start with "address already in use". Port 0 (any free port) never clashes."""
    port, server = settings.telemetry.listen_port, settings.server
    if port and port == server.port and _same_interface(settings.telemetry.listen_host, server.host):
        return [(
            "telemetry.listen_port",
            f"{port} is also server.port on the same host "
            f"({settings.telemetry.listen_host} / {server.host}); "
            "choose another port, or leave listen_port unset to serve /metrics and reports on the API port",
        )]  # fmt: skip
    return []


def validation_problems(exc: ValidationError) -> list[tuple[str, str]]:
    """(key path like ``clusters[0].pue``, plain message) for each error pydantic found in a config file."""
    problems = []
    for err in exc.errors():
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown key (check spelling; see the README for the accepted keys)"
        elif err["type"] == "literal_error":
            message = f"{message}, got {err.get('input')!r}"
        problems.append((_key_path(tuple(err["loc"])), message))
    return problems


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
        raise ConfigError(file, validation_problems(exc)) from None
    problems = non_finite_problems(settings.model_dump(), ()) + listener_problems(settings)
    if problems:
        raise ConfigError(file, problems)
    # Checks that need package data (region catalogue, traces); imported here to keep import time small.
    from .intensity.validate import intensity_problems

    problems = intensity_problems(settings)
    if problems:
        raise ConfigError(file, problems)
    return settings


def load_settings(path: str | Path) -> Settings:
    """Read and validate a YAML config file. Every problem is a ``ConfigError`` naming the file."""
    return settings_from_mapping(read_yaml(path), str(path))


def read_yaml(path: str | Path) -> Any:
    """The parsed YAML document of a config file (any encoding with a BOM, UTF-8 without). Hostile input
    (bad bytes, duplicate keys, deep nesting, huge integers) is a ``ConfigError``, never a crash."""
    file = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(file, [("", f"cannot read file: {exc.strerror or exc}")]) from None
    text = decode_config(file, raw)
    try:
        data = yaml.load(text, Loader=_ConfigLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(file, [("", f"{where}invalid YAML: {problem}")]) from None
    except (ValueError, OverflowError) as exc:  # e.g. an integer beyond Python's digit limit
        raise ConfigError(file, [("", f"invalid value: {_value_problem(exc)}")]) from None
    except RecursionError:
        raise ConfigError(file, [("", f"nested deeper than {MAX_NESTING} levels")]) from None
    return data


def decode_config(file: str, raw: bytes) -> str:
    """The file's text: UTF-8 (with or without BOM), or UTF-16/32 announced by a BOM."""
    boms = (
        (codecs.BOM_UTF32_LE, "utf-32"),
        (codecs.BOM_UTF32_BE, "utf-32"),
        (codecs.BOM_UTF8, "utf-8-sig"),
        (codecs.BOM_UTF16_LE, "utf-16"),
        (codecs.BOM_UTF16_BE, "utf-16"),
    )
    codec = next((name for bom, name in boms if raw.startswith(bom)), "utf-8")
    try:
        return raw.decode(codec)
    except UnicodeDecodeError as exc:
        raise ConfigError(
            file, [("", f"not {codec.upper()} text (bad byte at offset {exc.start}); save the file as UTF-8")]
        ) from None


class _ConfigLoader(yaml.SafeLoader):
    """Safe YAML that refuses duplicate keys (a repeated section would silently replace the first) and
    nesting deeper than ``MAX_NESTING`` (which would otherwise exhaust the stack)."""

    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_NESTING:
                raise yaml.composer.ComposerError(
                    None,
                    None,
                    f"nested deeper than {MAX_NESTING} levels",
                    self.peek_event().start_mark,  # type: ignore[no-untyped-call]
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key; the base class reports it
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping", node.start_mark, f"duplicate key {key!r}", key_node.start_mark
                )
        return super().construct_mapping(node, deep)


def sha256_hex(key: str) -> str:
    """The digest under which API keys are stored in configuration."""
    # surrogateescape: a header carrying undecodable bytes hashes to a digest no key has, instead of failing
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


def _value_problem(exc: Exception) -> str:
    if "digits" in str(exc):
        return "a number with thousands of digits is not a usable setting"
    return str(exc)[:200]
