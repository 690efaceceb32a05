"""Stopping background tasks: the one way every timer and poller of the gateway is shut down."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Any


async def cancel(*tasks: asyncio.Task[Any] | None) -> None:
    """Cancel ``tasks`` (None entries are skipped) and wait until each has finished; a task's own
    CancelledError is swallowed, any other exception it raised while stopping propagates."""
    await cancel_all(t for t in tasks if t is not None)


async def cancel_all(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """``cancel`` for a collection: every task is cancelled first, so they stop concurrently."""
    pending = list(tasks)
    for task in pending:
        task.cancel()
    for task in pending:
        with contextlib.suppress(asyncio.CancelledError):
            await task
