"""Cluster ``/metrics`` readings taken once per host under ``serve --workers N``.

Only the hub scrapes the clusters (its router runs the usual ``StatsScraper``); each successful reading is
also published into a small anonymous shared mapping created before the fork (no file, no name), one fixed
slot per configured cluster. A worker's router runs no scraper: ``BoardReadings`` polls the slots every
``POLL_S`` seconds and hands each new reading to the router's ``scraped`` method, as its own scrape would
have. The router subtracts the worker's own requests from the reading; its siblings' requests already count
as peers through the in-flight board. A failed scrape publishes nothing, so the workers keep the previous
values, as a single process does. Only what ``scraped`` takes is shared: the prefix-cache counters are not.

The slots are ``SeqlockSlots`` (``SLOT_BYTES`` each); a reading is packed little-endian: running i64 |
waiting i64 | round trip ms f64 (NaN: none) | has server counters u8 | the six ``ServerCounters`` floats.
The hub alone writes a slot; a reader never uses a half-written reading, and applies each reading once (it
keeps the slot's sequence it last applied). The mapping
outlives a restarted hub, which continues the sequences; a restarted worker starts from each cluster's
latest reading.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import struct

from ..clusters import Fleet
from ..routing.config import LatencySettings
from ..routing.server_times import ServerCounters
from ..routing.stats import ScrapeFactory, ScrapeSink, StatsScraper
from ..tasks import cancel
from .slots import SeqlockSlots

SLOT_BYTES = 128
_COUNTERS = tuple(f.name for f in dataclasses.fields(ServerCounters))
_READING = struct.Struct(f"<qqdB{len(_COUNTERS)}d")  # running, waiting, ms, has counters, counters
_I64_MAX = 2**63 - 1
POLL_S = 0.05  # how stale a worker's copy may be beyond the hub's scrape interval

Reading = tuple[int, int, float | None, ServerCounters | None]  # running, waiting, round trip ms, counters


class ScrapeBoard:
    """One slot per cluster (``clusters`` order, fixed before the fork); the hub writes, workers read."""

    def __init__(self, clusters: list[str]) -> None:
        self.clusters = list(clusters)
        self._slot = {name: i for i, name in enumerate(self.clusters)}
        self._board = SeqlockSlots(len(self.clusters), SLOT_BYTES)

    def publish(
        self,
        cluster: str,
        running: int,
        waiting: int,
        elapsed_ms: float | None,
        server: ServerCounters | None,
    ) -> bool:
        """Store a reading of ``cluster`` (the hub only); False for a cluster without a slot."""
        slot = self._slot.get(cluster)
        if slot is None:
            return False
        counters = [getattr(server, name) for name in _COUNTERS] if server else [0.0] * len(_COUNTERS)
        ms = math.nan if elapsed_ms is None else elapsed_ms
        payload = _READING.pack(_clamp(running), _clamp(waiting), ms, server is not None, *counters)
        self._board.write(slot, payload)
        return True

    def read(self, slot: int) -> tuple[int, Reading | None]:
        """(sequence, reading) of ``slot``: (0, None) before its first reading, (odd, None) when the hub was
        writing it throughout."""
        found = self._board.read(slot)
        if found is None:
            return 1, None
        seq, payload = found
        if not payload:
            return 0, None
        running, waiting, ms, has_counters, *counters = _READING.unpack(payload)
        server = ServerCounters(*counters) if has_counters else None
        return seq, (running, waiting, None if math.isnan(ms) else ms, server)


def _clamp(count: int) -> int:
    return min(max(int(count), 0), _I64_MAX)


def hub_scrapes(board: ScrapeBoard) -> ScrapeFactory:
    """The hub's router source: its own scrape, each reading applied locally and published for the workers."""

    def build(fleet: Fleet, sink: ScrapeSink, settings: LatencySettings) -> StatsScraper:
        def applied_and_published(
            cluster: str, running: int, waiting: int, elapsed_ms: float | None, server: ServerCounters | None
        ) -> None:
            sink(cluster, running, waiting, elapsed_ms, server)
            board.publish(cluster, running, waiting, elapsed_ms, server)

        return StatsScraper(fleet, applied_and_published, settings)

    return build


def worker_scrapes(board: ScrapeBoard, poll_s: float = POLL_S) -> ScrapeFactory:
    """A worker's router source: the hub's readings, never a request to a cluster."""

    def build(fleet: Fleet, sink: ScrapeSink, settings: LatencySettings) -> BoardReadings:
        return BoardReadings(board, fleet, sink, settings, poll_s)

    return build


class BoardReadings:
    """Applies each new reading of the board to ``sink`` (a router's ``scraped``) once, on a timer."""

    def __init__(
        self, board: ScrapeBoard, fleet: Fleet, sink: ScrapeSink, settings: LatencySettings, poll_s: float
    ) -> None:
        scraped = {c.name for c in fleet.clusters if c.settings.kind == "vllm"}
        self._slots = [(i, name) for i, name in enumerate(board.clusters) if name in scraped]
        self._board = board
        self._sink = sink
        self._poll_s = poll_s
        self._enabled = settings.stats_interval > 0  # as the hub's scraper: no timer, nothing published
        self._applied = [0] * len(board.clusters)  # per slot, the sequence of the reading last applied
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._task is not None or not self._slots or not self._enabled:
            return
        self._task = asyncio.create_task(self._run(), name="bauxite-hub-cluster-stats")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel(task)

    async def _run(self) -> None:
        while True:
            self.apply_new()
            await asyncio.sleep(self._poll_s)

    def apply_new(self) -> int:
        """Hand every reading published since the last call to the sink; returns how many."""
        applied = 0
        for slot, name in self._slots:
            seq, reading = self._board.read(slot)
            if reading is None or seq == self._applied[slot]:
                continue
            self._applied[slot] = seq
            self._sink(name, *reading)
            applied += 1
        return applied
