"""A real simulated fleet and a real gateway on 127.0.0.1, run on a background thread's event loop.

A thread (not the test's own loop) lets the official synchronous ``openai`` client call the gateway from a
test without deadlocking, and lets async tests use their own loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from aiohttp import web

from bauxite.app import GATEWAY, Gateway, create_app
from bauxite.demo import point_at_fleet
from bauxite.fleet.server import FleetRunner
from bauxite.records import RequestRecord
from bauxite.server import start_site
from bauxite.settings import Settings, settings_from_mapping

T = TypeVar("T")


class RecordTap:
    """A record sink for tests: keeps every record the accountant emits."""

    def __init__(self) -> None:
        self.records: list[RequestRecord] = []

    def submit(self, record: RequestRecord) -> None:
        self.records.append(record)


class Harness:
    def __init__(self, config: dict[str, Any], start_fleet: bool = True) -> None:
        self.settings: Settings = settings_from_mapping(config, "<test config>")
        self._start_fleet = start_fleet and self.settings.fleet is not None
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.fleet: FleetRunner | None = None
        self._runner: web.AppRunner | None = None
        self.gateway: Gateway | None = None
        self.tap = RecordTap()
        self.base_url = ""

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run ``coro`` on the server loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def __enter__(self) -> Harness:
        self._thread.start()
        self.call(self._start())
        return self

    def __exit__(self, *exc: object) -> None:
        self.call(self._stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    async def _start(self) -> None:
        settings = self.settings
        if self._start_fleet:
            assert settings.fleet is not None
            self.fleet = FleetRunner(settings.fleet)
            await self.fleet.start()
            settings = point_at_fleet(settings, self.fleet)
        self.settings = settings
        app = create_app(settings)
        self.gateway = app[GATEWAY]
        self.gateway.accountant.add_sink(self.tap)
        self._runner, port = await start_site(app, "127.0.0.1", 0)
        self.base_url = f"http://127.0.0.1:{port}"

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self.fleet is not None:
            await self.fleet.stop()

    def wait_records(self, count: int, timeout: float = 10.0) -> list[RequestRecord]:
        """Records arrive after the response (accounting runs in the handler's finally): wait for them."""

        async def poll() -> list[RequestRecord]:
            deadline = self.loop.time() + timeout
            while len(self.tap.records) < count and self.loop.time() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            return list(self.tap.records)

        return self.call(poll(), timeout + 5)


_PASSED_KEYS = ("api_key_env", "timeouts", "pue", "gpu", "power", "kind", "endpoints")


def fleet_config(
    clusters: list[dict[str, Any]] | None = None,
    time_scale: float = 0.0,
    **sections: Any,
) -> dict[str, Any]:
    """A gateway+fleet config: by default two zero-delay clusters serving ``tiny-8b``, anonymous access."""
    clusters = clusters or [
        {"name": "east", "region": "us-east-1", "models": ["tiny-8b", "embed-small"]},
        {"name": "west", "region": "us-west-2", "models": ["tiny-8b", "embed-small"]},
    ]
    config: dict[str, Any] = {
        "auth": {"allow_anonymous": True},
        "clusters": [
            {
                "name": c["name"],
                "region": c["region"],
                "url": c.get("url", "http://127.0.0.1:1/v1"),
                "models": c["models"],
                **{k: v for k, v in c.items() if k in _PASSED_KEYS},
            }
            for c in clusters
        ],
        "fleet": {
            "time_scale": time_scale,
            "clusters": [
                {"name": c["name"], "models": c["models"], **c.get("sim", {})}
                for c in clusters
                if not c.get("no_sim")
            ],
        },
    }
    config.update(sections)
    return config
