"""Accuracy of Bauxite's calibrated energy estimator (and of EcoLogits) against measured ML.ENERGY rows.

Protocol: each row's average output tokens, 200 input tokens (the rows record no prompt lengths), its GPU,
GPU count, precision and average batch, boundary ``gpu``; compared as J per output token.

The headline is leave-group-out: for each GPU × precision × architecture family (dense / MoE) the constants
are refitted without that group and the estimator is evaluated on it, so a group's rows never share their
GPU, precision and architecture kind with the fit's rows of that combination. Beside it: leave-one-family-out
(Llama-3.1, Llama-4, Qwen3, Gemma-3), leave-one-model-out, and in-sample (shown last, never a validation).
Coverage is the share of held-out rows whose measured value lies in the estimate's [min, max].

    .venv/bin/python benchmarks/energy_accuracy.py           # validation tables + disclosed-figures check
    .venv/bin/python benchmarks/energy_accuracy.py --rows    # also every row, in-sample
    .venv/bin/python benchmarks/energy_accuracy.py --fit     # also the constants for curves.CALIBRATION
"""

from __future__ import annotations

import argparse
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

from bauxite.energy import curves
from bauxite.energy.estimator import (
    CalibratedEstimator,
    Estimate,
    Overheads,
    RequestShape,
    Serving,
    ecologits_energy_j,
)
from bauxite.energy.fit import PROTOCOL_INPUT_TOKENS, Measured, fit, load_rows
from bauxite.energy.params import EcoLogitsRepository, ModelParams, resolve_params
from bauxite.units import J_PER_WH

TARGETS = "targets: median ≤ 15%, p90 ≤ 35%, coverage ≥ 90%"


def estimate_row(row: Measured, cal: curves.Calibration) -> Estimate:
    """The calibrated estimator's figure for one row under the protocol, with the given constants."""
    params = ModelParams.fixed(row.active_b, row.total_b, row.precision, "explicit", row.arch)
    shape = RequestShape(PROTOCOL_INPUT_TOKENS, round(row.output_tokens))
    serving = Serving(row.gpu, row.gpu_count, row.batch)
    return CalibratedEstimator(cal).estimate(shape, params, serving, "gpu", Overheads())


def ecologits_j_per_token(row: Measured) -> float:
    """EcoLogits' GPU part (its regression × its GPU count) at the row's batch size, per output token."""
    out = round(row.output_tokens)
    return ecologits_energy_j(row.active_b, row.total_b, out, None, row.batch, "gpu", 1.0) / out


@dataclass(frozen=True, slots=True)
class Scored:
    """Signed relative error of the central estimate and whether [min, max] covers the measurement."""

    error: float
    covered: bool


def score(row: Measured, est: Estimate) -> Scored:
    out = round(row.output_tokens)
    measured = row.j_per_output_token
    covered = est.energy_j_min / out <= measured <= est.energy_j_max / out
    return Scored(est.energy_j / out / measured - 1.0, covered)


def _p90(values: Sequence[float]) -> float:
    return statistics.quantiles(values, n=10, method="inclusive")[-1] if len(values) > 1 else values[0]


def summary(label: str, scored: Sequence[Scored]) -> str:
    abs_err = [abs(s.error) for s in scored]
    coverage = sum(s.covered for s in scored) / len(scored)
    signed = statistics.mean(s.error for s in scored)
    return (
        f"  {label:44} {len(scored):4} {statistics.median(abs_err):7.1%} {_p90(abs_err):7.1%} "
        f"{max(abs_err):7.1%} {signed:+8.1%} {coverage:8.0%}"
    )


def header(title: str) -> None:
    print(f"\n{title}")
    print(f"  {'held out':44} {'rows':>4} {'median':>7} {'p90':>7} {'max':>7} {'signed':>8} {'coverage':>8}")


def leave_out(rows: Sequence[Measured], key: Callable[[Measured], str], title: str) -> list[Scored]:
    """Refit without each value of ``key``, score the estimator on that value's rows; print and return."""
    header(title)
    everything: list[Scored] = []
    for value in sorted({key(r) for r in rows}):
        cal = fit([r for r in rows if key(r) != value])
        scored = [score(r, estimate_row(r, cal)) for r in rows if key(r) == value]
        everything += scored
        print(summary(value, scored))
    print(summary("ALL", everything))
    return everything


def in_sample(rows: Sequence[Measured], show_rows: bool) -> list[Scored]:
    cal = curves.CALIBRATION
    header("in-sample (shipped constants, fitted on every row: NOT a validation)")
    scored = [score(r, estimate_row(r, cal)) for r in rows]
    if show_rows:
        for r, s in zip(rows, scored, strict=True):
            print(
                f"    {r.model[-40:]:40} {r.gpu:>5}×{r.gpu_count} {r.precision:>4} B={r.batch:7.1f} "
                f"measured {r.j_per_output_token:8.4f} J/tok  error {s.error:+6.0%}  in range {s.covered}"
            )
    print(summary("ALL (in-sample)", scored))
    return scored


def ecologits_side_by_side(rows: Sequence[Measured], group_scored: Sequence[Scored]) -> None:
    """EcoLogits fits nothing on these rows, so its errors are out-of-sample by construction."""
    eco = [ecologits_j_per_token(r) / r.j_per_output_token - 1.0 for r in rows]
    ours = [abs(s.error) for s in group_scored]
    eco_abs = [abs(e) for e in eco]
    print("\nside by side, same rows (abs error of J per output token)")
    print(f"  {'method':44} {'median':>7} {'p90':>7} {'signed':>8}")
    print(
        f"  {'bauxite calibrated, leave-group-out':44} {statistics.median(ours):7.1%} {_p90(ours):7.1%} "
        f"{statistics.mean(s.error for s in group_scored):+8.1%}"
    )
    print(
        f"  {'ecologits 0.11 (GPU part, no fit to rows)':44} {statistics.median(eco_abs):7.1%} "
        f"{_p90(eco_abs):7.1%} {statistics.mean(eco):+8.1%}"
    )


DISCLOSED = [
    # (label, model, input tokens, output tokens, disclosed Wh low, high)
    ("Jegham et al. 2025, GPT-4o short query", "gpt-4o", 100, 300, 0.42, 0.43),
    ("Epoch AI, GPT-4o 500 output tokens", "gpt-4o", 100, 500, 0.3, 0.3),
    ("OpenAI, average ChatGPT query", "gpt-4o", 400, 400, 0.34, 0.34),
    ("Google, Gemini Apps median text prompt", "gemini-2.0-flash", 400, 400, 0.24, 0.24),
    ("arXiv 2509.20241 frontier median (IQR)", "gpt-4o", 400, 400, 0.18, 0.67),
]


def band_check() -> None:
    """Full-boundary estimates (provider serving defaults: H100, batch 128, PUE 1.1) vs disclosed figures."""
    repository = EcoLogitsRepository()
    estimator = CalibratedEstimator()
    print("\nfull boundary vs disclosed per-query figures (H100, batch 128, PUE 1.1):")
    print(
        f"  {'figure':42} {'model':18} {'in/out':>8} {'disclosed Wh':>13} "
        f"{'estimate Wh [min–max]':>24}  in range"
    )
    for label, model, tokens_in, tokens_out, low_wh, high_wh in DISCLOSED:
        params = resolve_params(model, {}, repository)
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
            f"{central_wh:8.3f} [{est.energy_j_min / J_PER_WH:.3f}–{est.energy_j_max / J_PER_WH:.3f}] "
            f"{ratio:5.2f}×  {'yes' if in_range else 'NO'}"
        )


def print_fit(rows: Sequence[Measured]) -> None:
    cal = fit(rows)
    print("constants fitted on every row (curves.CALIBRATION):")
    for f in fields(curves.Coefficients):
        print(f"    {f.name} = {getattr(cal.coef, f.name):.4g}")
    for gen, scale in cal.generations.items():
        values = ", ".join(f"{f.name}={getattr(scale, f.name):.3f}" for f in fields(curves.GenerationScale))
        print(f"    {gen}: {values}")
    print(f"    dequant = {cal.dequant}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--fit", action="store_true", help="print constants fitted on all rows")
    parser.add_argument("--rows", action="store_true", help="print every row's in-sample error")
    args = parser.parse_args()
    rows = load_rows()
    if args.fit:
        print_fit(rows)
    print(f"{len(rows)} measured rows; J per output token; {TARGETS} (leave-group-out)")
    group = leave_out(
        rows, lambda r: r.group, "HEADLINE leave-group-out (GPU × precision × dense/MoE refitted without)"
    )
    leave_out(rows, lambda r: r.family, "leave-one-family-out")
    leave_out(rows, lambda r: r.model.rsplit("/", 1)[-1], "leave-one-model-out")
    in_sample(rows, args.rows)
    ecologits_side_by_side(rows, group)
    band_check()


if __name__ == "__main__":
    main()
