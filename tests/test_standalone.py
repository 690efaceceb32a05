"""The repository stands alone: no doc, comment or string points at documents that are not in it."""

from __future__ import annotations

import re
import subprocess

from cli_run import ROOT

# Phrases that only make sense next to a document outside the repository (a design brief, its sections);
# published standards cited by section (RFC 9110 §10.2.3) are fine.
OUTSIDE = re.compile(
    r"\bthe brief\b|\bbrief's\b|\bDESIGN(?:\.md)?\s*§|\bshared/(?:DESIGN|data|fixtures)\b", re.I
)
TEXT_SUFFIXES = (
    ".py",
    ".md",
    ".yaml",
    ".yml",
    ".toml",
    ".json",
    ".js",
    ".html",
    ".css",
    ".txt",
    ".sh",
    ".cfg",
)


def test_no_references_to_outside_documents() -> None:
    files = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    offenders = []
    for name in files:
        path = ROOT / name
        if not name.endswith(TEXT_SUFFIXES) or path.is_symlink() or name.endswith("test_standalone.py"):
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if OUTSIDE.search(line):
                offenders.append(f"{name}:{number}: {line.strip()}")
    assert offenders == []
