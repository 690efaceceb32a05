"""Shared state in Redis or Valkey (``state.url``), through the ``redis`` package's asyncio client.

Keys (all under ``state.prefix``): ``intensity:<feed>`` (the latest value, JSON) and ``lock:<feed>`` (held by
the one replica refreshing it); ``inflight`` (hash: replica → its per-cluster in-flight counts and when they
were sent; a replica deletes its own field when it stops, and any replica deletes fields silent for a
minute); ``cooldown`` (hash: cluster → unix time its cool-down ends); ``affinity`` (a capped stream of
prefix hash → cluster); ``windows`` (sorted set of closed report windows by end time); ``hashkey`` (the
random BLAKE2b key every replica hashes prompt prefixes with). Nothing holds request text or keys.

Every Redis error or time-out marks the store down: the replica carries on with its own state (in-flight
counts of the others read as zero, its own cool-downs and affinity, its own report windows, its own
intensity fetches), says so in ``/readyz`` and ``bauxite_shared_state_up``, and reconnects in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson
import redis.asyncio as redis
from redis.exceptions import RedisError

from ..intensity.base import Intensity, IntensityError
from .base import Fetch
from .config import StateSettings

if TYPE_CHECKING:
    from ..clusters import Fleet
    from ..routing.affinity import PrefixAffinity
    from ..routing.router import Router

log = logging.getLogger("bauxite.state")
ERRORS = (RedisError, OSError, TimeoutError)
PENDING_CAP = 10_000  # queued affinity entries / windows while the store is slow or down
WINDOWS_KEPT = 10_000
POLL_S = 0.05
INFLIGHT_FORGET_S = 60.0  # an ``inflight`` entry older than this (and peer_stale_after) is deleted


class RedisState:
    kind = "redis"

    def __init__(
        self,
        settings: StateSettings,
        url: str,
        *,
        replica: str | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._redis = redis.Redis.from_url(
            url, socket_timeout=settings.timeout, socket_connect_timeout=settings.timeout
        )
        self.replica = replica or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.hash_key = os.urandom(16)  # replaced by the shared key once connected
        self._clock = clock
        self._mono = monotonic
        self._up = False
        self.error = "not connected yet"
        self.fallbacks = 0  # times the store went from up to down
        self._fleet: Fleet | None = None
        self._router: Router | None = (
            None  # the only writer of routing state: peers and cool-downs go through it
        )
        self._affinity: PrefixAffinity | None = None
        self._affinity_cap = 0
        self._pending_affinity: list[tuple[int, str]] = []
        self._pending_windows: list[bytes] = []
        self._published: dict[str, float] = {}  # cluster -> the local cool-down end last published
        self._stream_id = b"0-0"
        self._expired: list[bytes] = []  # other replicas' long-silent ``inflight`` fields, deleted next sync
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def _key(self, name: str) -> str:
        return f"{self._settings.prefix}:{name}"

    @property
    def up(self) -> bool:
        return self._up

    def attach(self, fleet: Fleet, router: Router) -> None:
        self._fleet = fleet
        self._router = router
        self._affinity = router.affinity
        self._affinity_cap = max(self._affinity.capacity, 1)
        self._affinity.on_remember = self._queue_affinity

    def _queue_affinity(self, prefix_key: int, cluster: str) -> None:
        if len(self._pending_affinity) < PENDING_CAP:
            self._pending_affinity.append((prefix_key, cluster))

    # Lifecycle ----------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect (or note why not) and start the sync task; never raises for an unreachable store."""
        try:
            await self._connect()
        except ERRORS as exc:
            self._down(exc)
            log.warning("shared state unreachable at start-up, using this replica's own state and retrying "
                        "every second: %s", self.error)  # fmt: skip
        self._stopping = False
        self._task = asyncio.create_task(self._sync_forever(), name="shared-state-sync")

    async def stop(self) -> None:
        self._stopping = True
        task, self._task = self._task, None
        while task is not None and not task.done():
            # Cancel until it takes: asyncio.wait_for inside the client can swallow one cancellation.
            task.cancel()
            await asyncio.wait({task}, timeout=1.0)
        if task is not None and not task.cancelled() and task.exception() is not None:
            log.warning("shared state sync ended with %r", task.exception())
        if self._up and (self._pending_windows or self._pending_affinity):
            with contextlib.suppress(*ERRORS):
                await self._sync_once()  # the last report window, closed during shutdown
        if self._up:
            with contextlib.suppress(*ERRORS):  # a stopped replica's counts are no one's load
                await self._redis.hdel(self._key("inflight"), self.replica)
        await self._redis.aclose()

    async def _connect(self) -> None:
        await self._redis.ping()
        await self._redis.set(self._key("hashkey"), os.urandom(16), nx=True)
        key = await self._redis.get(self._key("hashkey"))
        if isinstance(key, bytes) and len(key) >= 16:
            self.hash_key = key
        newest = await self._redis.xrevrange(self._key("affinity"), count=1)
        self._stream_id = newest[0][0] if newest else b"0-0"
        if not self._up:
            log.info("shared state: connected to %s as replica %s", self._settings.prefix, self.replica)
        self._up, self.error = True, ""

    def _down(self, exc: BaseException) -> None:
        if self._up:
            self.fallbacks += 1
            log.warning("shared state unreachable, using this replica's own state: %s", exc)
        self._up = False
        self.error = f"{type(exc).__name__}: {exc}"[:200]
        if self._fleet is not None and self._router is not None:
            for cluster in self._fleet.clusters:
                self._router.peers(cluster.name, 0)

    async def _sync_forever(self) -> None:
        while not self._stopping:
            try:
                if not self._up:
                    await self._connect()
                await self._sync_once()
            except ERRORS as exc:
                self._down(exc)
            except Exception:  # a bug here must not end the loop: the replica keeps its own state
                log.exception("shared state sync failed")
            await asyncio.sleep(self._settings.sync_interval if self._up else 1.0)

    # The periodic push and pull ----------------------------------------------------------------------

    async def _sync_once(self) -> None:
        now, mono = self._clock(), self._mono()
        pipe = self._redis.pipeline(transaction=False)
        clusters = self._fleet.clusters if self._fleet is not None else []
        counts = {c.name: c.in_flight for c in clusters}
        expired, self._expired = self._expired, []
        if expired:
            pipe.hdel(self._key("inflight"), *expired)
        pipe.hset(self._key("inflight"), self.replica, orjson.dumps({"t": now, "c": counts}))
        pipe.hgetall(self._key("inflight"))
        queued = 3 if expired else 2
        at_counts = queued - 1
        for cluster in clusters:
            queued += self._push_cooldown(pipe, cluster.name, cluster.cooldown_until, now, mono)
        at_cooldowns = queued
        pipe.hgetall(self._key("cooldown"))
        affinity, self._pending_affinity = self._pending_affinity, []
        for prefix_key, name in affinity:
            fields: dict[Any, Any] = {"k": prefix_key, "c": name, "r": self.replica}
            pipe.xadd(self._key("affinity"), fields, maxlen=self._affinity_cap, approximate=True)
        at_affinity = at_cooldowns + 1 + len(affinity)
        pipe.xread({self._key("affinity"): self._stream_id}, count=1000)
        windows, self._pending_windows = self._pending_windows, []
        for window in windows:
            pipe.zadd(self._key("windows"), {window: orjson.loads(window)["window"]["end_unix"]})
        if windows:
            pipe.zremrangebyrank(self._key("windows"), 0, -WINDOWS_KEPT - 1)
        results = await pipe.execute()
        self._pull_counts(results[at_counts], now)
        self._pull_cooldowns(results[at_cooldowns], now, mono)
        self._pull_affinity(results[at_affinity])

    def _push_cooldown(self, pipe: Any, name: str, until_mono: float, now: float, mono: float) -> int:
        """Queue this replica's cool-down change for ``name``, if any; returns commands queued (0 or 1)."""
        last = self._published.get(name, 0.0)
        if until_mono > mono and until_mono != last:
            pipe.hset(self._key("cooldown"), name, repr(now + (until_mono - mono)))
            self._published[name] = until_mono
            return 1
        if until_mono == 0.0 and last > 0.0:  # recovered here: end the shared cool-down too
            pipe.hdel(self._key("cooldown"), name)
            self._published[name] = 0.0
            return 1
        return 0

    def _pull_counts(self, raw: dict[bytes, bytes], now: float) -> None:
        if self._fleet is None:
            return
        peers: dict[str, int] = {}
        stale_before = now - self._settings.peer_stale_after
        # Each process start is a new replica id: without deleting, the hash (read whole every sync) would
        # grow by one field per restart of any replica, forever.
        forget_before = now - max(INFLIGHT_FORGET_S, self._settings.peer_stale_after)
        for replica, blob in raw.items():
            if replica.decode() == self.replica:
                continue
            entry = orjson.loads(blob)
            sent_at = entry.get("t", 0.0)
            if sent_at < forget_before:
                self._expired.append(replica)
            if sent_at < stale_before:
                continue  # a replica that stopped (or lost the store) no longer counts
            for name, count in entry.get("c", {}).items():
                peers[name] = peers.get(name, 0) + int(count)
        for cluster in self._fleet.clusters:
            if self._router is not None:
                self._router.peers(cluster.name, peers.get(cluster.name, 0))

    def _pull_cooldowns(self, raw: dict[bytes, bytes], now: float, mono: float) -> None:
        if self._fleet is None:
            return
        for name, until in raw.items():
            cluster = self._fleet.by_name.get(name.decode())
            if cluster is None:
                continue
            remaining_s = float(until) - now
            if mono + remaining_s > cluster.cooldown_until and remaining_s > 0 and self._router is not None:
                self._router.shared_cooldown(cluster.name, remaining_s)
                self._published[cluster.name] = cluster.cooldown_until  # adopted, not ours to publish again

    def _pull_affinity(self, raw: list[Any]) -> None:
        if not raw:
            return
        for _stream, entries in raw:
            for entry_id, fields in entries:
                self._stream_id = entry_id
                if self._affinity is None or fields.get(b"r", b"").decode() == self.replica:
                    continue
                self._affinity.adopt(int(fields[b"k"]), fields[b"c"].decode())

    # Intensity: one fetch per feed for all replicas ------------------------------------------------------

    async def fetch_once(self, feed: str, max_age_s: float, fetch: Fetch, lock_s: float = 30.0) -> Intensity:
        if not self._up:
            return await fetch()
        value_key, lock_key = self._key(f"intensity:{feed}"), self._key(f"lock:{feed}")
        try:
            cached = await self._cached(value_key, max_age_s)
            if cached is not None:
                return cached
            holder = await self._redis.set(lock_key, self.replica, nx=True, px=int(lock_s * 1000))
        except ERRORS as exc:
            self._down(exc)
            return await fetch()
        if holder:
            try:
                value = await fetch()
                ttl_ms = int(max(max_age_s, 1.0) * 1000 * 4)  # readers judge freshness by fetched_at
                with contextlib.suppress(*ERRORS):  # the value first: waiters read it once the lock goes
                    await self._redis.set(value_key, orjson.dumps(dataclasses.asdict(value)), px=ttl_ms)
            finally:
                with contextlib.suppress(*ERRORS):
                    await self._redis.delete(lock_key)
            return value
        return await self._wait_for(value_key, max_age_s, lock_s, feed, fetch)

    async def _wait_for(
        self, key: str, max_age_s: float, lock_s: float, feed: str, fetch: Fetch
    ) -> Intensity:
        """Another replica holds the lock: wait for the value it stores (or give up with its lock)."""
        deadline = self._mono() + lock_s
        while self._mono() < deadline:
            await asyncio.sleep(POLL_S)
            try:
                cached = await self._cached(key, max_age_s)
                if cached is not None:
                    return cached
                if not await self._redis.exists(self._key(f"lock:{feed}")):
                    break  # the refresher finished without a value: it failed
            except ERRORS as exc:
                self._down(exc)
                return await fetch()
        raise IntensityError(f"the replica refreshing {feed} got no value")

    async def _cached(self, key: str, max_age_s: float) -> Intensity | None:
        blob = await self._redis.get(key)
        if blob is None:
            return None
        value = Intensity(**orjson.loads(blob))
        return value if self._clock() - value.fetched_at <= max_age_s else None

    # Report windows ------------------------------------------------------------------------------------

    def publish_window(self, window: dict[str, Any]) -> None:
        if not window.get("usage"):
            return  # nothing was served in it here (e.g. a worker process whose hub reports)
        if len(self._pending_windows) < PENDING_CAP:
            self._pending_windows.append(orjson.dumps({"replica": self.replica, "window": window}))

    async def windows(self) -> list[dict[str, Any]] | None:
        if not self._up:
            return None
        try:
            raw = await self._redis.zrange(self._key("windows"), 0, -1)
        except ERRORS as exc:
            self._down(exc)
            return None
        return [orjson.loads(blob)["window"] for blob in raw]

    def detail(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "shared": self._up, "replica": self.replica}
        if not self._up:
            out["reason"] = f"shared store unreachable, using this replica's own state ({self.error})"
        return out
