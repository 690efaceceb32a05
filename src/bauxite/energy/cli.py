"""``bauxite estimate``: energy (and carbon) of one request from its size, model and serving assumptions."""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import replace
from typing import Any, TextIO

from ..console import table_text
from ..intensity.catalogue import Catalogue
from ..units import J_PER_WH, carbon_g
from .architecture import (
    ARCH_FIELDS,
    architecture_with,
    default_architecture,
    default_top_k,
    expert_count,
    routed_split,
)
from .estimator import Estimate, Overheads, RequestShape, Serving, estimators
from .hardware import GPU_SPECS, find_gpu_spec
from .params import EcoLogitsRepository, ModelParams, resolve_params

DEFAULT_PUE = 1.1  # full boundary without a configured cluster: a hyperscale facility


def add_parser(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser(
        "estimate",
        help="estimate the energy and carbon of one request",
        description="Energy of one LLM request from tokens, model size and serving assumptions. Give --model "
        "(looked up in the shipped architecture table, EcoLogits' repository, or sizes in the name) or "
        "--active-params-b. An unknown model gets a labelled default (sizes_default).",
    )
    model = parser.add_argument_group("model")
    model.add_argument("--model", help="model name, e.g. gpt-4o or meta-llama/Llama-3.1-70B-Instruct")
    model.add_argument("--active-params-b", type=float, help="active parameters, billions")
    model.add_argument(
        "--total-params-b", type=float, help="total parameters, billions (MoE; default: active)"
    )
    model.add_argument(
        "--precision",
        choices=("bf16", "fp16", "fp8", "int8", "int4", "fp4"),
        help="weight precision: 2, 1 or 0.5 bytes per weight (default: the model's, else bf16)",
    )
    arch = parser.add_argument_group(
        "architecture (from the model's config.json; defaults: shipped table, else derived from the size)"
    )
    arch.add_argument(
        "--num-experts",
        type=int,
        help="MoE: routed experts per layer (num_experts; default: top-k × routed/active-routed params)",
    )
    arch.add_argument(
        "--experts-per-token",
        type=int,
        help="MoE: top-k experts per token (default 8, the most common in the shipped table)",
    )
    arch.add_argument(
        "--shared-params-b",
        type=float,
        help="MoE: always-run parameters, billions (attention, embeddings, shared experts; default: "
        "0.35 × active, the median of the shipped MoE configs)",
    )
    arch.add_argument("--layers", type=int, help="transformer layers (num_hidden_layers)")
    arch.add_argument("--kv-heads", type=int, help="KV heads per layer (num_key_value_heads)")
    arch.add_argument("--head-dim", type=int, help="width of one attention head (head_dim)")
    arch.add_argument(
        "--kv-bytes-per-token",
        type=float,
        help="KV-cache bytes per token over all layers (instead of layers × KV heads × head dim × 2 × 2 B)",
    )
    serving = parser.add_argument_group("serving")
    serving.add_argument(
        "--gpu", default="H100", help="GPU type: H100, H200, B200, A100, L40S, … (default H100)"
    )
    serving.add_argument("--num-gpus", type=int, help="GPUs serving one replica (default: fewest that fit)")
    serving.add_argument(
        "--batch-size", type=float, default=128.0, help="average concurrent sequences (default 128)"
    )
    request = parser.add_argument_group("request")
    request.add_argument("--input-tokens", type=int, default=200)
    request.add_argument("--output-tokens", type=int, default=300)
    request.add_argument("--latency-s", type=float, help="measured latency (used by the ecologits method)")
    parser.add_argument("--boundary", choices=("gpu", "full"), default="full")
    parser.add_argument(
        "--pue", type=float, default=DEFAULT_PUE, help="PUE for the full boundary, 1.0-3.0 (default 1.1)"
    )
    parser.add_argument("--region", help="cloud region for grams CO2e (embedded static intensity table)")
    parser.add_argument("--method", choices=("calibrated", "ecologits"), default="calibrated")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run)



def _params(args: argparse.Namespace) -> ModelParams | str:
    if args.active_params_b is not None:
        if not args.active_params_b > 0 or (args.total_params_b is not None and not args.total_params_b > 0):
            return "--active-params-b and --total-params-b must be positive"
        if args.total_params_b is not None and args.total_params_b < args.active_params_b:
            return "--total-params-b cannot be below --active-params-b (a model runs at most all its weights)"
        found = ModelParams.fixed(
            args.active_params_b, args.total_params_b, args.precision or "bf16", "explicit"
        )
    elif args.model:
        found = resolve_params(args.model, {}, EcoLogitsRepository())
    else:
        return "give --model NAME or --active-params-b N"
    if args.precision:
        found = replace(found, precision=args.precision)
    given = {name: getattr(args, name) for name in ARCH_FIELDS if getattr(args, name) is not None}
    if not given:
        return found
    try:
        arch = architecture_with(found.arch, found.active_b, found.total_b, given)
    except ValueError as exc:
        return str(exc)
    return replace(found, arch=arch)


def grid_g_per_kwh(region: str) -> tuple[float, str] | str:
    """Static intensity of a region from the intensity catalogue, or an error message."""
    entry = Catalogue.load().find(region)
    if entry is None:
        return f"unknown region {region!r} (try e.g. us-east-1, europe-west4, gcp:us-central1)"
    return entry.g_per_kwh, entry.reference


# Every float option: argparse's float() accepts "nan" and "inf", which no range check below would catch
# (NaN compares false with everything), so they are refused first.
_FLOAT_OPTIONS = (
    "active_params_b",
    "total_params_b",
    "shared_params_b",
    "kv_bytes_per_token",
    "batch_size",
    "latency_s",
    "pue",
)


def _non_finite(args: argparse.Namespace) -> str | None:
    for name in _FLOAT_OPTIONS:
        value = getattr(args, name, None)
        if value is not None and not math.isfinite(value):
            return f"--{name.replace('_', '-')} must be a finite number, got {value!r}"
    return None


def argument_problem(args: argparse.Namespace) -> str | None:
    """The first option out of the range the gateway's config accepts for the same figure, or None."""
    if problem := _non_finite(args):
        return problem
    if args.batch_size < 1:
        return f"--batch-size (average concurrent sequences) must be at least 1, got {args.batch_size:g}"
    if args.num_gpus is not None and args.num_gpus < 1:
        return "--num-gpus must be ≥ 1"
    if args.input_tokens < 0 or args.output_tokens < 0:
        return "--input-tokens and --output-tokens cannot be negative"
    if args.latency_s is not None and args.latency_s < 0:
        return "--latency-s cannot be negative"
    if not 1.0 <= args.pue <= 3.0:
        return f"--pue must be between 1.0 and 3.0 (facility energy / IT energy), got {args.pue:g}"
    if find_gpu_spec(args.gpu) is None:
        return f"unknown GPU type {args.gpu!r}; known: {', '.join(GPU_SPECS)}"
    return None


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    problem = argument_problem(args)
    if problem:
        print(f"bauxite estimate: {problem}", file=err)
        return 2
    params = _params(args)
    if isinstance(params, str):
        print(f"bauxite estimate: {params}", file=err)
        return 2
    if params.source == "default":
        print(
            f"note: model {args.model!r} is not in EcoLogits' repository and its name gives no size: "
            f"assuming a {params.active_b:g}B dense model. Give --active-params-b (and --total-params-b) "
            "for a real figure.",
            file=err,
        )
    serving = Serving(args.gpu, args.num_gpus, args.batch_size)
    shape = RequestShape(args.input_tokens, args.output_tokens, args.latency_s)
    est = estimators()[args.method].estimate(shape, params, serving, args.boundary, Overheads(pue=args.pue))
    result = _result(est, params, serving)
    if args.region:
        grid = grid_g_per_kwh(args.region)
        if isinstance(grid, str):
            print(f"bauxite estimate: {grid}", file=err)
            return 2
        g_per_kwh, reference = grid
        result |= {
            "region": args.region,
            "g_per_kwh": g_per_kwh,
            "intensity_source": reference,
            "carbon_g": carbon_g(est.energy_j, g_per_kwh),  # PUE is already in the full boundary
        }
    if args.json:
        print(json.dumps(result), file=out)
    else:
        _print_table(result, out)
    return 0


def _result(est: Estimate, params: ModelParams, serving: Serving) -> dict[str, Any]:
    return {
        "energy_j": est.energy_j,
        "energy_j_min": est.energy_j_min,
        "energy_j_max": est.energy_j_max,
        "energy_wh": est.energy_j / J_PER_WH,
        "boundary": est.boundary,
        "method": est.method,
        "pue": est.pue,
        "active_params_b": params.active_b,
        "total_params_b": params.total_b,
        "precision": params.precision,
        "params_source": params.source,
        "sizes_default": est.sizes_default,
        "architecture": _arch_result(params),
        "gpu": serving.gpu_type,
        "num_gpus": serving.gpus_for(params),
        "batch_size": serving.batch_size,
    }


def _arch_result(params: ModelParams) -> dict[str, Any]:
    """Architecture facts the estimate used (the labelled size-derived default when none is known)."""
    arch = params.arch or default_architecture(params.active_b)
    shared_b, _ = routed_split(params.active_b, params.total_b, arch)
    return {
        "kind": arch.kind,
        "layers": arch.layers,
        "kv_bytes_per_token": arch.kv_bytes_per_token(),
        "num_experts": expert_count(params.active_b, params.total_b, arch) if params.moe else None,
        "experts_per_token": (arch.experts_per_token or default_top_k()) if params.moe else None,
        "shared_params_b": shared_b if params.moe else None,
        "source": arch.source,
    }


def _print_table(result: dict[str, Any], out: TextIO) -> None:
    arch = result["architecture"]
    experts = f", {arch['experts_per_token']} of {arch['num_experts']} experts" if arch["num_experts"] else ""
    rows = [
        ("energy", f"{result['energy_wh']:.4g} Wh",
         f"{result['energy_j']:.4g} J; range {result['energy_j_min']:.4g}–{result['energy_j_max']:.4g} J"),
        ("boundary", result["boundary"], f"PUE included: {result['pue']:g}"),
        ("method", result["method"], ""),
        ("model", f"{result['active_params_b']:g}B active / {result['total_params_b']:g}B total",
         f"{result['precision']}, sizes from {result['params_source']}"),
        ("arch", f"{arch['kind']}, {arch['layers']} layers",
         f"KV {arch['kv_bytes_per_token'] / 1024:.0f} KiB/token{experts} (from {arch['source']})"),
        ("serving", f"{result['num_gpus']}× {result['gpu']}", f"batch {result['batch_size']:g}"),
    ]  # fmt: skip
    if result["sizes_default"]:
        rows.append(("warning", "model size unknown", "a labelled default was used"))
    if "carbon_g" in result:
        rows.append(
            ("carbon", f"{result['carbon_g']:.4f} g CO2e",
             f"{result['region']}, {result['g_per_kwh']:g} g/kWh, {result['intensity_source']}")
        )  # fmt: skip
    out.write(table_text(("", "value", "detail"), rows, numeric_from=3))
