"""Model size lookup: active/total parameters and architecture for a model name.

Order: configured overrides → EcoLogits' model repository (hundreds of named models, ranges kept) → sizes
written in the name itself (``Llama-3.1-70B``, ``Qwen3-235B-A22B``, ``Mixtral-8x7B``) → a clearly labelled
default. Never raises for an unknown name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

ParamsSource = Literal["config", "explicit", "ecologits", "name", "default"]
DEFAULT_ACTIVE_PARAMS_B = 70.0  # an unknown model is assumed to be a 70B dense model; labelled "default"

_MOE_NAME = re.compile(r"(\d+(?:\.\d+)?)\s*b[-_]a(\d+(?:\.\d+)?)\s*b", re.IGNORECASE)  # 235B-A22B
_EXPERTS_NAME = re.compile(r"(\d+)\s*x\s*(\d+(?:\.\d+)?)\s*b", re.IGNORECASE)  # 8x7B
_SIZE_NAME = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)\s*b(?![a-z])", re.IGNORECASE)  # 70B
_ECOLOGITS_PROVIDERS = ("openai", "anthropic", "mistralai", "google_genai", "cohere", "huggingface_hub")


@dataclass(frozen=True, slots=True)
class ModelParams:
    """Parameter counts in billions; ``*_min``/``*_max`` carry the repository's uncertainty range."""

    active_b: float
    total_b: float
    active_b_min: float
    active_b_max: float
    precision: str = "bf16"
    source: ParamsSource = "default"

    @property
    def moe(self) -> bool:
        return self.total_b > self.active_b

    @classmethod
    def fixed(
        cls,
        active_b: float,
        total_b: float | None = None,
        precision: str = "bf16",
        source: ParamsSource = "config",
    ) -> ModelParams:
        total = max(total_b if total_b is not None else active_b, active_b)
        return cls(active_b, total, active_b, active_b, precision, source)


def params_from_name(name: str) -> ModelParams | None:
    """Sizes written in a model name, or None. ``Qwen3-30B-A3B`` → 3B active of 30B; ``8x7B`` → MoE with
    2 of 8 experts active (Mixtral-style, shared layers ignored); ``Llama-3.1-8B`` → dense 8B."""
    precision = "fp8" if re.search(r"fp8", name, re.IGNORECASE) else "bf16"
    if match := _MOE_NAME.search(name):
        return ModelParams.fixed(float(match.group(2)), float(match.group(1)), precision, "name")
    if match := _EXPERTS_NAME.search(name):
        experts, size_b = int(match.group(1)), float(match.group(2))
        return ModelParams.fixed(size_b * min(2, experts), size_b * experts, precision, "name")
    sizes = [float(m.group(1)) for m in _SIZE_NAME.finditer(name)]
    if sizes:
        return ModelParams.fixed(max(sizes), None, precision, "name")
    return None


def _value_range(value: Any) -> tuple[float, float, float]:
    """(central, min, max) of an EcoLogits ``ValueOrRange``; a range's central value is its geometric mean."""
    low = getattr(value, "min", None)
    high = getattr(value, "max", None)
    if low is not None and high is not None:
        return (float(low) * float(high)) ** 0.5, float(low), float(high)
    return float(value), float(value), float(value)


def _strip_owner(name: str) -> str:
    return name.rsplit("/", 1)[-1].lower()


class EcoLogitsRepository:
    """Lazy view of EcoLogits' model repository; loaded on first use, never at import time."""

    def __init__(self) -> None:
        self._by_name: dict[str, ModelParams] | None = None

    def _load(self) -> dict[str, ModelParams]:
        table: dict[str, ModelParams] = {}
        try:
            from ecologits.model_repository import ParametersMoE, models
        except Exception:  # ecologits missing or broken: fall through to name parsing
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
                entry = ModelParams(active, max(total, active), a_min, a_max, "bf16", "ecologits")
                table[model.name.lower()] = entry
                table.setdefault(_strip_owner(model.name), entry)
        return table

    def find(self, name: str) -> ModelParams | None:
        if self._by_name is None:
            self._by_name = self._load()
        return self._by_name.get(name.lower()) or self._by_name.get(_strip_owner(name))


def resolve_params(
    name: str, overrides: Mapping[str, ModelParams], repository: EcoLogitsRepository | None
) -> ModelParams:
    """Best-known sizes of ``name``; see the module docstring for the order. Never raises."""
    if name in overrides:
        return overrides[name]
    found = repository.find(name) if repository is not None else None
    if found is not None:
        parsed = params_from_name(name)
        if parsed is not None and parsed.precision == "fp8":
            return replace(found, precision="fp8")
        return found
    parsed = params_from_name(name)
    if parsed is not None:
        return parsed
    return ModelParams(DEFAULT_ACTIVE_PARAMS_B, DEFAULT_ACTIVE_PARAMS_B, 8.0, 400.0, "bf16", "default")
