"""What a model's architecture costs per decode step: weight bytes touched (mixture-of-experts routing) and
KV-cache bytes read, from the facts in its public config.

Facts for widely used open models ship in ``data/energy/architectures.csv`` (one row per model, each with the
Hugging Face ``config.json`` it came from). Models not in the table get a labelled default derived from their
parameter counts (``default_architecture``).

Mixture of experts. A model with ``total`` parameters of which ``active`` run per token, ``E`` routed experts
and top-``k`` routing splits into always-run shared parameters ``S`` (attention, embeddings, dense layers,
shared experts) and ``E`` experts of ``e`` parameters each: ``total = S + E·e`` and ``active = S + k·e``. With
``T`` tokens in a step and uniform routing, each expert is touched with probability ``h = 1 − (1 − k/E)^T``.
Served expert-parallel on ``N`` GPUs (each holds ``E/N`` whole experts; vLLM ``--enable-expert-parallel``,
the layout of every measured MoE row), a step lasts as long as the GPU that touched the most of its experts
takes, so the routed weights cost ``N · E[max over GPUs of experts touched] · e``: at small batch the busiest
GPU reads well above the mean ``E·e·h/N`` (Qwen3-235B, 8 GPUs, 8 tokens: ×1.4), at large batch every GPU
reads all its experts.

When only ``active``/``total`` are known (external APIs), ``S`` is the median shared fraction of active
parameters over the MoE models in the shipped table (``default_shared_frac``: 0.35, spanning Mixtral's 0.13
to Llama-4-Maverick's 0.82), and ``k`` their most common top-k (8), so ``E = k·(total − S)/(active − S)``.
"""

from __future__ import annotations

import csv
import io
import math
import re
import statistics
from dataclasses import dataclass, replace
from functools import cache
from importlib import resources
from typing import Any, Literal

import numpy as np
from scipy.stats import binom

from .hardware import KV_BYTES_PER_ELEMENT

ARCHITECTURES_FILE = "data/energy/architectures.csv"
ModelKind = Literal["decoder", "encoder"]

DEFAULT_KV_HEADS = 8  # grouped-query attention with 8 KV heads (Llama 3, Qwen3, Mistral): the common choice
DEFAULT_HEAD_DIM = 128  # the common head width of the same families
LAYERS_PER_CUBE_ROOT_B = 18.0
"""Default depth: layers ≈ 18 × (dense-equivalent billions)^(1/3). Parameters grow as layers × width² and
width/depth stays roughly constant across a family, so depth grows with the cube root of size; 18 matches the
shipped dense rows within ±20 % (Llama-3.1 8B/70B/405B: 36/74/133 vs 32/80/126). For MoE models the active
parameters set the depth (DeepSeek-V3: 37B active → 60 vs 61 layers)."""


@dataclass(frozen=True, slots=True)
class Architecture:
    """Per-model facts that set the bytes one decode step reads. Units: counts, elements, billions."""

    layers: int
    kv_heads: int
    head_dim: int
    kv_latent_dim: int = 0  # multi-head latent attention (DeepSeek): elements cached per token per layer
    sliding_window: int = 0  # tokens a sliding-window layer attends to (0: none)
    sliding_layers: int = 0  # how many of ``layers`` use the sliding window
    num_experts: int = 0  # routed experts per MoE layer (0: dense)
    experts_per_token: int = 0  # top-k routing
    moe_layers: int = 0  # layers with routed experts (0: every layer of a MoE model)
    shared_params_b: float | None = None  # always-run parameters of a MoE model; None: derive (see module)
    kind: ModelKind = "decoder"
    source: str = "default"  # where the facts come from (config URL) or "default"
    kv_bytes_per_token_total: float | None = (
        None  # given directly: replaces layers × KV heads × head dim × 2 B
    )

    @property
    def kv_elements_per_token_layer(self) -> int:
        """Cached elements per token per layer: K and V of each KV head, or the MLA latent."""
        return self.kv_latent_dim or 2 * self.kv_heads * self.head_dim

    def routed_layers(self, moe: bool) -> int:
        """Layers that route tokens to experts (all of a MoE model's layers unless the config says fewer)."""
        if not moe:
            return 0
        return self.moe_layers or self.layers

    def kv_bytes_per_token(self, kv_bytes_per_element: float = KV_BYTES_PER_ELEMENT) -> float:
        """KV-cache bytes one token adds across all layers (layers × KV heads × head dim × 2 × bytes)."""
        if self.kv_bytes_per_token_total is not None:
            return self.kv_bytes_per_token_total
        return self.layers * self.kv_elements_per_token_layer * kv_bytes_per_element

    def kv_read_bytes(
        self, context_tokens: float, kv_bytes_per_element: float = KV_BYTES_PER_ELEMENT
    ) -> float:
        """Bytes of KV cache one sequence's decode step reads at ``context_tokens`` of context; sliding-window
        layers read at most their window."""
        ctx = max(context_tokens, 0.0)
        if self.kv_bytes_per_token_total is not None:
            return ctx * self.kv_bytes_per_token_total
        full_layers = self.layers - self.sliding_layers
        windowed = min(ctx, self.sliding_window) if self.sliding_window else ctx
        tokens_read = full_layers * ctx + self.sliding_layers * windowed
        return tokens_read * self.kv_elements_per_token_layer * kv_bytes_per_element


def routed_split(active_b: float, total_b: float, arch: Architecture | None) -> tuple[float, float]:
    """(shared billions S, per-token routing probability q = k/E) of a model; dense models give (total, 0).

    Known experts and top-k: ``S = (active − q·total)/(1 − q)`` unless the shared size is given. Known shared
    size only: ``q = (active − S)/(total − S)``. Neither: ``S = default_shared_frac() · active``.
    """
    if total_b <= active_b:
        return total_b, 0.0
    shared = arch.shared_params_b if arch is not None else None
    if arch is not None and arch.num_experts > 0 and arch.experts_per_token > 0:
        q = min(arch.experts_per_token / arch.num_experts, 1.0)
        if shared is None:
            shared = (active_b - q * total_b) / (1.0 - q) if q < 1.0 else active_b
        return min(max(shared, 0.0), active_b), q
    if shared is None or not 0.0 <= shared < active_b:
        shared = default_shared_frac() * active_b
    return shared, (active_b - shared) / (total_b - shared)


def expert_count(active_b: float, total_b: float, arch: Architecture | None) -> int:
    """Routed experts per MoE layer: the config's, else ``k / q`` with the table's most common top-k."""
    if arch is not None and arch.num_experts > 0:
        return arch.num_experts
    _, q = routed_split(active_b, total_b, arch)
    top_k = arch.experts_per_token if arch is not None and arch.experts_per_token > 0 else default_top_k()
    return max(1, round(top_k / q)) if q > 0 else 1


def busiest_gpu_experts(experts: int, gpus: int, hit: float) -> float:
    """Expected experts touched on the busiest of ``gpus`` expert-parallel GPUs, each holding
    ``experts/gpus`` experts touched independently with probability ``hit``: ``E[max of gpus
    Binomial(m, hit)] = Σ_{j<m} (1 − F(j)^gpus)``. One GPU: ``experts · hit``."""
    ranks = max(1, min(gpus, experts))
    per_gpu = math.ceil(experts / ranks)
    if ranks == 1:
        return per_gpu * hit
    below = binom.cdf(np.arange(per_gpu), per_gpu, hit)
    return float(np.sum(1.0 - below**ranks))


@dataclass(frozen=True, slots=True)
class WeightsRead:
    """Billions of parameters one decode step reads, summed over the GPUs: ``shared`` (always-run; dense
    models: everything), ``routed_busiest`` (experts, as if every GPU read what the busiest expert-parallel
    GPU reads: it sets the step time) and ``routed_mean`` (experts actually read: they set the power)."""

    shared: float
    routed_busiest: float
    routed_mean: float


def weights_read_split(
    active_b: float, total_b: float, arch: Architecture | None, tokens: float, gpus: int = 1
) -> WeightsRead:
    """Weights one step over ``tokens`` tokens reads on ``gpus`` expert-parallel GPUs (module docstring).

    Dense: ``(total, 0, 0)``. MoE: ``S``, ``N · E[busiest GPU's experts touched] · e`` and
    ``(total − S) · h``; shared + routed is never below ``active`` (one token reads its own experts).
    """
    if total_b <= active_b:
        return WeightsRead(total_b, 0.0, 0.0)
    shared, q = routed_split(active_b, total_b, arch)
    experts = expert_count(active_b, total_b, arch)
    expert_b = (total_b - shared) / experts
    hit = 1.0 - float((1.0 - q) ** max(tokens, 1.0))
    ranks = max(1, min(gpus, experts))
    floor = active_b - shared
    mean = max(experts * hit * expert_b, floor)
    return WeightsRead(shared, max(ranks * busiest_gpu_experts(experts, gpus, hit) * expert_b, mean), mean)


def weights_read_b(
    active_b: float, total_b: float, arch: Architecture | None, tokens: float, gpus: int = 1
) -> float:
    """Billions of parameters one step costs in time: shared plus the busiest-GPU routed weights; on one GPU
    ``S + (total − S)·(1 − (1 − q)^T)``, never below ``active``."""
    read = weights_read_split(active_b, total_b, arch, tokens, gpus)
    return read.shared + read.routed_busiest


ARCH_FIELDS: tuple[str, ...] = (
    "num_experts",
    "experts_per_token",
    "shared_params_b",
    "layers",
    "kv_heads",
    "head_dim",
    "kv_bytes_per_token",
)
"""The architecture facts an operator may give (config keys and ``bauxite estimate`` options alike), as
``architecture_with`` takes them."""


def architecture_with(
    base: Architecture | None, active_b: float, total_b: float, given: dict[str, float]
) -> Architecture:
    """``base`` (or the size-derived default) with the facts in ``given`` replaced (keys: Architecture field
    names, ``kv_bytes_per_token`` for ``kv_bytes_per_token_total``). Raises ``ValueError`` with a message
    naming the option when a value is impossible."""
    values = dict(given)
    for name, value in values.items():
        if value is None or value < 0 or (value == 0 and name != "shared_params_b"):
            raise ValueError(f"--{name.replace('_', '-')} must be positive")
    if "kv_bytes_per_token" in values:
        values["kv_bytes_per_token_total"] = values.pop("kv_bytes_per_token")
    experts, top_k = values.get("num_experts"), values.get("experts_per_token")
    if experts is not None and top_k is not None and top_k > experts:
        raise ValueError("--experts-per-token cannot exceed --num-experts")
    shared = values.get("shared_params_b")
    if shared is not None and (shared >= active_b and total_b > active_b):
        raise ValueError("--shared-params-b must be below the active parameters of a MoE model")
    integer_fields = {"layers", "kv_heads", "head_dim", "num_experts", "experts_per_token", "moe_layers"}
    typed: dict[str, Any] = {k: int(v) if k in integer_fields else float(v) for k, v in values.items()}
    arch = base or default_architecture(active_b)
    return replace(arch, source="explicit", **typed)


def default_layers(active_b: float) -> int:
    """Depth of a model whose config is unknown (see ``LAYERS_PER_CUBE_ROOT_B``)."""
    return max(1, round(LAYERS_PER_CUBE_ROOT_B * float(max(active_b, 1e-3) ** (1.0 / 3.0))))


def default_architecture(active_b: float, kind: ModelKind = "decoder") -> Architecture:
    """Labelled default for a model without a config: 8 KV heads of width 128, depth from its size."""
    return Architecture(default_layers(active_b), DEFAULT_KV_HEADS, DEFAULT_HEAD_DIM, kind=kind)


@dataclass(frozen=True, slots=True)
class KnownModel:
    """One row of the shipped architecture table."""

    name: str
    total_b: float
    active_b: float
    precision: str
    arch: Architecture


_SUFFIXES = re.compile(r"-(instruct|it|chat|hf|fp8|base)(?=-|$)|-\d{4}(?=-|$)", re.IGNORECASE)


def normalise_name(name: str) -> str:
    """Lookup key of a model name: owner, ``Meta-`` prefix, and Instruct/it/chat/FP8/date suffixes dropped."""
    key = name.rsplit("/", 1)[-1].lower()
    key = key.removeprefix("meta-")
    return _SUFFIXES.sub("", key)


def _row(row: dict[str, str]) -> KnownModel:
    kind: ModelKind = "encoder" if row["kind"] == "encoder" else "decoder"
    arch = Architecture(
        layers=int(row["layers"]),
        kv_heads=int(row["kv_heads"]),
        head_dim=int(row["head_dim"]),
        kv_latent_dim=int(row["kv_latent_dim"]),
        sliding_window=int(row["sliding_window"]),
        sliding_layers=int(row["sliding_layers"]),
        num_experts=int(row["num_experts"]),
        experts_per_token=int(row["experts_per_token"]),
        moe_layers=int(row["moe_layers"]),
        kind=kind,
        source=row["source"],
    )
    return KnownModel(
        row["model"], float(row["total_params_b"]), float(row["active_params_b"]), row["precision"], arch
    )


@cache
def known_models() -> dict[str, KnownModel]:
    """The shipped table keyed by ``normalise_name`` (read once; immutable rows)."""
    text = resources.files("bauxite").joinpath(ARCHITECTURES_FILE).read_text(encoding="utf-8")
    rows = [_row(r) for r in csv.DictReader(io.StringIO(text))]
    return {normalise_name(r.name): r for r in rows}


def find_known(name: str) -> KnownModel | None:
    """Row of the shipped table for a model name (any owner prefix or Instruct/FP8 suffix), or None."""
    return known_models().get(normalise_name(name))


@cache
def default_shared_frac() -> float:
    """Median shared (always-run) fraction of active parameters over the MoE models in the shipped table,
    each with its config's experts and top-k; the default split of a MoE known only by active/total."""
    fracs = {
        (m.active_b, m.total_b): routed_split(m.active_b, m.total_b, m.arch)[0] / m.active_b
        for m in known_models().values()
        if m.total_b > m.active_b and m.arch.num_experts > 0
    }
    return statistics.median(fracs.values())


@cache
def default_top_k() -> int:
    """Most common top-k among the MoE models in the shipped table (8: Qwen3, DeepSeek-V3, Kimi-K2)."""
    ks = [m.arch.experts_per_token for m in known_models().values() if m.arch.experts_per_token > 0]
    return statistics.mode(ks)
