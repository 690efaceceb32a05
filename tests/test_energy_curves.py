"""Golden values for each formula of the calibrated curves, computed by hand here."""

from __future__ import annotations

import pytest

from bauxite.energy import curves
from bauxite.energy.curves import COEF, Coefficients, GpuSpec

H100 = curves.GPU_SPECS["H100"]


def test_gpu_spec_accepts_vendor_spellings_and_defaults_unknown_to_h100() -> None:
    assert curves.gpu_spec("NVIDIA H100 80GB HBM3").name == "H100"
    assert curves.gpu_spec("h200-nvl").name == "H200-NVL"
    assert curves.gpu_spec("A100-SXM4-80GB").name == "A100"
    assert curves.gpu_spec("b200").board_w == 1000.0
    assert curves.gpu_spec("mystery").name == "H100"


def test_dense_model_reads_all_weights_moe_reads_experts_hit_by_the_batch() -> None:
    assert curves.experts_read_b(70.0, 70.0, 64) == 70.0
    # 1 of 10 experts per token, batch 2: P(hit) = 1 - 0.9² = 0.19 → 19B of 100B, but never below active 10B
    assert curves.experts_read_b(10.0, 100.0, 2) == pytest.approx(19.0)
    assert curves.experts_read_b(10.0, 100.0, 1) == pytest.approx(10.0)


def test_decode_step_components_by_hand() -> None:
    coef = Coefficients(
        weights_eff=1.0,
        fixed_ms=2.0,
        fixed_ms_per_log2_gpus=1.0,
        seq_s=1e-4,
        moe_seq_s_per_log2_gpus=0.0,
        compute_eff=1.0,
    )
    gpu = GpuSpec("T", hbm_bytes_per_s=1e12, bf16_flop_per_s=1e15, board_w=500.0, memory_gb=80.0)
    step = curves.decode_step(10.0, 10.0, gpu, 2, 8, "bf16", coef)
    weights_s = 10e9 * 2 / (2 * 1e12)  # 10 ms
    fixed_s = 1e-3 * (2.0 + 1.0 * 1)  # log2(2) = 1 → 3 ms
    per_seq_s = 8 * 1e-4  # 0.8 ms
    compute_s = 8 * 2 * 10e9 / (2 * 1e15)  # 0.08 ms
    assert step.weights_s == pytest.approx(weights_s)
    assert step.fixed_s == pytest.approx(fixed_s)
    assert step.per_seq_s == pytest.approx(per_seq_s)
    assert step.compute_s == pytest.approx(compute_s)
    assert step.total_s == pytest.approx(weights_s + fixed_s + per_seq_s + compute_s)


def test_step_power_is_idle_plus_activity_weighted_dynamic_capped_at_board() -> None:
    coef = Coefficients(idle_frac=0.2, memory_frac=0.6, compute_frac=0.8, seq_frac=0.4)
    step = curves.StepTimes(weights_s=0.010, fixed_s=0.005, per_seq_s=0.004, compute_s=0.001)
    share = 0.2 + (0.6 * 0.010 + 0.8 * 0.001 + 0.4 * 0.004) / 0.020  # 0.2 + 0.42 = 0.62
    assert curves.step_power_w(step, H100, coef) == pytest.approx(700.0 * share)
    hot = Coefficients(idle_frac=0.4, compute_frac=0.9)
    assert curves.step_power_w(curves.StepTimes(0.0, 0.0, 0.0, 1.0), H100, hot) == 700.0


def test_j_per_output_token_is_cluster_power_times_step_over_batch() -> None:
    step = curves.decode_step(8.0, 8.0, H100, 1, 64)
    expected_j = 1 * curves.step_power_w(step, H100) * step.total_s / 64
    assert curves.decode_j_per_token(8.0, 8.0, H100, 1, 64) == pytest.approx(expected_j)


def test_prefill_j_per_token_by_hand() -> None:
    # 2 × 70e9 FLOP at 50 % of 989 TFLOP/s on one GPU = 0.283 ms; × (idle + compute) share of 700 W
    seconds = 2 * 70e9 / (989e12 * 0.5)
    power_w = 700.0 * min(1.0, COEF.idle_frac + COEF.compute_frac)
    assert curves.prefill_j_per_token(70.0, H100) == pytest.approx(power_w * seconds)
    assert curves.prefill_s_per_token(70.0, H100, 4) == pytest.approx(seconds / 4)


def test_energy_per_token_falls_with_batch_and_rises_with_size() -> None:
    by_batch = [curves.decode_j_per_token(70, 70, H100, 4, b) for b in (8, 32, 128, 512)]
    assert by_batch == sorted(by_batch, reverse=True)
    assert by_batch[0] / by_batch[-1] > 5
    by_size = [curves.decode_j_per_token(a, a, H100, 4, 64) for a in (8, 32, 70, 140)]
    assert by_size == sorted(by_size)
    # prefill is cheaper per token than decode at the batch sizes serving runs at
    assert curves.prefill_j_per_token(70, H100) < curves.decode_j_per_token(70, 70, H100, 4, 64)


def test_gpus_needed_rounds_up_to_a_power_of_two() -> None:
    assert curves.gpus_needed(8, "bf16", H100) == 1  # 16 GB × 1.3 = 21 GB → 1
    assert curves.gpus_needed(70, "bf16", H100) == 4  # 140 GB × 1.3 = 182 GB → 3 GPUs → 4
    assert curves.gpus_needed(70, "fp8", H100) == 2  # 70 GB × 1.3 = 91 GB → 2
