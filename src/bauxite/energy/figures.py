"""The energy service's own types: a request's residency on a cluster and its work in, a figure out; and the
modelled per-token dynamic energy that weighs token work in attribution."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from . import curves
from .attribution import Job
from .params import ModelParams

EnergySource = Literal["estimated", "measured"]


@dataclass(frozen=True, slots=True)
class EnergyFigure:
    """One request's energy, in parts. Joules; ``*_min``/``*_max`` bound the facility figure."""

    gpu_j: float
    gpu_idle_j: float
    host_j: float
    pue: float
    energy_j_min: float
    energy_j_max: float
    occupancy_s: float = 0.0
    gpu_count: int = 1
    gpu_type: str = "H100"
    source: EnergySource = "estimated"
    method: str = "calibrated"  # calibrated | ecologits | measured | static_power | fallback
    flag: str = ""  # why a measured cluster's figure is an estimate: telemetry_stale | telemetry_late | …
    sizes_default: bool = False  # the model's size was not on record: a default size was assumed

    @property
    def it_j(self) -> float:
        return self.gpu_j + self.host_j

    @property
    def energy_j(self) -> float:
        """Facility energy: (GPU + host) × PUE."""
        return self.it_j * self.pue


@dataclass(frozen=True, slots=True)
class RequestWork:
    """What a finished (or finishing) request did. ``ttft_s`` counts from the request's arrival at the
    cluster (``Residency.start_s``); None when no token arrived or the response was not streamed."""

    model: str
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    duration_s: float = 0.0  # client-visible latency (arrival at the gateway to last byte)
    ttft_s: float | None = None


@dataclass(slots=True, eq=False)
class Residency:
    """A request's stay on one cluster (monotonic seconds), from ``EnergyService.begin``."""

    cluster: str
    model: str
    start_s: float
    cluster_reading: float = 0.0
    model_reading: float = 0.0
    end_s: float | None = None
    job: Job | None = None
    # The latest estimate and the inputs it came from (EnergyService's own cache; see ``estimate``).
    figure: EnergyFigure | None = None
    figure_key: tuple[object, ...] | None = None


@dataclass(frozen=True, slots=True)
class ClusterEnergy:
    """Running GPU-energy totals of one metered cluster (joules, seconds)."""

    cluster: str
    region: str
    power_w: float  # latest total GPU power
    attributed_j_total: float  # measured GPU energy split to requests
    idle_j_total: float  # measured GPU energy with no request resident
    measured_j_total: float
    unallocated_s_total: float


def token_weights(
    params: ModelParams, gpu: curves.GpuSpec, gpu_count: int, batch: float
) -> tuple[float, float, float]:
    """(decode J/token, prefill J/token, decode step s): modelled dynamic GPU joules per token — the
    calibrated curves' power above the resident-idle floor, over one decode step shared by ``batch``
    sequences, and over one prompt token's compute-bound prefill (their ratio is the prefill weight, ≈0.1–0.3
    for dense models on H100) — and the step time, which paces each sequence's tokens."""
    idle_w = curves.idle_w(gpu)
    step = curves.decode_step(params.active_b, params.total_b, gpu, gpu_count, batch, params.precision)
    decode_j = max(gpu_count, 1) * (curves.step_power_w(step, gpu) - idle_w) * step.total_s / max(batch, 1.0)
    prefill_s = curves.prefill_s_per_token(params.active_b, gpu, gpu_count)
    prefill_j = max(gpu_count, 1) * (curves.prefill_power_w(gpu) - idle_w) * prefill_s
    return max(decode_j, 1e-9), max(prefill_j, 0.0), max(step.total_s, 1e-9)
