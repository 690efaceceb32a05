"""The simulator's YAML format (documented in docs/routing.md), validated with file and key path on errors."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..routing.config import GreenRoutingSettings, LatencySettings
from ..settings import ConfigError, non_finite_problems, read_yaml, validation_problems

PolicyName = Literal["latency", "round_robin", "low_carbon", "balanced"]
ALL_POLICIES: tuple[PolicyName, ...] = ("latency", "round_robin", "low_carbon", "balanced")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PeriodConfig(_Strict):
    start: date = date(2022, 1, 1)  # UTC day the replay starts (the shipped traces cover 2022)
    days: int = Field(default=365, ge=1, le=3660)
    # Simulated seconds of traffic per trace hour. Queueing runs in these seconds; grid intensity changes
    # every ``seconds_per_hour``. Lower = faster runs, same hourly grid pattern.
    seconds_per_hour: float = Field(default=12.0, gt=0, le=3600)


class SimCluster(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    region: str
    trace: str  # shipped balancing-authority code (PJM, BPAT, CISO, MISO, …) or a CSV path
    capacity: int = Field(default=16, ge=1)  # sequences running at once; more wait in a FIFO queue
    ttft_ms: float = Field(default=80.0, ge=0)  # prefill time of an empty prompt, without network
    prefill_ms_per_1k_tokens: float = Field(default=40.0, ge=0)
    itl_ms: float = Field(default=20.0, ge=0)  # time per output token
    j_per_prompt_token: float = Field(default=0.05, ge=0)
    j_per_output_token: float = Field(default=0.3, ge=0)
    pue: float = Field(default=1.2, ge=1.0, le=3.0)


class ClientGroup(_Strict):
    name: str
    share: float = Field(gt=0)  # relative share of requests
    rtt_ms: dict[str, float]  # round trip to each cluster, by cluster name


class TokenDistribution(_Strict):
    """Log-normal token counts: ``median`` and ``sigma`` of the underlying normal, clipped to [min, max]."""

    median: float = Field(gt=0)
    sigma: float = Field(default=0.8, ge=0)
    min: int = Field(default=1, ge=0)
    max: int = Field(default=8192, ge=1)


class WorkloadConfig(_Strict):
    requests_per_s: float = Field(default=2.0, gt=0)  # mean arrival rate, simulated seconds
    # 24 multipliers of the rate by UTC hour of day (a daily load curve); default flat.
    diurnal: tuple[float, ...] = Field(default=(1.0,) * 24, min_length=24, max_length=24)
    prompt_tokens: TokenDistribution = TokenDistribution(median=500)
    completion_tokens: TokenDistribution = TokenDistribution(median=200, sigma=0.6, max=2048)
    send_max_tokens: bool = False  # clients send their completion length as max_tokens (an upper bound)
    # This share of requests sends x-bauxite-max-latency-ms: header_latency_ms, their own TTFT requirement
    # (scored against it instead of slo_ttft_ms). 0 = none; the stream is then the same as without the keys.
    header_share: float = Field(default=0.0, ge=0, le=1)
    header_latency_ms: float = Field(default=200.0, gt=0)


class Outage(_Strict):
    """A cluster refusing connections for a while: attempts fail at once, the gateway fails over."""

    cluster: str
    start_hour: int = Field(ge=0)  # trace hour index since the start of the period
    hours: int = Field(default=1, ge=1)


class RoutingSection(_Strict):
    """The gateway's own sections, same keys as enterprise.yaml; the simulator sets enabled/priority."""

    green_routing: GreenRoutingSettings = GreenRoutingSettings(enabled=True)
    latency: LatencySettings = LatencySettings()
    # Tell the router each cluster's latency profile (what an operator would configure); when false (the
    # default) it learns from observations and the defaults, as a gateway without latency config does.
    configure_profiles: bool = False


class SimConfig(_Strict):
    seed: int = 1
    model: str = "model"
    slo_ttft_ms: float = Field(gt=0)
    period: PeriodConfig = PeriodConfig()
    clusters: tuple[SimCluster, ...] = Field(min_length=1)
    clients: tuple[ClientGroup, ...] = Field(min_length=1)
    workload: WorkloadConfig = WorkloadConfig()
    routing: RoutingSection = RoutingSection()
    policies: tuple[PolicyName, ...] = ALL_POLICIES
    # Each site's gateway scrapes every cluster's /metrics this often (the gateway's own default period).
    scrape_interval_s: float = Field(default=5.0, gt=0)
    # Log-normal sigma of each site's steady error in a cluster's energy per token (0 = exact figures).
    energy_estimate_error: float = Field(default=0.1, ge=0, le=2)
    plot_week_start_day: int = Field(default=0, ge=0)  # day offset of the week drawn by --plot
    outages: tuple[Outage, ...] = ()

    def down(self, cluster: int, hour: int) -> bool:
        """Whether cluster index ``cluster`` refuses connections during trace hour ``hour``."""
        name = self.clusters[cluster].name
        return any(o.cluster == name and o.start_hour <= hour < o.start_hour + o.hours for o in self.outages)

    @model_validator(mode="after")
    def _consistent(self) -> SimConfig:
        names = [c.name for c in self.clusters]
        if len(set(names)) != len(names):
            raise ValueError("cluster names must be unique")
        unknown_outages = [o.cluster for o in self.outages if o.cluster not in names]
        if unknown_outages:
            raise ValueError(f"outages name unknown clusters: {unknown_outages}")
        for group in self.clients:
            missing = [n for n in names if n not in group.rtt_ms]
            unknown = [n for n in group.rtt_ms if n not in names]
            if missing or unknown:
                raise ValueError(
                    f"client group {group.name!r}: rtt_ms needs exactly one entry per cluster "
                    f"(missing {missing}, unknown {unknown})"
                )
        return self


class SimConfigError(ConfigError):
    """A simulator configuration problem: file, key path (``clusters[0].pue``) and plain words, like
    ``bauxite check-config``."""


# Keys only a gateway config has at the top level: a file with them was given to the wrong command.
GATEWAY_KEYS = ("enterprise", "server", "auth", "telemetry", "energy", "intensity", "fleet", "latency")


def load_sim_config(path: str | Path) -> SimConfig:
    """Read and validate a simulator file. Every problem (unreadable, not UTF-8, bad YAML, out-of-range or
    non-finite numbers) is a ``SimConfigError`` naming the file and key path."""
    file = str(path)
    try:
        data: Any = read_yaml(path)  # the gateway's hardened reader: encodings, duplicate keys, nesting
    except ConfigError as exc:
        raise SimConfigError(exc.file, exc.problems) from None
    if not isinstance(data, dict):
        raise SimConfigError(
            file, [("", "expected a mapping (slo_ttft_ms:, clusters:, clients:, …) at the top")]
        )
    gateway = [key for key in GATEWAY_KEYS if key in data]
    if gateway:
        raise SimConfigError(
            file,
            [("", f"this looks like a gateway config (it has {', '.join(gateway)}), not a simulation; check "
                  "it with `bauxite check-config`; examples/simulate.yaml shows the simulator's format")],
        )  # fmt: skip
    try:
        config = SimConfig.model_validate(data)
    except ValidationError as exc:
        raise SimConfigError(file, validation_problems(exc)) from None
    # NaN passes every pydantic bound and infinity breaks the energy LP: refused like in check-config.
    problems = non_finite_problems(config.model_dump(), ())
    if problems:
        raise SimConfigError(file, problems)
    return config


def looks_like_sim_config(data: Any) -> bool:
    """True for a parsed YAML document that is a simulator file (has its required keys, no gateway keys)."""
    return (
        isinstance(data, dict)
        and "slo_ttft_ms" in data
        and "clients" in data
        and not any(key in data for key in GATEWAY_KEYS)
    )
