"""The record layout is declared once: it covers ``RequestRecord`` field for field, and round-trips."""

from __future__ import annotations

import dataclasses
import typing

from bauxite.records import (
    ENUM,
    F64,
    FLAG,
    FLAG_BIT,
    INDEX,
    LABEL,
    LAYOUT,
    PACKED,
    RECORD,
    RECORD_SIZE,
    U16,
    U32,
    RequestRecord,
    enum_value,
)  # fmt: skip
from bauxite.telemetry.codec import packer, reference_packer
from bauxite.telemetry.labels import LabelTables
from bauxite.telemetry.ring import CAPACITY_BYTES
from record_factory import make_record
from test_telemetry import make_settings

_KINDS = {str: (LABEL, ENUM), int: (U16, U32), float: (F64,), bool: (FLAG,)}


def test_layout_matches_request_record_field_for_field() -> None:
    fields = {f.name: f for f in dataclasses.fields(RequestRecord)}
    assert [c.name for c in LAYOUT] == [c.name for c in LAYOUT if c.name in fields]
    assert {c.name for c in LAYOUT} == set(fields)  # every field, nothing more
    hints = typing.get_type_hints(RequestRecord)
    for column in LAYOUT:
        hint = hints[column.name]
        base = str if typing.get_origin(hint) is typing.Literal else hint
        assert column.kind in _KINDS[base], (column.name, column.kind, hint)
        if column.kind == ENUM:  # an enum column lists exactly the Literal's values
            assert set(column.values) == set(typing.get_args(hint)), column.name


def test_binary_format_is_derived_and_fits_the_buffer() -> None:
    assert RECORD.size == RECORD_SIZE and CAPACITY_BYTES % RECORD_SIZE == 0
    assert RECORD_SIZE & (RECORD_SIZE - 1) == 0  # a power of two
    assert len(INDEX) == len(PACKED) + 1 and set(FLAG_BIT) == {c.name for c in LAYOUT if c.kind == FLAG}


def test_a_record_round_trips_through_the_binary_form() -> None:
    settings = make_settings()
    tables = LabelTables.from_settings(settings)
    record = make_record(energy_measured=True, sizes_default=True, scope="scope3_cat1",
                         intensity_signal="marginal", intensity_basis="direct")  # fmt: skip
    raw = RECORD.unpack(RECORD.pack(*packer(tables)(record)))
    assert tables.models.value(raw[INDEX["model"]]) == record.model
    assert tables.clusters.value(raw[INDEX["cluster"]]) == record.cluster
    assert enum_value("scope", raw[INDEX["scope"]]) == "scope3_cat1"
    assert enum_value("intensity_basis", raw[INDEX["intensity_basis"]]) == "direct"
    assert raw[INDEX["flags"]] == FLAG_BIT["energy_measured"] | FLAG_BIT["sizes_default"]
    for column in PACKED:
        if column.kind == F64 or column.kind in (U16, U32):
            assert raw[INDEX[column.name]] == getattr(record, column.name), column.name


def test_the_fast_packer_gives_the_field_by_field_packers_fields() -> None:
    tables = LabelTables.from_settings(make_settings())
    fast, reference = packer(tables), reference_packer(tables)
    nan, inf = float("nan"), float("inf")
    variants: list[dict[str, typing.Any]] = [
        {},
        {"energy_measured": True, "sizes_default": True, "market_factor": True, "usage_estimated": True},
        {"usage_estimated": True, "status": "cancelled", "endpoint": "messages", "scope": "scope3_cat1"},
        {"model": "never-configured", "cluster": "", "region": "", "route_reason": "", "department": "x y"},
        {"intensity_signal": "marginal", "intensity_basis": "direct", "intensity_source": "electricity_maps"},
        {"http_status": 70_000, "prompt_tokens": -3, "completion_tokens": 2**40, "cached_tokens": 5},
        {"energy_j": nan, "carbon_g": 2.5},
        {"ttft_s": -1.0, "duration_s": inf, "avoided_green_net_g": -0.25},
        {"gpu_j": inf, "host_j": -inf},  # their sum is NaN, though neither is
        {"energy_j": 7, "pue": 1, "finished_at": 0},  # integers in float columns
    ]
    for overrides in variants:
        record = make_record(**overrides)
        got, want = fast(record), reference(record)
        assert got == want or _same_with_nans(got, want), overrides
        assert RECORD.pack(*got) == RECORD.pack(*want), overrides


def _same_with_nans(a: tuple[typing.Any, ...], b: tuple[typing.Any, ...]) -> bool:
    return len(a) == len(b) and all(x == y or (x != x and y != y) for x, y in zip(a, b, strict=True))
