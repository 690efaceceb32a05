"""The ``fleet:`` section: simulated vLLM clusters served on 127.0.0.1 for the demo, tests and benchmarks."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from ..records import ENDPOINTS, Endpoint


class SimClusterSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    port: int = Field(default=0, ge=0, le=65535)  # 0: any free port (tests)
    models: tuple[str, ...] = Field(min_length=1)
    gpu_type: str = "H100"
    gpu_count: int = Field(default=1, ge=1)
    active_params_b: float | None = Field(default=None, gt=0)  # default: looked up from the model name
    max_num_seqs: int = Field(default=64, ge=1)  # batch capacity; more requests wait in a queue
    prefix_cache: bool = True
    default_output_tokens: int = Field(default=128, ge=1)  # when the request sets no max_tokens
    api_key_env: str | None = None  # when set, requests must carry this key (like vLLM --api-key)
    endpoints: tuple[Endpoint, ...] = ENDPOINTS  # APIs served; others answer 404 like a missing route


class FleetSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    time_scale: float = Field(default=1.0, ge=0)  # 0: zero-delay mode (no pacing), for benchmarks
    clusters: tuple[SimClusterSettings, ...] = ()
