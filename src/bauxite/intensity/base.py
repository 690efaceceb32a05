"""The intensity value type and the provider Protocol."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol, TypeVar, runtime_checkable

Signal = Literal["average", "marginal"]
Basis = Literal["lifecycle", "direct"]


@dataclass(frozen=True, slots=True)
class Intensity:
    """Grid carbon intensity for one zone at one time."""

    zone: str
    g_per_kwh: float
    at: float  # unix seconds the value applies to
    source: str  # provider name, e.g. "electricity_maps", "static"
    signal: Signal = "average"
    basis: Basis = "lifecycle"
    fetched_at: float = 0.0  # unix seconds we obtained it (for age)
    reference: str = ""  # where the number comes from, e.g. "Google region-carbon-info 2024"
    year: int | None = None  # data year of a yearly table value; None for live values
    cfe_share: float | None = None  # Google's carbon-free-energy share (0-1) where published


class IntensityProvider(Protocol):
    """Fetch current intensity for a zone. Raise ``IntensityError`` on any failure."""

    name: str

    async def current(self, zone: str) -> Intensity: ...


@dataclass(frozen=True, slots=True)
class Location:
    """Where a configured region sits, as every provider may need it (each picks what it can use)."""

    region: str  # as configured
    zone: str  # grid zone (Electricity Maps name); the region itself when no zone is known
    zone_known: bool = False  # False when ``zone`` is only the region name standing in
    cloud: str | None = None  # aws | gcp | azure when catalogued
    cloud_region: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    balancing_authority: str | None = None  # shipped trace that fits, e.g. "PJM"


class RegionalProvider(IntensityProvider, Protocol):
    """The plug-in point: a provider that also says which query key (if any) covers a location."""

    signal: Signal

    def key_for(self, location: Location) -> str | None: ...


@runtime_checkable
class LocalProvider(RegionalProvider, Protocol):
    """A provider answering from memory (tables, traces): read on every request, no background refresh."""

    def lookup(self, key: str) -> Intensity: ...


class IntensityError(Exception):
    """A provider could not answer (network, auth, rate limit, bad data)."""

    def __init__(
        self, message: str, *, status: int | None = None, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message)
        self.status = status  # HTTP status when the failure came from a response
        self.retry_after_s = retry_after_s  # the provider's Retry-After, when it sent one


class MixedSignalError(IntensityError):
    """Marginal and average intensities were about to be compared with each other."""


K = TypeVar("K")


def require_one_signal(values: Mapping[K, Intensity]) -> dict[K, Intensity]:
    """Return ``values`` unchanged if they share one signal; raise ``MixedSignalError`` otherwise.

    A marginal rate (emissions of the next kWh) and an average rate (emissions of the mix) measure different
    things: ranking one against the other would pick the wrong region, so any comparison goes through here.
    """
    signals = {value.signal for value in values.values()}
    if len(signals) > 1:
        detail = ", ".join(f"{key}={value.signal}" for key, value in values.items())
        raise MixedSignalError(f"refusing to compare marginal with average intensities ({detail})")
    return dict(values)


def lowest(values: Mapping[K, Intensity], among: Iterable[K] | None = None) -> K:
    """The key with the lowest intensity; refuses mixed signals."""
    chosen = require_one_signal({k: values[k] for k in (among if among is not None else values)})
    return min(chosen, key=lambda k: chosen[k].g_per_kwh)


@dataclass(frozen=True, slots=True)
class RegionIntensity:
    """One row of the per-region view served at /v1/carbon/intensity and exported as a gauge."""

    region: str
    zone: str
    provider: str  # the provider whose value this is (after any fallback)
    g_per_kwh: float
    signal: Signal
    basis: Basis
    age_s: float
    stale: bool  # True when the configured provider failed and an older or fallback value stands in
    reference: str = ""
    cfe_share: float | None = None
    year: int | None = None  # data year of a yearly table value
    error: str = ""  # the configured provider's last failure, when it is failing
