from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from harness import Harness, fleet_config
from intensity_fakes import FakeProviders


@pytest.fixture(scope="module")
def gateway() -> Iterator[Harness]:
    """Two zero-delay simulated clusters behind a gateway with anonymous access (shared per module)."""
    with Harness(fleet_config()) as harness:
        yield harness


@pytest.fixture
async def fake() -> AsyncIterator[FakeProviders]:
    """Local fake servers speaking Electricity Maps', WattTime's and UK Carbon Intensity's wire formats."""
    server = FakeProviders()
    await server.start()
    yield server
    await server.close()
