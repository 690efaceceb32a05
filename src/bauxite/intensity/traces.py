"""Hourly grid-intensity traces: the shipped EIA-930 2022 series per balancing authority, or a user CSV.

Used by the ``trace`` intensity provider (demo replay) and by the routing simulator. A trace is an
hourly series on a regular grid; hours missing from the file are filled by linear interpolation
between their neighbours, so ``at()`` always answers.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

HOUR_S = 3600.0

# Balancing-authority codes with a shipped trace (EIA-930, 2022, hourly, UTC period start).
SHIPPED_TRACES = ("AZPS", "BPAT", "CISO", "ERCO", "MISO", "NYIS", "PJM", "SOCO")

# Column names accepted for the value: the shipped files use avg_CI, user files g_per_kwh.
_VALUE_COLUMNS = ("g_per_kwh", "avg_CI", "gco2_per_kwh")


class TraceError(ValueError):
    """A trace could not be found or read."""


@dataclass(frozen=True, slots=True)
class Trace:
    """An hourly intensity series starting at ``start_s`` (unix seconds, UTC)."""

    name: str
    start_s: float
    values_g_per_kwh: list[float]
    step_s: float = HOUR_S

    @property
    def end_s(self) -> float:
        """Unix seconds just after the last hour (exclusive)."""
        return self.start_s + self.step_s * len(self.values_g_per_kwh)

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    def at(self, unix_s: float) -> float:
        """The hourly value in force at ``unix_s``; clamps to the first/last hour outside the series."""
        index = math.floor((unix_s - self.start_s) / self.step_s)
        index = min(max(index, 0), len(self.values_g_per_kwh) - 1)
        return self.values_g_per_kwh[index]

    def mean_g_per_kwh(self) -> float:
        return sum(self.values_g_per_kwh) / len(self.values_g_per_kwh)


def load_trace(source: str) -> Trace:
    """Load a shipped trace by balancing-authority code (``"PJM"``) or a CSV file by path.

    CSV columns: ``timestamp`` (ISO 8601, UTC if no offset, or unix seconds) and one of ``g_per_kwh`` or
    ``avg_CI``. Files may be gzip-compressed (``.gz``). Raises ``TraceError`` with a readable message.
    """
    code = source.strip().upper()
    if code in SHIPPED_TRACES:
        name = f"{code}_2022_hourly_eia930.csv.gz"
        data = resources.files("bauxite").joinpath("data", "traces", name).read_bytes()
        return parse_trace_csv(gzip.decompress(data).decode("utf-8"), code)
    path = Path(source)
    if not path.is_file():
        known = ", ".join(SHIPPED_TRACES)
        raise TraceError(f"trace {source!r} is neither a shipped trace ({known}) nor a readable CSV file")
    try:
        raw = path.read_bytes()
        text = (gzip.decompress(raw) if path.suffix == ".gz" else raw).decode("utf-8")
    except (OSError, UnicodeDecodeError, gzip.BadGzipFile) as exc:
        raise TraceError(f"cannot read trace {source!r}: {exc}") from None
    return parse_trace_csv(text, path.stem)


def parse_trace_csv(text: str, name: str) -> Trace:
    """Parse CSV text into an hourly ``Trace``, filling missing hours."""
    reader = csv.DictReader(io.StringIO(text))
    fields = [f.strip() for f in reader.fieldnames or []]
    value_column = next((c for c in _VALUE_COLUMNS if c in fields), None)
    if "timestamp" not in fields or value_column is None:
        raise TraceError(f"trace {name!r}: expected columns 'timestamp' and 'g_per_kwh' (or 'avg_CI')")
    points: dict[int, float] = {}
    for line_no, row in enumerate(reader, start=2):
        row = {k.strip(): (v or "").strip() for k, v in row.items() if k}
        if not row.get("timestamp") or not row.get(value_column):
            continue  # a blank value is a missing hour: filled below
        try:
            hour = int(_parse_timestamp_s(row["timestamp"]) // HOUR_S)
            value = float(row[value_column])
        except ValueError as exc:
            raise TraceError(f"trace {name!r} line {line_no}: {exc}") from None
        if math.isfinite(value) and value >= 0:
            points[hour] = value
    if not points:
        raise TraceError(f"trace {name!r} has no usable rows")
    return Trace(name, min(points) * HOUR_S, _fill_gaps(points))


def _parse_timestamp_s(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _fill_gaps(points: dict[int, float]) -> list[float]:
    """Values for every hour from first to last; missing hours linearly interpolated."""
    first, last = min(points), max(points)
    values: list[float] = []
    previous_hour = first
    for hour in range(first, last + 1):
        if hour in points:
            values.append(points[hour])
            previous_hour = hour
            continue
        next_hour = next(h for h in range(hour + 1, last + 1) if h in points)
        left, right = points[previous_hour], points[next_hour]
        fraction = (hour - previous_hour) / (next_hour - previous_hour)
        values.append(left + (right - left) * fraction)
    return values
