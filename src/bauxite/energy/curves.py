"""Calibrated throughput and power curves of LLM serving on GPUs: pure formulas, units in names.

One decode step of a batch of ``batch`` sequences produces one token per sequence. Its time is the sum of

* reading the weights the step touches from GPU memory (``weights_s``; for mixture-of-experts models the
  share of experts hit by at least one token of the batch),
* a fixed per-step overhead (scheduling, kernel launches) that grows with tensor/expert-parallel degree
  (``fixed_s``),
* a per-sequence overhead (sampling, attention over the KV cache, expert routing) (``per_seq_s``),
* the matrix work, ``2 × active parameters`` FLOP per token (``compute_s``).

Power per GPU is a resident-idle floor plus a dynamic part proportional to the share of the step spent in
each activity, capped at the board power. Prefill runs compute-bound at an assumed model-FLOP utilisation.

The coefficients (``COEF``) were fitted by ``benchmarks/energy_accuracy.py --fit`` (Levenberg–Marquardt on
log errors of step time and J per output token) over the 234 measured ML.ENERGY v3 rows; they are global:
nothing here is specific to one model. ``PREFILL_MFU`` is an assumption, not fitted (the rows carry no
prompt lengths, so prefill cannot be separated from decode in them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

BYTES_PER_PARAM = {"bf16": 2.0, "fp16": 2.0, "fp8": 2.0, "int8": 2.0, "int4": 1.0, "fp4": 1.0}
"""Effective bytes read per parameter. fp8 is kept at bf16 cost: in the measured rows fp8 MoE serving was no
faster per GPU than bf16 (the kernels do not realise the nominal 2×); it only fits on fewer GPUs."""

STORAGE_BYTES_PER_PARAM = {"bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5, "fp4": 0.5}
"""Bytes each parameter occupies in GPU memory (decides how many GPUs a model needs)."""

PREFILL_MFU = 0.5  # assumed model-FLOP utilisation of prefill (compute-bound), dimensionless


@dataclass(frozen=True, slots=True)
class GpuSpec:
    """Datasheet figures of one accelerator (dense, no sparsity)."""

    name: str
    hbm_bytes_per_s: float
    bf16_flop_per_s: float
    board_w: float
    memory_gb: float


GPU_SPECS: dict[str, GpuSpec] = {
    spec.name: spec
    for spec in (
        GpuSpec("H100", 3.35e12, 989e12, 700.0, 80.0),
        GpuSpec("H100-PCIE", 2.0e12, 756e12, 350.0, 80.0),
        GpuSpec("H200", 4.8e12, 989e12, 700.0, 141.0),
        GpuSpec("H200-NVL", 4.8e12, 835e12, 600.0, 141.0),
        GpuSpec("B200", 8.0e12, 2250e12, 1000.0, 180.0),
        GpuSpec("A100", 2.04e12, 312e12, 400.0, 80.0),
        GpuSpec("A100-PCIE", 1.94e12, 312e12, 300.0, 80.0),
        GpuSpec("L40S", 0.864e12, 362e12, 350.0, 48.0),
        GpuSpec("L4", 0.3e12, 121e12, 72.0, 24.0),
        GpuSpec("A10G", 0.6e12, 70e12, 300.0, 24.0),
        GpuSpec("A10", 0.6e12, 125e12, 150.0, 24.0),
        GpuSpec("MI300X", 5.3e12, 1307e12, 750.0, 192.0),
    )
}
DEFAULT_GPU = "H100"


@dataclass(frozen=True, slots=True)
class Coefficients:
    """Global fitted constants of the step-time and power curves (see module docstring)."""

    weights_eff: float = 1.163  # × ideal weight-read time
    fixed_ms: float = 3.607  # fixed per-step overhead, ms
    fixed_ms_per_log2_gpus: float = 2.799  # extra per-step overhead per doubling of GPUs, ms
    seq_s: float = 6.484e-5  # per-sequence overhead per step, s
    moe_seq_s_per_log2_gpus: float = 3.487e-6  # extra per-sequence expert-parallel cost, s
    compute_eff: float = 1.359  # × ideal decode matmul time at full datasheet FLOP rate
    idle_frac: float = 0.2056  # resident-idle power, share of board power
    memory_frac: float = 0.7285  # dynamic power while reading weights, share of board power
    compute_frac: float = 0.7944  # dynamic power while computing, share of board power
    seq_frac: float = 0.5609  # dynamic power during per-sequence work, share of board power


COEF = Coefficients()


def gpu_spec(gpu_type: str) -> GpuSpec:
    """Spec for a GPU name such as ``H100``, ``h100-sxm``, ``NVIDIA H200``; unknown names get an H100."""
    key = gpu_type.upper().replace("NVIDIA", "").replace("_", "-").strip()
    key = key.removesuffix("-SXM").removesuffix(" SXM").replace(" ", "-")
    if key in GPU_SPECS:
        return GPU_SPECS[key]
    for name in sorted(GPU_SPECS, key=len, reverse=True):
        if key.startswith(name):
            return GPU_SPECS[name]
    return GPU_SPECS[DEFAULT_GPU]


def experts_read_b(active_params_b: float, total_params_b: float, batch: float) -> float:
    """Billions of parameters one decode step reads: all of a dense model; for a mixture of experts, the
    expected share of parameters hit by at least one of ``batch`` tokens (each token touches an
    ``active/total`` share)."""
    if total_params_b <= active_params_b:
        return total_params_b
    hit_frac: float = 1.0 - (1.0 - active_params_b / total_params_b) ** max(batch, 1.0)
    return max(active_params_b, total_params_b * hit_frac)


@dataclass(frozen=True, slots=True)
class StepTimes:
    """Seconds one decode step of the whole batch spends in each activity."""

    weights_s: float
    fixed_s: float
    per_seq_s: float
    compute_s: float

    @property
    def total_s(self) -> float:
        return self.weights_s + self.fixed_s + self.per_seq_s + self.compute_s


def decode_step(
    active_params_b: float,
    total_params_b: float,
    gpu: GpuSpec,
    gpu_count: int,
    batch: float,
    precision: str = "bf16",
    coef: Coefficients = COEF,
) -> StepTimes:
    """Time split of one decode step producing one token for each of ``batch`` sequences."""
    n = max(gpu_count, 1)
    b = max(batch, 1.0)
    log2_n = math.log2(n)
    moe = total_params_b > active_params_b
    bytes_per_param = BYTES_PER_PARAM.get(precision, 2.0)
    read_bytes = experts_read_b(active_params_b, total_params_b, b) * 1e9 * bytes_per_param
    return StepTimes(
        weights_s=coef.weights_eff * read_bytes / (n * gpu.hbm_bytes_per_s),
        fixed_s=1e-3 * (coef.fixed_ms + coef.fixed_ms_per_log2_gpus * log2_n),
        per_seq_s=b * (coef.seq_s + (coef.moe_seq_s_per_log2_gpus * log2_n if moe else 0.0)),
        compute_s=coef.compute_eff * b * 2.0 * active_params_b * 1e9 / (n * gpu.bf16_flop_per_s),
    )


def prefill_s_per_token(active_params_b: float, gpu: GpuSpec, gpu_count: int) -> float:
    """Seconds of the whole cluster one prompt token takes in compute-bound prefill."""
    return 2.0 * active_params_b * 1e9 / (max(gpu_count, 1) * gpu.bf16_flop_per_s * PREFILL_MFU)


def step_power_w(step: StepTimes, gpu: GpuSpec, coef: Coefficients = COEF) -> float:
    """Average power of one GPU over a decode step: idle floor plus activity-weighted dynamic power,
    capped at board power."""
    total_s = step.total_s
    dynamic_w_s = (
        coef.memory_frac * step.weights_s
        + coef.compute_frac * step.compute_s
        + coef.seq_frac * step.per_seq_s
    )
    return gpu.board_w * min(1.0, coef.idle_frac + dynamic_w_s / total_s)


def prefill_power_w(gpu: GpuSpec, coef: Coefficients = COEF) -> float:
    """Power of one GPU during compute-bound prefill, capped at board power."""
    return gpu.board_w * min(1.0, coef.idle_frac + coef.compute_frac)


def decode_j_per_token(
    active_params_b: float,
    total_params_b: float,
    gpu: GpuSpec,
    gpu_count: int,
    batch: float,
    precision: str = "bf16",
    coef: Coefficients = COEF,
) -> float:
    """GPU energy per output token in joules: all GPUs' power over one step, shared by the batch."""
    step = decode_step(active_params_b, total_params_b, gpu, gpu_count, batch, precision, coef)
    return max(gpu_count, 1) * step_power_w(step, gpu, coef) * step.total_s / max(batch, 1.0)


def prefill_j_per_token(active_params_b: float, gpu: GpuSpec, coef: Coefficients = COEF) -> float:
    """GPU energy per prompt token in joules (independent of GPU count: more GPUs, proportionally faster)."""
    return prefill_power_w(gpu, coef) * 2.0 * active_params_b * 1e9 / (gpu.bf16_flop_per_s * PREFILL_MFU)


def gpus_needed(total_params_b: float, precision: str, gpu: GpuSpec) -> int:
    """Smallest power-of-two GPU count whose memory holds the weights with 30% headroom for the KV cache."""
    weight_gb = total_params_b * STORAGE_BYTES_PER_PARAM.get(precision, 2.0)
    count = max(1, math.ceil(weight_gb * 1.3 / gpu.memory_gb))
    return int(2 ** math.ceil(math.log2(count)))
