"""Provider names → constructors, in one plain dict."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from .base import RegionalProvider
from .catalogue import Catalogue
from .config import IntensitySettings
from .electricity_maps import ElectricityMapsProvider
from .http import HttpClient
from .local import CloudTableProvider, StaticProvider, TraceProvider
from .uk import UkCarbonIntensityProvider
from .watttime import WattTimeProvider


@dataclass(frozen=True, slots=True)
class ProviderContext:
    """What any provider may need; built once by the service."""

    settings: IntensitySettings
    catalogue: Catalogue
    http: HttpClient
    clock: Callable[[], float]
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))

    def secret(self, env_name: str) -> str | None:
        return self.env.get(env_name) or None


def _electricity_maps(ctx: ProviderContext) -> RegionalProvider:
    options = ctx.settings.electricity_maps
    return ElectricityMapsProvider(ctx.http, options, ctx.secret(options.api_key_env), ctx.clock)


def _watttime(ctx: ProviderContext) -> RegionalProvider:
    options = ctx.settings.watttime
    return WattTimeProvider(
        ctx.http, options, ctx.secret(options.username_env), ctx.secret(options.password_env), ctx.clock
    )


PROVIDERS: dict[str, Callable[[ProviderContext], RegionalProvider]] = {
    "static": lambda ctx: StaticProvider(ctx.catalogue, ctx.clock),
    "google_cloud": lambda ctx: CloudTableProvider("google_cloud", "gcp", ctx.catalogue, ctx.clock),
    "aws": lambda ctx: CloudTableProvider("aws", "aws", ctx.catalogue, ctx.clock),
    "azure": lambda ctx: CloudTableProvider("azure", "azure", ctx.catalogue, ctx.clock),
    "trace": lambda ctx: TraceProvider(ctx.settings.trace, ctx.catalogue, ctx.clock),
    "electricity_maps": _electricity_maps,
    "watttime": _watttime,
    "uk_carbon_intensity": lambda ctx: UkCarbonIntensityProvider(
        ctx.http, ctx.settings.uk_carbon_intensity, ctx.clock
    ),
}

CLOUD_TABLES = ("google_cloud", "aws", "azure")


def provider_chain(name: str, ctx: ProviderContext) -> list[RegionalProvider]:
    """The configured provider, any enrichment and configured fallbacks, ending with ``static``."""
    names = [name]
    if (
        name in CLOUD_TABLES
        and ctx.settings.enrich_with_electricity_maps
        and ctx.secret(ctx.settings.electricity_maps.api_key_env)
    ):
        names.insert(0, "electricity_maps")  # live values first, the cloud's yearly table behind them
    names += [n for n in ctx.settings.fallbacks if n not in names]
    if "static" not in names:
        names.append("static")
    return [PROVIDERS[n](ctx) for n in names]
