"""``RequestRecord`` ⇄ ring fields, derived from ``records.LAYOUT`` (never spelled out a second time).

Packing interns each label through its table (closed tables fold unknown values into a fallback id), maps
enums to their index, folds the flags into one byte and clamps integers into their field's range.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from ..records import ENUM, F64, FLAG_BIT, LABEL, PACKED, U16, U32, RequestRecord
from .labels import NO_REASON, NONE, Interner, LabelTables

_TOP = {U16: 0xFFFF, U32: 0xFFFF_FFFF}
Packer = Callable[[RequestRecord], tuple[Any, ...]]


def _clamp(top: int) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        number = int(value)
        return number if 0 <= number <= top else (0 if number < 0 else top)

    return convert


def _float(value: Any) -> float:
    number = float(value)
    return number if not math.isnan(number) else 0.0


def _label(table: Interner, name: str) -> Callable[[Any], int]:
    if name == "route_reason":  # a record without a routing decision has no reason, not "other"
        return lambda value: table.id(value) if value else NO_REASON
    if name in ("region", "cluster"):  # never routed: the "none" value
        return lambda value: table.id(value or NONE)
    return table.id


def _enum(values: tuple[str, ...]) -> Callable[[Any], int]:
    index = {value: i for i, value in enumerate(values)}
    return lambda value: index.get(value, 0)


def packer(tables: LabelTables) -> Packer:
    """A function turning a record into the ring's field tuple, in ``PACKED`` order plus the flags byte."""
    steps: list[tuple[str, Callable[[Any], Any]]] = []
    for column in PACKED:
        if column.kind == LABEL:
            steps.append((column.name, _label(getattr(tables, column.table), column.name)))
        elif column.kind == ENUM:
            steps.append((column.name, _enum(column.values)))
        elif column.kind in _TOP:
            steps.append((column.name, _clamp(_TOP[column.kind])))
        elif column.kind == F64:
            steps.append((column.name, _float))
    flags = tuple(FLAG_BIT.items())

    def pack(record: RequestRecord) -> tuple[Any, ...]:
        fields = [convert(getattr(record, name)) for name, convert in steps]
        fields.append(sum(bit for name, bit in flags if getattr(record, name)))
        return tuple(fields)

    return pack
