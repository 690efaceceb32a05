"""The ``energy:`` config section and each cluster's ``power:`` section."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from ..durations import DurationS


class PowerSettings(BaseModel):
    """Where a self-hosted cluster's GPU power comes from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: Literal["none", "dcgm", "nvml", "static"] = "none"
    url: str | None = None  # DCGM exporter /metrics
    scrape_interval: DurationS = 5.0


class EnergySettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    boundary: Literal["gpu", "full"] = "full"
