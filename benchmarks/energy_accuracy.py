"""Accuracy of Bauxite's calibrated energy estimator and of EcoLogits against measured ML.ENERGY rows.

Protocol (data README): each row's average output tokens, 200 input tokens, its GPU, GPU count, precision and
average batch size, boundary ``gpu``; compared as J per output token. Prints one line per row, the median and
90th-percentile absolute errors of both methods, a leave-one-model-out cross-validation (refit the curves
without model X, evaluate on X: how the estimator does on models it has never seen), and a band check of
``full``-boundary estimates against disclosed per-query figures.

    python benchmarks/energy_accuracy.py            # table + cross-validation + band check
    python benchmarks/energy_accuracy.py --fit      # also print freshly fitted coefficients for curves.py

The fit is Levenberg–Marquardt on log errors (step time weighted ½, J per output token 1), pure Python, with
bounds that keep it physical: no activity faster than the datasheet, no power above board power.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import math
import statistics
from collections.abc import Callable, Sequence
from importlib import resources

from bauxite.energy import curves
from bauxite.energy.estimator import (
    CalibratedEstimator,
    Overheads,
    RequestShape,
    Serving,
    ecologits_energy_j,
    request_gpu_j,
)
from bauxite.energy.params import EcoLogitsRepository, ModelParams, resolve_params
from bauxite.units import J_PER_WH

INPUT_TOKENS = 200
DATA_FILE = "data/energy/mlenergy_v3_lm_arena_chat.csv"
FIELDS = [f.name for f in dataclasses.fields(curves.Coefficients)]
Row = dict[str, str]


def load_rows() -> list[Row]:
    text = resources.files("bauxite").joinpath(DATA_FILE).read_text(encoding="utf-8")
    return list(csv.DictReader(io.StringIO(text)))


def _precision(row: Row) -> str:
    return "fp8" if row["precision"] == "fp8" else "bf16"


def bauxite_j_per_token(row: Row, coef: curves.Coefficients = curves.COEF) -> float:
    """Estimated GPU J per output token for a row under the protocol, with the given coefficients."""
    out = float(row["avg_output_tokens"])
    gpu = curves.gpu_spec(row["gpu"])
    count = int(row["num_gpus"])
    batch = float(row["avg_batch_size"])
    active, total = float(row["active_params_b"]), float(row["total_params_b"])
    if coef is curves.COEF:
        shape = RequestShape(INPUT_TOKENS, round(out))
        return request_gpu_j(shape, active, total, _precision(row), gpu, count, batch) / round(out)
    decode = curves.decode_j_per_token(active, total, gpu, count, batch, _precision(row), coef)
    return decode + INPUT_TOKENS / out * curves.prefill_j_per_token(active, gpu, coef)


def ecologits_j_per_token(row: Row) -> float:
    """EcoLogits' GPU part (its regression × its GPU count) at the row's batch size, per output token."""
    out = round(float(row["avg_output_tokens"]))
    energy_j = ecologits_energy_j(
        float(row["active_params_b"]),
        float(row["total_params_b"]),
        out,
        None,
        float(row["avg_batch_size"]),
        "gpu",
        1.0,
    )
    return energy_j / out


def _step_time_s(row: Row, coef: curves.Coefficients) -> float:
    """Predicted seconds per output token per sequence (= batch / throughput), prefill included."""
    gpu = curves.gpu_spec(row["gpu"])
    count, batch = int(row["num_gpus"]), float(row["avg_batch_size"])
    active, total = float(row["active_params_b"]), float(row["total_params_b"])
    step = curves.decode_step(active, total, gpu, count, batch, _precision(row), coef)
    prefill_s = (
        batch
        * INPUT_TOKENS
        / float(row["avg_output_tokens"])
        * curves.prefill_s_per_token(active, gpu, count)
    )
    return step.total_s + prefill_s


_AT_LEAST_ONE = ("weights_eff", "compute_eff")  # nothing runs faster than the datasheet
_POWER_SHARES = ("memory_frac", "compute_frac", "seq_frac")  # idle + share ≤ board power


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def _to_coef(theta: Sequence[float]) -> curves.Coefficients:
    """Unconstrained parameters → physically bounded coefficients."""
    raw = dict(zip(FIELDS, theta, strict=True))
    values = {name: math.exp(min(v, 50.0)) for name, v in raw.items()}
    for name in _AT_LEAST_ONE:
        values[name] = 1.0 + math.exp(raw[name])
    values["idle_frac"] = 0.5 * _sigmoid(raw["idle_frac"])
    for name in _POWER_SHARES:
        values[name] = (1.0 - values["idle_frac"]) * _sigmoid(raw[name])
    return curves.Coefficients(**values)


def _from_coef(coef: curves.Coefficients) -> list[float]:
    theta = []
    for name in FIELDS:
        value = getattr(coef, name)
        if name in _AT_LEAST_ONE:
            theta.append(math.log(max(value - 1.0, 1e-6)))
        elif name == "idle_frac":
            theta.append(_logit(min(max(2.0 * value, 1e-6), 1 - 1e-6)))
        elif name in _POWER_SHARES:
            theta.append(_logit(min(max(value / (1.0 - coef.idle_frac), 1e-3), 0.999)))
        else:
            theta.append(math.log(value))
    return theta


def _residuals(theta: Sequence[float], rows: Sequence[Row]) -> list[float]:
    coef = _to_coef(theta)
    out: list[float] = []
    for row in rows:
        measured_step_s = float(row["avg_batch_size"]) / float(row["output_tokens_per_s"])
        out.append(0.5 * math.log(_step_time_s(row, coef) / measured_step_s))
        out.append(math.log(bauxite_j_per_token(row, coef) / float(row["energy_per_output_token_j"])))
    return out


def _solve(matrix: list[list[float]], vector: list[float]) -> list[float]:
    """Gaussian elimination with partial pivoting (small dense systems)."""
    n = len(vector)
    aug = [[*row, vector[i]] for i, row in enumerate(matrix)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(aug[r][col]))
        aug[col], aug[pivot] = aug[pivot], aug[col]
        for r in range(col + 1, n):
            factor = aug[r][col] / aug[col][col]
            for c in range(col, n + 1):
                aug[r][c] -= factor * aug[col][c]
    solution = [0.0] * n
    for r in range(n - 1, -1, -1):
        solution[r] = (aug[r][n] - sum(aug[r][c] * solution[c] for c in range(r + 1, n))) / aug[r][r]
    return solution


NEUTRAL_START = curves.Coefficients(
    weights_eff=1.5,
    fixed_ms=5.0,
    fixed_ms_per_log2_gpus=1.0,
    seq_s=1e-4,
    moe_seq_s_per_log2_gpus=1e-5,
    compute_eff=2.0,
    idle_frac=0.25,
    memory_frac=0.5,
    compute_frac=0.5,
    seq_frac=0.5,
)
"""Where every fit starts (not the shipped coefficients: cross-validation never sees the held-out model)."""


def fit(
    rows: Sequence[Row], start: curves.Coefficients = NEUTRAL_START, iterations: int = 100
) -> curves.Coefficients:
    """Levenberg–Marquardt over log-coefficients, minimising the squared log residuals."""
    theta = _from_coef(start)
    resid = _residuals(theta, rows)
    cost = sum(r * r for r in resid)
    damping = 1e-3
    for _ in range(iterations):
        jac: list[list[float]] = []
        for i in range(len(theta)):
            moved = theta[:]
            moved[i] += 1e-6
            jac.append([(a - b) / 1e-6 for a, b in zip(_residuals(moved, rows), resid, strict=True)])
        normal = [[sum(x * y for x, y in zip(ji, jk, strict=True)) for jk in jac] for ji in jac]
        grad = [-sum(x * r for x, r in zip(ji, resid, strict=True)) for ji in jac]
        while damping < 1e9:
            damped = [
                [v * (1 + damping) + damping if i == k else v for k, v in enumerate(row)]
                for i, row in enumerate(normal)
            ]
            step = _solve(damped, grad)
            trial = [t + s for t, s in zip(theta, step, strict=True)]
            try:
                trial_resid = _residuals(trial, rows)
                trial_cost = sum(r * r for r in trial_resid)
            except (OverflowError, ValueError, ZeroDivisionError):
                trial_resid, trial_cost = resid, math.inf
            if trial_cost < cost:
                theta, resid, damping = trial, trial_resid, max(damping / 3, 1e-9)
                converged = cost - trial_cost < 1e-9 * cost
                cost = trial_cost
                break
            damping *= 4
        else:
            break
        if converged:
            break
    return _to_coef(theta)


def _abs_errors(rows: Sequence[Row], predict: Callable[[Row], float]) -> list[float]:
    return [abs(predict(r) / float(r["energy_per_output_token_j"]) - 1.0) for r in rows]


def _p90(values: Sequence[float]) -> float:
    return statistics.quantiles(values, n=10, method="inclusive")[-1] if len(values) > 1 else values[0]


def print_table(rows: Sequence[Row]) -> None:
    print(
        f"{'model':44} {'gpu':>6} {'n':>2} {'prec':>4} {'batch':>7} {'meas J/t':>9} {'bauxite':>8} "
        f"{'err':>6} {'ecolog.':>8} {'err':>6}"
    )
    for row in rows:
        measured = float(row["energy_per_output_token_j"])
        ours, theirs = bauxite_j_per_token(row), ecologits_j_per_token(row)
        print(
            f"{row['model'][:44]:44} {row['gpu']:>6} {row['num_gpus']:>2} {_precision(row):>4} "
            f"{float(row['avg_batch_size']):7.1f} {measured:9.4f} {ours:8.4f} {ours / measured - 1:+6.0%} "
            f"{theirs:8.4f} {theirs / measured - 1:+6.0%}"
        )
    ours_err = _abs_errors(rows, bauxite_j_per_token)
    eco_err = _abs_errors(rows, ecologits_j_per_token)
    print(f"\n{len(rows)} rows   abs error     median    p90   (targets: median ≤ 20%, p90 ≤ 45%)")
    print(f"  bauxite calibrated        {statistics.median(ours_err):6.1%} {_p90(ours_err):6.1%}")
    print(f"  ecologits (GPU part)      {statistics.median(eco_err):6.1%} {_p90(eco_err):6.1%}")


def print_cross_validation(rows: Sequence[Row]) -> None:
    print("\nleave-one-model-out (curves refitted without the model, evaluated on it):")
    all_errors: list[float] = []
    for model in sorted({r["model"] for r in rows}):
        held_out = [r for r in rows if r["model"] == model]
        coef = fit([r for r in rows if r["model"] != model])
        errors = _abs_errors(held_out, lambda r, c=coef: bauxite_j_per_token(r, c))  # type: ignore[misc]
        all_errors += errors
        print(f"  {model[:48]:48} median {statistics.median(errors):6.1%}  p90 {_p90(errors):6.1%}")
    print(
        f"  {'ALL (unseen-model estimate)':48} median {statistics.median(all_errors):6.1%}  "
        f"p90 {_p90(all_errors):6.1%}"
    )


DISCLOSED = [
    # (label, model, input tokens, output tokens, disclosed Wh low, high)
    ("Jegham et al. 2025, GPT-4o short query", "gpt-4o", 100, 300, 0.42, 0.43),
    ("Epoch AI, GPT-4o 500 output tokens", "gpt-4o", 100, 500, 0.3, 0.3),
    ("OpenAI, average ChatGPT query", "gpt-4o", 400, 400, 0.34, 0.34),
    ("Google, Gemini Apps median text prompt", "gemini-2.0-flash", 400, 400, 0.24, 0.24),
    ("arXiv 2509.20241 frontier median (IQR)", "gpt-4o", 400, 400, 0.18, 0.67),
]


def print_band_check() -> None:
    """Full-boundary estimates (provider serving defaults: H100, batch 128, PUE 1.1) vs disclosed figures."""
    repository = EcoLogitsRepository()
    estimator = CalibratedEstimator()
    print("\nfull boundary vs disclosed per-query figures (H100, batch 128, PUE 1.1):")
    print(
        f"  {'figure':42} {'model':18} {'in/out':>8} {'disclosed Wh':>13} "
        f"{'estimate Wh [min–max]':>24} {'ratio':>6}  in range"
    )
    for label, model, tokens_in, tokens_out, low_wh, high_wh in DISCLOSED:
        params: ModelParams = resolve_params(model, {}, repository)
        est = estimator.estimate(
            RequestShape(tokens_in, tokens_out),
            params,
            Serving("H100", None, 128.0),
            "full",
            Overheads(pue=1.1),
        )
        central_wh = est.energy_j / J_PER_WH
        in_range = est.energy_j_min / J_PER_WH <= high_wh and est.energy_j_max / J_PER_WH >= low_wh
        ratio = central_wh / math.sqrt(low_wh * high_wh)
        disclosed = f"{low_wh:.2f}" if low_wh == high_wh else f"{low_wh:.2f}–{high_wh:.2f}"
        print(
            f"  {label:42} {model:18} {tokens_in:>3}/{tokens_out:<4} {disclosed:>13} "
            f"{central_wh:8.3f} [{est.energy_j_min / J_PER_WH:.3f}–{est.energy_j_max / J_PER_WH:.3f}]  "
            f"{ratio:5.2f}×  {'yes' if in_range else 'NO'}"
        )
    gpt4o = estimator.estimate(
        RequestShape(100, 300),
        resolve_params("gpt-4o", {}, repository),
        Serving("H100", None, 128.0),
        "full",
        Overheads(pue=1.1),
    )
    inside = 0.2 <= gpt4o.energy_j / J_PER_WH <= 0.6
    print(
        f"  GPT-4o 100 in / 300 out, full: {gpt4o.energy_j / J_PER_WH:.3f} Wh (target 0.2–0.6: "
        f"{'yes' if inside else 'NO'})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fit", action="store_true", help="print coefficients fitted on all rows")
    parser.add_argument("--no-cv", action="store_true", help="skip the leave-one-model-out refits")
    args = parser.parse_args()
    rows = load_rows()
    if args.fit:
        fitted = fit(rows, iterations=300)
        print("fitted coefficients (paste into bauxite/energy/curves.py Coefficients):")
        for name in FIELDS:
            print(f"    {name} = {getattr(fitted, name):.6g}")
    print_table(rows)
    if not args.no_cv:
        print_cross_validation(rows)
    print_band_check()


if __name__ == "__main__":
    main()
