"""What one request leaves behind: a mutable ``Capture`` filled while it runs, the final ``RequestRecord``,
and ``LAYOUT`` — the one declaration of the record's binary form that the telemetry ring, the aggregator,
the exposition and the reports derive from.

Neither holds request text, completion text or the caller's key: only configured names, counts and timings.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, get_args

if TYPE_CHECKING:
    from .energy.service import Residency

Status = Literal["ok", "error", "cancelled"]  # cancelled: the client hung up before the end
# The wire APIs the gateway serves, as a record field and the `endpoint` metric label value: chat
# (/v1/chat/completions), completion (/v1/completions), embedding (/v1/embeddings), responses (OpenAI
# Responses, /v1/responses) and messages (Anthropic Messages, /v1/messages).
Endpoint = Literal["chat", "completion", "embedding", "responses", "messages"]
ENDPOINTS: tuple[Endpoint, ...] = get_args(Endpoint)
Signal = Literal["average", "marginal"]
Basis = Literal["lifecycle", "direct"]
Scope = Literal["scope2", "scope3_cat1"]  # GHG Protocol: purchased electricity / purchased services


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
    include_carbon: bool = False  # x-bauxite-include-carbon: true — add the bauxite_carbon object
    prompt_tokens_est: int = 0  # from the body size, used when an aborted stream never reports usage
    cluster: str = ""
    region: str = ""
    route_reason: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0  # prompt tokens written to the prompt cache (Anthropic's cache creation)
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
    residency: Residency | None = None  # the request's stay on its (last) cluster, from accounting.begin
    # The upstream's id for a stored response (Responses API), so later retrievals reach the same cluster.
    upstream_id: str = ""


# Built for every request: a frozen dataclass sets each of its ~40 fields through ``object.__setattr__``,
# which makes construction about 2.5x slower (~5.5 against ~2.2 us); records are never changed once built.
@dataclass(slots=True)
class RequestRecord:
    """One finished request, as it enters the telemetry buffer. Read-only by convention: sinks share it.

    Energy is at the facility boundary: ``energy_j`` = (``gpu_j`` + ``host_j``) × ``pue``, where ``gpu_j``
    includes ``gpu_idle_j``, the resident-idle GPU energy of the time the request was resident. Carbon:
    ``carbon_g`` location-based (``intensity_g_per_kwh`` × facility kWh); ``carbon_market_g`` market-based
    (the region's configured factor, else the location-based figure, as the GHG Protocol's Scope 2 guidance
    prescribes without instruments); ``embodied_g`` the hardware's amortised embodied share (SCI's M).
    """

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
    gpu_j: float
    gpu_idle_j: float
    host_j: float
    energy_measured: bool
    intensity_g_per_kwh: float
    intensity_source: str
    intensity_signal: Signal
    intensity_basis: Basis
    pue: float
    carbon_g: float
    market_g_per_kwh: float
    carbon_market_g: float
    market_factor: bool  # True when a market-based factor is configured for the region
    embodied_g: float
    scope: Scope
    sizes_default: bool  # the model's size was not on record: a default size was assumed
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


# ---- binary layout ------------------------------------------------------------------------------------

LABEL, ENUM, FLAG, U16, U32, F64 = "label", "enum", "flag", "u16", "u32", "f64"
_CODES = {LABEL: "H", ENUM: "B", U16: "H", U32: "I", F64: "d"}


@dataclass(frozen=True, slots=True)
class Column:
    """One ``RequestRecord`` field in binary form. ``label``: a string interned through the label table
    ``table``; ``enum``: the index into ``values``; ``flag``: one bit of the flags byte."""

    name: str
    kind: str
    table: str = ""
    values: tuple[str, ...] = ()


LAYOUT: tuple[Column, ...] = (
    Column("model", LABEL, "models"),
    Column("region", LABEL, "regions"),
    Column("cluster", LABEL, "clusters"),
    Column("department", LABEL, "departments"),
    Column("route_reason", LABEL, "reasons"),
    Column("intensity_source", LABEL, "sources"),
    Column("http_status", U16),
    Column("endpoint", ENUM, values=ENDPOINTS),
    Column("status", ENUM, values=("ok", "error", "cancelled")),
    Column("intensity_signal", ENUM, values=("average", "marginal")),
    Column("intensity_basis", ENUM, values=("lifecycle", "direct")),
    Column("scope", ENUM, values=("scope2", "scope3_cat1")),
    Column("energy_measured", FLAG),
    Column("sizes_default", FLAG),
    Column("market_factor", FLAG),
    Column("usage_estimated", FLAG),
    Column("prompt_tokens", U32),
    Column("completion_tokens", U32),
    Column("cached_tokens", U32),
    Column("ttft_s", F64),
    Column("duration_s", F64),
    Column("energy_j", F64),
    Column("energy_j_min", F64),
    Column("energy_j_max", F64),
    Column("gpu_j", F64),
    Column("gpu_idle_j", F64),
    Column("host_j", F64),
    Column("intensity_g_per_kwh", F64),
    Column("pue", F64),
    Column("carbon_g", F64),
    Column("market_g_per_kwh", F64),
    Column("carbon_market_g", F64),
    Column("embodied_g", F64),
    Column("avoided_green_g", F64),
    Column("avoided_kv_g", F64),
    Column("avoided_green_net_g", F64),
    Column("finished_at", F64),
)

PACKED: tuple[Column, ...] = tuple(c for c in LAYOUT if c.kind != FLAG)
FLAGS: tuple[str, ...] = tuple(c.name for c in LAYOUT if c.kind == FLAG)
FLAG_BIT: dict[str, int] = {name: 1 << i for i, name in enumerate(FLAGS)}
INDEX: dict[str, int] = {c.name: i for i, c in enumerate(PACKED)} | {"flags": len(PACKED)}
"""Position of each packed column (and of the flags byte) in an unpacked raw record tuple."""

_UNPADDED = struct.calcsize("<" + "".join(_CODES[c.kind] for c in PACKED) + "B")
RECORD_SIZE = 1 << (_UNPADDED - 1).bit_length()  # a power of two, so a 2 MiB buffer holds whole slots
RECORD = struct.Struct("<" + "".join(_CODES[c.kind] for c in PACKED) + "B" + f"{RECORD_SIZE - _UNPADDED}x")
RawRecord = tuple[Any, ...]


def enum_index(column: str, value: str) -> int:
    """Index of ``value`` among an enum column's values (0 for an unknown value)."""
    values = next(c.values for c in PACKED if c.name == column)
    return values.index(value) if value in values else 0


def enum_value(column: str, index: int) -> str:
    values = next(c.values for c in PACKED if c.name == column)
    return values[index] if 0 <= index < len(values) else values[0]
