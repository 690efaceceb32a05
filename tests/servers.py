"""Real servers for multi-replica tests: ``redis-server`` and a Prometheus scraping several targets.

Both are Debian packages listed in ``.ci/system-packages.txt``; a missing binary fails with the command to
install it rather than skipping the test.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from intensity_fakes import FakeProviders


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _binary(name: str, package: str) -> str:
    found = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    if found is None:
        raise RuntimeError(f"{name} is needed for this test: apt-get install {package} (or make system-deps)")
    return found


class RedisServer:
    """A throw-away ``redis-server`` on 127.0.0.1: no persistence, no config file; ``stop``/``start``
    again on the same port (to test an outage)."""

    def __init__(self, workdir: Path) -> None:
        self._binary = _binary("redis-server", "redis-server")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._workdir = workdir
        self._proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        cmd = [self._binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
               "--appendonly", "no", "--dir", str(self._workdir), "--protected-mode", "yes"]  # fmt: skip
        self._proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(10)
            self._proc = None


class Prometheus:
    """A real Prometheus scraping ``targets`` (host:port) every second, TSDB in ``workdir``. ``config``
    replaces the generated scrape configuration (e.g. a shipped example); its first job scrapes
    ``targets``."""

    def __init__(self, workdir: Path, targets: list[str], config: dict[str, Any] | None = None) -> None:
        binary = _binary("prometheus", "prometheus")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        doc = config or {"scrape_configs": [{"job_name": "bauxite", "static_configs": [{"targets": []}]}]}
        every_s = {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"}
        doc.setdefault("global", {}).update(every_s)
        doc["scrape_configs"][0]["static_configs"][0]["targets"] = list(targets)
        path = workdir / "prometheus.yml"
        path.write_text(yaml.safe_dump(doc), encoding="utf-8")
        self._log = open(workdir / "prometheus.log", "wb")  # noqa: SIM115 — closed in stop()
        self._proc = subprocess.Popen(
            [binary, f"--config.file={path}", f"--storage.tsdb.path={workdir / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=self._log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self._proc.returncode}")
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise TimeoutError("prometheus did not become ready")

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = self.url + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def query_range(self, expr: str, seconds: float = 120.0, step_s: float = 1.0) -> list[dict[str, Any]]:
        end = time.time()
        params = {"query": expr, "start": end - seconds, "end": end, "step": step_s}
        url = self.url + "/api/v1/query_range?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def scalar(self, expr: str) -> float:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else float("nan")

    def stop(self) -> None:
        self._proc.terminate()
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(5)
        self._log.close()


class FakeOnThread:
    """The fake providers on their own event loop thread, so subprocesses can call them during sync tests."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.fake = FakeProviders()
        asyncio.run_coroutine_threadsafe(self.fake.start(), self.loop).result(10)

    def em_calls(self) -> int:
        return len(self.fake.paths("/em/"))

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.fake.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
