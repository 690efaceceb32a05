"""Energy of one request without telemetry: the calibrated method and EcoLogits' method, behind one Protocol.

Boundaries:

* ``gpu`` — accelerators only (what ML.ENERGY measures).
* ``full`` — accelerators + host CPU/DRAM share + provisioned idle capacity, times the facility PUE (what
  disclosed per-query figures cover). Defaults follow Google's published split of a median Gemini prompt
  (accelerators 0.14 Wh, host 0.06, idle machines 0.02, overhead 0.02): host = 0.43 × GPU, idle = 0.14 × GPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal, Protocol

from . import curves
from .architecture import Architecture, default_architecture
from .decode_curve import DecodeCurve
from .params import ModelParams

Boundary = Literal["gpu", "full"]
HOST_FRAC = 0.43  # host CPU/DRAM energy per joule of GPU energy (Google: 0.06 / 0.14 Wh)
IDLE_CAPACITY_FRAC = 0.14  # provisioned idle machines per joule of GPU energy (Google: 0.02 / 0.14 Wh)
FIT_ERROR_FRAC = 0.30
"""Widening of the range for the curves' own error: ≈ the 90th-percentile absolute error on rows whose whole
GPU × precision × architecture group was left out of the fit (``benchmarks/energy_accuracy.py``)."""
BATCH_RANGE_FACTOR = 2.0  # the range assumes the true average batch is within ×/÷ 2 of the assumption
TYPICAL_SHARED_FRAC = 0.5
"""Range bound for a MoE model known only by active/total: half its active parameters always run (the shipped
MoE configs span 0.13 (Mixtral) to 0.82 (Llama-4-Maverick)). The central figure uses the table's median,
``architecture.default_shared_frac()`` (0.35)."""


@dataclass(frozen=True, slots=True)
class Serving:
    """How the model is assumed to be served. ``gpu_count`` None: the fewest GPUs that hold the weights."""

    gpu_type: str = "H100"
    gpu_count: int | None = None
    batch_size: float = 64.0

    def gpus_for(self, params: ModelParams) -> int:
        if self.gpu_count:
            return self.gpu_count
        return curves.gpus_needed(params.total_b, params.precision, curves.gpu_spec(self.gpu_type))


@dataclass(frozen=True, slots=True)
class RequestShape:
    input_tokens: int
    output_tokens: int
    latency_s: float | None = None
    cached_tokens: int = 0  # prompt tokens served from the prefix cache: no prefill compute

    @property
    def decode_context_tokens(self) -> float:
        """Mean context while this request decodes (prompt + half its output); the batch is assumed to hold
        sequences like it, so its KV reads set the per-sequence attention cost."""
        return max(self.input_tokens, 0) + max(self.output_tokens, 0) / 2.0


@dataclass(frozen=True, slots=True)
class Overheads:
    """What the ``full`` boundary adds on top of GPU energy."""

    host_frac: float = HOST_FRAC
    idle_capacity_frac: float = IDLE_CAPACITY_FRAC
    pue: float = 1.0


@dataclass(frozen=True, slots=True)
class Estimate:
    energy_j: float
    energy_j_min: float
    energy_j_max: float
    boundary: Boundary
    method: str
    pue: float = 1.0  # PUE already included in the energy figures (1.0 for the gpu boundary)
    sizes_default: bool = False  # True: the model's size was unknown and a labelled default was used


class EnergyEstimator(Protocol):
    """Plug-in point: energy of one request from its shape, model size and serving assumptions."""

    name: str

    def estimate(
        self,
        shape: RequestShape,
        params: ModelParams,
        serving: Serving,
        boundary: Boundary,
        overheads: Overheads,
    ) -> Estimate: ...


def boundary_factor(boundary: Boundary, overheads: Overheads) -> float:
    """Multiplier from GPU energy to the boundary's energy (1 for ``gpu``)."""
    if boundary == "gpu":
        return 1.0
    return (1.0 + overheads.host_frac + overheads.idle_capacity_frac) * overheads.pue


def request_gpu_j(
    shape: RequestShape,
    active_b: float,
    total_b: float,
    precision: str,
    gpu: curves.GpuSpec,
    gpu_count: int,
    batch: float,
    *,
    arch: Architecture | None = None,
    cal: curves.Calibration = curves.CALIBRATION,
) -> float:
    """GPU energy of one request in joules: decode tokens at the batch's J/token (weights, KV reads at the
    request's mean context, overheads) plus uncached prompt tokens at the prefill J/token. Encoders
    (embedding models) only run the prompt."""
    prefill_tokens = max(shape.input_tokens - max(shape.cached_tokens, 0), 0)
    prefill_j = prefill_tokens * curves.prefill_j_per_token(active_b, gpu, precision, cal)
    if arch is not None and arch.kind == "encoder":
        return prefill_j
    decode_j = max(shape.output_tokens, 0) * curves.decode_j_per_token(
        active_b,
        total_b,
        gpu,
        gpu_count,
        batch,
        precision,
        arch=arch,
        context_tokens=shape.decode_context_tokens,
        cal=cal,
    )
    return decode_j + prefill_j


def request_compute_s(shape: RequestShape, params: ModelParams, serving: Serving) -> float:
    """Cluster seconds of the request's own compute at the serving batch: its uncached prompt tokens at the
    compute-bound prefill rate and, for a decoder, its share (1 / batch) of one decode step per output token.

    The calibrated GPU figure is power over exactly this time, so it holds the resident-idle power of this
    time and no more; the rest of the time the request held the cluster (queueing, network, the batch's
    other steps) is idle time the figure does not see.
    """
    gpu = curves.gpu_spec(serving.gpu_type)
    count = serving.gpus_for(params)
    prefill_tokens = max(shape.input_tokens - max(shape.cached_tokens, 0), 0)
    prefill_s = prefill_tokens * curves.prefill_s_per_token(params.active_b, gpu, count, params.precision)
    if params.encoder or shape.output_tokens <= 0:
        return prefill_s
    batch = max(serving.batch_size, 1.0)
    step = curves.decode_step(
        params.active_b,
        max(params.total_b, params.active_b),
        gpu,
        count,
        batch,
        params.precision,
        arch=params.arch,
        context_tokens=shape.decode_context_tokens,
    )
    return prefill_s + shape.output_tokens * step.total_s / batch


def _typical_moe(params: ModelParams, active_b: float) -> Architecture | None:
    """Architecture for the low end of a MoE model's range when only active/total are known."""
    if not params.moe or (params.arch is not None and params.arch.num_experts > 0):
        return params.arch
    arch = params.arch or default_architecture(active_b)
    return replace(arch, shared_params_b=TYPICAL_SHARED_FRAC * active_b)


class CalibratedEstimator:
    """Bauxite's roofline curves fitted on measured rows; range from the parameter range, the batch range,
    the MoE split when unknown, and the fit's group-held-out error."""

    name = "calibrated"

    def __init__(self, cal: curves.Calibration = curves.CALIBRATION) -> None:
        self.cal = cal

    def prepare(self, params: ModelParams, serving: Serving) -> PreparedCalibrated:
        """This estimator for ``params`` on ``serving``'s GPUs, ready to evaluate at any batch (the request
        path keeps one per cluster and model)."""
        return PreparedCalibrated(params, serving, self.cal)

    def estimate(
        self,
        shape: RequestShape,
        params: ModelParams,
        serving: Serving,
        boundary: Boundary,
        overheads: Overheads,
    ) -> Estimate:
        gpu = curves.gpu_spec(serving.gpu_type)
        count = serving.gpus_for(params)
        batch = max(serving.batch_size, 1.0)

        def energy_j(active_b: float, batch_size: float, arch: Architecture | None) -> float:
            total_b = max(params.total_b, active_b)
            return request_gpu_j(
                shape, active_b, total_b, params.precision, gpu, count, batch_size, arch=arch, cal=self.cal
            )

        central_j = energy_j(params.active_b, batch, params.arch)
        low_j = energy_j(
            params.active_b_min, batch * BATCH_RANGE_FACTOR, _typical_moe(params, params.active_b_min)
        )
        high_j = energy_j(params.active_b_max, max(batch / BATCH_RANGE_FACTOR, 1.0), params.arch)
        factor = boundary_factor(boundary, overheads)
        return Estimate(
            energy_j=central_j * factor,
            energy_j_min=min(low_j, central_j) / (1.0 + FIT_ERROR_FRAC) * factor,
            energy_j_max=max(high_j, central_j) * (1.0 + FIT_ERROR_FRAC) * factor,
            boundary=boundary,
            method=self.name,
            pue=overheads.pue if boundary == "full" else 1.0,
            sizes_default=params.sizes_default,
        )


class PreparedCalibrated:
    """``CalibratedEstimator.estimate`` at the ``gpu`` boundary and ``request_compute_s`` for one model on one
    serving setup (GPU type and count), with the three curves (central, low, high) built once: per request
    only the batch and the token counts vary. Same floats as the unprepared functions, bit for bit."""

    __slots__ = ("_central", "_compute", "_high", "_low", "encoder", "gpu_count", "params")

    def __init__(self, params: ModelParams, serving: Serving, cal: curves.Calibration) -> None:
        gpu = curves.gpu_spec(serving.gpu_type)
        count = serving.gpus_for(params)
        self.params = params
        self.gpu_count = count
        self.encoder = params.encoder

        def part(active_b: float, arch: Architecture | None, with_cal: curves.Calibration) -> _Part:
            total_b = max(params.total_b, active_b)
            curve = DecodeCurve.build(
                active_b, total_b, gpu, count, params.precision, arch=arch, cal=with_cal
            )
            prefill_j = curves.prefill_j_per_token(active_b, gpu, params.precision, with_cal)
            return _Part(curve, prefill_j, arch is not None and arch.kind == "encoder")

        self._central = part(params.active_b, params.arch, cal)
        self._low = part(params.active_b_min, _typical_moe(params, params.active_b_min), cal)
        self._high = part(params.active_b_max, params.arch, cal)
        # request_compute_s runs on the shipped calibration whatever the estimator's
        compute = (
            self._central.curve
            if cal is curves.CALIBRATION
            else part(params.active_b, params.arch, curves.CALIBRATION).curve
        )
        prefill_s = curves.prefill_s_per_token(params.active_b, gpu, count, params.precision)
        self._compute = (compute, prefill_s)

    def gpu_figures(
        self, input_tokens: int, output_tokens: int, cached_tokens: int, batch_size: float
    ) -> tuple[float, float, float, float]:
        """(energy_j, energy_j_min, energy_j_max, compute_s) of a request of this ``RequestShape`` at
        ``batch_size``: the ``gpu`` boundary figures of ``CalibratedEstimator.estimate`` and
        ``request_compute_s``. Token counts as they are, not a ``RequestShape``: this runs per request."""
        batch = max(batch_size, 1.0)
        prefill_tokens = max(input_tokens - max(cached_tokens, 0), 0)
        decoded = max(output_tokens, 0)
        context = max(input_tokens, 0) + decoded / 2.0  # RequestShape.decode_context_tokens
        central = self._central
        compute_curve, prefill_s_per_token = self._compute
        prefill_s = prefill_tokens * prefill_s_per_token
        if central.encoder:
            central_j = prefill_tokens * central.prefill_j
            compute_s = prefill_s
        else:
            j_per_token, step_s = central.curve.energy(batch, context)
            central_j = decoded * j_per_token + prefill_tokens * central.prefill_j
            if compute_curve is not central.curve:
                step_s = compute_curve.energy(batch, context)[1]
            compute_s = (
                prefill_s
                if self.encoder or output_tokens <= 0
                else (prefill_s + output_tokens * step_s / batch)
            )
        low_j = self._low.gpu_j(prefill_tokens, decoded, batch * BATCH_RANGE_FACTOR, context)
        high_j = self._high.gpu_j(prefill_tokens, decoded, max(batch / BATCH_RANGE_FACTOR, 1.0), context)
        return (
            central_j,
            min(low_j, central_j) / (1.0 + FIT_ERROR_FRAC),
            max(high_j, central_j) * (1.0 + FIT_ERROR_FRAC),
            compute_s,
        )


@dataclass(frozen=True, slots=True)
class _Part:
    """One of the three figures' curve, its prefill J/token and whether it runs the prompt only."""

    curve: DecodeCurve
    prefill_j: float
    encoder: bool

    def gpu_j(self, prefill_tokens: int, output_tokens: int, batch: float, context: float) -> float:
        """``request_gpu_j`` on this curve."""
        prefill_j = prefill_tokens * self.prefill_j
        if self.encoder:
            return prefill_j
        return output_tokens * self.curve.energy(batch, context)[0] + prefill_j


class EcoLogitsEstimator:
    """EcoLogits' published method (its GPU energy regression and server share), for side-by-side comparison.

    ``gpu`` boundary: its GPU part at the assumed batch size; ``full``: GPU + its server share, times PUE.
    EcoLogits ignores input tokens.
    """

    name = "ecologits"

    def estimate(
        self,
        shape: RequestShape,
        params: ModelParams,
        serving: Serving,
        boundary: Boundary,
        overheads: Overheads,
    ) -> Estimate:
        values = [
            ecologits_energy_j(
                active_b,
                params.total_b,
                shape.output_tokens,
                shape.latency_s,
                serving.batch_size,
                boundary,
                overheads.pue,
            )
            for active_b in (params.active_b_min, params.active_b, params.active_b_max)
        ]
        return Estimate(
            energy_j=values[1],
            energy_j_min=min(values),
            energy_j_max=max(values),
            boundary=boundary,
            method=self.name,
            pue=overheads.pue if boundary == "full" else 1.0,
            sizes_default=params.sizes_default,
        )


def ecologits_energy_j(
    active_b: float,
    total_b: float,
    output_tokens: int,
    latency_s: float | None,
    batch_size: float,
    boundary: Boundary,
    pue: float,
) -> float:
    """EcoLogits 0.11 energy in joules, computed with its own impact functions and constants."""
    from ecologits.impacts import llm

    from ..units import J_PER_KWH

    batch = max(round(batch_size), 1)
    per_gpu_kwh = float(
        llm.gpu_energy(
            model_active_parameter_count=active_b,
            output_token_count=output_tokens,
            batch_size=batch,
            gpu_energy_alpha=llm.GPU_ENERGY_ALPHA,
            gpu_energy_beta=llm.GPU_ENERGY_BETA,
            gpu_energy_gamma=llm.GPU_ENERGY_GAMMA,
        )
    )
    memory_gb = llm.model_required_memory(total_b, llm.MODEL_QUANTIZATION_BITS)
    gpu_count = int(llm.gpu_required_count(memory_gb, llm.GPU_MEMORY))
    gpu_kwh = gpu_count * per_gpu_kwh
    if boundary == "gpu":
        return gpu_kwh * J_PER_KWH
    latency = float(
        llm.generation_latency(
            model_active_parameter_count=active_b,
            output_token_count=output_tokens,
            batch_size=batch,
            latency_alpha=llm.LATENCY_ALPHA,
            latency_beta=llm.LATENCY_BETA,
            latency_gamma=llm.LATENCY_GAMMA,
            request_latency=latency_s if latency_s is not None else math.inf,
        )
    )
    server_kwh = float(llm.server_energy(latency, llm.SERVER_POWER, llm.SERVER_GPUS, gpu_count, batch))
    return (server_kwh + gpu_kwh) * pue * J_PER_KWH


def estimators() -> dict[str, EnergyEstimator]:
    """The registered estimators by name (a fresh plain dict; no module state)."""
    return {"calibrated": CalibratedEstimator(), "ecologits": EcoLogitsEstimator()}
