"""Pure throughput and power model of one simulated vLLM cluster, calibrated on measured serving rows.

The curves live in ``bauxite.energy.curves`` (fitted on the ML.ENERGY v3 rows): a decode step's time grows
with the number of running sequences (batching slows each step but raises throughput), and each GPU's power
is a resident-idle floor plus a dynamic part that follows what the step spends its time on.

Calibration (checked in tests): Llama-3.1-70B on 4×H100 at 64 running sequences gives ≈0.76 J per output
token (measured 0.797); Llama-3.1-8B on 1×H100 at 64 gives ≈0.107 J (measured 0.119), where
J per output token = gpu_count × gpu_power_w / (running / itl_s).

Build profiles from configuration with ``profile_for(model, gpu_type, gpu_count)``; a simulated cluster
builds one per model it serves (``fleet.sim.SimCluster.profiles``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..energy import curves
from ..energy.params import EcoLogitsRepository, ModelParams, resolve_params


@dataclass(frozen=True, slots=True)
class ClusterProfile:
    """What the simulator needs to know about one cluster: hardware and model size.

    ``idle_w_per_gpu``/``max_w_per_gpu`` override the calibrated power curve's floor and cap;
    ``speed`` scales all times (2.0 = twice as fast) to make clusters differ in a demo.
    """

    gpu_type: str = "H100"
    gpu_count: int = 1
    active_params_b: float = 8.0
    total_params_b: float | None = None
    precision: str = "bf16"
    idle_w_per_gpu: float | None = None
    max_w_per_gpu: float | None = None
    speed: float = 1.0

    @property
    def gpu(self) -> curves.GpuSpec:
        return curves.gpu_spec(self.gpu_type)

    @property
    def total_b(self) -> float:
        return max(self.total_params_b or self.active_params_b, self.active_params_b)

    @property
    def max_w(self) -> float:
        """Board power of one GPU in watts."""
        return self.max_w_per_gpu or self.gpu.board_w

    @property
    def idle_w(self) -> float:
        """Power of one idle GPU with the model resident, in watts."""
        if self.idle_w_per_gpu is not None:
            return self.idle_w_per_gpu
        return self.max_w * curves.idle_w(self.gpu) / self.gpu.board_w


def profile_for(
    model: str = "",
    gpu_type: str = "H100",
    gpu_count: int = 1,
    *,
    active_params_b: float | None = None,
    total_params_b: float | None = None,
    precision: str | None = None,
    overrides: Mapping[str, ModelParams] | None = None,
    repository: EcoLogitsRepository | None = None,
    speed: float = 1.0,
) -> ClusterProfile:
    """A profile from configuration: explicit sizes win, else the model name is looked up (config overrides,
    then EcoLogits' repository when one is passed, then sizes in the name such as ``Llama-3.1-70B``,
    then a labelled 70B default). Never raises."""
    if active_params_b is None:
        params = resolve_params(model, overrides or {}, repository)
        active_params_b = params.active_b
        total_params_b = total_params_b if total_params_b is not None else params.total_b
        precision = precision or params.precision
    return ClusterProfile(
        gpu_type=gpu_type,
        gpu_count=max(int(gpu_count), 1),
        active_params_b=float(active_params_b),
        total_params_b=total_params_b,
        precision=precision or "bf16",
        speed=speed,
    )


def _step(profile: ClusterProfile, running: int) -> curves.StepTimes:
    return curves.decode_step(
        profile.active_params_b,
        profile.total_b,
        profile.gpu,
        profile.gpu_count,
        max(running, 1),
        profile.precision,
    )


def itl_s(profile: ClusterProfile, running: int) -> float:
    """Seconds between two output tokens of one sequence with ``running`` sequences batched."""
    return _step(profile, running).total_s / profile.speed


def prefill_s(profile: ClusterProfile, prompt_tokens: int) -> float:
    """Seconds of compute-bound prefill for ``prompt_tokens`` on the whole cluster."""
    per_token_s = curves.prefill_s_per_token(profile.active_params_b, profile.gpu, profile.gpu_count)
    return max(prompt_tokens, 0) * per_token_s / profile.speed


def ttft_s(profile: ClusterProfile, prompt_tokens: int, running: int) -> float:
    """Seconds until the first output token without queueing: prefill of the prompt (compute-bound) plus
    one decode step of the running batch it is interleaved with."""
    return prefill_s(profile, prompt_tokens) + itl_s(profile, running)


def gpu_power_w(profile: ClusterProfile, running: int) -> float:
    """Power of one GPU in watts with ``running`` sequences in flight (resident idle when none)."""
    if running <= 0:
        return profile.idle_w
    dynamic_share = curves.step_power_w(_step(profile, running), profile.gpu) / profile.gpu.board_w
    dynamic_share -= curves.idle_w(profile.gpu) / profile.gpu.board_w
    return min(profile.max_w, profile.idle_w + dynamic_share * profile.max_w)


def j_per_output_token(profile: ClusterProfile, running: int) -> float:
    """Steady-state GPU energy per output token in joules: all GPUs' power over the output token rate."""
    running = max(running, 1)
    tokens_per_s = running / itl_s(profile, running)
    return profile.gpu_count * gpu_power_w(profile, running) / tokens_per_s
