"""Fixed slots in an anonymous shared mapping, each written by one process and read by others without locks.

Created before the fork (no file, no name). Each slot is a header — a sequence number and the payload's
length — and the payload bytes. The writer makes the sequence odd, writes, then makes it even again with the
new length (+2 per write), so a reader that sees the same even sequence before and after copying the bytes
has a whole payload, never a half-written one. A writer that finds an odd sequence (its predecessor died
mid-write) starts from the next even one. The stores rely on x86-64's ordering of plain stores, as the
shared telemetry ring does.
"""

from __future__ import annotations

import mmap
import struct

_HEADER = struct.Struct("<QI")  # sequence, payload length
_RETRIES = 100  # reads of a slot while its writer is writing it, before giving up for now


class SeqlockSlots:
    """``slots`` slots of ``slot_bytes`` bytes each (header included)."""

    def __init__(self, slots: int, slot_bytes: int) -> None:
        self.slot_bytes = slot_bytes
        self.capacity = slot_bytes - _HEADER.size  # payload bytes a slot holds
        flags = mmap.MAP_SHARED | getattr(mmap, "MAP_ANONYMOUS", 0x20)
        size = max(slots * slot_bytes, mmap.PAGESIZE)
        self._mm = mmap.mmap(-1, size, flags=flags, prot=mmap.PROT_READ | mmap.PROT_WRITE)

    def write(self, slot: int, payload: bytes) -> None:
        """Store ``payload`` (at most ``capacity`` bytes; ValueError otherwise) in ``slot``."""
        if len(payload) > self.capacity:
            raise ValueError(f"{len(payload)} bytes do not fit a {self.capacity}-byte slot")
        offset = slot * self.slot_bytes
        seq = _HEADER.unpack_from(self._mm, offset)[0]
        seq += seq % 2  # odd here only if a previous writer died mid-write
        _HEADER.pack_into(self._mm, offset, seq + 1, 0)  # odd: being written
        self._mm[offset + _HEADER.size : offset + _HEADER.size + len(payload)] = payload
        _HEADER.pack_into(self._mm, offset, seq + 2, len(payload))

    def read(self, slot: int) -> tuple[int, bytes] | None:
        """(sequence, payload) of ``slot``: sequence 0 and no bytes before its first write; None when the
        writer was writing it on every try."""
        offset = slot * self.slot_bytes
        for _ in range(_RETRIES):
            seq, length = _HEADER.unpack_from(self._mm, offset)
            if seq % 2:
                continue
            payload = bytes(self._mm[offset + _HEADER.size : offset + _HEADER.size + length])
            if _HEADER.unpack_from(self._mm, offset)[0] == seq:
                return seq, payload
        return None
