"""Real GPU energy from NVML during a short matmul load, beside Bauxite's static power model.

Needs an NVIDIA GPU, ``nvidia-ml-py`` and ``torch`` (or ``cupy``). Without them it says so and exits 0.

    python benchmarks/nvml_check.py [--seconds 20] [--gpu 0]

Prints: the energy counter difference (J) over the load, the mean of power samples × time, and the static
model's figure (idle/max × utilisation, at full utilisation) for the same duration.
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Callable
from typing import Any


def _matmul_load(seconds: float) -> Callable[[], None] | str:
    """A function that keeps the GPU busy for ``seconds``, or why none is available."""
    try:
        import torch  # type: ignore[import-not-found, unused-ignore]

        if not torch.cuda.is_available():
            return "torch is installed but sees no CUDA device"

        def run_torch() -> None:
            a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
            b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                for _ in range(10):
                    a @ b
                torch.cuda.synchronize()

        return run_torch
    except ImportError:
        pass
    try:
        import cupy  # type: ignore[import-not-found, unused-ignore]

        def run_cupy() -> None:
            a = cupy.random.rand(8192, 8192, dtype=cupy.float32)
            b = cupy.random.rand(8192, 8192, dtype=cupy.float32)
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                for _ in range(5):
                    a @ b
                cupy.cuda.Stream.null.synchronize()

        return run_cupy
    except ImportError:
        return "neither torch nor cupy is installed"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--gpu", type=int, default=0)
    args = parser.parse_args()
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception as exc:  # no package, no driver, no GPU
        print(f"no NVIDIA GPU usable here ({exc.__class__.__name__}: {exc}); nothing to check")
        return 0
    load = _matmul_load(args.seconds)
    if isinstance(load, str):
        print(f"no GPU load generator: {load}; nothing to check")
        return 0
    from bauxite.energy import curves
    from bauxite.power.static import static_power_w

    handle = pynvml.nvmlDeviceGetHandleByIndex(args.gpu)
    name = pynvml.nvmlDeviceGetName(handle)
    name = name.decode() if isinstance(name, bytes) else name
    limit_w = pynvml.nvmlDeviceGetEnforcedPowerManagementLimit(handle) / 1000.0
    idle_w = pynvml.nvmlDeviceGetPowerUsage(handle) / 1000.0
    samples_w: list[float] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples_w.append(pynvml.nvmlDeviceGetPowerUsage(handle) / 1000.0)
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    before_mj = pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    started = time.monotonic()
    sampler.start()
    load()
    elapsed_s = time.monotonic() - started
    after_mj = pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    stop.set()
    sampler.join()
    spec = curves.gpu_spec(str(name))
    static_idle_w = spec.board_w * curves.COEF.idle_frac
    _report(
        name,
        spec,
        limit_w,
        idle_w,
        samples_w,
        elapsed_s,
        (after_mj - before_mj) / 1000.0,
        static_power_w(static_idle_w, spec.board_w, 1.0) * elapsed_s,
    )
    pynvml.nvmlShutdown()
    return 0


def _report(
    name: str,
    spec: Any,
    limit_w: float,
    idle_w: float,
    samples_w: list[float],
    elapsed_s: float,
    counter_j: float,
    static_j: float,
) -> None:
    mean_w = sum(samples_w) / len(samples_w) if samples_w else float("nan")
    print(
        f"GPU                      {name} (spec used: {spec.name}, board {spec.board_w:.0f} W, "
        f"enforced limit {limit_w:.0f} W)"
    )
    print(f"power before load        {idle_w:8.1f} W")
    print(f"load                     {elapsed_s:8.1f} s of bf16 matmul, {len(samples_w)} power samples")
    print(f"NVML energy counter      {counter_j:8.1f} J   (mean {counter_j / elapsed_s:6.1f} W)")
    print(
        f"power samples × time     {mean_w * elapsed_s:8.1f} J   (mean {mean_w:6.1f} W, "
        f"max {max(samples_w, default=float('nan')):6.1f} W)"
    )
    print(
        f"static model (util 1.0)  {static_j:8.1f} J   ({static_j / elapsed_s:6.1f} W)  "
        f"ratio to counter {static_j / counter_j:5.2f}×"
    )


if __name__ == "__main__":
    raise SystemExit(main())
