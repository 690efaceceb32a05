"""Roofline step-time and power curves of LLM serving on GPUs: pure formulas, units in names.

One decode step of a batch of ``B`` sequences on ``N`` GPUs makes one token per sequence. Its time is

    t_step = roof(t_weights, t_matmul) + t_kv + t_overhead + t_dequant + t_wait

* ``t_weights = (S + R_mean / expert_eff) · bytes/param / (N · HBM B/s · bw_eff · gen.bw)`` — the shared
  weights ``S`` (all of a dense model) and the routed expert weights the batch touches (``R``, see
  ``architecture.weights_read_split``) at their physical width (``hardware.WEIGHT_BYTES_PER_PARAM``); grouped
  expert GEMMs, with few tokens per expert, stream at ``expert_eff`` of the dense rate;
* ``t_matmul = 2 · active params · B / (N · FLOP/s(precision) · flop_eff)``;
* ``roof(a, b) = (a^p + b^p)^(1/p)`` — a smooth roofline (max for large ``p``; ``ROOFLINE_SHARPNESS``);
* ``t_kv = B · KV bytes per sequence(context) / (N · HBM B/s · bw_eff · kv_eff · gen.bw)`` — attention's
  KV-cache reads;
* ``t_overhead = (layers · (layer_us + layer_us_per_log2_gpus · log2 N + B · seq_layer_us)
  + MoE layers · moe_layer_us) · 1e-6`` — kernel launches and collectives per layer, per-sequence
  attention/sampling work per layer, expert routing per MoE layer;
* ``t_dequant = dequant[precision] · (routed part of t_weights)`` — block-quantised (fp8) expert kernels
  dequantise and scale every weight they read on the compute units (16-bit formats: 0; dense layers: 0);
* ``t_wait`` — expert parallelism: the step lasts until the GPU holding the most touched experts
  (``R_busiest``) is done; the others wait at idle power.

Power per GPU is a resident-idle floor plus dynamic power weighted by what the step spends its time on,
capped at board power: ``P = board · min(1, idle_frac + gen.dynamic·(memory_frac·t_mem +
compute_frac·t_compute + overhead_frac·t_overhead)/t_step)`` with ``t_compute`` including ``t_dequant`` and
``t_wait`` in none of them. Prefill runs at the matmul rate.

``CALIBRATION`` holds every fitted constant (``benchmarks/energy_accuracy.py --fit`` reproduces them with
``scipy.optimize.least_squares`` over the ML.ENERGY v3 rows). Global constants are fractions of datasheet
figures, so they carry to GPUs and precisions outside the data; per-generation scales (Hopper, Blackwell)
were fitted with a log-normal prior centred on 1, and a generation without data uses 1 (its datasheet).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .architecture import Architecture, default_architecture, weights_read_split
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
    expert_eff: float = 0.80  # grouped expert GEMMs' weight reads (few tokens per expert), × bw_eff
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
    """Multipliers on the global constants for one GPU generation (1.0: the datasheet-ratio prior). Only the
    two the rows identify: achieved HBM bandwidth (memory generation and controller) and dynamic power per
    unit of activity (process and clocks). Matmul rate, per-layer overheads and idle power follow the
    datasheet with the global fractions; separate scales for them changed no held-out figure (fewer
    constants, same accuracy)."""

    bw: float = 1.0
    dynamic: float = 1.0


@dataclass(frozen=True, slots=True)
class Calibration:
    """Everything fitted: global constants, per-generation scales, per-precision kernel efficiency."""

    coef: Coefficients = Coefficients()
    generations: dict[str, GenerationScale] = field(default_factory=dict)
    dequant: dict[str, float] = field(
        default_factory=dict
    )  # s of dequantisation per s of expert weight reads

    def scale(self, gpu: GpuSpec) -> GenerationScale:
        return self.generations.get(gpu.generation, GenerationScale())

    def dequant_ratio(self, precision: str) -> float:
        """Compute seconds spent dequantising/scaling expert weights in ``precision`` per second of reading
        them (0 for 16-bit formats)."""
        return self.dequant.get(_calibrated_as(precision, self.dequant), 0.0)


def _calibrated_as(precision: str, table: dict[str, float]) -> str:
    """A quantised format without its own calibration borrows fp8's (the same kind of kernels:
    (de)quantisation around each matmul); 16-bit formats are the reference."""
    if precision in table or precision in ("bf16", "fp16"):
        return precision
    return "fp8"


CALIBRATION = Calibration(
    coef=Coefficients(
        bw_eff=0.8546,
        flop_eff=0.6289,
        kv_eff=0.4723,
        expert_eff=0.7482,
        layer_us=73.61,
        layer_us_per_log2_gpus=9.64,
        moe_layer_us=36.46,
        seq_layer_us=0.7673,
        idle_frac=0.2023,
        memory_frac=0.5673,
        compute_frac=1.0,
        overhead_frac=0.2910,
    ),
    generations={
        "hopper": GenerationScale(bw=1.069, dynamic=1.023),
        "blackwell": GenerationScale(bw=0.999, dynamic=1.207),
    },
    dequant={"fp8": 0.5612},
)
"""Fitted by ``python benchmarks/energy_accuracy.py --fit`` on the 234 ML.ENERGY v3 rows (vLLM 0.11.1, H100
and B200, 11 models; every MoE row served tensor-parallel attention + expert-parallel experts). Generations
without data (Ampere, Ada, CDNA3) use scale 1: their datasheet figures times the global fractions. fp8 is the
only quantised format in the data; other quantised formats borrow its dequantisation ratio."""
COEF = CALIBRATION.coef


@dataclass(frozen=True, slots=True)
class StepTimes:
    """Seconds one decode step of the whole batch spends in each activity."""

    weights_s: float  # weight reads of the average GPU
    matmul_s: float
    kv_s: float
    overhead_s: float
    wait_s: float = 0.0  # average GPU idle while the busiest expert-parallel GPU finishes its experts
    dequant_s: float = 0.0  # dequantising/scaling quantised expert weights (compute units)

    @property
    def roof_s(self) -> float:
        p = ROOFLINE_SHARPNESS
        return float((self.weights_s**p + self.matmul_s**p) ** (1.0 / p))

    @property
    def total_s(self) -> float:
        return self.roof_s + self.kv_s + self.overhead_s + self.wait_s + self.dequant_s

    def activity_s(self) -> tuple[float, float, float]:
        """(memory, compute, overhead) seconds: the roofline time split in proportion to its two parts.
        ``wait_s`` is in none of them: a GPU waiting at a collective draws its idle power."""
        p = ROOFLINE_SHARPNESS
        w, m = self.weights_s**p, self.matmul_s**p
        roof = self.roof_s
        share_w = w / (w + m) if w + m > 0 else 0.0
        return roof * share_w + self.kv_s, roof * (1.0 - share_w) + self.dequant_s, self.overhead_s


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
    read = weights_read_split(active_params_b, total_params_b, arch, b, n)
    bytes_per_s = bandwidth / weight_bytes_per_param(precision) / 1e9  # billions of params per second
    routed_s = read.routed_mean / coef.expert_eff / bytes_per_s
    busiest_routed_s = read.routed_busiest / coef.expert_eff / bytes_per_s
    weights_s = read.shared / bytes_per_s + routed_s
    busiest_s = read.shared / bytes_per_s + busiest_routed_s
    dequant = cal.dequant_ratio(precision)
    matmul_s = 2.0 * active_params_b * 1e9 * b / (n * gpu.flop_per_s(precision) * coef.flop_eff)
    moe = total_params_b > active_params_b
    per_layer_us = coef.layer_us + coef.layer_us_per_log2_gpus * math.log2(n)
    moe_us = arch.routed_layers(moe) * coef.moe_layer_us
    return StepTimes(
        weights_s=weights_s,
        matmul_s=matmul_s,
        kv_s=b * arch.kv_read_bytes(context_tokens) / (bandwidth * coef.kv_eff),
        overhead_s=1e-6 * (arch.layers * (per_layer_us + b * coef.seq_layer_us) + moe_us),
        dequant_s=dequant * routed_s,
        wait_s=_roof(busiest_s, matmul_s)
        - _roof(weights_s, matmul_s)
        + dequant * (busiest_routed_s - routed_s),
    )


def _roof(weights_s: float, matmul_s: float) -> float:
    p = ROOFLINE_SHARPNESS
    return float((weights_s**p + matmul_s**p) ** (1.0 / p))


def step_power_w(step: StepTimes, gpu: GpuSpec, cal: Calibration = CALIBRATION) -> float:
    """Average power of one GPU over a decode step: idle floor plus activity-weighted dynamic power,
    capped at board power."""
    coef, gen = cal.coef, cal.scale(gpu)
    memory_s, compute_s, overhead_s = step.activity_s()
    dynamic_w_s = (
        coef.memory_frac * memory_s + coef.compute_frac * compute_s + coef.overhead_frac * overhead_s
    )
    return gpu.board_w * min(1.0, coef.idle_frac + gen.dynamic * dynamic_w_s / step.total_s)


def idle_w(gpu: GpuSpec, cal: Calibration = CALIBRATION) -> float:
    """Power of one GPU with a model resident and nothing running, in watts."""
    return gpu.board_w * min(1.0, cal.coef.idle_frac)


def prefill_s_per_token(
    active_params_b: float,
    gpu: GpuSpec,
    gpu_count: int,
    precision: str = "bf16",
    cal: Calibration = CALIBRATION,
) -> float:
    """Seconds of the whole cluster one prompt token takes in compute-bound prefill."""
    rate = gpu.flop_per_s(precision) * cal.coef.flop_eff
    return 2.0 * active_params_b * 1e9 / (max(gpu_count, 1) * rate)


def prefill_power_w(gpu: GpuSpec, cal: Calibration = CALIBRATION) -> float:
    """Power of one GPU during compute-bound prefill, capped at board power."""
    coef, gen = cal.coef, cal.scale(gpu)
    return gpu.board_w * min(1.0, coef.idle_frac + gen.dynamic * coef.compute_frac)


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
