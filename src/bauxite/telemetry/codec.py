"""``RequestRecord`` ⇄ ring fields, derived from ``records.LAYOUT`` (never spelled out a second time).

Packing interns each label through its table (closed tables fold unknown values into a fallback id), maps
enums to their index, folds the flags into one byte and clamps integers into their field's range.
"""

from __future__ import annotations

import math
import operator
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


def reference_packer(tables: LabelTables) -> Packer:
    """``packer`` written field by field: each column converted on its own (the definition the fast
    packer is tested against, and its fallback for a record the fast path does not take)."""
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


def packer(tables: LabelTables) -> Packer:
    """A function turning a record into the ring's field tuple, in ``PACKED`` order plus the flags byte.

    Every request's record goes through it, so it reads all fields in one ``attrgetter`` call and converts
    only the columns that need it: labels, enums and integers one by one, the float64 columns only when
    one of them is NaN (their sum says so in one pass). The result is ``reference_packer``'s, exactly."""
    reference = reference_packer(tables)
    get = operator.attrgetter(*(c.name for c in PACKED), *FLAG_BIT)
    converts: list[tuple[int, Callable[[Any], Any]]] = []
    floats: list[int] = []
    for i, column in enumerate(PACKED):
        if column.kind == LABEL:
            converts.append((i, _label(getattr(tables, column.table), column.name)))
        elif column.kind == ENUM:
            converts.append((i, _enum(column.values)))
        elif column.kind in _TOP:
            converts.append((i, _clamp(_TOP[column.kind])))
        elif column.kind == F64:
            floats.append(i)
    count = len(PACKED)
    bits = tuple(FLAG_BIT.values())

    def pack(record: RequestRecord) -> tuple[Any, ...]:
        values = get(record)
        fields = list(values[:count])
        for i, convert in converts:
            fields[i] = convert(fields[i])
        try:
            total = sum([fields[i] for i in floats])
        except TypeError:  # not a number somewhere: the per-field path converts or raises
            return reference(record)
        if total != total:  # a NaN (or inf − inf): the per-field path zeroes the NaNs
            return reference(record)
        flags = 0
        for bit, on in zip(bits, values[count:], strict=True):
            if on:
                flags += bit
        fields.append(flags)
        return tuple(fields)

    return pack
