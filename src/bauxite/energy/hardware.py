"""Accelerator datasheet figures and the physical bytes of each weight precision.

Every figure here is a datasheet number (dense, no sparsity), not a fitted one: the calibrated curves express
what serving achieves as fractions of these, so a GPU missing from the measured data still gets an estimate
scaled by its datasheet (its generation's calibration when one was fitted, the global one otherwise).

Sources: NVIDIA H100 / H200 / B200 (HGX) / A100 / L40S / L4 / A10 product datasheets, AMD Instinct MI300X
datasheet. fp8/fp4 rates are dense tensor-core rates; GPUs without fp8 (Ampere) run fp8 weights at the bf16
rate (weight-only quantisation, dequantised into bf16 matmuls).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Generation = Literal["hopper", "blackwell", "ampere", "ada", "cdna3"]

WEIGHT_BYTES_PER_PARAM = {
    "bf16": 2.0,
    "fp16": 2.0,
    "fp8": 1.0,
    "int8": 1.0,
    "int4": 0.5,
    "fp4": 0.5,
}
"""Bytes each weight occupies in GPU memory and is read from it: the format's width, nothing fitted.
(How well kernels realise that width is a separate, fitted efficiency per precision; see ``curves``.)"""

KV_BYTES_PER_ELEMENT = 2.0
"""KV-cache element width: vLLM keeps the KV cache in the activation dtype (bf16) unless told otherwise,
fp8 checkpoints included."""


@dataclass(frozen=True, slots=True)
class GpuSpec:
    """Datasheet figures of one accelerator (dense rates, no sparsity). Units in the names."""

    name: str
    generation: Generation
    hbm_bytes_per_s: float
    bf16_flop_per_s: float
    fp8_flop_per_s: float  # = bf16 rate where the GPU has no fp8 tensor cores
    fp4_flop_per_s: float  # = fp8 rate where the GPU has no fp4 tensor cores
    board_w: float
    memory_gb: float

    def flop_per_s(self, precision: str) -> float:
        """Dense matmul rate for weights stored in ``precision`` (bf16 rate for 16-bit formats)."""
        if precision in ("fp4", "int4"):
            return self.fp4_flop_per_s
        if precision in ("fp8", "int8"):
            return self.fp8_flop_per_s
        return self.bf16_flop_per_s


GPU_SPECS: dict[str, GpuSpec] = {
    spec.name: spec
    for spec in (
        GpuSpec("H100", "hopper", 3.35e12, 989e12, 1979e12, 1979e12, 700.0, 80.0),
        GpuSpec("H100-PCIE", "hopper", 2.0e12, 756e12, 1513e12, 1513e12, 350.0, 80.0),
        GpuSpec("H200", "hopper", 4.8e12, 989e12, 1979e12, 1979e12, 700.0, 141.0),
        GpuSpec("H200-NVL", "hopper", 4.8e12, 835e12, 1671e12, 1671e12, 600.0, 141.0),
        GpuSpec("B200", "blackwell", 8.0e12, 2250e12, 4500e12, 9000e12, 1000.0, 180.0),
        GpuSpec("A100", "ampere", 2.04e12, 312e12, 312e12, 312e12, 400.0, 80.0),
        GpuSpec("A100-PCIE", "ampere", 1.94e12, 312e12, 312e12, 312e12, 300.0, 80.0),
        GpuSpec("L40S", "ada", 0.864e12, 362e12, 733e12, 733e12, 350.0, 48.0),
        GpuSpec("L4", "ada", 0.3e12, 121e12, 242e12, 242e12, 72.0, 24.0),
        GpuSpec("A10G", "ampere", 0.6e12, 70e12, 70e12, 70e12, 300.0, 24.0),
        GpuSpec("A10", "ampere", 0.6e12, 125e12, 125e12, 125e12, 150.0, 24.0),
        GpuSpec("MI300X", "cdna3", 5.3e12, 1307e12, 2615e12, 2615e12, 750.0, 192.0),
    )
}
DEFAULT_GPU = "H100"


def find_gpu_spec(gpu_type: str) -> GpuSpec | None:
    """Spec for a GPU name such as ``H100``, ``h100-sxm``, ``NVIDIA H200``; None for one not in the table."""
    key = gpu_type.upper().replace("NVIDIA", "").replace("_", "-").strip()
    key = key.removesuffix("-SXM").removesuffix(" SXM").replace(" ", "-")
    if key in GPU_SPECS:
        return GPU_SPECS[key]
    for name in sorted(GPU_SPECS, key=len, reverse=True):
        if key.startswith(name):
            return GPU_SPECS[name]
    return None


def gpu_spec(gpu_type: str) -> GpuSpec:
    """Spec for a GPU name (see ``find_gpu_spec``); unknown names get an H100."""
    return find_gpu_spec(gpu_type) or GPU_SPECS[DEFAULT_GPU]


def weight_bytes_per_param(precision: str) -> float:
    """Physical bytes per weight; unknown precisions count as 16-bit."""
    return WEIGHT_BYTES_PER_PARAM.get(precision, 2.0)
