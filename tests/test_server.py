"""Serving: the optional separate telemetry listener takes /metrics and /v1/carbon/* off the API port."""

from __future__ import annotations

import asyncio

import aiohttp

from bauxite.app import create_app
from bauxite.server import start_gateway
from bauxite.settings import settings_from_mapping


async def test_separate_telemetry_listener() -> None:
    settings = settings_from_mapping(
        {
            "telemetry": {"listen_host": "127.0.0.1", "listen_port": 0},
            "clusters": [
                {"name": "a", "region": "us-east-1", "url": "http://127.0.0.1:9/v1", "models": ["m"]}
            ],
        }
    )
    runners, api_port = await start_gateway(create_app(settings), "127.0.0.1", 0)
    try:
        assert len(runners) == 2
        admin_port = next(a[1] for a in runners[0].addresses if isinstance(a, tuple))
        async with aiohttp.ClientSession() as session:
            for path in ("/metrics", "/v1/carbon/reports", "/v1/carbon/intensity"):
                async with session.get(f"http://127.0.0.1:{api_port}{path}") as resp:
                    assert resp.status == 404, path
                async with session.get(f"http://127.0.0.1:{admin_port}{path}") as resp:
                    assert resp.status == 200, path
            async with session.get(f"http://127.0.0.1:{api_port}/healthz") as resp:
                assert resp.status == 200
    finally:
        for runner in runners:
            await runner.cleanup()
        await asyncio.sleep(0)
