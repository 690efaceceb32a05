"""Fitting the curves' constants to measured serving rows with ``scipy.optimize.least_squares``.

Each measured row (ML.ENERGY v3 layout: model, GPU, GPU count, precision, average batch, average output
tokens, cluster throughput, average total power) gives two residuals: log predicted/measured time per output
token (decode step shared by the batch plus the prefill of 200 prompt tokens per request, the protocol's
assumed prompt) and log predicted/measured average power. Energy per output token is their product, so it is
fitted too without being counted twice.

Per-generation scales (achieved bandwidth, dynamic power) enter with a log-normal prior centred on 1 (extra
residuals ``log(scale) / PRIOR_SIGMA``): with no rows of a generation they stay at the datasheet ratio, with
rows they move only as far as the rows insist. A quantised format's dequantisation ratio is fitted only when
its rows are in the fit (no prior: 16-bit formats have none, and nothing says what a format costs before it is
measured). Transforms keep every constant physical: efficiencies and power fractions in (0, 1), times and
ratios positive. Every MoE row is expert-parallel (vLLM ``--enable-expert-parallel``, attention
tensor-parallel), which ``architecture.weights_read_split`` models.

The predictor here is the vectorised twin of ``curves``; ``predict`` and ``curves`` agree to float precision
(tested), the twin only exists to keep the fit fast.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from importlib import resources

import numpy as np
import numpy.typing as npt
from scipy.optimize import least_squares

from . import curves
from .architecture import Architecture, WeightsRead, default_architecture, find_known, weights_read_split
from .hardware import gpu_spec, weight_bytes_per_param

DATA_FILE = "data/energy/mlenergy_v3_lm_arena_chat.csv"
PROTOCOL_INPUT_TOKENS = 200  # prompt tokens per request assumed for rows that do not record them
PRIOR_SIGMA = 0.25  # log-sd of a generation's deviation from the global constants
GENERATION_FIELDS = tuple(f.name for f in fields(curves.GenerationScale))
COEF_FIELDS = tuple(f.name for f in fields(curves.Coefficients))
_FRACTIONS = {"bw_eff", "flop_eff", "kv_eff", "expert_eff", "memory_frac", "compute_frac", "overhead_frac"}
COEF_PRIORS = {"idle_frac": (0.2, 0.35), "bw_eff": (0.85, 0.1)}
"""(centre, log-sd) priors on global constants the rows cannot separate well. Resident idle: 0.2 × board power
(H100: 140 W; the A40's 110 W of 300 W with a model loaded is 0.37, within one sd)."""
ROBUST_LOSS = "soft_l1"
ROBUST_SCALE = 0.15
_IDLE_MAX = 0.6  # the idle floor is below 60 % of board power on every datasheet GPU
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Measured:
    """One measured serving configuration. Power is the whole replica's average in watts."""

    model: str
    family: str
    gpu: str
    gpu_count: int
    precision: str
    batch: float
    output_tokens: float
    active_b: float
    total_b: float
    arch: Architecture
    j_per_output_token: float
    power_w: float
    tokens_per_s: float

    @property
    def moe(self) -> bool:
        return self.total_b > self.active_b

    @property
    def context_tokens(self) -> float:
        """Mean context of a sequence while it decodes: the prompt plus half its output."""
        return PROTOCOL_INPUT_TOKENS + self.output_tokens / 2.0

    @property
    def group(self) -> str:
        """GPU × precision × architecture family, the unit of leave-group-out validation."""
        return f"{self.gpu} {self.precision} {'moe' if self.moe else 'dense'}"


def model_family(model: str) -> str:
    """Series of a model (``Qwen/Qwen3-8B`` → ``Qwen3``, ``meta-llama/Llama-3.1-8B`` → ``Llama-3.1``)."""
    name = model.rsplit("/", 1)[-1]
    parts = name.split("-")
    if parts[0].lower() in ("llama", "gemma") and len(parts) > 1:
        return f"{parts[0]}-{parts[1]}"
    return parts[0]


def load_rows(data_file: str = DATA_FILE) -> list[Measured]:
    """The shipped measured rows with each model's architecture from the shipped table."""
    text = resources.files("bauxite").joinpath(data_file).read_text(encoding="utf-8")
    rows = []
    for raw in csv.DictReader(io.StringIO(text)):
        known = find_known(raw["model"])
        active = float(raw["active_params_b"])
        rows.append(
            Measured(
                model=raw["model"],
                family=model_family(raw["model"]),
                gpu=raw["gpu"],
                gpu_count=int(raw["num_gpus"]),
                precision="fp8" if raw["precision"] == "fp8" else "bf16",
                batch=float(raw["avg_batch_size"]),
                output_tokens=float(raw["avg_output_tokens"]),
                active_b=active,
                total_b=float(raw["total_params_b"]),
                arch=known.arch if known else default_architecture(active),
                j_per_output_token=float(raw["energy_per_output_token_j"]),
                power_w=float(raw["avg_power_w"]),
                tokens_per_s=float(raw["output_tokens_per_s"]),
            )
        )
    return rows


@dataclass(frozen=True, slots=True)
class _Features:
    """Per-row quantities that do not depend on the constants (arrays over rows)."""

    shared_bytes: FloatArray  # always-run weights read per step (dense: all)
    routed_busiest_bytes: FloatArray  # expert weights per step, busiest expert-parallel GPU × GPUs
    routed_mean_bytes: FloatArray  # expert weights per step, summed over GPUs
    matmul_flop: FloatArray  # per step, whole batch
    kv_bytes: FloatArray  # per step, whole batch
    layers: FloatArray
    log2_gpus: FloatArray
    moe_layers: FloatArray
    batch: FloatArray
    gpus: FloatArray
    hbm: FloatArray  # per GPU, B/s
    flops: FloatArray  # per GPU, at the row's precision
    board_w: FloatArray
    prefill_flop_per_output: FloatArray  # prefill FLOP per output token
    generation: list[str]
    precision: list[str]


def _split(row: Measured) -> WeightsRead:
    return weights_read_split(row.active_b, row.total_b, row.arch, row.batch, row.gpu_count)


def _features(rows: Sequence[Measured]) -> _Features:
    def arr(values: Sequence[float]) -> FloatArray:
        return np.asarray(values, dtype=np.float64)

    specs = [gpu_spec(r.gpu) for r in rows]
    return _Features(
        shared_bytes=arr([_split(r).shared * 1e9 * weight_bytes_per_param(r.precision) for r in rows]),
        routed_busiest_bytes=arr(
            [_split(r).routed_busiest * 1e9 * weight_bytes_per_param(r.precision) for r in rows]
        ),
        routed_mean_bytes=arr(
            [_split(r).routed_mean * 1e9 * weight_bytes_per_param(r.precision) for r in rows]
        ),
        matmul_flop=arr([2.0 * r.active_b * 1e9 * r.batch for r in rows]),
        kv_bytes=arr([r.batch * r.arch.kv_read_bytes(r.context_tokens) for r in rows]),
        layers=arr([r.arch.layers for r in rows]),
        log2_gpus=arr([math.log2(r.gpu_count) for r in rows]),
        moe_layers=arr([r.arch.routed_layers(r.moe) for r in rows]),
        batch=arr([r.batch for r in rows]),
        gpus=arr([r.gpu_count for r in rows]),
        hbm=arr([s.hbm_bytes_per_s for s in specs]),
        flops=arr([s.flop_per_s(r.precision) for s, r in zip(specs, rows, strict=True)]),
        board_w=arr([s.board_w for s in specs]),
        prefill_flop_per_output=arr(
            [2.0 * r.active_b * 1e9 * PROTOCOL_INPUT_TOKENS / r.output_tokens for r in rows]
        ),
        generation=[s.generation for s in specs],
        precision=[r.precision for r in rows],
    )


def predict(cal: curves.Calibration, rows: Sequence[Measured]) -> tuple[FloatArray, FloatArray]:
    """(seconds per output token of the replica, average replica power in W) for each row."""
    return _predict(cal, _features(rows))


def _gen(cal: curves.Calibration, f: _Features, name: str) -> FloatArray:
    table = {g: getattr(s, name) for g, s in cal.generations.items()}
    return np.asarray([table.get(g, 1.0) for g in f.generation], dtype=np.float64)


def _predict(cal: curves.Calibration, f: _Features) -> tuple[FloatArray, FloatArray]:
    c = cal.coef
    p = curves.ROOFLINE_SHARPNESS
    bandwidth = f.gpus * f.hbm * c.bw_eff * _gen(cal, f, "bw")
    routed_s = f.routed_mean_bytes / (bandwidth * c.expert_eff)
    busiest_routed_s = f.routed_busiest_bytes / (bandwidth * c.expert_eff)
    weights_s = f.shared_bytes / bandwidth + routed_s
    busiest_s = f.shared_bytes / bandwidth + busiest_routed_s
    dequant = np.asarray([cal.dequant_ratio(x) for x in f.precision], dtype=np.float64)
    rate = f.gpus * f.flops * c.flop_eff
    matmul_s = f.matmul_flop / rate
    kv_s = f.kv_bytes / (bandwidth * c.kv_eff)
    per_layer_us = c.layer_us + c.layer_us_per_log2_gpus * f.log2_gpus + f.batch * c.seq_layer_us
    layer_time_us = f.layers * per_layer_us + f.moe_layers * c.moe_layer_us
    overhead_s = 1e-6 * layer_time_us
    roof_s = (weights_s**p + matmul_s**p) ** (1.0 / p)
    dequant_s = dequant * routed_s
    wait_s = (busiest_s**p + matmul_s**p) ** (1.0 / p) - roof_s + dequant * (busiest_routed_s - routed_s)
    step_s = roof_s + kv_s + overhead_s + wait_s + dequant_s
    share_w = weights_s**p / (weights_s**p + matmul_s**p)
    memory_s, compute_s = roof_s * share_w + kv_s, roof_s * (1.0 - share_w) + dequant_s
    idle, dynamic = c.idle_frac, _gen(cal, f, "dynamic")
    dyn_w_s = c.memory_frac * memory_s + c.compute_frac * compute_s + c.overhead_frac * overhead_s
    decode_w = f.board_w * np.minimum(1.0, idle + dynamic * dyn_w_s / step_s)
    prefill_w = f.board_w * np.minimum(1.0, idle + dynamic * c.compute_frac)
    prefill_s = f.prefill_flop_per_output / rate  # replica seconds of prefill per output token
    decode_s = step_s / f.batch
    seconds = decode_s + prefill_s
    power = f.gpus * (decode_w * decode_s + prefill_w * prefill_s) / seconds
    return seconds, power


# ---- parameter vector ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Layout:
    """Which generations and precisions get free scales in one fit (those present in its rows)."""

    generations: tuple[str, ...]
    precisions: tuple[str, ...]

    @property
    def size(self) -> int:
        return len(COEF_FIELDS) + len(self.generations) * len(GENERATION_FIELDS) + len(self.precisions)


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-min(max(x, -50.0), 50.0)))


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1.0 - p))


def _decode(theta: Sequence[float], layout: _Layout) -> curves.Calibration:
    values: dict[str, float] = {}
    for name, x in zip(COEF_FIELDS, theta, strict=False):
        if name in _FRACTIONS:
            values[name] = _sigmoid(x)
        elif name == "idle_frac":
            values[name] = _IDLE_MAX * _sigmoid(x)
        else:
            values[name] = math.exp(min(x, 30.0))
    i = len(COEF_FIELDS)
    generations = {}
    for gen in layout.generations:
        scales = [math.exp(x) for x in theta[i : i + len(GENERATION_FIELDS)]]
        generations[gen] = curves.GenerationScale(*scales)
        i += len(GENERATION_FIELDS)
    dequant = {p: math.exp(min(x, 30.0)) for p, x in zip(layout.precisions, theta[i:], strict=True)}
    return curves.Calibration(curves.Coefficients(**values), generations, dequant)


def _encode(cal: curves.Calibration, layout: _Layout) -> list[float]:
    theta = []
    for name in COEF_FIELDS:
        value = getattr(cal.coef, name)
        if name in _FRACTIONS:
            theta.append(_logit(value))
        elif name == "idle_frac":
            theta.append(_logit(value / _IDLE_MAX))
        else:
            theta.append(math.log(value))
    for gen in layout.generations:
        scale = cal.generations.get(gen, curves.GenerationScale())
        theta += [math.log(getattr(scale, n)) for n in GENERATION_FIELDS]
    theta += [math.log(max(cal.dequant_ratio(p), 0.1)) for p in layout.precisions]
    return theta


def fit(rows: Sequence[Measured], start: curves.Calibration | None = None) -> curves.Calibration:
    """Constants minimising squared log errors of time and power over ``rows`` plus the scale priors.

    Starts from the neutral ``Coefficients()`` defaults (never from the shipped fit, so a held-out group
    cannot leak in through the start). Raises ``ValueError`` for no rows.
    """
    if not rows:
        raise ValueError("fit needs at least one measured row")
    layout = _Layout(
        tuple(sorted({gpu_spec(r.gpu).generation for r in rows})),
        tuple(sorted({r.precision for r in rows} - {"bf16"})),
    )
    features = _features(rows)
    measured_s = np.asarray([1.0 / r.tokens_per_s for r in rows], dtype=np.float64)
    measured_w = np.asarray([r.power_w for r in rows], dtype=np.float64)
    n_coef = len(COEF_FIELDS)
    n_scaled = layout.size - len(layout.precisions)  # per-precision dequantisation carries no prior

    def residuals(theta: FloatArray) -> FloatArray:
        cal = _decode(list(theta), layout)
        seconds, power = _predict(cal, features)
        prior = theta[n_coef:n_scaled] / PRIOR_SIGMA
        coef_prior = [
            math.log(getattr(cal.coef, name) / centre) / sigma
            for name, (centre, sigma) in COEF_PRIORS.items()
        ]
        return np.concatenate(
            [
                np.log(seconds / measured_s),
                np.log(power / measured_w),
                prior,
                np.asarray(coef_prior),
            ]
        )

    x0 = np.asarray(_encode(start or curves.Calibration(), layout), dtype=np.float64)
    result = least_squares(
        residuals, x0, method="trf", x_scale="jac", loss=ROBUST_LOSS, f_scale=ROBUST_SCALE, max_nfev=2000
    )
    return _decode(list(result.x), layout)
