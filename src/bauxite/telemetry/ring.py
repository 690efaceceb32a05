"""The volatile telemetry buffer: 2 MiB of anonymous, RAM-locked memory holding fixed-size binary records.

Concurrency model: the gateway runs one asyncio event loop, and both ``append`` (from request accounting)
and ``drain`` (from the scrape handler and the drain timer) run on that loop's thread. A single writer and a
single reader that never run at the same time need no locks, so an append is one bounds check and one
``pack_into``: it cannot block. When the buffer is full the record is counted in ``dropped`` and
discarded — never silently.

Memory: ``mmap(-1, …, MAP_PRIVATE | MAP_ANONYMOUS)`` has no backing file (not even the ``/dev/zero (deleted)``
shmem object a shared anonymous map shows in ``/proc/self/maps``), ``mlock`` keeps it out of swap where the
RLIMIT_MEMLOCK allows, and ``MADV_DONTDUMP`` keeps it out of core dumps.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
from typing import Any, Protocol

from ..records import RECORD, RECORD_SIZE, RawRecord

CAPACITY_BYTES = 2_097_152
# The slot layout is ``records.LAYOUT`` (label ids, enums, a flags byte, token counts, float64 measurements),
# padded to a power of two so the 2 MiB buffer holds whole slots.
assert CAPACITY_BYTES % RECORD_SIZE == 0
__all__ = ["CAPACITY_BYTES", "RECORD", "RECORD_SIZE", "RawRecord", "RingBuffer"]


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name, use_errno=True) if name else None
    except OSError:
        return None


class RingBuffer:
    """Fixed-capacity FIFO of ``RECORD`` slots in anonymous memory; one thread only (see module doc)."""

    def __init__(self, capacity_bytes: int = CAPACITY_BYTES, *, lock_memory: bool = True) -> None:
        if capacity_bytes % RECORD_SIZE or capacity_bytes < RECORD_SIZE:
            raise ValueError(f"capacity must be a positive multiple of {RECORD_SIZE} bytes")
        flags = mmap.MAP_PRIVATE | getattr(mmap, "MAP_ANONYMOUS", 0x20)
        self._mm = mmap.mmap(-1, capacity_bytes, flags=flags, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        self.capacity_bytes = capacity_bytes
        self.slots = capacity_bytes // RECORD_SIZE
        self._head = 0  # records ever appended (the writer's cursor)
        self._tail = 0  # records ever drained (the reader's cursor)
        self.dropped = 0
        self.high_water = 0  # most slots ever occupied at once
        self.address = self._address()
        self.locked = bool(lock_memory) and self._mlock()
        if hasattr(mmap, "MADV_DONTDUMP"):
            self._mm.madvise(mmap.MADV_DONTDUMP)

    def _address(self) -> int:
        view = ctypes.c_char.from_buffer(self._mm)
        try:
            return ctypes.addressof(view)
        finally:
            del view  # release the buffer export, or the mmap could never be closed

    def _mlock(self) -> bool:
        libc = _libc()
        if libc is None:
            return False
        return int(libc.mlock(ctypes.c_void_p(self.address), ctypes.c_size_t(self.capacity_bytes))) == 0

    @property
    def used(self) -> int:
        return self._head - self._tail

    @property
    def used_bytes(self) -> int:
        return self.used * RECORD_SIZE

    @property
    def appended(self) -> int:
        return self._head

    @property
    def closed(self) -> bool:
        return self._mm.closed

    def append(self, *fields: Any) -> bool:
        """Store one record given as ``RECORD`` fields; False (and counted) when full or closed."""
        used = self._head - self._tail
        if used >= self.slots or self._mm.closed:
            self.dropped += 1
            return False
        RECORD.pack_into(self._mm, (self._head % self.slots) * RECORD_SIZE, *fields)
        self._head += 1
        if used >= self.high_water:
            self.high_water = used + 1
        return True

    def drain(self) -> list[RawRecord]:
        """Remove and return every stored record, oldest first."""
        count = self._head - self._tail
        if count == 0 or self._mm.closed:
            return []
        start = self._tail % self.slots
        first = min(count, self.slots - start)
        with memoryview(self._mm) as view:
            out = list(RECORD.iter_unpack(view[start * RECORD_SIZE : (start + first) * RECORD_SIZE]))
            if first < count:
                out.extend(RECORD.iter_unpack(view[: (count - first) * RECORD_SIZE]))
        self._tail += count
        return out

    def raw_bytes(self) -> bytes:
        """A copy of the whole buffer, for tests that check what it holds."""
        return bytes(self._mm)

    def scrub(self) -> None:
        """Zero every byte."""
        self._mm[:] = bytes(self.capacity_bytes)

    def close(self) -> None:
        if self._mm.closed:
            return
        self.scrub()  # nothing lingers in the freed pages
        if self.locked:
            libc = _libc()
            if libc is not None:
                libc.munlock(ctypes.c_void_p(self.address), ctypes.c_size_t(self.capacity_bytes))
            self.locked = False
        self._mm.close()


class Ring(Protocol):
    """What ``Telemetry`` and the collector use of a buffer: ``RingBuffer`` in one process, the shared
    regions of ``bauxite.workers.shm`` with several workers."""

    capacity_bytes: int
    slots: int
    high_water: int
    locked: bool
    dropped: int

    @property
    def used(self) -> int: ...

    @property
    def used_bytes(self) -> int: ...

    @property
    def closed(self) -> bool: ...

    def append(self, *fields: Any) -> bool: ...

    def drain(self) -> list[RawRecord]: ...

    def close(self) -> None: ...
