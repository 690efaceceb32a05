"""Roofline step-time and power curves of LLM serving on GPUs: pure formulas, units in names.

One decode step of a batch of ``B`` sequences on ``N`` GPUs makes one token per sequence. Its time is

    t_step = roof(t_weights, t_matmul) + t_kv + t_overhead

* ``t_weights = bytes(weights touched) / (N · HBM B/s · bw_eff · gen.bw · prec_eff)`` — the weights the step
  reads (all of a dense model; for MoE the experts hit by at least one of the ``B`` tokens, see
  ``architecture.weights_read_b``) at their physical width (``hardware.WEIGHT_BYTES_PER_PARAM``);
* ``t_matmul = 2 · active params · B / (N · FLOP/s(precision) · flop_eff · gen.flop)``;
* ``roof(a, b) = (a^p + b^p)^(1/p)`` — a smooth roofline (max for large ``p``; ``ROOFLINE_SHARPNESS``);
* ``t_kv = B · KV bytes per sequence(context) / (N · HBM B/s · bw_eff · kv_eff · gen.bw)`` — attention's
  KV-cache reads;
* ``t_overhead = gen.overhead · (layers · (layer_us + layer_us_per_log2_gpus · log2 N
  + quant_layer_us[precision] + B · seq_layer_us) + MoE layers · moe_layer_us) · 1e-6`` — kernel launches
  and collectives per layer, per-sequence attention/sampling work per layer, expert routing per MoE layer.

Power per GPU is a resident-idle floor plus dynamic power weighted by what the step spends its time on,
capped at board power: ``P = board · min(1, gen.idle·idle_frac + gen.dynamic·(memory_frac·t_mem +
compute_frac·t_compute + overhead_frac·t_overhead)/t_step)``. Prefill runs at the matmul rate.

``CALIBRATION`` holds every fitted constant (``benchmarks/energy_accuracy.py --fit`` reproduces them with
``scipy.optimize.least_squares`` over the ML.ENERGY v3 rows). Global constants are fractions of datasheet
figures, so they carry to GPUs and precisions outside the data; per-generation scales (Hopper, Blackwell)
were fitted with a log-normal prior centred on 1, and a generation without data uses 1 (its datasheet).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .architecture import Architecture, default_architecture, weights_read_b
from .hardware import GPU_SPECS, GpuSpec, gpu_spec, weight_bytes_per_param

__all__ = [
    "CALIBRATION",
    "COEF",
    "GPU_SPECS",
    "Calibration",
    "Coefficients",
    "GenerationScale",
    "GpuSpec",
    "StepTimes",
    "decode_j_per_token",
    "decode_step",
    "gpu_spec",
    "gpus_needed",
    "idle_w",
    "prefill_j_per_token",
    "prefill_power_w",
    "prefill_s_per_token",
    "step_power_w",
]

ROOFLINE_SHARPNESS = 2.0
"""Exponent ``p`` of the smooth roofline max of weight-read and matmul time (p = 1: sum, p → ∞: max). Chosen,
not fitted: 2 keeps the transition as gradual as measured GEMM rooflines are at moderate batch."""

DEFAULT_CONTEXT_TOKENS = 512.0
"""Mean context (prompt + tokens so far) of the sequences in a batch when nothing better is known."""


@dataclass(frozen=True, slots=True)
class Coefficients:
    """Global constants (see the module docstring for where each enters). Units in the names; fractions are
    of the GPU's datasheet figure. The defaults are the neutral start of every fit, not the shipped values
    (those are in ``CALIBRATION``)."""

    bw_eff: float = 0.80  # achieved / datasheet HBM bandwidth in weight reads
    flop_eff: float = 0.55  # achieved / datasheet dense matmul rate
    kv_eff: float = 0.60  # paged-attention KV reads, × bw_eff (short contexts read less efficiently)
    layer_us: float = 40.0  # per-layer per-step overhead (kernel launches, norms), µs
    layer_us_per_log2_gpus: float = 15.0  # per-layer per-step collective latency per doubling of GPUs, µs
    moe_layer_us: float = 80.0  # extra per MoE layer per step (router, permute, dispatch/combine), µs
    seq_layer_us: float = 0.5  # per sequence per layer per step (attention launch, sampling share), µs
    idle_frac: float = 0.20  # resident-idle power / board power
    memory_frac: float = 0.70  # dynamic power while streaming HBM / board power
    compute_frac: float = 0.80  # dynamic power in matmuls / board power
    overhead_frac: float = 0.40  # dynamic power during overheads / board power


@dataclass(frozen=True, slots=True)
class GenerationScale:
    """Multipliers on the global constants for one GPU generation (1.0: the datasheet-ratio prior)."""

    bw: float = 1.0
    flop: float = 1.0
    overhead: float = 1.0
    idle: float = 1.0
    dynamic: float = 1.0


@dataclass(frozen=True, slots=True)
class Calibration:
    """Everything fitted: global constants, per-generation scales, per-precision kernel efficiency."""

    coef: Coefficients = Coefficients()
    generations: dict[str, GenerationScale] = field(default_factory=dict)
    precision_eff: dict[str, float] = field(default_factory=dict)  # × bandwidth for weights in that format
    precision_layer_us: dict[str, float] = field(default_factory=dict)  # extra per-layer µs for that format

    def scale(self, gpu: GpuSpec) -> GenerationScale:
        return self.generations.get(gpu.generation, GenerationScale())

    def weight_eff(self, precision: str) -> float:
        return self.precision_eff.get(_calibrated_as(precision, self.precision_eff), 1.0)

    def quant_layer_us(self, precision: str) -> float:
        return self.precision_layer_us.get(_calibrated_as(precision, self.precision_layer_us), 0.0)


def _calibrated_as(precision: str, table: dict[str, float]) -> str:
    """A quantised format without its own calibration borrows fp8's (the same kind of kernels:
    (de)quantisation around each matmul); 16-bit formats are the reference."""
    if precision in table or precision in ("bf16", "fp16"):
        return precision
    return "fp8"


CALIBRATION = Calibration(
    coef=Coefficients(
        bw_eff=0.8531,
        flop_eff=0.6890,
        kv_eff=0.4918,
        layer_us=74.76,
        layer_us_per_log2_gpus=5.838,
        moe_layer_us=101.5,
        seq_layer_us=0.8127,
        idle_frac=0.2025,
        memory_frac=0.5797,
        compute_frac=1.0,
        overhead_frac=0.3774,
    ),
    generations={
        "hopper": GenerationScale(bw=1.050, flop=0.991, overhead=1.014, idle=0.996, dynamic=1.000),
        "blackwell": GenerationScale(bw=0.992, flop=1.009, overhead=0.986, idle=1.010, dynamic=1.120),
    },
    precision_eff={"fp8": 0.982},
    precision_layer_us={"fp8": 60.73},
)
"""Fitted by ``python benchmarks/energy_accuracy.py --fit`` on the 234 ML.ENERGY v3 rows (vLLM 0.11.1, H100
and B200, 11 models). Generations without data (Ampere, Ada, CDNA3) use scale 1: their datasheet figures
times the global fractions. fp8 is the only quantised format in the data; other quantised formats borrow its
values."""
COEF = CALIBRATION.coef


@dataclass(frozen=True, slots=True)
class StepTimes:
    """Seconds one decode step of the whole batch spends in each activity."""

    weights_s: float
    matmul_s: float
    kv_s: float
    overhead_s: float

    @property
    def roof_s(self) -> float:
        p = ROOFLINE_SHARPNESS
        return float((self.weights_s**p + self.matmul_s**p) ** (1.0 / p))

    @property
    def total_s(self) -> float:
        return self.roof_s + self.kv_s + self.overhead_s

    def activity_s(self) -> tuple[float, float, float]:
        """(memory, compute, overhead) seconds: the roofline time split in proportion to its two parts."""
        p = ROOFLINE_SHARPNESS
        w, m = self.weights_s**p, self.matmul_s**p
        roof = self.roof_s
        share_w = w / (w + m) if w + m > 0 else 0.0
        return roof * share_w + self.kv_s, roof * (1.0 - share_w), self.overhead_s


def decode_step(
    active_params_b: float,
    total_params_b: float,
    gpu: GpuSpec,
    gpu_count: int,
    batch: float,
    precision: str = "bf16",
    *,
    arch: Architecture | None = None,
    context_tokens: float = DEFAULT_CONTEXT_TOKENS,
    cal: Calibration = CALIBRATION,
) -> StepTimes:
    """Time split of one decode step producing one token for each of ``batch`` sequences whose mean context
    is ``context_tokens``. ``arch`` None: the labelled default architecture for the size."""
    n = max(gpu_count, 1)
    b = max(batch, 1.0)
    arch = arch or default_architecture(active_params_b)
    coef, gen = cal.coef, cal.scale(gpu)
    bandwidth = n * gpu.hbm_bytes_per_s * coef.bw_eff * gen.bw
    weights_b = weights_read_b(active_params_b, total_params_b, arch, b)
    weight_bytes = weights_b * 1e9 * weight_bytes_per_param(precision)
    moe = total_params_b > active_params_b
    per_layer_us = coef.layer_us + coef.layer_us_per_log2_gpus * math.log2(n)
    per_layer_us += cal.quant_layer_us(precision)
    moe_us = arch.routed_layers(moe) * coef.moe_layer_us
    return StepTimes(
        weights_s=weight_bytes / (bandwidth * cal.weight_eff(precision)),
        matmul_s=2.0 * active_params_b * 1e9 * b / (n * gpu.flop_per_s(precision) * coef.flop_eff * gen.flop),
        kv_s=b * arch.kv_read_bytes(context_tokens) / (bandwidth * coef.kv_eff),
        overhead_s=gen.overhead * 1e-6 * (arch.layers * (per_layer_us + b * coef.seq_layer_us) + moe_us),
    )


def step_power_w(step: StepTimes, gpu: GpuSpec, cal: Calibration = CALIBRATION) -> float:
    """Average power of one GPU over a decode step: idle floor plus activity-weighted dynamic power,
    capped at board power."""
    coef, gen = cal.coef, cal.scale(gpu)
    memory_s, compute_s, overhead_s = step.activity_s()
    dynamic_w_s = (
        coef.memory_frac * memory_s + coef.compute_frac * compute_s + coef.overhead_frac * overhead_s
    )
    return gpu.board_w * min(1.0, coef.idle_frac * gen.idle + gen.dynamic * dynamic_w_s / step.total_s)


def idle_w(gpu: GpuSpec, cal: Calibration = CALIBRATION) -> float:
    """Power of one GPU with a model resident and nothing running, in watts."""
    return gpu.board_w * min(1.0, cal.coef.idle_frac * cal.scale(gpu).idle)


def prefill_s_per_token(
    active_params_b: float,
    gpu: GpuSpec,
    gpu_count: int,
    precision: str = "bf16",
    cal: Calibration = CALIBRATION,
) -> float:
    """Seconds of the whole cluster one prompt token takes in compute-bound prefill."""
    rate = gpu.flop_per_s(precision) * cal.coef.flop_eff * cal.scale(gpu).flop
    return 2.0 * active_params_b * 1e9 / (max(gpu_count, 1) * rate)


def prefill_power_w(gpu: GpuSpec, cal: Calibration = CALIBRATION) -> float:
    """Power of one GPU during compute-bound prefill, capped at board power."""
    coef, gen = cal.coef, cal.scale(gpu)
    return gpu.board_w * min(1.0, coef.idle_frac * gen.idle + gen.dynamic * coef.compute_frac)


def decode_j_per_token(
    active_params_b: float,
    total_params_b: float,
    gpu: GpuSpec,
    gpu_count: int,
    batch: float,
    precision: str = "bf16",
    *,
    arch: Architecture | None = None,
    context_tokens: float = DEFAULT_CONTEXT_TOKENS,
    cal: Calibration = CALIBRATION,
) -> float:
    """GPU energy per output token in joules: all GPUs' power over one step, shared by the batch."""
    step = decode_step(
        active_params_b,
        total_params_b,
        gpu,
        gpu_count,
        batch,
        precision,
        arch=arch,
        context_tokens=context_tokens,
        cal=cal,
    )
    return max(gpu_count, 1) * step_power_w(step, gpu, cal) * step.total_s / max(batch, 1.0)


def prefill_j_per_token(
    active_params_b: float, gpu: GpuSpec, precision: str = "bf16", cal: Calibration = CALIBRATION
) -> float:
    """GPU energy per prompt token in joules (independent of GPU count: more GPUs, proportionally faster)."""
    return prefill_power_w(gpu, cal) * prefill_s_per_token(active_params_b, gpu, 1, precision, cal)


def gpus_needed(total_params_b: float, precision: str, gpu: GpuSpec) -> int:
    """Smallest power-of-two GPU count whose memory holds the weights with 30% headroom for the KV cache."""
    weight_gb = total_params_b * weight_bytes_per_param(precision)
    count = max(1, math.ceil(weight_gb * 1.3 / gpu.memory_gb))
    return int(2 ** math.ceil(math.log2(count)))
