"""State of one simulated vLLM cluster: batch slots, queue, prefix cache, token counters, GPU power meter.

Time only matters through ``time.monotonic()``; the HTTP layer decides whether to actually sleep.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field

from ..units import MJ_PER_J
from . import model
from .config import SimClusterSettings

PREFIX_BLOCK_CHARS = 64  # ~16 tokens, vLLM's default block size
PREFIX_CACHE_BLOCKS = 20_000
CHARS_PER_TOKEN = 4


@dataclass(slots=True)
class Faults:
    """Failures the next requests will meet, set by tests through the admin endpoint."""

    refuse: int = 0  # answer 503 before any byte
    die_mid_stream: int = 0  # drop the connection after a few tokens


@dataclass(slots=True)
class PowerMeter:
    """Integrates per-GPU power over time into a DCGM-style millijoule counter."""

    profile: model.ClusterProfile
    energy_mj: float = 0.0
    running: int = 0
    last: float = field(default_factory=time.monotonic)

    def advance(self, now: float) -> None:
        dt = now - self.last
        if dt > 0:
            self.energy_mj += model.gpu_power_w(self.profile, self.running) * dt * MJ_PER_J
            self.last = now

    def set_running(self, running: int) -> None:
        self.advance(time.monotonic())
        self.running = running

    def power_w(self) -> float:
        return model.gpu_power_w(self.profile, self.running)


class SimCluster:
    def __init__(self, settings: SimClusterSettings, time_scale: float) -> None:
        self.settings = settings
        self.time_scale = time_scale
        self.profile = model.profile_for(
            settings.models[0],
            settings.gpu_type,
            settings.gpu_count,
            active_params_b=settings.active_params_b,
        )
        self.meter = PowerMeter(self.profile)
        self.running = 0
        self.waiting = 0
        self.prompt_tokens_total = 0
        self.generation_tokens_total = 0
        self.prefix_queries_total = 0
        self.prefix_hits_total = 0
        self.faults = Faults()
        self._slots = asyncio.Semaphore(settings.max_num_seqs)
        self._prefix_blocks: OrderedDict[int, None] = OrderedDict()

    async def admit(self) -> None:
        """Wait for a batch slot (vLLM's waiting queue), then count the sequence as running."""
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        self.running += 1
        self.meter.set_running(self.running)

    def release(self) -> None:
        self.running -= 1
        self.meter.set_running(self.running)
        self._slots.release()

    def ttft_s(self, prompt_tokens: int, cached_tokens: int) -> float:
        uncached = max(prompt_tokens - cached_tokens, 1)
        return model.ttft_s(self.profile, uncached, self.running) * self.time_scale

    def itl_s(self) -> float:
        return model.itl_s(self.profile, self.running) * self.time_scale

    def lookup_prefix(self, prompt: str, prompt_tokens: int) -> int:
        """Cached tokens for this prompt (leading blocks seen before); remembers its blocks."""
        if not self.settings.prefix_cache:
            return 0
        hits = 0
        matching = True
        chained = 0
        for start in range(0, len(prompt) - PREFIX_BLOCK_CHARS + 1, PREFIX_BLOCK_CHARS):
            chained = zlib.crc32(prompt[start : start + PREFIX_BLOCK_CHARS].encode(), chained)
            key = chained
            if matching and key in self._prefix_blocks:
                self._prefix_blocks.move_to_end(key)
                hits += 1
            else:
                matching = False
                self._prefix_blocks[key] = None
        while len(self._prefix_blocks) > PREFIX_CACHE_BLOCKS:
            self._prefix_blocks.popitem(last=False)
        cached = min(hits * PREFIX_BLOCK_CHARS // CHARS_PER_TOKEN, max(prompt_tokens - 1, 0))
        self.prefix_queries_total += prompt_tokens
        self.prefix_hits_total += cached
        return cached

    def kv_cache_usage(self) -> float:
        return min(self.running / self.settings.max_num_seqs, 1.0)


def count_tokens(text: str) -> int:
    """The simulator's tokenizer: about four characters a token, at least one."""
    return max(len(text) // CHARS_PER_TOKEN, 1)
