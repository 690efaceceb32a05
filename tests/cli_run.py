"""Running the ``bauxite`` command the way a user does: a real subprocess from the repository root."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
BAUXITE = [sys.executable, "-m", "bauxite.cli"]


def bauxite(*args: str, timeout: float = 120.0, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*BAUXITE, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd, env=clean_env()
    )


def clean_env() -> dict[str, str]:
    """The environment without variables that would change a command's behaviour (e.g. a token)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("BAUXITE_", "PROMETHEUS_MULTIPROC"))}


def tiny_simulation(tmp_path: Path, days: int = 2) -> Path:
    """The shipped simulator example cut to a couple of days (about a second per policy)."""
    data = yaml.safe_load((ROOT / "examples" / "simulate.yaml").read_text(encoding="utf-8"))
    data["period"] = {"start": "2022-03-01", "days": days, "seconds_per_hour": 3}
    path = tmp_path / "sim.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_demo(*extra: str, cwd: Path = ROOT) -> Iterator[tuple[str, str]]:
    """``bauxite demo --port 0``; yields (base URL, banner text) and stops it with Ctrl-C."""
    proc = subprocess.Popen(
        [*BAUXITE, "demo", "--port", "0", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=cwd, env=clean_env(),
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
            lines.append(line)
            if line.startswith("Press Ctrl-C"):
                break
        banner = "".join(lines)
        match = re.search(r"OpenAI base URL : (http://127\.0\.0\.1:\d+)/v1", banner)
        assert match, f"the demo printed no base URL:\n{banner}"
        yield match.group(1), banner
    finally:
        if proc.poll() is None:
            proc.send_signal(2)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
