"""``bauxite intensity``: print the current grid intensity per region (table or JSON)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any, TextIO

import orjson

from ..console import table_text
from ..settings import ConfigError, Settings, load_settings, settings_from_mapping
from .api import row_json
from .catalogue import Catalogue, UnknownRegionError
from .registry import PROVIDERS
from .service import IntensityService

_COLUMNS = ("region", "zone", "g/kWh", "source", "signal", "basis", "age")


def add_parser(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser(
        "intensity",
        help="show current grid carbon intensity per region",
        description="Current grid carbon intensity (gCO2eq/kWh) per region. Without --config and --provider "
        "the embedded static table answers, offline.",
    )
    parser.add_argument("--config", metavar="FILE", help="enterprise.yaml (provider, clusters, intensity:)")
    parser.add_argument("--provider", choices=sorted(PROVIDERS), help="override the configured provider")
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    parser.add_argument(
        "regions", nargs="*", metavar="REGION", help="regions (default: the configured clusters')"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    try:
        settings = load_settings(args.config) if args.config else settings_from_mapping({})
    except ConfigError as exc:
        print(exc, file=err)
        return 2
    provider = args.provider or (settings.enterprise.carbon_tracking.provider if args.config else "static")
    try:
        regions = _regions(args.regions, settings)
    except UnknownRegionError as exc:
        print(f"bauxite intensity: {exc}", file=err)
        return 2
    if not regions:
        print("bauxite intensity: name at least one REGION, or give --config with clusters", file=err)
        return 2
    service = IntensityService(provider, regions, settings.intensity)  # reads package data: before the loop
    rows = asyncio.run(_collect(service))
    if args.json:
        out.write(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        out.write(_table(rows))
    return 0


def _regions(names: list[str], settings: Settings) -> dict[str, str | None]:
    """Requested regions (validated against the catalogue), else the configured clusters' regions."""
    configured = {c.region: c.zone for c in settings.clusters}
    if not names:
        return configured
    catalogue = Catalogue.load()
    for name in names:
        catalogue.validate_region(name, configured.get(name))
    return {name: configured.get(name) for name in names}


async def _collect(service: IntensityService) -> list[dict[str, Any]]:
    try:
        await service.refresh_once()  # live providers answer once; failures fall back like in the gateway
        return [row_json(row) for row in service.snapshot()]
    finally:
        await service.stop()


def _table(rows: list[dict[str, Any]]) -> str:
    cells = [
        [
            row["region"],
            row["zone"],
            f"{row['gco2_per_kwh']:.1f}",
            row["provider"] + (" (fallback)" if row["stale"] else ""),
            row["signal"],
            row["basis"],
            f"{row['age_s']:.0f}s",
        ]
        for row in rows
    ]
    errors = [f"note: {row['region']}: {row['error']}" for row in rows if row.get("error")]
    return table_text(_COLUMNS, cells, numeric_from=len(_COLUMNS)) + "".join(e + "\n" for e in errors)
