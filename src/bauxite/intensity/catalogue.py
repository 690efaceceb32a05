"""Region catalogue: cloud region → grid zone, coordinates, static intensity and trace balancing authority.

Built once from package data (``bauxite/data/regions``) when a service or CLI starts; lookups are plain
dictionary reads afterwards. Sources and licences: ``data/regions/PROVENANCE.md``.
"""

from __future__ import annotations

import csv
import difflib
import io
import re
from dataclasses import dataclass, replace
from importlib import resources

from .base import Basis, Location

CLOUDS = ("aws", "gcp", "azure")
# Bare names are looked up in this order; the only clash in the shipped tables is "asia" (gcp and azure).
_PREFIX_ALIASES = {
    "aws": "aws",
    "amazon": "aws",
    "gcp": "gcp",
    "google": "gcp",
    "google_cloud": "gcp",
    "azure": "azure",
    "microsoft": "azure",
}
GOOGLE_YEARS = (2024, 2023, 2022, 2021, 2020, 2019)  # newest first: the newest year with a region wins


class UnknownRegionError(ValueError):
    """A region that is not in the catalogue (message lists the closest known names)."""


@dataclass(frozen=True, slots=True)
class RegionEntry:
    """Everything the catalogue knows about one cloud region."""

    cloud: str  # aws | gcp | azure
    region: str  # the cloud's own name, e.g. "us-east-1"
    zone: str | None  # Electricity Maps zone, None when unmapped
    g_per_kwh: float  # static yearly value
    reference: str  # source of the static value
    year: int | None
    basis: Basis
    cfe_share: float | None = None  # Google carbon-free-energy share, gcp only
    latitude: float | None = None
    longitude: float | None = None
    balancing_authority: str | None = None  # shipped trace that fits this region, if any

    @property
    def key(self) -> str:
        return f"{self.cloud}:{self.region}"


def _read_csv(name: str) -> list[dict[str, str]]:
    text = resources.files("bauxite").joinpath("data", "regions", name).read_text(encoding="utf-8-sig")
    rows = []
    for row in csv.DictReader(io.StringIO(text)):
        clean = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
        if any(clean.values()):  # some upstream files carry blank lines
            rows.append(clean)
    return rows


def _year_in(text: str) -> int | None:
    match = re.search(r"(?:data year|for) (\d{4})", text)
    return int(match.group(1)) if match else None


def _google_entries() -> dict[str, RegionEntry]:
    entries: dict[str, RegionEntry] = {}
    for year in GOOGLE_YEARS:
        for row in _read_csv(f"google_region_carbon_{year}.csv"):
            region = row["Google Cloud Region"]
            value_column = next(k for k in row if "carbon intensity" in k.lower())
            if region in entries or not row[value_column]:
                continue
            cfe = row.get("Google CFE") or ""
            # Google calls 2019-2020 figures lifecycle; from 2021 they are operational (direct) grid averages.
            basis: Basis = "lifecycle" if "lifecycle" in value_column.lower() else "direct"
            entries[region] = RegionEntry(
                "gcp",
                region,
                None,
                float(row[value_column]),
                f"Google region-carbon-info {year}",
                year,
                basis,
                cfe_share=float(cfe) if cfe else None,
            )
    return entries


def _ccf_entries(cloud: str) -> dict[str, RegionEntry]:
    entries: dict[str, RegionEntry] = {}
    for row in _read_csv(f"ccf_{cloud}_region_emission_factors.csv"):
        region = row["region"]
        if region.lower() == "unknown" or region in entries:
            continue  # gcp lists a cfe-adjusted duplicate after the grid row: keep the grid (location) value
        if cloud == "gcp" and row.get("basis") not in ("", "grid"):
            continue
        entries[region] = RegionEntry(
            cloud,
            region,
            None,
            float(row["gco2e_per_kwh"]),
            f"Cloud Carbon Footprint: {row['source']}",
            _year_in(row["source"]),
            "direct",
        )
    return entries


def _global_default() -> RegionEntry:
    for row in _read_csv("ccf_aws_region_emission_factors.csv"):
        if row["region"].lower() == "unknown":
            return RegionEntry(
                "aws",
                "unknown",
                None,
                float(row["gco2e_per_kwh"]),
                "Cloud Carbon Footprint: average of listed regions",
                None,
                "direct",
            )
    raise RuntimeError("the shipped AWS table lost its 'Unknown' row")


class Catalogue:
    """All catalogued regions; lookups accept bare names (``us-east-1``) or prefixed (``aws:us-east-1``)."""

    def __init__(
        self, entries: dict[str, RegionEntry], default: RegionEntry, zone_ba: dict[str, str] | None = None
    ) -> None:
        self._entries = entries  # keyed "cloud:region"
        self.default = default
        self._zone_ba = dict(zone_ba or {})
        self._bare: dict[str, RegionEntry] = {}
        for cloud in CLOUDS:
            for entry in entries.values():
                if entry.cloud == cloud:
                    self._bare.setdefault(entry.region.lower(), entry)
        self._zone_values: dict[str, RegionEntry] = {}
        for entry in entries.values():
            if entry.zone:
                self._zone_values.setdefault(entry.zone, entry)

    @classmethod
    def load(cls) -> Catalogue:
        """Read the shipped tables (a few hundred rows; called once at start-up, never per request)."""
        entries = {e.key: e for e in _ccf_entries("gcp").values()}
        entries.update({e.key: e for e in _google_entries().values()})  # Google's own newer figures win
        for cloud in ("aws", "azure"):
            entries.update({e.key: e for e in _ccf_entries(cloud).values()})
        _apply_zones(entries)
        _apply_coordinates(entries)
        zone_ba = _apply_traces(entries)
        return cls(entries, _global_default(), zone_ba)

    def find(self, name: str) -> RegionEntry | None:
        """The entry for a bare or prefixed region name, or None."""
        text = name.strip()
        for separator in (":", "/"):
            prefix, found, rest = text.partition(separator)
            if found and prefix.lower() in _PREFIX_ALIASES:
                return self._entries.get(f"{_PREFIX_ALIASES[prefix.lower()]}:{rest.strip()}")
        entry = self._bare.get(text.lower())
        return entry

    def validate_region(self, region: str, zone: str | None = None) -> RegionEntry | None:
        """The entry for ``region``; raises ``UnknownRegionError`` naming close matches.

        A region outside the catalogue is accepted only when the cluster names its ``zone`` directly
        (then None is returned and the zone alone drives every provider).
        """
        entry = self.find(region)
        if entry is not None or zone:
            return entry
        names = sorted({e.region for e in self._entries.values()} | set(self._entries))
        close = difflib.get_close_matches(region.strip().lower(), names, n=5, cutoff=0.6)
        hint = f"; closest known: {', '.join(close)}" if close else ""
        raise UnknownRegionError(
            f"unknown region {region!r}{hint} "
            "(or give the cluster a grid 'zone' such as 'DE' or 'US-MIDA-PJM')"
        )

    def entries(self) -> list[RegionEntry]:
        return list(self._entries.values())

    def for_zone(self, zone: str) -> RegionEntry | None:
        """A catalogued region in ``zone`` (for a static value when a cluster names only a zone)."""
        return self._zone_values.get(zone)

    def balancing_authority(self, entry: RegionEntry | None, zone: str | None) -> str | None:
        """The shipped trace for a region: its own mapping first, then its zone's."""
        if entry is not None and entry.balancing_authority:
            return entry.balancing_authority
        return self._zone_ba.get(zone or (entry.zone if entry else None) or "")


def _apply_zones(entries: dict[str, RegionEntry]) -> None:
    for name in ("ccf_region_to_electricitymaps_zone.csv", "zone_corrections.csv"):
        for row in _read_csv(name):
            key = f"{row['provider']}:{row['region']}"
            if key in entries:
                entries[key] = replace(entries[key], zone=row["electricitymaps_zone"] or None)


def _apply_traces(entries: dict[str, RegionEntry]) -> dict[str, str]:
    """Set each region's shipped trace; return the zone → trace mapping for everything else."""
    zone_ba: dict[str, str] = {}
    for row in _read_csv("trace_balancing_authorities.csv"):
        key = f"{row['provider']}:{row['region']}"
        if row["region"] and key in entries:
            entries[key] = replace(entries[key], balancing_authority=row["balancing_authority"])
        elif row["electricitymaps_zone"]:
            zone_ba[row["electricitymaps_zone"]] = row["balancing_authority"]
    return zone_ba


def _apply_coordinates(entries: dict[str, RegionEntry]) -> None:
    azure = _read_csv("casdk_azure_region_locations.csv")
    rows = [{"provider": "azure", "region": r["azure_region"], **r} for r in azure]
    for row in rows + _read_csv("region_coordinates.csv"):
        key = f"{row['provider']}:{row['region']}"
        if key in entries:
            entries[key] = replace(
                entries[key], latitude=float(row["latitude"]), longitude=float(row["longitude"])
            )


def validate_region(
    region: str, zone: str | None = None, catalogue: Catalogue | None = None
) -> RegionEntry | None:
    """Config-time check for a cluster's region (see ``Catalogue.validate_region``)."""
    return (catalogue or Catalogue.load()).validate_region(region, zone)


def locate(catalogue: Catalogue, region: str, zone: str | None = None) -> Location:
    """Combine a configured region (and optional zone override) with what the catalogue knows."""
    entry = catalogue.find(region)
    grid_zone = zone or (entry.zone if entry else None)
    return Location(
        region=region,
        zone=grid_zone or region,
        zone_known=grid_zone is not None,
        cloud=entry.cloud if entry else None,
        cloud_region=entry.region if entry else None,
        latitude=entry.latitude if entry else None,
        longitude=entry.longitude if entry else None,
        balancing_authority=catalogue.balancing_authority(entry, grid_zone),
    )
