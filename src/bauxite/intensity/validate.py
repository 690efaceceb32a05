"""Config-time checks for the intensity side of a configuration, phrased as (key path, message) problems.

The caller wraps the problems in ``bauxite.settings.ConfigError`` so start-up and ``check-config`` report
them like every other configuration mistake.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .catalogue import Catalogue, UnknownRegionError
from .traces import TraceError, load_trace

if TYPE_CHECKING:
    from ..settings import Settings


def intensity_problems(settings: Settings, catalogue: Catalogue | None = None) -> list[tuple[str, str]]:
    """Unknown cluster regions (with close matches) and unreadable traces; empty when all is well."""
    catalogue = catalogue or Catalogue.load()
    problems: list[tuple[str, str]] = []
    for index, cluster in enumerate(settings.clusters):
        try:
            catalogue.validate_region(cluster.region, cluster.zone)
        except UnknownRegionError as exc:
            problems.append((f"clusters[{index}].region", str(exc)))
    trace = settings.intensity.trace
    sources = [(f"intensity.trace.traces.{name}", source) for name, source in trace.traces.items()]
    if trace.default:
        sources.append(("intensity.trace.default", trace.default))
    if settings.enterprise.carbon_tracking.provider == "trace" or "trace" in settings.intensity.fallbacks:
        for path, source in sources:
            try:
                load_trace(source)
            except TraceError as exc:
                problems.append((path, str(exc)))
    return problems
