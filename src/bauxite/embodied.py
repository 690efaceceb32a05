"""Embodied emissions of the hardware a request occupied, and the ``accounting:`` config section.

Embodied (manufacturing) emissions of a server and its GPUs are amortised linearly over the hardware's
lifetime; a request is charged the cluster seconds it occupied (its residency share, ``occupancy_s``):

    embodied_g = (gpu_count × gpu_kgco2e + gpu_count / server_gpus × server_kgco2e) × 1000
                 × occupancy_s / lifetime_s

Defaults are EcoLogits' (``ecologits.impacts.llm``, methodology "LLM inference", from Boavizta's server
model): 273 kgCO2e per 80 GB data-centre GPU, 5,700 kgCO2e per 8-GPU server without its GPUs, a three-year
lifetime. EcoLogits ships one GPU figure, used for every GPU type unless ``gpu_kgco2e`` names the type.
"""

from __future__ import annotations

from typing import Literal

from ecologits.impacts import llm as ecologits_llm
from pydantic import BaseModel, ConfigDict, Field

SECONDS_PER_YEAR = 365 * 24 * 3600
G_PER_KG = 1000.0
GPU_KGCO2E = float(ecologits_llm.GPU_EMBODIED_IMPACT_GWP)  # 273 kgCO2e (EcoLogits 0.11)
SERVER_KGCO2E = float(ecologits_llm.SERVER_EMBODIED_IMPACT_GWP)  # 5,700 kgCO2e, server without GPUs
SERVER_GPUS = int(ecologits_llm.SERVER_GPUS)  # 8
LIFETIME_YEARS = ecologits_llm.HARDWARE_LIFESPAN / SECONDS_PER_YEAR  # 3 years


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EmbodiedSettings(_Section):
    lifetime_years: float = Field(default=LIFETIME_YEARS, gt=0)
    server_kgco2e: float = Field(default=SERVER_KGCO2E, ge=0)  # one server without its GPUs
    server_gpus: int = Field(default=SERVER_GPUS, ge=1)  # GPUs one server holds
    gpu_kgco2e: dict[str, float] = {}  # per GPU type (as in clusters[].gpu.type); default: EcoLogits' 273

    def g_per_s(self, gpu_type: str, gpu_count: int) -> float:
        """Embodied grams CO2e per second of the whole cluster's hardware (``gpu_count`` GPUs)."""
        per_gpu_kg = self.gpu_kgco2e.get(gpu_type, GPU_KGCO2E)
        count = max(gpu_count, 1)
        total_kg = count * per_gpu_kg + count / self.server_gpus * self.server_kgco2e
        return total_kg * G_PER_KG / (self.lifetime_years * SECONDS_PER_YEAR)


class MarketFactor(_Section):
    """Market-based Scope 2 factor of one region: a residual mix or a contractual instrument."""

    g_per_kwh: float = Field(ge=0)
    instrument: Literal["residual_mix", "contract", "supplier"] = "residual_mix"
    reference: str = ""  # where the factor comes from (e.g. "AIB European Residual Mix 2023")


class AccountingSettings(_Section):
    market_factors: dict[str, MarketFactor] = {}  # per configured region
    embodied: EmbodiedSettings = EmbodiedSettings()
