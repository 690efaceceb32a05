"""``bauxite demo`` and ``bauxite fleet``: the simulated fleet, alone or with the gateway in front of it."""

from __future__ import annotations

import importlib.util
import logging
import shlex
import sys
from importlib import resources
from pathlib import Path

import yaml

from .app import create_app
from .fleet.config import FleetSettings
from .fleet.server import FleetRunner
from .server import run, start_gateway, wait_for_signal
from .settings import ClusterSettings, Settings, settings_from_mapping


def embedded_demo_settings() -> Settings:
    text = resources.files("bauxite").joinpath("data/demo.yaml").read_text(encoding="utf-8")
    return settings_from_mapping(yaml.safe_load(text), "<embedded demo.yaml>")


def point_at_fleet(settings: Settings, fleet: FleetRunner) -> Settings:
    """Clusters named like a simulated cluster get that cluster's real URL."""
    clusters: list[ClusterSettings] = []
    for cluster in settings.clusters:
        if cluster.name in fleet.ports:
            update: dict[str, object] = {"url": fleet.url(cluster.name), "metrics_url": None}
            if cluster.power.source == "dcgm":  # the simulator also plays the cluster's DCGM exporter
                metrics = fleet.url(cluster.name).removesuffix("/v1") + "/metrics"
                update["power"] = cluster.power.model_copy(update={"url": metrics})
            cluster = cluster.model_copy(update=update)
        clusters.append(cluster)
    return settings.model_copy(update={"clusters": tuple(clusters)})


def interpreter() -> str:
    """This Python, as a command to type: relative when under the current folder (``.venv/bin/python``)."""
    exe = Path(sys.executable)
    if exe.is_relative_to(Path.cwd()):
        exe = exe.relative_to(Path.cwd())
    return shlex.quote(str(exe))


def _banner(base: str) -> str:
    python = interpreter()
    client = (
        f"""  {python} -c 'from openai import OpenAI; c = OpenAI(base_url="{base}/v1", api_key="demo"); \\
print(c.chat.completions.create(model="llama-3.1-8b", messages=[{{"role": "user", "content": "Hi"}}]))'"""
        if importlib.util.find_spec("openai") is not None
        else f"  (for the official client: {python} -m pip install openai)"
    )
    return f"""
Bauxite demo is running: a simulated three-region fleet behind the gateway (offline, no keys).

  dashboard       : {base}/dashboard
  OpenAI base URL : {base}/v1
  metrics         : {base}/metrics
  grid intensity  : {base}/v1/carbon/intensity
  reports         : {base}/v1/carbon/reports

  curl {base}/v1/chat/completions -H 'Content-Type: application/json' \\
       -d '{{"model": "llama-3.1-8b", "messages": [{{"role": "user", "content": "Hello"}}]}}' -i

{client}

  The OpenAI Responses and Anthropic Messages APIs, with the carbon object in the answer:

  curl {base}/v1/responses -H 'Content-Type: application/json' -H 'x-bauxite-include-carbon: true' \\
       -d '{{"model": "llama-3.1-8b", "input": "Hello", "max_output_tokens": 16}}'

  curl {base}/v1/messages -H 'Content-Type: application/json' -H 'anthropic-version: 2023-06-01' \\
       -H 'x-bauxite-include-carbon: true' \\
       -d '{{"model": "llama-3.1-8b", "max_tokens": 16, "messages": [{{"role": "user", "content": "Hi"}}]}}'

Press Ctrl-C to stop.
"""


async def _demo(settings: Settings, port: int) -> int:
    assert settings.fleet is not None
    fleet = FleetRunner(settings.fleet)
    await fleet.start()
    try:
        gateway = point_at_fleet(settings, fleet)
        runners, bound = await start_gateway(create_app(gateway), gateway.server.host, port)
        try:
            print(_banner(f"http://{gateway.server.host}:{bound}"), flush=True)
            await wait_for_signal()
        finally:
            for runner in runners:
                await runner.cleanup()
    finally:
        await fleet.stop()
    print("stopped.")
    return 0


def run_demo(port: int = 8080, settings: Settings | None = None) -> int:
    """The demo on ``settings`` (default: the embedded file); simulated clusters come from its ``fleet:``."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = settings or embedded_demo_settings()
    if settings.fleet is None:
        settings = settings.model_copy(update={"fleet": embedded_demo_settings().fleet})
    return run(_demo(settings, port), settings.server.use_uvloop)


async def _fleet(settings: FleetSettings) -> int:
    fleet = FleetRunner(settings)
    await fleet.start()
    try:
        for name in fleet.ports:
            print(f"{name}: {fleet.url(name)}", flush=True)
        await wait_for_signal()
    finally:
        await fleet.stop()
    return 0


def run_fleet(settings: FleetSettings, zero_delay: bool = False) -> int:
    if zero_delay:
        settings = settings.model_copy(update={"time_scale": 0.0})
    return run(_fleet(settings))
