"""Stopping background tasks: cancelled and awaited, None skipped, a real failure while stopping surfaces."""

from __future__ import annotations

import asyncio

import pytest

from bauxite.tasks import cancel, cancel_all


async def _forever() -> None:
    await asyncio.sleep(3600)


async def _fails_on_cancel() -> None:
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        raise RuntimeError("cleanup failed") from None


def test_cancel_stops_every_task_and_skips_none() -> None:
    async def main() -> list[bool]:
        tasks = [asyncio.create_task(_forever()) for _ in range(3)]
        await asyncio.sleep(0)
        await cancel(tasks[0], None)
        await cancel_all(tasks[1:])
        return [t.cancelled() for t in tasks]

    assert asyncio.run(main()) == [True, True, True]


def test_an_error_raised_while_stopping_is_not_swallowed() -> None:
    async def main() -> None:
        task = asyncio.create_task(_fails_on_cancel())
        await asyncio.sleep(0)
        await cancel(task)

    with pytest.raises(RuntimeError, match="cleanup failed"):
        asyncio.run(main())
