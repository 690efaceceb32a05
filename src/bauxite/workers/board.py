"""Per-cluster in-flight counts shared by the workers of one host, so they do not herd onto one cluster.

Each worker sees its own in-flight requests per cluster; without its siblings' it would send a burst to the
greenest cluster as if it were idle. The board is a second small anonymous shared mapping (created before the
fork, like the telemetry buffer): one row of uint32 counts per worker, one column per configured cluster.
Every ``interval_s`` a worker writes its row and sets each cluster's ``peer_in_flight`` to the sum of the
other rows. Each row has one writer; a reader may see a count a few milliseconds old, never a torn one
(aligned 4-byte stores).

With shared state in Redis up, that store already carries every worker's counts (each worker is a replica
there), so the board leaves ``peer_in_flight`` alone.
"""

from __future__ import annotations

import asyncio
import mmap
import struct
from collections.abc import Callable

from ..clusters import Fleet
from ..routing.router import Router

_COUNT = struct.Struct("<I")
U32_MAX = 0xFFFF_FFFF


class InFlightBoard:
    def __init__(self, workers: int, clusters: list[str]) -> None:
        self.workers = workers
        self.clusters = list(clusters)
        self._row = struct.Struct(f"<{max(len(self.clusters), 1)}I")
        size = max(self._row.size * workers, mmap.PAGESIZE)
        flags = mmap.MAP_SHARED | getattr(mmap, "MAP_ANONYMOUS", 0x20)
        self._mm = mmap.mmap(-1, size, flags=flags, prot=mmap.PROT_READ | mmap.PROT_WRITE)

    def publish(self, worker: int, counts: list[int]) -> None:
        """Write ``worker``'s row (counts in ``clusters`` order)."""
        values = [min(max(c, 0), U32_MAX) for c in counts] or [0]
        self._row.pack_into(self._mm, worker * self._row.size, *values)

    def others(self, worker: int) -> list[int]:
        """Per cluster, the sum of every other worker's row."""
        sums = [0] * len(self.clusters)
        for row in range(self.workers):
            if row == worker:
                continue
            for i, count in enumerate(self._row.unpack_from(self._mm, row * self._row.size)):
                if i < len(sums):
                    sums[i] += count
        return sums

    def clear(self, worker: int) -> None:
        """Zero a dead worker's row (its requests are gone)."""
        self.publish(worker, [0] * len(self.clusters))

    async def run(
        self,
        worker: int,
        fleet: Fleet,
        router: Router,
        shared_elsewhere: Callable[[], bool],
        interval_s: float = 0.02,
    ) -> None:
        """Publish and pull every ``interval_s`` until cancelled; siblings' counts go to ``router.peers``."""
        states = [fleet.by_name[name] for name in self.clusters]
        while True:
            self.publish(worker, [c.in_flight for c in states])
            if not shared_elsewhere():
                for name, peers in zip(self.clusters, self.others(worker), strict=True):
                    router.peers(name, peers)
            await asyncio.sleep(interval_s)
