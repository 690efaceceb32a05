"""The telemetry buffer shared by worker processes: one anonymous shared mapping, one region per worker.

Layout: the 2 MiB mapping (``mmap(-1, …, MAP_SHARED | MAP_ANONYMOUS)``, created before the workers are
forked, so no file, no name and no disk) is cut into ``workers`` equal regions. Each region starts with one
128-byte header slot followed by fixed ``RECORD`` slots (the single-process layout from ``ring.py``)::

    header: head u64 | tail u64 | dropped u64 | in_flight u64 | padding
    slots:  RECORD × (region_bytes / 128 - 1)

Each region is a single-producer single-consumer queue: its worker is the only writer of ``head``,
``dropped``, ``in_flight`` and the slots; the draining process is the only writer of ``tail``. A writer
packs the record first and publishes it by advancing ``head`` afterwards; the reader reads ``head`` and only
the slots below it. On x86-64 stores become visible in program order, which is all this needs. While a
region's worker is dead, the supervisor takes its place as the writer (to record its lost requests as
errors) before forking the replacement, so there is never more than one writer per region.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import struct
from typing import Any

from ..telemetry.ring import CAPACITY_BYTES, RECORD, RECORD_SIZE, RawRecord

HEADER = struct.Struct("<4Q")  # head, tail, dropped, in_flight
HEAD, TAIL, DROPPED, IN_FLIGHT = (i * 8 for i in range(4))
_U64 = struct.Struct("<Q")


def lock_and_hide(mm: mmap.mmap, size: int, lock: bool) -> bool:
    """Keep the pages out of swap (where RLIMIT_MEMLOCK allows) and out of core dumps; True if locked."""
    if hasattr(mmap, "MADV_DONTDUMP"):
        mm.madvise(mmap.MADV_DONTDUMP)
    name = ctypes.util.find_library("c")
    if not lock or not name:
        return False
    try:
        libc = ctypes.CDLL(name, use_errno=True)
    except OSError:
        return False
    view = ctypes.c_char.from_buffer(mm)
    try:
        return int(libc.mlock(ctypes.addressof(view), ctypes.c_size_t(size))) == 0
    finally:
        del view  # release the buffer export, or the mmap could never be closed


class SharedRings:
    """The mapping and its regions. Create before forking; every process then uses the same pages."""

    def __init__(self, workers: int, capacity_bytes: int = CAPACITY_BYTES, *, lock_memory: bool = True):
        if workers < 1:
            raise ValueError("at least one worker")
        region_bytes = (capacity_bytes // workers) // RECORD_SIZE * RECORD_SIZE
        if region_bytes < 2 * RECORD_SIZE:
            raise ValueError(f"{capacity_bytes} bytes cannot hold a header and a record per worker")
        flags = mmap.MAP_SHARED | getattr(mmap, "MAP_ANONYMOUS", 0x20)
        self._mm = mmap.mmap(-1, capacity_bytes, flags=flags, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        self.capacity_bytes = capacity_bytes
        self.region_bytes = region_bytes
        self.regions = [Region(self._mm, i * region_bytes, region_bytes) for i in range(workers)]
        self.locked = lock_and_hide(self._mm, capacity_bytes, lock_memory)

    def reader(self) -> SharedReader:
        return SharedReader(self)

    @property
    def closed(self) -> bool:
        return self._mm.closed


class Region:
    """One worker's queue inside the mapping. ``append`` is the writer's side, ``take`` the reader's."""

    def __init__(self, mm: mmap.mmap, offset: int, size: int) -> None:
        self._mm = mm
        self.offset = offset
        self.base = offset + RECORD_SIZE
        self.slots = size // RECORD_SIZE - 1

    def _get(self, field: int) -> int:
        return int(_U64.unpack_from(self._mm, self.offset + field)[0])

    def _set(self, field: int, value: int) -> None:
        _U64.pack_into(self._mm, self.offset + field, value)

    @property
    def head(self) -> int:
        return self._get(HEAD)

    @property
    def tail(self) -> int:
        return self._get(TAIL)

    @property
    def dropped(self) -> int:
        return self._get(DROPPED)

    def add_dropped(self, count: int = 1) -> None:
        self._set(DROPPED, self._get(DROPPED) + count)

    @property
    def in_flight(self) -> int:
        return self._get(IN_FLIGHT)

    def set_in_flight(self, value: int) -> None:
        self._set(IN_FLIGHT, max(value, 0))

    def append(self, *fields: Any) -> bool:
        head = self._get(HEAD)
        if head - self._get(TAIL) >= self.slots or self._mm.closed:
            self.add_dropped()
            return False
        RECORD.pack_into(self._mm, self.base + (head % self.slots) * RECORD_SIZE, *fields)
        self._set(HEAD, head + 1)  # publish only after the record is in place
        return True

    def take(self) -> list[RawRecord]:
        """Every published record not taken yet, oldest first; advances ``tail`` past them."""
        tail, head = self._get(TAIL), self._get(HEAD)
        mm, base, slots = self._mm, self.base, self.slots
        out = [RECORD.unpack_from(mm, base + (seq % slots) * RECORD_SIZE) for seq in range(tail, head)]
        self._set(TAIL, head)
        return out

    def reset(self) -> None:
        """Zero the header and slots (only with no live writer and nothing left to drain)."""
        self._mm[self.offset : self.offset + (self.slots + 1) * RECORD_SIZE] = bytes(
            (self.slots + 1) * RECORD_SIZE
        )


class RegionWriter:
    """A worker's view: the ring interface ``Telemetry`` writes to. It never drains (the hub does)."""

    def __init__(self, shared: SharedRings, index: int) -> None:
        self._shared = shared
        self._region = shared.regions[index]
        self.capacity_bytes = (self._region.slots + 1) * RECORD_SIZE
        self.slots = self._region.slots
        self.locked = shared.locked
        self.high_water = 0

    def append(self, *fields: Any) -> bool:
        return self._region.append(*fields)

    def drain(self) -> list[RawRecord]:
        return []

    @property
    def dropped(self) -> int:
        return self._region.dropped

    @dropped.setter
    def dropped(self, value: int) -> None:
        self._region.add_dropped(value - self._region.dropped)

    @property
    def used(self) -> int:
        return self._region.head - self._region.tail

    @property
    def used_bytes(self) -> int:
        return self.used * RECORD_SIZE

    @property
    def closed(self) -> bool:
        return self._shared.closed

    def close(self) -> None:
        """Nothing to free here: the mapping outlives this worker, and the hub still drains its records."""


class SharedReader:
    """The draining process's view: drains every region; gauges cover the whole mapping."""

    def __init__(self, shared: SharedRings) -> None:
        self._shared = shared
        self.capacity_bytes = shared.capacity_bytes
        self.slots = sum(r.slots for r in shared.regions)
        self.locked = shared.locked
        self.high_water = 0
        self._own_dropped = 0  # submits made in this process (none in normal operation)

    def append(self, *fields: Any) -> bool:
        self._own_dropped += 1  # the hub serves no requests; a record here has no writer region
        return False

    def drain(self) -> list[RawRecord]:
        used = sum(r.head - r.tail for r in self._shared.regions)
        self.high_water = max(self.high_water, used)
        out: list[RawRecord] = []
        for region in self._shared.regions:
            out.extend(region.take())
        return out

    @property
    def dropped(self) -> int:
        return self._own_dropped + sum(r.dropped for r in self._shared.regions)

    @dropped.setter
    def dropped(self, value: int) -> None:
        self._own_dropped += value - self.dropped

    @property
    def used(self) -> int:
        return sum(r.head - r.tail for r in self._shared.regions)

    @property
    def used_bytes(self) -> int:
        return self.used * RECORD_SIZE

    @property
    def closed(self) -> bool:
        return self._shared.closed

    def close(self) -> None:
        """The supervisor owns the mapping; the hub leaves it for a restarted hub to drain."""
