"""Intensity fetched once per host under ``serve --workers N`` (when no ``state:`` store is configured).

Only the hub calls the intensity providers; it publishes every value it fetches into a small anonymous shared
mapping (created before the fork, no file), one slot per feed. A worker's refresh reads the feed's slot
instead of calling the provider: a value younger than the refresh interval is used (and the worker's next
refresh is scheduled from its age, so workers stay in step with the hub); otherwise the worker waits briefly
for the hub's next value, and reports a failed refresh (backing off as for a provider error) if none comes.

Each slot (``SeqlockSlots``) is written by the hub alone and guarded by a sequence counter, so a reader never
uses a half-written value.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable

import orjson

from ..intensity.base import Intensity, IntensityError
from ..state.base import Fetch, LocalState
from .slots import SeqlockSlots

SLOT_BYTES = 2048
SLOTS = 64
POLL_S = 0.05


class FeedBoard:
    def __init__(self) -> None:
        self._board = SeqlockSlots(SLOTS, SLOT_BYTES)
        self._slots: dict[str, int] = {}  # the writer's own index of feed -> slot

    def publish(self, feed: str, value: Intensity) -> bool:
        """Store ``value`` for ``feed`` (the hub only); False when it does not fit (then workers fetch)."""
        payload = orjson.dumps({"feed": feed, "value": dataclasses.asdict(value)})
        if len(payload) > self._board.capacity:
            return False
        slot = self._slots.get(feed)
        if slot is None:
            if len(self._slots) >= SLOTS:
                return False
            slot = self._slots[feed] = len(self._slots)
        self._board.write(slot, payload)
        return True

    def read(self, feed: str) -> Intensity | None:
        """The latest published value of ``feed``, or None."""
        for slot in range(SLOTS):
            found = self._board.read(slot)
            if found is None:
                continue  # the hub kept writing it: look further
            payload = found[1]
            if not payload:
                return None  # slots fill in order: an empty one ends the search
            doc = orjson.loads(payload)
            if doc["feed"] == feed:
                return Intensity(**doc["value"])
        return None


class HubFeeds(LocalState):
    """The hub's state: fetch as a single process would, and publish each value for the workers."""

    def __init__(self, board: FeedBoard) -> None:
        super().__init__("no state.url configured; intensity fetched by the hub for this host's workers")
        self._board = board

    async def fetch_once(self, feed: str, max_age_s: float, fetch: Fetch, lock_s: float = 30.0) -> Intensity:
        value = await fetch()
        self._board.publish(feed, value)
        return value


class WorkerFeeds(LocalState):
    """A worker's state: read the hub's values; never call a provider itself."""

    def __init__(self, board: FeedBoard, clock: Callable[[], float] = time.time) -> None:
        super().__init__("no state.url configured; intensity read from this host's hub")
        self._board = board
        self._clock = clock

    async def fetch_once(self, feed: str, max_age_s: float, fetch: Fetch, lock_s: float = 30.0) -> Intensity:
        deadline = time.monotonic() + lock_s
        while True:
            value = self._board.read(feed)
            if value is not None and self._clock() - value.fetched_at <= max_age_s:
                return value
            if time.monotonic() >= deadline:
                raise IntensityError(f"the hub published no fresh value for {feed}")
            await asyncio.sleep(POLL_S)
