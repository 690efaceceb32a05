"""``bauxite estimate``."""

from __future__ import annotations

import argparse
import io
import json

import pytest

from bauxite.energy.cli import add_parser


def _run(*argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    args = parser.parse_args(["estimate", *argv])
    out, err = io.StringIO(), io.StringIO()
    code = args.func(args, out, err)
    return code, out.getvalue(), err.getvalue()


def test_json_with_explicit_sizes_and_region() -> None:
    code, out, _ = _run(
        "--active-params-b",
        "70",
        "--gpu",
        "H100",
        "--num-gpus",
        "4",
        "--batch-size",
        "64",
        "--input-tokens",
        "200",
        "--output-tokens",
        "350",
        "--boundary",
        "gpu",
        "--region",
        "us-east-1",
        "--json",
    )
    result = json.loads(out)
    assert code == 0
    assert result["boundary"] == "gpu" and result["method"] == "calibrated"
    assert result["energy_j_min"] < result["energy_j"] < result["energy_j_max"]
    # measured row: 0.797 J per output token at batch 64 (prefill included) → ≈ 280 J for 350 tokens
    assert 0.6 * 280 < result["energy_j"] < 1.6 * 280
    assert result["carbon_g"] == result["energy_j"] / 3_600_000 * result["g_per_kwh"]


def test_model_lookup_full_boundary_gpt_4o_short_query_in_band() -> None:
    code, out, _ = _run("--model", "gpt-4o", "--input-tokens", "100", "--output-tokens", "300", "--json")
    result = json.loads(out)
    assert code == 0 and 0.2 <= result["energy_wh"] <= 0.6 and result["params_source"] == "ecologits"


def test_ecologits_method_and_human_table() -> None:
    code, out, _ = _run("--model", "gpt-4o", "--method", "ecologits", "--latency-s", "5")
    assert code == 0 and "ecologits" in out and "Wh" in out


def test_missing_model_and_unknown_region_are_clear_errors() -> None:
    code, _, err = _run()
    assert code == 2 and "--model" in err
    code, _, err = _run("--model", "gpt-4o", "--region", "atlantis-1")
    assert code == 2 and "atlantis-1" in err


def test_moe_architecture_options_change_the_weights_read() -> None:
    base = ("--active-params-b", "37", "--total-params-b", "671", "--precision", "fp8", "--gpu", "H100")
    serving = ("--num-gpus", "8", "--batch-size", "8", "--boundary", "gpu", "--json")
    code, out, _ = _run(*base, *serving)
    default = json.loads(out)
    # sizes only: the shipped table's median shared fraction and top-k (Qwen3/DeepSeek/Kimi-like split)
    assert code == 0 and default["architecture"]["shared_params_b"] == pytest.approx(0.35 * 37, rel=0.1)
    assert default["architecture"]["experts_per_token"] == 8 and default["architecture"]["num_experts"] > 100
    code, out, _ = _run(*base, "--num-experts", "256", "--experts-per-token", "8", *serving)
    routed = json.loads(out)
    assert code == 0 and routed["architecture"]["num_experts"] == 256
    assert routed["architecture"]["shared_params_b"] > 10  # S = (active − k/E·total)/(1 − k/E) ≈ 16.5B
    assert routed["energy_j"] < default["energy_j"]  # 256 experts: fewer distinct expert weights at batch 8


def test_kv_options_set_the_kv_cache_term() -> None:
    common = (
        "--active-params-b",
        "8",
        "--num-gpus",
        "1",
        "--batch-size",
        "256",
        "--boundary",
        "gpu",
        "--json",
    )
    small = json.loads(_run(*common, "--kv-bytes-per-token", "16384")[1])
    large = json.loads(_run(*common, "--layers", "32", "--kv-heads", "32", "--head-dim", "128")[1])
    assert small["architecture"]["kv_bytes_per_token"] == 16384
    assert large["architecture"]["kv_bytes_per_token"] == 32 * 2 * 32 * 128 * 2
    assert large["energy_j"] > small["energy_j"]


def test_impossible_architecture_options_are_clear_errors() -> None:
    code, _, err = _run(
        "--active-params-b", "22", "--total-params-b", "235", "--experts-per-token", "9", "--num-experts", "8"
    )
    assert code == 2 and "--experts-per-token" in err
    code, _, err = _run("--active-params-b", "8", "--layers", "0")
    assert code == 2 and "--layers" in err


def test_unknown_model_is_flagged_in_json() -> None:
    code, out, _ = _run("--model", "no-such-model-anywhere", "--json")
    assert code == 0 and json.loads(out)["sizes_default"] is True


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (("--active-params-b", "nan"), "--active-params-b"),
        (("--active-params-b", "inf"), "--active-params-b"),
        (("--active-params-b", "70", "--total-params-b", "nan"), "--total-params-b"),
        (("--active-params-b", "70", "--total-params-b", "30"), "--total-params-b"),
        (("--active-params-b", "70", "--batch-size", "nan"), "--batch-size"),
        (("--active-params-b", "70", "--batch-size", "inf"), "--batch-size"),
        (("--active-params-b", "70", "--batch-size", "0.5"), "--batch-size"),
        (("--active-params-b", "70", "--latency-s", "nan", "--method", "ecologits"), "--latency-s"),
        (("--active-params-b", "70", "--pue", "nan"), "--pue"),
        (("--model", "gpt-4o", "--shared-params-b=-inf"), "--shared-params-b"),
        (("--active-params-b", "70", "--kv-bytes-per-token", "inf"), "--kv-bytes-per-token"),
    ],
)
def test_non_finite_and_out_of_range_numbers_are_refused(argv: tuple[str, ...], option: str) -> None:
    code, out, err = _run(*argv, "--json")
    assert code == 2 and out == ""
    assert err.startswith("bauxite estimate: ") and option in err and "nan" not in out
