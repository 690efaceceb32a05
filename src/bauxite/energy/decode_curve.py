"""``curves.decode_step`` for one model on one GPU setup, prepared once and evaluated per request.

The request path evaluates the calibrated curves for every request (central, low and high figure, and the
request's compute time), at the batch the cluster actually ran and the request's own context. Everything in
``decode_step`` that depends on neither — the resolved architecture, achieved bandwidth, the matmul rate,
per-layer overheads, a dense model's weight reads — is worked out once here, so an evaluation is a few float
operations and no allocation.

The arithmetic is ``curves.decode_step``, ``curves.step_power_w`` and ``curves.decode_j_per_token`` with the
constant sub-expressions hoisted and every remaining operation in the same order, so the figures are the same
floats, bit for bit (``tests/test_energy_curves.py`` checks this across models, GPUs, batches and contexts).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .architecture import Architecture, WeightsRead, default_architecture, weights_read_split
from .curves import CALIBRATION, ROOFLINE_SHARPNESS, Calibration, GpuSpec, StepTimes
from .hardware import weight_bytes_per_param

MOE_READS_KEPT = 64
"""Weight reads remembered per MoE curve, by exact batch: an external API's batch is a constant, so its three
batches (central, low, high) hit every time; the expert-parallel busiest-GPU expectation behind each read
costs far more than the rest of the curve."""


@dataclass(slots=True, eq=False)
class DecodeCurve:
    """One model (``active_params_b``/``total_params_b`` billions, ``precision``, ``arch``) on ``gpu_count``
    ``gpu``s under ``cal``. Build with ``DecodeCurve.build``; ``step`` and ``energy`` evaluate it."""

    active_params_b: float
    total_params_b: float
    arch: Architecture  # resolved: the labelled default when the model's own is unknown
    n: int  # GPU count, at least 1
    kv_bandwidth: float  # achieved KV-read bytes/s over all GPUs
    bytes_per_s: float  # billions of weights read per second over all GPUs
    expert_eff: float
    dequant: float
    matmul_flop: float  # FLOP of one sequence's matmuls per step (2 × active params)
    matmul_rate: float  # achieved FLOP/s over all GPUs
    seq_layer_us: float
    per_layer_us: float
    moe_us: float
    board_w: float
    idle_frac: float
    dynamic: float  # the generation's dynamic-power scale
    memory_frac: float
    compute_frac: float
    overhead_frac: float
    dense_read: WeightsRead | None  # a dense model reads the same weights at every batch
    dense_weights_p: float | None  # and so its weight-read time to the roofline's power is a constant
    moe_reads: dict[float, WeightsRead]

    @classmethod
    def build(
        cls,
        active_params_b: float,
        total_params_b: float,
        gpu: GpuSpec,
        gpu_count: int,
        precision: str = "bf16",
        *,
        arch: Architecture | None = None,
        cal: Calibration = CALIBRATION,
    ) -> DecodeCurve:
        """The curve ``curves.decode_step`` evaluates for these arguments (``arch`` None: the default)."""
        n = max(gpu_count, 1)
        arch = arch or default_architecture(active_params_b)
        coef, gen = cal.coef, cal.scale(gpu)
        bandwidth = n * gpu.hbm_bytes_per_s * coef.bw_eff * gen.bw
        moe = total_params_b > active_params_b
        dense = None if moe else weights_read_split(active_params_b, total_params_b, arch, 1.0, n)
        bytes_per_s = bandwidth / weight_bytes_per_param(precision) / 1e9
        # decode_step's weights_s for a dense model: shared / bytes_per_s plus an exact zero of routed time
        dense_weights_p = None if dense is None else (dense.shared / bytes_per_s) ** ROOFLINE_SHARPNESS
        return cls(
            active_params_b=active_params_b,
            total_params_b=total_params_b,
            arch=arch,
            n=n,
            kv_bandwidth=bandwidth * coef.kv_eff,
            bytes_per_s=bytes_per_s,
            expert_eff=coef.expert_eff,
            dequant=cal.dequant_ratio(precision),
            matmul_flop=2.0 * active_params_b * 1e9,
            matmul_rate=n * gpu.flop_per_s(precision) * coef.flop_eff,
            seq_layer_us=coef.seq_layer_us,
            per_layer_us=coef.layer_us + coef.layer_us_per_log2_gpus * math.log2(n),
            moe_us=arch.routed_layers(moe) * coef.moe_layer_us,
            board_w=gpu.board_w,
            idle_frac=coef.idle_frac,
            dynamic=gen.dynamic,
            memory_frac=coef.memory_frac,
            compute_frac=coef.compute_frac,
            overhead_frac=coef.overhead_frac,
            dense_read=dense,
            dense_weights_p=dense_weights_p,
            moe_reads={},
        )

    def _read(self, b: float) -> WeightsRead:
        if self.dense_read is not None:
            return self.dense_read
        found = self.moe_reads.get(b)
        if found is None:
            found = weights_read_split(self.active_params_b, self.total_params_b, self.arch, b, self.n)
            if len(self.moe_reads) >= MOE_READS_KEPT:
                self.moe_reads.clear()
            self.moe_reads[b] = found
        return found

    def step(self, batch: float, context_tokens: float) -> StepTimes:
        """``curves.decode_step`` at ``batch`` sequences of mean context ``context_tokens``."""
        b = max(batch, 1.0)
        routed_s, busiest_routed_s, weights_s, busiest_s, matmul_s = self._times(b)
        return StepTimes(
            weights_s=weights_s,
            matmul_s=matmul_s,
            kv_s=b * self.arch.kv_read_bytes(context_tokens) / self.kv_bandwidth,
            overhead_s=1e-6 * (self.arch.layers * (self.per_layer_us + b * self.seq_layer_us) + self.moe_us),
            dequant_s=self.dequant * routed_s,
            wait_s=_roof(busiest_s, matmul_s)
            - _roof(weights_s, matmul_s)
            + self.dequant * (busiest_routed_s - routed_s),
        )

    def _times(self, b: float) -> tuple[float, float, float, float, float]:
        """(routed expert reads, the busiest GPU's routed reads, weight reads, the busiest GPU's weight
        reads, matmul), seconds per step at batch ``b``: what ``step`` and ``energy`` share."""
        read = self._read(b)
        bytes_per_s = self.bytes_per_s
        routed_s = read.routed_mean / self.expert_eff / bytes_per_s
        busiest_routed_s = read.routed_busiest / self.expert_eff / bytes_per_s
        weights_s = read.shared / bytes_per_s + routed_s
        busiest_s = read.shared / bytes_per_s + busiest_routed_s
        return routed_s, busiest_routed_s, weights_s, busiest_s, self.matmul_flop * b / self.matmul_rate

    def energy(self, batch: float, context_tokens: float) -> tuple[float, float]:
        """(``curves.decode_j_per_token``, the step's ``total_s``) at ``batch`` and ``context_tokens``: GPU
        joules per output token and seconds per decode step, without building a ``StepTimes``."""
        b = max(batch, 1.0)
        if self.dense_weights_p is not None:
            return self._dense_energy(b, context_tokens, self.dense_weights_p)
        routed_s, busiest_routed_s, weights_s, busiest_s, matmul_s = self._times(b)
        kv_s = b * self.arch.kv_read_bytes(context_tokens) / self.kv_bandwidth
        overhead_s = 1e-6 * (self.arch.layers * (self.per_layer_us + b * self.seq_layer_us) + self.moe_us)
        dequant_s = self.dequant * routed_s
        roof_s = _roof(weights_s, matmul_s)
        wait_s = _roof(busiest_s, matmul_s) - roof_s + self.dequant * (busiest_routed_s - routed_s)
        total_s = roof_s + kv_s + overhead_s + wait_s + dequant_s
        # StepTimes.activity_s, then curves.step_power_w
        p = ROOFLINE_SHARPNESS
        w, m = weights_s**p, matmul_s**p
        share_w = w / (w + m) if w + m > 0 else 0.0
        memory_s = roof_s * share_w + kv_s
        compute_s = roof_s * (1.0 - share_w) + dequant_s
        dynamic_w_s = (
            self.memory_frac * memory_s + self.compute_frac * compute_s + self.overhead_frac * overhead_s
        )
        power_w = self.board_w * min(1.0, self.idle_frac + self.dynamic * dynamic_w_s / total_s)
        return self.n * power_w * total_s / b, total_s

    def _dense_energy(self, b: float, context_tokens: float, w: float) -> tuple[float, float]:
        """``energy`` of a dense model, whose weight reads (``w`` = weights_s ** p) are the same at every
        batch: it has no routed experts, so no dequantisation or expert-parallel wait, whose terms are exact
        zeros (leaving them out of the sums changes no bit)."""
        matmul_s = self.matmul_flop * b / self.matmul_rate
        kv_s = b * self.arch.kv_read_bytes(context_tokens) / self.kv_bandwidth
        overhead_s = 1e-6 * (self.arch.layers * (self.per_layer_us + b * self.seq_layer_us) + self.moe_us)
        p = ROOFLINE_SHARPNESS
        m = matmul_s**p
        roof_s = float((w + m) ** (1.0 / p))
        total_s = roof_s + kv_s + overhead_s
        share_w = w / (w + m) if w + m > 0 else 0.0
        memory_s = roof_s * share_w + kv_s
        compute_s = roof_s * (1.0 - share_w)
        dynamic_w_s = (
            self.memory_frac * memory_s + self.compute_frac * compute_s + self.overhead_frac * overhead_s
        )
        power_w = self.board_w * min(1.0, self.idle_frac + self.dynamic * dynamic_w_s / total_s)
        return self.n * power_w * total_s / b, total_s


def _roof(weights_s: float, matmul_s: float) -> float:
    p = ROOFLINE_SHARPNESS
    return float((weights_s**p + matmul_s**p) ** (1.0 / p))
