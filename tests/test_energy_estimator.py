"""The calibrated and EcoLogits estimators, boundaries and model-size lookup."""

from __future__ import annotations

from dataclasses import replace

import pytest

from bauxite.energy import curves
from bauxite.energy.estimator import (
    CalibratedEstimator,
    EcoLogitsEstimator,
    Overheads,
    RequestShape,
    Serving,
    boundary_factor,
    estimators,
    request_compute_s,
    request_gpu_j,
)
from bauxite.energy.params import EcoLogitsRepository, ModelParams, params_from_name, resolve_params
from bauxite.units import J_PER_WH

H100 = curves.GPU_SPECS["H100"]


def test_request_gpu_j_is_decode_at_its_context_plus_uncached_prefill() -> None:
    shape = RequestShape(input_tokens=300, output_tokens=100, cached_tokens=100)
    decode_j_per_token = curves.decode_j_per_token(8, 8, H100, 1, 32, context_tokens=350)
    prefill_j_per_token = curves.prefill_j_per_token(8, H100)
    expected_j = 100 * decode_j_per_token + 200 * prefill_j_per_token
    assert request_gpu_j(shape, 8, 8, "bf16", H100, 1, 32) == pytest.approx(expected_j)
    longer = RequestShape(input_tokens=8000, output_tokens=100, cached_tokens=7900)
    assert request_gpu_j(longer, 8, 8, "bf16", H100, 1, 32) > request_gpu_j(shape, 8, 8, "bf16", H100, 1, 32)


def test_encoder_models_cost_only_their_prompt() -> None:
    bge = resolve_params("BAAI/bge-small-en-v1.5", {}, None)
    assert bge.encoder and bge.active_b == pytest.approx(0.0334) and not bge.sizes_default
    est = CalibratedEstimator().estimate(RequestShape(200, 0), bge, Serving(), "gpu", Overheads())
    assert est.energy_j == pytest.approx(200 * curves.prefill_j_per_token(0.0334, H100, "fp16"))
    assert est.energy_j < 1.0  # not the 70B default's tens of joules


def test_unknown_models_are_flagged_and_warned(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING"):
        unknown = resolve_params("totally-unknown-model", {}, None)
    assert unknown.sizes_default and "totally-unknown-model" in caplog.text
    est = CalibratedEstimator().estimate(RequestShape(10, 10), unknown, Serving(), "gpu", Overheads())
    assert est.sizes_default
    embedding = resolve_params("acme-embedding-v2", {}, None)
    assert embedding.sizes_default and embedding.encoder and embedding.active_b < 1.0


def test_older_external_models_are_sized_from_ecologits_history() -> None:
    for name in (
        "claude-3-5-sonnet-20241022",
        "claude-3-haiku-20240307",
        "gemini-2.0-flash",
        "gemini-1.5-pro",
    ):
        params = resolve_params(name, {}, EcoLogitsRepository())
        assert params.source == "ecologits" and not params.sizes_default
        assert "model-arch-not-released" in params.warnings
    assert resolve_params("gemini-2.0-flash", {}, None).total_b == 440.0


def test_shipped_architectures_come_with_config_sources() -> None:
    scout = resolve_params("meta-llama/Llama-4-Scout-17B-16E-Instruct", {}, None)
    assert scout.source == "table" and scout.arch is not None
    assert (scout.arch.num_experts, scout.arch.experts_per_token, scout.arch.layers) == (16, 1, 48)
    assert scout.arch.source.startswith("https://huggingface.co/meta-llama/")
    fp8 = resolve_params("Qwen/Qwen3-235B-A22B-Instruct-2507-FP8", {}, None)
    assert fp8.precision == "fp8" and fp8.arch is not None and fp8.arch.kv_heads == 4


def test_fp8_halves_weight_reads_so_a_large_fp8_model_costs_less_than_bf16() -> None:
    llama = resolve_params("meta-llama/Llama-3.1-405B-Instruct", {}, None)
    shape = RequestShape(200, 300)
    bf16 = CalibratedEstimator().estimate(shape, llama, Serving("H100", 8, 8), "gpu", Overheads())
    fp8 = CalibratedEstimator().estimate(
        shape, replace(llama, precision="fp8"), Serving("H100", 8, 8), "gpu", Overheads()
    )
    assert fp8.energy_j < 0.8 * bf16.energy_j


def test_full_boundary_adds_host_idle_capacity_and_pue() -> None:
    assert boundary_factor("gpu", Overheads(pue=1.5)) == 1.0
    # Google's split: accelerators 0.14, host 0.06, idle 0.02 → (0.14 + 0.06 + 0.02) / 0.14 = 1.571…
    assert boundary_factor("full", Overheads(0.43, 0.14, 1.1)) == pytest.approx(1.57 * 1.1)


def test_calibrated_range_brackets_the_central_value() -> None:
    params = ModelParams(76.0, 440.0, 44.0, 132.0)
    est = CalibratedEstimator().estimate(
        RequestShape(100, 300), params, Serving("H100", 8, 128), "gpu", Overheads()
    )
    assert est.energy_j_min < est.energy_j < est.energy_j_max
    assert (est.boundary, est.method, est.pue) == ("gpu", "calibrated", 1.0)


def test_gpt_4o_short_query_full_boundary_within_disclosed_band() -> None:
    params = resolve_params("gpt-4o", {}, EcoLogitsRepository())
    est = CalibratedEstimator().estimate(
        RequestShape(100, 300), params, Serving("H100", None, 128.0), "full", Overheads(pue=1.1)
    )
    assert 0.2 <= est.energy_j / J_PER_WH <= 0.6


def test_ecologits_method_reproduces_its_reference_output() -> None:
    # data README: openai gpt-4o, 500 output tokens, 5 s → 6.92e-4 … 1.173e-3 kWh (with OpenAI's PUE range)
    params = resolve_params("gpt-4o", {}, EcoLogitsRepository())
    est = EcoLogitsEstimator().estimate(
        RequestShape(0, 500, 5.0), params, Serving(batch_size=64), "full", Overheads(pue=1.2)
    )
    assert 6.92e-4 * 3.6e6 * 0.9 < est.energy_j < 1.173e-3 * 3.6e6 * 1.1
    assert est.method == "ecologits"


def test_both_estimators_are_registered_by_name() -> None:
    assert sorted(estimators()) == ["calibrated", "ecologits"]


def test_sizes_parsed_from_names() -> None:
    moe = params_from_name("Qwen/Qwen3-235B-A22B-Instruct-2507-FP8")
    assert moe is not None and (moe.active_b, moe.total_b, moe.precision) == (22.0, 235.0, "fp8")
    experts = params_from_name("mistralai/Mixtral-8x7B-Instruct")
    assert experts is not None and (experts.active_b, experts.total_b) == (14.0, 56.0)
    dense = params_from_name("meta-llama/Llama-3.1-70B-Instruct")
    assert dense is not None and (dense.active_b, dense.total_b) == (70.0, 70.0)
    assert params_from_name("gpt-4o") is None


def test_lookup_order_overrides_then_repository_then_name_then_default() -> None:
    repository = EcoLogitsRepository()
    override = ModelParams.fixed(5.0, 50.0)
    assert resolve_params("gpt-4o", {"gpt-4o": override}, repository) is override
    from_repo = resolve_params("gpt-4o", {}, repository)
    assert from_repo.source == "ecologits" and from_repo.moe and from_repo.active_b_min == 44.0
    assert resolve_params("acme/Foo-13B", {}, repository).source == "name"
    assert resolve_params("meta-llama/Llama-3.1-70B-Instruct", {}, repository).source == "table"
    unknown = resolve_params("totally-unknown-model", {}, repository)
    assert unknown.source == "default" and unknown.active_b > 0


def test_model_size_architecture_must_match_the_sizes() -> None:
    from pydantic import ValidationError

    from bauxite.energy.config import ModelSizeSettings

    assert ModelSizeSettings(active_params_b=22, total_params_b=235, architecture="moe").architecture == "moe"
    assert ModelSizeSettings(active_params_b=70, architecture="dense").total_params_b is None
    with pytest.raises(ValidationError, match="needs total_params_b above"):
        ModelSizeSettings(active_params_b=70, architecture="moe")
    with pytest.raises(ValidationError, match="cannot have total_params_b above"):
        ModelSizeSettings(active_params_b=22, total_params_b=235, architecture="dense")


def test_configured_architecture_reaches_the_model_params() -> None:
    from pydantic import ValidationError

    from bauxite.energy.config import ModelSizeSettings

    moe = ModelSizeSettings(
        active_params_b=37, total_params_b=671, precision="fp8", num_experts=256, experts_per_token=8
    ).to_params("my-deepseek")
    assert moe.source == "config" and moe.arch is not None
    assert (moe.arch.num_experts, moe.arch.experts_per_token, moe.precision) == (256, 8, "fp8")
    known = ModelSizeSettings(active_params_b=70).to_params("meta-llama/Llama-3.3-70B-Instruct")
    assert known.arch is not None and known.arch.layers == 80  # facts not given come from the shipped table
    assert ModelSizeSettings(active_params_b=70).to_params("my-finetune").arch is None
    kv = ModelSizeSettings(active_params_b=8, kv_bytes_per_token=65536).to_params("x")
    assert kv.arch is not None and kv.arch.kv_bytes_per_token() == 65536
    with pytest.raises(ValidationError, match="experts_per_token cannot exceed"):
        ModelSizeSettings(active_params_b=22, total_params_b=235, num_experts=4, experts_per_token=8)


def test_the_prepared_estimator_gives_the_estimators_floats_bit_for_bit() -> None:
    repo = EcoLogitsRepository()
    names = [
        "llama-3.1-8b",
        "Qwen/Qwen3-235B-A22B-Instruct-2507",
        "gpt-4o",
        "BAAI/bge-small-en-v1.5",
        "mystery",
    ]
    estimator = CalibratedEstimator()
    for name in names:
        params = resolve_params(name, {}, repo)
        for serving in (Serving("H100", 1), Serving("B200", 8), Serving("A100", None)):
            prepared = estimator.prepare(params, serving)
            assert prepared.gpu_count == serving.gpus_for(params)
            for shape in (
                RequestShape(12, 16),
                RequestShape(2000, 300, cached_tokens=1500),
                RequestShape(200, 0),
                RequestShape(0, 1),
            ):
                for batch in (0.5, 1.0, 3.7, 64.0):
                    at = replace(serving, batch_size=batch)
                    est = estimator.estimate(shape, params, at, "gpu", Overheads(pue=1.0))
                    compute_s = request_compute_s(shape, params, at)
                    expected = (est.energy_j, est.energy_j_min, est.energy_j_max, compute_s)
                    tokens = (shape.input_tokens, shape.output_tokens, shape.cached_tokens)
                    assert prepared.gpu_figures(*tokens, batch) == expected, (name, serving, shape, batch)


def test_the_prepared_estimator_keeps_its_own_calibration_and_the_compute_time_the_shipped_one() -> None:
    params = ModelParams.fixed(70.0)
    cal = curves.Calibration()
    shape = RequestShape(500, 200)
    serving = Serving("H100", 4, 16.0)
    got = CalibratedEstimator(cal).prepare(params, serving).gpu_figures(500, 200, 0, 16.0)
    est = CalibratedEstimator(cal).estimate(shape, params, serving, "gpu", Overheads(pue=1.0))
    assert got == (
        est.energy_j,
        est.energy_j_min,
        est.energy_j_max,
        request_compute_s(shape, params, serving),
    )
