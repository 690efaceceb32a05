"""Seqlock slots shared between processes: whole payloads only, and a writer recovers a dead one's slot."""

from __future__ import annotations

import struct

import pytest

from bauxite.workers.slots import SeqlockSlots


def test_payloads_round_trip_with_a_growing_sequence() -> None:
    slots = SeqlockSlots(3, 64)
    assert slots.read(1) == (0, b"")
    slots.write(1, b"first")
    slots.write(1, b"second")
    assert slots.read(1) == (4, b"second")
    assert slots.read(0) == (0, b"")


def test_an_oversized_payload_is_refused() -> None:
    slots = SeqlockSlots(1, 32)
    with pytest.raises(ValueError, match="do not fit"):
        slots.write(0, bytes(slots.capacity + 1))


def test_a_slot_left_mid_write_is_unreadable_until_the_next_writer_finishes_it() -> None:
    slots = SeqlockSlots(1, 32)
    struct.pack_into("<QI", slots._mm, 0, 3, 0)  # a writer died between its two header stores
    assert slots.read(0) is None
    slots.write(0, b"ok")
    assert slots.read(0) == (6, b"ok")
