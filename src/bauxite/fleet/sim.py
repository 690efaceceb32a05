"""State of one simulated vLLM cluster: batch slots, queue, prefix cache, token counters, GPU power meter.

Time only matters through ``time.monotonic()``; the HTTP layer decides whether to actually sleep.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from ..energy import curves
from ..units import MJ_PER_J
from . import model
from .config import SimClusterSettings

PREFIX_BLOCK_CHARS = 64  # ~16 tokens, vLLM's default block size
PREFIX_CACHE_BLOCKS = 20_000
CHARS_PER_TOKEN = 4
COMPLETED_KEPT = 100_000


@dataclass(slots=True)
class Faults:
    """Failures the next requests will meet, set by tests through the admin endpoint."""

    refuse: int = 0  # answer 503 before any byte
    die_mid_stream: int = 0  # drop the connection after a few tokens
    error_mid_stream: int = 0  # report an in-band error event after a few tokens, then end the stream


@dataclass(slots=True, eq=False)
class Sequence:
    """One admitted request. ``energy_j`` is its ground-truth GPU energy: an equal share of the resident-idle
    power with every other admitted sequence, an equal share of its model's decode power with that model's
    other sequences, and all of the extra power of its own prefill."""

    model: str
    prompt_tokens: int = 0
    prefilling: bool = True
    energy_j: float = 0.0
    started_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Completed:
    """A finished sequence's ground truth, for benchmarks (no text)."""

    model: str
    prompt_tokens: int
    completion_tokens: int
    energy_j: float
    started_s: float
    ended_s: float


@dataclass(slots=True)
class PowerMeter:
    """Per-GPU power from each model's own profile and running count, integrated into a DCGM-style
    millijoule counter of one GPU, with each sequence's share of the whole cluster's energy kept as ground
    truth.

    Power of one GPU = resident idle + Σ over models of that model's decode power above idle at its own
    running count + the compute-bound prefill power above idle for each sequence in prefill; capped at the
    board power (dynamic parts scaled down together).
    """

    profiles: dict[str, model.ClusterProfile]
    energy_mj: float = 0.0
    sequences: list[Sequence] = field(default_factory=list)
    last: float = field(default_factory=time.monotonic)

    @property
    def base(self) -> model.ClusterProfile:
        return next(iter(self.profiles.values()))

    def _dynamic_w(self) -> tuple[dict[str, float], float, float]:
        """(decode dynamic W per GPU by model, prefill dynamic W per GPU per prefilling sequence, scale)."""
        base = self.base
        running: dict[str, int] = {}
        for seq in self.sequences:
            running[seq.model] = running.get(seq.model, 0) + 1
        decode = {
            m: model.gpu_power_w(self.profiles.get(m, base), n) - base.idle_w for m, n in running.items()
        }
        prefill_w = max(curves.prefill_power_w(base.gpu) * base.max_w / base.gpu.board_w - base.idle_w, 0.0)
        prefilling = sum(1 for seq in self.sequences if seq.prefilling)
        total = sum(decode.values()) + prefill_w * prefilling
        headroom = base.max_w - base.idle_w
        scale = headroom / total if total > headroom > 0 else 1.0
        return decode, prefill_w, scale

    def power_w(self) -> float:
        decode, prefill_w, scale = self._dynamic_w()
        prefilling = sum(1 for seq in self.sequences if seq.prefilling)
        return self.base.idle_w + scale * (sum(decode.values()) + prefill_w * prefilling)

    def advance(self, now: float) -> None:
        dt = now - self.last
        if dt <= 0:
            return
        self.last = now
        count = self.base.gpu_count
        decode, prefill_w, scale = self._dynamic_w()
        self.energy_mj += self.power_w() * dt * MJ_PER_J  # one GPU's counter (they all draw the same)
        if not self.sequences:
            return
        idle_share_j = self.base.idle_w * count * dt / len(self.sequences)
        per_model: dict[str, int] = {}
        for seq in self.sequences:
            per_model[seq.model] = per_model.get(seq.model, 0) + 1
        for seq in self.sequences:
            seq.energy_j += idle_share_j + scale * decode[seq.model] * count * dt / per_model[seq.model]
            if seq.prefilling:
                seq.energy_j += scale * prefill_w * count * dt

    def add(self, seq: Sequence) -> None:
        self.advance(time.monotonic())
        seq.started_s = self.last
        self.sequences.append(seq)

    def prefill_done(self, seq: Sequence) -> None:
        self.advance(time.monotonic())
        seq.prefilling = False

    def remove(self, seq: Sequence) -> None:
        self.advance(time.monotonic())
        self.sequences = [s for s in self.sequences if s is not seq]


class SimCluster:
    def __init__(self, settings: SimClusterSettings, time_scale: float) -> None:
        self.settings = settings
        self.time_scale = time_scale
        # Each model runs on its own profile (size looked up from its name unless active_params_b is set).
        self.profiles = {
            name: model.profile_for(
                name, settings.gpu_type, settings.gpu_count, active_params_b=settings.active_params_b
            )
            for name in settings.models
        }
        self.profile = self.profiles[settings.models[0]]
        self.meter = PowerMeter(self.profiles)
        self.running = 0
        self.waiting = 0
        self.prompt_tokens_total = 0
        self.generation_tokens_total = 0
        self.prefix_queries_total = 0
        self.prefix_hits_total = 0
        self.faults = Faults()
        self.completed: deque[Completed] = deque(maxlen=COMPLETED_KEPT)
        self._slots = asyncio.Semaphore(settings.max_num_seqs)
        self._prefix_blocks: OrderedDict[int, None] = OrderedDict()

    async def admit(self, name: str = "", prompt_tokens: int = 0) -> Sequence:
        """Wait for a batch slot (vLLM's waiting queue), then run the sequence."""
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        self.running += 1
        seq = Sequence(name if name in self.profiles else self.settings.models[0], prompt_tokens)
        self.meter.add(seq)
        return seq

    def release(self, seq: Sequence, completion_tokens: int = 0) -> None:
        self.running -= 1
        self.meter.remove(seq)
        self._slots.release()
        done = Completed(
            seq.model, seq.prompt_tokens, completion_tokens, seq.energy_j, seq.started_s, self.meter.last
        )
        self.completed.append(done)

    def _running_of(self, name: str) -> int:
        return sum(1 for seq in self.meter.sequences if seq.model == name)

    def ttft_s(self, prompt_tokens: int, cached_tokens: int, name: str = "") -> float:
        uncached = max(prompt_tokens - cached_tokens, 1)
        profile = self.profiles.get(name, self.profile)
        return model.ttft_s(profile, uncached, self._running_of(name)) * self.time_scale

    def prefill_s(self, prompt_tokens: int, cached_tokens: int, name: str = "") -> float:
        """The compute-bound prefill part of the time to first token."""
        profile = self.profiles.get(name, self.profile)
        return model.prefill_s(profile, max(prompt_tokens - cached_tokens, 1)) * self.time_scale

    def itl_s(self, name: str = "") -> float:
        profile = self.profiles.get(name, self.profile)
        return model.itl_s(profile, self._running_of(name)) * self.time_scale

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
