"""What one request leaves behind: a mutable ``Capture`` filled while it runs, and the final record.

Neither holds request text, completion text or the caller's key: only configured names, counts and timings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from .energy.service import EnergyFigure

Status = Literal["ok", "error", "cancelled"]  # cancelled: the client hung up before the end
Endpoint = Literal["chat", "completion", "embedding"]


@dataclass(slots=True)
class Capture:
    """Filled in by the proxy as the request progresses; read by accounting in a ``finally``."""

    model: str
    department: str
    endpoint: Endpoint
    started_at: float  # unix seconds
    started_mono: float  # time.monotonic() at arrival
    stream: bool = False
    client_usage: bool = False  # the client itself asked for stream usage (else the usage chunk is dropped)
    prompt_tokens_est: int = 0  # from the body size, used when an aborted stream never reports usage
    cluster: str = ""
    region: str = ""
    route_reason: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    ttft_s: float | None = None
    duration_s: float = 0.0
    status: Status = "error"
    http_status: int = 0
    error_type: str = ""  # short machine-readable cause: "upstream_5xx", "timeout", "client_disconnect"…
    attempts: int = 0
    usage_reported: bool = False  # True when the upstream's usage object was seen
    usage_estimated: bool = False  # token counts are estimates: the upstream reported no usage
    prefix_key: int = 0  # hash of the prompt prefix, for cache affinity; not reversible to text
    counterfactual_cluster: str = ""  # the latency-first choice, for avoided-carbon accounting
    # The figure computed for the response headers; settlement reuses it instead of estimating twice.
    energy_estimate: EnergyFigure | None = None


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One finished request, as it enters the telemetry buffer."""

    model: str
    region: str
    cluster: str
    department: str
    endpoint: Endpoint
    status: Status
    http_status: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    ttft_s: float  # -1 when no token arrived
    duration_s: float
    energy_j: float
    energy_j_min: float
    energy_j_max: float
    energy_measured: bool
    intensity_g_per_kwh: float
    intensity_source: str
    pue: float
    carbon_g: float
    avoided_green_g: float
    avoided_kv_g: float
    route_reason: str
    finished_at: float  # unix seconds
    usage_estimated: bool = False  # tokens (and so energy) estimated: the upstream reported no usage
    # Green routing's net avoided grams (negative when the choice emitted more than the latency-first
    # counterfactual); ``avoided_green_g`` is its positive part (gross).
    avoided_green_net_g: float = 0.0


class RecordSink(Protocol):
    """Where finished records go. ``submit`` must never block or raise."""

    def submit(self, record: RequestRecord) -> None: ...
