"""A valid ``RequestRecord`` with every field set, for telemetry tests; override any field by keyword."""

from __future__ import annotations

import time
from typing import Any

from bauxite.records import RequestRecord


def make_record(**overrides: Any) -> RequestRecord:
    base: dict[str, Any] = dict(
        model="llama", region="us-central1", cluster="iowa", department="research", endpoint="chat",
        status="ok", http_status=200, prompt_tokens=100, completion_tokens=40, cached_tokens=20,
        ttft_s=0.08, duration_s=0.7, energy_j=30.0, energy_j_min=15.0, energy_j_max=60.0,
        gpu_j=19.0, gpu_idle_j=4.0, host_j=8.27, energy_measured=False, intensity_g_per_kwh=420.0,
        intensity_source="static", intensity_signal="average", intensity_basis="lifecycle", pue=1.1,
        carbon_g=0.0035, market_g_per_kwh=420.0, carbon_market_g=0.0035, market_factor=False,
        embodied_g=0.0002, scope="scope2", sizes_default=False, avoided_green_g=0.001, avoided_kv_g=0.0005,
        route_reason="least_loaded", finished_at=time.time(),
    )  # fmt: skip
    base.update(overrides)
    return RequestRecord(**base)
