"""``bauxite init``: copy the shipped examples and dashboard out of the installed package into a folder.

A user who installed the wheel has no repository checkout; this gives them the same starting files:
``enterprise.yaml`` (a production-shaped config to edit), ``demo.yaml`` (the offline demo, with its
``fleet:`` section), ``simulate.yaml``, the Prometheus scrape configs, Grafana provisioning files and the
Grafana dashboard ``dashboards/bauxite-carbon.json``.
"""

from __future__ import annotations

from collections.abc import Iterator
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path, PurePosixPath

# Package folder (under ``bauxite/``) -> folder in the destination ("" = the destination itself).
TREES = {"examples": "", "dashboards": "dashboards"}
SINGLE_FILES = {"data/demo.yaml": "demo.yaml"}


def _walk(node: Traversable, relative: PurePosixPath) -> Iterator[tuple[PurePosixPath, Traversable]]:
    for child in sorted(node.iterdir(), key=lambda c: c.name):
        if child.name.startswith((".", "__")):
            continue
        if child.is_dir():
            yield from _walk(child, relative / child.name)
        else:
            yield relative / child.name, child


def starter_files() -> list[tuple[PurePosixPath, Traversable]]:
    """(path relative to the destination, packaged file) for every file ``bauxite init`` writes."""
    root = resources.files("bauxite")
    files = [
        (PurePosixPath(dest) / rel, node)
        for tree, dest in TREES.items()
        for rel, node in _walk(root.joinpath(tree), PurePosixPath())
    ]
    files.extend((PurePosixPath(dest), root.joinpath(src)) for src, dest in SINGLE_FILES.items())
    return files


def write_starter(directory: Path, *, force: bool = False) -> list[Path]:
    """Write the starter files under ``directory``; returns their paths.

    Raises ``FileExistsError`` naming every file that already exists (nothing is written then) unless
    ``force``; ``OSError`` when the folder cannot be written.
    """
    files = [(directory / Path(rel), node) for rel, node in starter_files()]
    existing = [str(path) for path, _ in files if path.exists()]
    if existing and not force:
        raise FileExistsError("already exist (use --force to overwrite): " + ", ".join(existing))
    for path, node in files:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(node.read_bytes())
    return [path for path, _ in files]
