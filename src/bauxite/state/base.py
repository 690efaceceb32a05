"""``SharedState``: what the gateway's parts ask of state shared between replicas, and the in-process kind.

The request path never waits on shared state: counts, cool-downs and affinity entries are pushed and pulled by
one background task (``sync_interval``), and only background work awaits it (an intensity refresh, a report
read). When the shared store is unreachable every replica keeps working on its own state and says so in
``/readyz`` and ``bauxite_shared_state_up``.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from .config import StateSettings

if TYPE_CHECKING:
    from ..clusters import Fleet
    from ..intensity.base import Intensity
    from ..routing.router import Router

Fetch = Callable[[], Awaitable["Intensity"]]


class SharedState(Protocol):
    """One replica's handle on shared state. ``kind`` is "local" or "redis"."""

    kind: str
    hash_key: bytes  # the KV-affinity prefix hash key: the same on every replica sharing state

    @property
    def up(self) -> bool:
        """True while the shared store is in use (always True for in-process state)."""
        ...

    def attach(self, fleet: Fleet, router: Router) -> None:
        """Give the sync task what it pushes (the fleet's counts and cool-downs, the router's affinity map)
        and where pulled figures go (the router's ``peers`` and ``shared_cooldown``)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def fetch_once(self, feed: str, max_age_s: float, fetch: Fetch, lock_s: float = 30.0) -> Intensity:
        """The feed's value: a shared one younger than ``max_age_s``, else ``fetch()`` by exactly one
        replica (holding the feed's lock for at most ``lock_s``) while the others wait for its result.
        Raises what ``fetch`` raises, or ``IntensityError`` when the refreshing replica got nothing."""
        ...

    def publish_window(self, window: dict[str, Any]) -> None:
        """Store a closed report window (aggregates only) for every replica to answer with."""

    async def windows(self) -> list[dict[str, Any]] | None:
        """Every replica's closed windows, or None when only this replica's own are available."""
        ...

    def detail(self) -> dict[str, Any]:
        """For ``/readyz``: kind, whether shared, and why not."""
        ...


class LocalState:
    """Everything stays in this process: the default, and what a replica falls back to."""

    kind = "local"

    def __init__(self, reason: str = "no state.url configured") -> None:
        self.hash_key = os.urandom(16)
        self._reason = reason

    @property
    def up(self) -> bool:
        return True

    def attach(self, fleet: Fleet, router: Router) -> None:
        return None

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def fetch_once(self, feed: str, max_age_s: float, fetch: Fetch, lock_s: float = 30.0) -> Intensity:
        return await fetch()

    def publish_window(self, window: dict[str, Any]) -> None:
        return None

    async def windows(self) -> list[dict[str, Any]] | None:
        return None

    def detail(self) -> dict[str, Any]:
        return {"kind": self.kind, "shared": False, "reason": self._reason}


def make_state(settings: StateSettings) -> SharedState:
    """In-process state, or Redis/Valkey when ``state.url`` (or the variable ``state.url_env``) is set."""
    url = settings.resolved_url()
    if url is None:
        if settings.url_env:
            return LocalState(f"state.url_env names {settings.url_env}, which is unset or empty")
        return LocalState()
    from .redis_state import RedisState  # only deployments that share state need the client

    return RedisState(settings, url)
