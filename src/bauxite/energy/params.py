"""Model size lookup: active/total parameters, precision and architecture for a model name.

Order: configured overrides → the shipped architecture table (public configs of widely used open models,
embedding models included) → EcoLogits' model repository (hundreds of named models, ranges kept) → the shipped
table of older external models EcoLogits no longer lists → sizes written in the name (``Llama-3.1-70B``,
``Qwen3-235B-A22B``, ``Mixtral-8x7B``) → a clearly labelled default (``sizes_default``; a warning is logged).
Never raises for an unknown name.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import cache
from importlib import resources
from typing import Any, Literal

from .architecture import Architecture, default_architecture, find_known

log = logging.getLogger(__name__)

ParamsSource = Literal["config", "explicit", "table", "ecologits", "name", "default"]
DEFAULT_ACTIVE_PARAMS_B = 70.0  # an unknown model is assumed to be a 70B dense model; labelled "default"
DEFAULT_EMBEDDING_PARAMS_B = 0.335  # an unknown embedding model: bge-large/e5-large class (335M)
EXTERNAL_MODELS_FILE = "data/energy/external_models.csv"

_MOE_NAME = re.compile(r"(\d+(?:\.\d+)?)\s*b[-_]a(\d+(?:\.\d+)?)\s*b", re.IGNORECASE)  # 235B-A22B
_EXPERTS_NAME = re.compile(r"(\d+)\s*x\s*(\d+(?:\.\d+)?)\s*b", re.IGNORECASE)  # 8x7B
_SIZE_NAME = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)\s*b(?![a-z])", re.IGNORECASE)  # 70B
_EMBEDDING_NAME = re.compile(r"embed|bge|e5-|minilm|gte-", re.IGNORECASE)
_ECOLOGITS_PROVIDERS = ("openai", "anthropic", "mistralai", "google_genai", "cohere", "huggingface_hub")


@dataclass(frozen=True, slots=True)
class ModelParams:
    """Parameter counts in billions; ``*_min``/``*_max`` carry the source's uncertainty range. ``arch`` None:
    the architecture is not known (the estimator uses a labelled default for the size). ``warnings`` are the
    source's caveats (EcoLogits: ``model-arch-not-released``, …)."""

    active_b: float
    total_b: float
    active_b_min: float
    active_b_max: float
    precision: str = "bf16"
    source: ParamsSource = "default"
    arch: Architecture | None = None
    warnings: tuple[str, ...] = ()

    @property
    def moe(self) -> bool:
        return self.total_b > self.active_b

    @property
    def sizes_default(self) -> bool:
        """True when nothing was known about the model and the 70B (or embedding) default was used."""
        return self.source == "default"

    @property
    def encoder(self) -> bool:
        return self.arch is not None and self.arch.kind == "encoder"

    @classmethod
    def fixed(
        cls,
        active_b: float,
        total_b: float | None = None,
        precision: str = "bf16",
        source: ParamsSource = "config",
        arch: Architecture | None = None,
    ) -> ModelParams:
        total = max(total_b if total_b is not None else active_b, active_b)
        return cls(active_b, total, active_b, active_b, precision, source, arch)


def _name_precision(name: str) -> str | None:
    return "fp8" if re.search(r"fp8", name, re.IGNORECASE) else None


def params_from_name(name: str) -> ModelParams | None:
    """Sizes written in a model name, or None. ``Qwen3-30B-A3B`` → 3B active of 30B; ``8x7B`` → MoE with
    2 of 8 experts active (Mixtral-style, shared layers ignored); ``Llama-3.1-8B`` → dense 8B."""
    precision = _name_precision(name) or "bf16"
    if match := _MOE_NAME.search(name):
        return ModelParams.fixed(float(match.group(2)), float(match.group(1)), precision, "name")
    if match := _EXPERTS_NAME.search(name):
        experts, size_b = int(match.group(1)), float(match.group(2))
        top_k = min(2, experts)
        arch = replace(
            default_architecture(size_b * top_k), num_experts=experts, experts_per_token=top_k, source="name"
        )
        return ModelParams.fixed(size_b * top_k, size_b * experts, precision, "name", arch)
    sizes = [float(m.group(1)) for m in _SIZE_NAME.finditer(name)]
    if sizes:
        return ModelParams.fixed(max(sizes), None, precision, "name")
    return None


def params_from_table(name: str) -> ModelParams | None:
    """Exact sizes and architecture of a model in the shipped table (public configs), or None."""
    known = find_known(name)
    if known is None:
        return None
    precision = _name_precision(name) or known.precision
    return ModelParams.fixed(known.active_b, known.total_b, precision, "table", known.arch)


def _value_range(value: Any) -> tuple[float, float, float]:
    """(central, min, max) of an EcoLogits ``ValueOrRange``; a range's central value is its geometric mean."""
    low = getattr(value, "min", None)
    high = getattr(value, "max", None)
    if low is not None and high is not None:
        return (float(low) * float(high)) ** 0.5, float(low), float(high)
    return float(value), float(value), float(value)


def _strip_owner(name: str) -> str:
    return name.rsplit("/", 1)[-1].lower()


def _warning_codes(model: Any) -> tuple[str, ...]:
    return tuple(str(getattr(w, "code", w)) for w in (getattr(model, "warnings", None) or ()))


class EcoLogitsRepository:
    """Lazy view of EcoLogits' model repository; loaded on first use, never at import time."""

    def __init__(self) -> None:
        self._by_name: dict[str, ModelParams] | None = None

    def _load(self) -> dict[str, ModelParams]:
        table: dict[str, ModelParams] = {}
        try:
            from ecologits.model_repository import ParametersMoE, models
        except Exception:  # ecologits missing or broken: fall through to the other sources
            return table
        for provider in reversed(_ECOLOGITS_PROVIDERS):  # earlier providers win on name clashes
            for model in models.list_models():
                if model.provider.value != provider:
                    continue
                params = model.architecture.parameters
                if isinstance(params, ParametersMoE):
                    active, a_min, a_max = _value_range(params.active)
                    total = _value_range(params.total)[0]
                else:
                    active, a_min, a_max = _value_range(params)
                    total = active
                entry = ModelParams(
                    active, max(total, active), a_min, a_max, "bf16", "ecologits", None, _warning_codes(model)
                )
                table[model.name.lower()] = entry
                table.setdefault(_strip_owner(model.name), entry)
        return table

    def find(self, name: str) -> ModelParams | None:
        if self._by_name is None:
            self._by_name = self._load()
        return self._by_name.get(name.lower()) or self._by_name.get(_strip_owner(name))


@cache
def _external_models() -> dict[str, ModelParams]:
    """Older external models (sizes as EcoLogits estimated them before dropping them), by lower-case name."""
    text = resources.files("bauxite").joinpath(EXTERNAL_MODELS_FILE).read_text(encoding="utf-8")
    table = {}
    for row in csv.DictReader(io.StringIO(text)):
        low, high = float(row["active_params_b_min"]), float(row["active_params_b_max"])
        central = (low * high) ** 0.5
        total = float(row["total_params_b"]) if row["architecture"] == "moe" else central
        warnings = ("model-arch-not-released",) if "not released" in row["source"] else ()
        table[row["model"].lower()] = ModelParams(
            central, max(total, central), low, high, "bf16", "ecologits", None, warnings
        )
    return table


def params_from_external_table(name: str) -> ModelParams | None:
    table = _external_models()
    return table.get(name.lower()) or table.get(_strip_owner(name))


def default_params(name: str) -> ModelParams:
    """The labelled default for a model nothing is known about: an embedding-sized encoder when the name says
    embedding, else a 70B dense model; both with wide ranges."""
    if _EMBEDDING_NAME.search(name):
        arch = default_architecture(DEFAULT_EMBEDDING_PARAMS_B, kind="encoder")
        size = DEFAULT_EMBEDDING_PARAMS_B
        return ModelParams(size, size, 0.02, 8.0, "bf16", "default", arch)
    return ModelParams(DEFAULT_ACTIVE_PARAMS_B, DEFAULT_ACTIVE_PARAMS_B, 8.0, 400.0, "bf16", "default")


def resolve_params(
    name: str, overrides: Mapping[str, ModelParams], repository: EcoLogitsRepository | None
) -> ModelParams:
    """Best-known sizes of ``name``; see the module docstring for the order. Never raises. An unknown name
    logs a warning each call: callers cache per name (the energy service does), so it appears once."""
    if name in overrides:
        return overrides[name]
    table = params_from_table(name)
    if table is not None:
        return table
    found = repository.find(name) if repository is not None else None
    found = found or params_from_external_table(name)
    if found is not None:
        precision = _name_precision(name)
        return replace(found, precision=precision) if precision else found
    parsed = params_from_name(name)
    if parsed is not None:
        return parsed
    log.warning("model %r has no known size; energy is estimated with a labelled default", name)
    return default_params(name)
