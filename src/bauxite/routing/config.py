"""``enterprise.green_routing`` (four core keys plus optional extensions) and the ``latency:`` section.

The four core keys (``enabled``, ``priority``, ``threshold_gco2``, ``strict``) are the minimal ``enterprise:``
config shown in the README; every other key is optional with a default, documented in docs/routing.md.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..durations import DurationS

MAX_LATENCY_HEADER = "x-bauxite-max-latency-ms"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GreenRoutingSettings(_Strict):
    enabled: bool = False
    priority: Literal["low_carbon", "balanced", "latency"] = "low_carbon"
    threshold_gco2: float = Field(default=200.0, ge=0)
    strict: bool = False  # when nothing meets the threshold: 503 instead of a flagged fallback
    # balanced: score = carbon_weight * grams/best_grams + latency_weight * ttft/best_ttft
    balanced_carbon_weight: float = Field(default=0.5, ge=0)
    balanced_latency_weight: float = Field(default=0.5, ge=0)
    # Candidates whose score is within this fraction of the best count as equal; the least loaded wins,
    # so a burst does not all land on one cluster before its queue shows up in the latency prediction.
    near_equal_tolerance: float = Field(default=0.02, ge=0, le=1)
    kv_affinity: bool = True
    # A warm-prefix cluster is preferred while its score is within this fraction of the best.
    kv_affinity_tolerance: float = Field(default=0.10, ge=0, le=10)
    kv_affinity_entries: int = Field(default=4096, ge=1, le=1_000_000)
    # How often the router re-reads intensity and energy figures into its snapshot (on a timer, never
    # inside a request; no timer while green routing is off).
    snapshot_interval: DurationS = 1.0

    @model_validator(mode="after")
    def _some_weight(self) -> GreenRoutingSettings:
        if self.balanced_carbon_weight + self.balanced_latency_weight <= 0:
            raise ValueError("balanced_carbon_weight and balanced_latency_weight cannot both be zero")
        return self


class ModelLatencySettings(_Strict):
    """Latency requirement of one model; unset keys fall back to the section-wide values."""

    slo_ttft_ms: float | None = Field(default=None, gt=0)
    max_slack_ms: float | None = Field(default=None, ge=0)


class ClusterLatencySettings(_Strict):
    """What an operator knows about one cluster's latency; unset keys are learned or defaulted."""

    rtt_ms: float | None = Field(default=None, ge=0)  # beats the cluster's rtt_ms and the measured one
    ttft_ms: float | None = Field(default=None, ge=0)  # idle time to first token, no network, empty prompt
    prefill_ms_per_1k_tokens: float | None = Field(default=None, ge=0)
    itl_ms: float | None = Field(default=None, ge=0)  # time between output tokens
    max_concurrency: int | None = Field(default=None, ge=1)  # sequences run at once (vLLM max_num_seqs)


class LatencySettings(_Strict):
    slo_ttft_ms: float | None = Field(default=None, gt=0)  # absolute bound on predicted time to first token
    max_slack_ms: float | None = Field(default=None, ge=0)  # allowed extra over the fastest candidate
    models: dict[str, ModelLatencySettings] = Field(default_factory=dict)
    clusters: dict[str, ClusterLatencySettings] = Field(default_factory=dict)
    # Priors used until a cluster has been observed.
    default_rtt_ms: float = Field(default=20.0, ge=0)
    default_ttft_ms: float = Field(default=200.0, ge=0)
    default_itl_ms: float = Field(default=25.0, ge=0)
    prefill_ms_per_1k_tokens: float = Field(default=50.0, ge=0)
    typical_completion_tokens: int = Field(default=256, ge=1)
    # The queueing delay predicted is this quantile of the wait, not its mean: a saturated cluster frees
    # slots at random moments, so a mean-based prediction would miss the SLO for a large share of the
    # requests it queues. Higher = fewer misses, a little more carbon.
    queue_wait_quantile: float = Field(default=0.9999, ge=0.5, le=0.999999)
    stats_scrape: bool = True
    stats_interval: DurationS = 5.0
    stats_timeout: DurationS = 2.0

    def requirement(self, model: str) -> tuple[float | None, float | None]:
        """(slo_ttft_ms, max_slack_ms) for ``model``, per-model values first."""
        override = self.models.get(model)
        if override is None:
            return self.slo_ttft_ms, self.max_slack_ms
        slo = override.slo_ttft_ms if override.slo_ttft_ms is not None else self.slo_ttft_ms
        slack = override.max_slack_ms if override.max_slack_ms is not None else self.max_slack_ms
        return slo, slack
