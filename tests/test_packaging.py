"""The wheel a user installs: licence, examples, dashboard and page assets inside, no unused trace columns."""

from __future__ import annotations

import csv
import gzip
import io
import json
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[zipfile.ZipFile, str]]:
    out = tmp_path_factory.mktemp("wheel")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(out),
         str(ROOT)],
        capture_output=True, text=True, timeout=300, cwd=out,
    )  # fmt: skip
    assert build.returncode == 0, build.stdout + build.stderr
    (path,) = out.glob("bauxite-*.whl")
    with zipfile.ZipFile(path) as archive:
        yield archive, build.stdout + build.stderr


def test_licence_is_in_the_repository_and_the_wheel(wheel: tuple[zipfile.ZipFile, str]) -> None:
    archive, log = wheel
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    names = archive.namelist()
    licence = next(n for n in names if n.endswith(".dist-info/licenses/LICENSE"))
    assert archive.read(licence).decode() == text
    metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: Apache-2.0" in metadata
    # The SPDX field replaces the table form whose deprecation warning setuptools repeats on every build.
    assert "License classifiers are deprecated" not in log and "project.license` as a TOML table" not in log


def test_examples_dashboards_and_page_assets_ship(wheel: tuple[zipfile.ZipFile, str]) -> None:
    archive, _ = wheel
    names = set(archive.namelist())
    for example in (ROOT / "examples").rglob("*"):
        if example.is_file():
            assert f"bauxite/examples/{example.relative_to(ROOT / 'examples').as_posix()}" in names, example
    assert json.loads(archive.read("bauxite/dashboards/bauxite-carbon.json"))["uid"] == "bauxite-carbon"
    for asset in ("dashboard.html", "dashboard.js", "dashboard.css", "uPlot.iife.min.js", "LICENSE.uPlot"):
        assert f"bauxite/telemetry/static/{asset}" in names, asset
    assert "MIT License" in archive.read("bauxite/telemetry/static/LICENSE.uPlot").decode()


def test_traces_carry_only_the_columns_read(wheel: tuple[zipfile.ZipFile, str]) -> None:
    archive, _ = wheel
    traces = [n for n in archive.namelist() if n.startswith("bauxite/data/traces/") and n.endswith(".csv.gz")]
    assert len(traces) >= 8
    for name in traces:
        text = gzip.decompress(archive.read(name)).decode()
        rows = list(csv.reader(io.StringIO(text)))
        assert rows[0] == ["timestamp", "avg_CI"], name
        assert len(rows) == 8761, name  # one row per hour of 2022
    total = sum(i.file_size for i in archive.infolist())
    trace_bytes = sum(archive.getinfo(n).file_size for n in traces)
    assert trace_bytes < 0.6 * total
