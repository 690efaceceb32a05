from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from harness import Harness, fleet_config


@pytest.fixture(scope="module")
def gateway() -> Iterator[Harness]:
    """Two zero-delay simulated clusters behind a gateway with anonymous access (shared per module)."""
    with Harness(fleet_config()) as harness:
        yield harness
