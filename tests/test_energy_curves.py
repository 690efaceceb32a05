"""Roofline curves, architecture physics (MoE routing, KV cache) and the scipy fit."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from bauxite.energy import curves
from bauxite.energy.architecture import (
    Architecture,
    busiest_gpu_experts,
    default_architecture,
    default_shared_frac,
    default_top_k,
    expert_count,
    find_known,
    known_models,
    routed_split,
    weights_read_b,
    weights_read_split,
)
from bauxite.energy.decode_curve import DecodeCurve
from bauxite.energy.fit import fit, load_rows, predict
from bauxite.energy.hardware import gpu_spec, weight_bytes_per_param

H100 = curves.GPU_SPECS["H100"]
LLAMA_70B = Architecture(80, 8, 128)


def test_gpu_names_resolve_to_datasheet_specs() -> None:
    assert curves.gpu_spec("NVIDIA H100 80GB HBM3").name == "H100"
    assert curves.gpu_spec("h200-nvl").name == "H200-NVL"
    assert curves.gpu_spec("A100-SXM4-80GB").generation == "ampere"
    assert curves.gpu_spec("b200").board_w == 1000.0
    assert curves.gpu_spec("mystery").name == "H100"


def test_weight_bytes_are_the_formats_physical_width() -> None:
    assert [weight_bytes_per_param(p) for p in ("bf16", "fp8", "int4", "fp4")] == [2.0, 1.0, 0.5, 0.5]
    # halving the bytes halves the weight-read time before any fitted kernel efficiency
    cal = curves.Calibration()
    bf16 = curves.decode_step(70, 70, H100, 4, 8, "bf16", arch=LLAMA_70B, cal=cal)
    fp8 = curves.decode_step(70, 70, H100, 4, 8, "fp8", arch=LLAMA_70B, cal=cal)
    assert fp8.weights_s == pytest.approx(bf16.weights_s / 2)
    assert H100.flop_per_s("fp8") == pytest.approx(2 * H100.flop_per_s("bf16"), rel=0.01)
    assert gpu_spec("A100").flop_per_s("fp8") == gpu_spec("A100").flop_per_s("bf16")  # no fp8 units


def test_moe_reads_shared_params_plus_experts_hit_by_the_batch() -> None:
    qwen = find_known("Qwen/Qwen3-235B-A22B-Instruct-2507")
    assert qwen is not None
    shared, q = routed_split(22.0, 235.0, qwen.arch)
    assert q == pytest.approx(8 / 128)
    assert shared == pytest.approx((22.0 - q * 235.0) / (1 - q))  # total = S + E·e, active = S + k·e
    for tokens in (1, 8, 64, 512):
        hit = 1 - (1 - 8 / 128) ** tokens
        expected = max(22.0, shared + (235.0 - shared) * hit)
        assert weights_read_b(22.0, 235.0, qwen.arch, tokens) == pytest.approx(expected)
    assert weights_read_b(70.0, 70.0, None, 64) == 70.0


def test_moe_known_only_by_active_and_total_uses_the_tables_typical_split() -> None:
    fracs = []
    for known in known_models().values():
        if known.total_b > known.active_b:
            fracs.append(routed_split(known.active_b, known.total_b, known.arch)[0] / known.active_b)
    assert min(fracs) < default_shared_frac() < max(fracs)
    assert default_shared_frac() == pytest.approx(0.35, abs=0.05)  # Qwen3-235B 0.35, Kimi-K2 0.35
    assert default_top_k() == 8
    shared, q = routed_split(37.0, 671.0, None)
    assert shared == pytest.approx(default_shared_frac() * 37.0)
    assert pytest.approx(shared + q * (671.0 - shared)) == 37.0  # active = S + k·e, total = S + E·e
    assert expert_count(37.0, 671.0, None) == round(8 / q)
    # DeepSeek-V3 known only by its sizes reads within 15 % of its config's split at any batch
    deepseek = find_known("deepseek-ai/DeepSeek-V3")
    assert deepseek is not None
    for tokens in (1, 8, 64, 512):
        default = weights_read_b(37.0, 671.0, None, tokens, 8)
        config = weights_read_b(37.0, 671.0, deepseek.arch, tokens, 8)
        assert default == pytest.approx(config, rel=0.15)


def test_busiest_expert_parallel_gpu_matches_a_routing_simulation() -> None:
    rng = np.random.default_rng(7)
    experts, top_k, gpus, tokens = 128, 8, 8, 8
    hit = 1 - (1 - top_k / experts) ** tokens
    busiest = []
    for _ in range(4000):
        touched = np.zeros(experts, dtype=bool)
        for _ in range(tokens):
            touched[rng.choice(experts, top_k, replace=False)] = True
        busiest.append(touched.reshape(gpus, -1).sum(axis=1).max())
    assert busiest_gpu_experts(experts, gpus, hit) == pytest.approx(np.mean(busiest), rel=0.05)
    assert busiest_gpu_experts(experts, 1, hit) == pytest.approx(experts * hit)
    assert busiest_gpu_experts(experts, gpus, 1.0) == pytest.approx(experts / gpus)
    # more GPUs: the busiest one is further above the mean
    ratios = [busiest_gpu_experts(experts, n, hit) * n / (experts * hit) for n in (1, 2, 4, 8)]
    assert ratios == sorted(ratios) and ratios[0] == pytest.approx(1.0) and ratios[-1] > 1.3


def test_expert_parallel_imbalance_costs_time_at_idle_power() -> None:
    qwen = find_known("Qwen/Qwen3-235B-A22B-Instruct-2507")
    assert qwen is not None
    read = weights_read_split(22.0, 235.0, qwen.arch, 8, 8)
    assert read.routed_busiest > 1.3 * read.routed_mean
    assert weights_read_split(22.0, 235.0, qwen.arch, 8, 1).routed_busiest == pytest.approx(read.routed_mean)
    step = curves.decode_step(22.0, 235.0, H100, 8, 8, arch=qwen.arch)
    assert step.wait_s > 0 and step.dequant_s == 0
    busy = replace(step, wait_s=0.0)
    assert curves.step_power_w(step, H100) < curves.step_power_w(busy, H100)  # waiting draws idle power
    assert curves.decode_step(70, 70, H100, 4, 8, arch=LLAMA_70B).wait_s == 0.0  # dense TP: balanced


def test_quantised_experts_pay_dequantisation_in_compute_dense_layers_do_not() -> None:
    qwen = find_known("Qwen/Qwen3-235B-A22B-Instruct-2507")
    assert qwen is not None
    moe = curves.decode_step(22.0, 235.0, H100, 8, 32, "fp8", arch=qwen.arch)
    routed_s = moe.weights_s - weights_read_split(22.0, 235.0, qwen.arch, 32, 8).shared * 1e9 / (
        8 * H100.hbm_bytes_per_s * curves.COEF.bw_eff * curves.CALIBRATION.scale(H100).bw
    )
    assert moe.dequant_s == pytest.approx(curves.CALIBRATION.dequant_ratio("fp8") * routed_s)
    assert moe.activity_s()[1] >= moe.dequant_s  # counted as compute
    assert curves.CALIBRATION.dequant_ratio("int4") == curves.CALIBRATION.dequant_ratio("fp8")
    assert curves.decode_step(70, 70, H100, 4, 8, "fp8", arch=LLAMA_70B).dequant_s == 0.0
    assert curves.decode_step(22.0, 235.0, H100, 8, 32, "bf16", arch=qwen.arch).dequant_s == 0.0


def test_moe_overhead_counts_only_layers_with_experts() -> None:
    maverick = find_known("meta-llama/Llama-4-Maverick-17B-128E-Instruct-FP8")
    assert maverick is not None and maverick.arch.routed_layers(True) == 24 and maverick.arch.layers == 48
    every_layer = replace(maverick.arch, moe_layers=0)
    assert every_layer.routed_layers(True) == 48 and every_layer.routed_layers(False) == 0
    half = curves.decode_step(17, 400, H100, 8, 8, "fp8", arch=maverick.arch)
    full = curves.decode_step(17, 400, H100, 8, 8, "fp8", arch=every_layer)
    moe_us = curves.CALIBRATION.coef.moe_layer_us
    assert full.overhead_s - half.overhead_s == pytest.approx(24 * moe_us * 1e-6)


def test_kv_cache_term_grows_with_context_and_respects_sliding_windows() -> None:
    assert LLAMA_70B.kv_bytes_per_token() == 80 * 2 * 8 * 128 * 2.0  # layers × K,V × heads × dim × bytes
    short = curves.decode_step(70, 70, H100, 4, 64, arch=LLAMA_70B, context_tokens=500)
    long = curves.decode_step(70, 70, H100, 4, 64, arch=LLAMA_70B, context_tokens=5000)
    assert long.kv_s == pytest.approx(10 * short.kv_s)
    assert long.weights_s == short.weights_s
    gemma = Architecture(48, 8, 256, sliding_window=1024, sliding_layers=40)
    assert gemma.kv_read_bytes(4096) == (8 * 4096 + 40 * 1024) * 2 * 8 * 256 * 2.0
    mla = Architecture(61, 1, 576, kv_latent_dim=576)
    assert mla.kv_bytes_per_token() == 61 * 576 * 2.0


def test_step_is_roofline_plus_kv_plus_overheads() -> None:
    cal = curves.Calibration(curves.Coefficients(bw_eff=1.0, flop_eff=1.0, kv_eff=1.0))
    gpu = curves.GpuSpec("X", "hopper", 1e12, 1e15, 2e15, 2e15, 500.0, 80.0)
    arch = Architecture(10, 1, 100)
    step = curves.decode_step(10.0, 10.0, gpu, 2, 8, "bf16", arch=arch, context_tokens=100, cal=cal)
    assert step.weights_s == pytest.approx(10e9 * 2 / (2 * 1e12))
    assert step.matmul_s == pytest.approx(2 * 10e9 * 8 / (2 * 1e15))
    assert step.kv_s == pytest.approx(8 * 10 * 200 * 100 * 2.0 / (2 * 1e12))
    c = cal.coef
    per_layer_us = c.layer_us + c.layer_us_per_log2_gpus * 1 + 8 * c.seq_layer_us
    assert step.overhead_s == pytest.approx(10 * per_layer_us * 1e-6)
    roof = math.hypot(step.weights_s, step.matmul_s)  # ROOFLINE_SHARPNESS = 2
    assert step.total_s == pytest.approx(roof + step.kv_s + step.overhead_s)


def test_power_is_idle_plus_activity_weighted_dynamic_capped_at_board() -> None:
    coef = curves.Coefficients(idle_frac=0.2, memory_frac=0.6, compute_frac=0.8, overhead_frac=0.3)
    cal = curves.Calibration(coef)
    step = curves.StepTimes(weights_s=0.010, matmul_s=0.0, kv_s=0.004, overhead_s=0.006)
    share = 0.2 + (0.6 * 0.014 + 0.3 * 0.006) / 0.020
    assert curves.step_power_w(step, H100, cal) == pytest.approx(700.0 * share)
    hot = curves.Calibration(replace(coef, compute_frac=0.95))
    assert curves.step_power_w(curves.StepTimes(0.0, 1.0, 0.0, 0.0), H100, hot) == 700.0
    assert curves.idle_w(H100, cal) == pytest.approx(140.0)


def test_unseen_generation_uses_its_datasheet_with_global_fractions() -> None:
    a100 = gpu_spec("A100")
    assert curves.CALIBRATION.scale(a100) == curves.GenerationScale()
    h100 = curves.decode_step(8, 8, H100, 1, 1, cal=curves.Calibration())
    slow = curves.decode_step(8, 8, a100, 1, 1, cal=curves.Calibration())
    assert slow.weights_s / h100.weights_s == pytest.approx(H100.hbm_bytes_per_s / a100.hbm_bytes_per_s)


def test_energy_falls_with_batch_and_rises_with_model_size() -> None:
    by_batch = [curves.decode_j_per_token(70, 70, H100, 4, b, arch=LLAMA_70B) for b in (8, 32, 128, 512)]
    assert by_batch == sorted(by_batch, reverse=True)
    by_size = [curves.decode_j_per_token(a, a, H100, 4, 64) for a in (8, 32, 70, 140)]
    assert by_size == sorted(by_size)


def test_fit_twin_agrees_with_the_curves_on_every_row() -> None:
    rows = load_rows()
    seconds, power = predict(curves.CALIBRATION, rows)
    for row, s, p in zip(rows, seconds, power, strict=True):
        gpu = gpu_spec(row.gpu)
        step = curves.decode_step(
            row.active_b,
            row.total_b,
            gpu,
            row.gpu_count,
            row.batch,
            row.precision,
            arch=row.arch,
            context_tokens=row.context_tokens,
        )
        decode_j = row.gpu_count * curves.step_power_w(step, gpu) * step.total_s / row.batch
        prefill_j = 200 / row.output_tokens * curves.prefill_j_per_token(row.active_b, gpu, row.precision)
        assert s * p == pytest.approx(decode_j + prefill_j, rel=1e-9)


def test_fit_recovers_the_shipped_constants_and_priors_hold_unseen_groups() -> None:
    rows = load_rows()
    cal = fit(rows)
    assert cal.coef.bw_eff == pytest.approx(curves.CALIBRATION.coef.bw_eff, rel=0.02)
    assert cal.dequant["fp8"] == pytest.approx(curves.CALIBRATION.dequant["fp8"], rel=0.02)
    assert cal.coef.expert_eff == pytest.approx(curves.CALIBRATION.coef.expert_eff, rel=0.02)
    hopper_only = fit([r for r in rows if r.gpu == "H100"])
    assert "blackwell" not in hopper_only.generations  # nothing to fit: the datasheet prior stays
    with pytest.raises(ValueError):
        fit([])


def test_every_measured_model_has_its_config_facts_in_the_table() -> None:
    for row in load_rows():
        assert row.arch.source.startswith("https://huggingface.co/"), row.model
        assert row.arch.layers > 0 and row.arch.kv_elements_per_token_layer > 0
        if row.moe:
            assert row.arch.num_experts > row.arch.experts_per_token > 0, row.model


def test_a_prepared_decode_curve_gives_decode_steps_floats_bit_for_bit() -> None:
    qwen = find_known("Qwen/Qwen3-235B-A22B-Instruct-2507")
    assert qwen is not None
    gemma_like = Architecture(48, 8, 128, sliding_window=1024, sliding_layers=40)
    mla = Architecture(61, 0, 0, kv_latent_dim=576, num_experts=256, experts_per_token=8)
    models: list[tuple[float, float, str, Architecture | None]] = [
        (8.0, 8.0, "bf16", None),  # dense, default architecture
        (70.0, 70.0, "fp8", LLAMA_70B),
        (27.0, 27.0, "bf16", gemma_like),
        (22.0, 235.0, "fp8", qwen.arch),  # MoE with known experts
        (37.0, 671.0, "fp8", mla),
        (17.0, 400.0, "bf16", None),  # MoE known only by active/total
        (0.0334, 0.0334, "fp16", replace(default_architecture(0.0334), kind="encoder")),
    ]
    for gpu_name in ("H100", "B200", "A100", "L4"):
        gpu = curves.GPU_SPECS[gpu_name]
        for active_b, total_b, precision, arch in models:
            for count in (1, 2, 8):
                curve = DecodeCurve.build(active_b, total_b, gpu, count, precision, arch=arch)
                for batch in (0.3, 1.0, 1.7, 8.0, 63.99, 256.0):
                    for context in (0.0, 12.5, 512.0, 9000.0):
                        args = (active_b, total_b, gpu, count, batch, precision)
                        step = curves.decode_step(*args, arch=arch, context_tokens=context)
                        assert curve.step(batch, context) == step
                        j_per_token = curves.decode_j_per_token(*args, arch=arch, context_tokens=context)
                        assert curve.energy(batch, context) == (j_per_token, step.total_s)


def test_a_prepared_curve_takes_its_calibration() -> None:
    cal = curves.Calibration()  # the neutral start of a fit, not the shipped constants
    curve = DecodeCurve.build(70.0, 70.0, H100, 4, "bf16", arch=LLAMA_70B, cal=cal)
    step = curves.decode_step(70.0, 70.0, H100, 4, 16.0, arch=LLAMA_70B, context_tokens=800.0, cal=cal)
    assert curve.step(16.0, 800.0) == step
    assert curve.step(16.0, 800.0) != DecodeCurve.build(70.0, 70.0, H100, 4, arch=LLAMA_70B).step(16.0, 800.0)
