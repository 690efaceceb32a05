"""NVML on the local host (``nvidia-ml-py``, optional extra): imported lazily, called in a worker thread."""

from __future__ import annotations

import asyncio
import contextlib
from types import ModuleType
from typing import Any

from .base import PowerError, PowerReading


def load_nvml() -> ModuleType:
    """Import and initialise NVML; PowerError when the package or a GPU driver is missing."""
    try:
        import pynvml
    except ImportError:
        raise PowerError("NVML needs the optional extra: pip install 'bauxite[nvml]'") from None
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # pynvml.NVMLError and friends: no driver / no GPU
        raise PowerError(f"NVML unavailable on this host: {exc}") from None
    module: ModuleType = pynvml
    return module


def read_nvml(nvml: Any, indices: tuple[int, ...]) -> PowerReading:
    """Blocking read of energy counters (mJ) and power (mW → W) of the chosen GPUs (all when empty)."""
    try:
        chosen = indices or tuple(range(nvml.nvmlDeviceGetCount()))
        energy_mj: dict[str, float] = {}
        power_w: dict[str, float] = {}
        for index in chosen:
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            energy_mj[str(index)] = float(nvml.nvmlDeviceGetTotalEnergyConsumption(handle))
            power_w[str(index)] = float(nvml.nvmlDeviceGetPowerUsage(handle)) / 1000.0
    except Exception as exc:
        raise PowerError(f"NVML read failed: {exc}") from None
    return PowerReading(energy_mj, power_w)


class NvmlSource:
    """Local GPUs through NVML; each read (a few driver calls, ~1 ms) runs in a thread."""

    name = "nvml"

    def __init__(self, indices: tuple[int, ...] = ()) -> None:
        self._indices = indices
        self._nvml: ModuleType | None = None

    async def read(self) -> PowerReading:
        if self._nvml is None:
            self._nvml = await asyncio.to_thread(load_nvml)
        return await asyncio.to_thread(read_nvml, self._nvml, self._indices)

    async def close(self) -> None:
        if self._nvml is not None:
            nvml, self._nvml = self._nvml, None
            with contextlib.suppress(Exception):  # shutting down anyway
                await asyncio.to_thread(nvml.nvmlShutdown)
