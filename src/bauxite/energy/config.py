"""The ``energy:`` config section and each cluster's ``power:`` section. Every key has a default."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..durations import DurationS
from .architecture import ARCH_FIELDS, architecture_with, find_known
from .params import ModelParams

Precision = Literal["bf16", "fp16", "fp8", "int8", "int4", "fp4"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PowerSettings(_Section):
    """Where a self-hosted cluster's GPU power comes from."""

    source: Literal["none", "dcgm", "nvml", "static"] = "none"
    url: str | None = None  # DCGM exporter /metrics (source: dcgm)
    scrape_interval: DurationS = 5.0
    grace: DurationS = 1.0  # wait after each scrape for requests that ended just before it to report
    stale_after: DurationS | None = None  # no good reading for this long → stale; default 3 × interval
    timeout: DurationS = 2.0  # one scrape's HTTP timeout
    gpu_indices: tuple[int, ...] = ()  # NVML: which local GPUs belong to the cluster (empty: all)
    idle_w_per_gpu: float | None = Field(default=None, ge=0)  # static model; default from the GPU type
    max_w_per_gpu: float | None = Field(default=None, gt=0)  # static model; default: board power

    @model_validator(mode="after")
    def _dcgm_needs_url(self) -> PowerSettings:
        if self.source == "dcgm" and not self.url:
            raise ValueError("power.source 'dcgm' needs power.url (the DCGM exporter's /metrics URL)")
        return self

    @property
    def stale_after_s(self) -> float:
        return self.stale_after if self.stale_after is not None else 3.0 * self.scrape_interval


class ModelSizeSettings(_Section):
    """Override of a model's size (wins over EcoLogits' repository and the name)."""

    active_params_b: float = Field(gt=0)
    total_params_b: float | None = Field(default=None, gt=0)  # default: = active (dense)
    precision: Precision = "bf16"
    architecture: Literal["dense", "moe"] | None = None  # optional cross-check: MoE ⇔ total > active
    # Architecture facts from the model's config.json (optional; default: shipped table, else size-derived)
    num_experts: int | None = Field(default=None, ge=1)  # MoE: routed experts per layer
    experts_per_token: int | None = Field(default=None, ge=1)  # MoE: top-k
    shared_params_b: float | None = Field(default=None, ge=0)  # MoE: always-run parameters, billions
    layers: int | None = Field(default=None, ge=1)
    kv_heads: int | None = Field(default=None, ge=1)
    head_dim: int | None = Field(default=None, ge=1)
    kv_bytes_per_token: float | None = Field(default=None, gt=0)  # KV-cache bytes per token, all layers

    def to_params(self, name: str) -> ModelParams:
        """The override as model sizes; architecture facts not given come from the shipped table for
        ``name`` when it is there, else from the size. Raises ``ValueError`` for impossible facts."""
        known = find_known(name)
        base = known.arch if known is not None else None
        given = {key: value for key in ARCH_FIELDS if (value := getattr(self, key)) is not None}
        arch = architecture_with(
            base, self.active_params_b, self.total_params_b or self.active_params_b, given
        )
        return ModelParams.fixed(
            self.active_params_b,
            self.total_params_b,
            self.precision,
            "config",
            arch if given or base else None,
        )

    @model_validator(mode="after")
    def _architecture_matches_sizes(self) -> ModelSizeSettings:
        moe = self.total_params_b is not None and self.total_params_b > self.active_params_b
        if self.architecture == "moe" and not moe:
            raise ValueError("architecture 'moe' needs total_params_b above active_params_b")
        if self.architecture == "dense" and moe:
            raise ValueError("architecture 'dense' cannot have total_params_b above active_params_b")
        if self.num_experts and self.experts_per_token and self.experts_per_token > self.num_experts:
            raise ValueError("experts_per_token cannot exceed num_experts")
        return self


class ServingSettings(_Section):
    """Serving assumptions for clusters whose hardware is not known (external APIs)."""

    gpu: str = "H100"
    gpu_count: int | None = Field(default=None, ge=1)  # default: fewest GPUs that hold the weights
    batch_size: float = Field(default=128.0, gt=0)  # average concurrent sequences per replica


class EnergySettings(_Section):
    method: Literal["calibrated", "ecologits"] = "calibrated"  # estimator for clusters without telemetry
    models: dict[str, ModelSizeSettings] = {}  # per model name (as clients or upstream name it)
    external_serving: ServingSettings = ServingSettings()
    self_hosted_batch_size: float = Field(default=32.0, gt=0)  # when no running-sequence count is known
    host_frac: float = Field(default=0.43, ge=0)  # host CPU/DRAM joules per GPU joule (Google's split)
    pue_external: float = Field(default=1.1, ge=1.0, le=3.0)  # default PUE of external API providers
    pue_self_hosted: float = Field(default=1.2, ge=1.0, le=3.0)  # default PUE of vllm clusters
    prefill_token_weight: float = Field(default=0.25, ge=0, le=1)  # router: prompt token vs output token
