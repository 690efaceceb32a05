"""Every command the README and docs print works as written, from the repository root.

Each document's ``sh`` blocks run in order as one bash script (so ``export`` and background jobs carry over,
as in the reader's shell) and its ``python`` blocks with ``.venv/bin/python``; ``yaml`` blocks of gateway
config must pass ``check-config``. The script runs in a private network namespace, so the documented ports
(8080, 8000, 9090) are free whatever else runs on this machine. Markers in the Markdown, on the line before a
block:

- ``<!-- docs-test: skip (reason) -->`` — needs what this machine lacks (a GPU, Grafana, an API key);
- ``<!-- docs-test: background URL -->`` — a long-running command (``make run``): start it, wait for URL;
- ``<!-- docs-test: demo -->`` — the block talks to a running gateway: start ``bauxite demo`` first.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from bauxite.settings import ConfigError, settings_from_mapping
from cli_run import ROOT, clean_env

DOCS = ("README.md", "docs/guide.md", "docs/reporting.md")
FENCE = re.compile(r"(?:<!-- docs-test: (?P<marker>[^>]*?) -->\n)?```(?P<lang>\w*)\n(?P<body>.*?)```", re.S)
SCRATCH = "/tmp/bauxite-guide"  # the guide's scratch folder; each run gets its own
READY = (
    "for _ in $(seq 240); do curl -sf {url} >/dev/null && break; sleep 0.5; done; curl -sf {url} >/dev/null\n"
)
DEMO = ".venv/bin/bauxite demo >/dev/null 2>&1 &\n" + READY.format(url="http://127.0.0.1:8080/readyz")


@dataclass(frozen=True)
class Block:
    lang: str
    body: str
    marker: str


def blocks(doc: str) -> list[Block]:
    text = (ROOT / doc).read_text(encoding="utf-8")
    return [Block(m["lang"], m["body"], (m["marker"] or "").strip()) for m in FENCE.finditer(text)]


def script_for(doc: str, scratch: Path) -> str:
    lines = [
        "set -euo pipefail",
        f"cd {shlex.quote(str(ROOT))}",
        "trap 'kill $(jobs -p) 2>/dev/null || true' EXIT",
    ]
    for block in blocks(doc):
        if block.marker.startswith("skip") or block.lang not in ("sh", "python"):
            continue
        body = block.body.replace(SCRATCH, str(scratch))
        if block.lang == "python":
            body = f".venv/bin/python - <<'PYTHON_BLOCK'\n{body}PYTHON_BLOCK\n"
        if block.marker == "demo":
            body = DEMO + body
        if block.marker.startswith("background"):
            url = block.marker.split(None, 1)[1]
            body = f"{{\n{body}}} &\n" + READY.format(url=shlex.quote(url))
        lines.append(f"echo '### block from {doc}' >&2")
        lines.append(body)
    return "\n".join(lines) + "\n"


def in_private_network(command: list[str]) -> list[str]:
    """Run ``command`` in a new network namespace with only loopback, up."""
    assert shutil.which("unshare") and shutil.which("ip"), (
        "unshare and ip are required (.ci/system-packages.txt)"
    )
    userns = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
    inner = "ip link set lo up && exec " + shlex.join(command)
    return ["unshare", *userns, "--net", "bash", "-c", inner]


@pytest.mark.parametrize("doc", DOCS)
def test_shell_and_python_blocks_run_as_written(doc: str, tmp_path: Path) -> None:
    # The reader ran `make run` or `make test` first (with network); inside the namespace there is none,
    # so bring .venv up to date here rather than let `make run` try to reach PyPI.
    if subprocess.run(["make", "-q", "venv"], cwd=ROOT, capture_output=True).returncode != 0:
        subprocess.run(["make", "venv"], cwd=ROOT, check=True, capture_output=True, timeout=600)
    script = tmp_path / "doc.sh"
    script.write_text(script_for(doc, tmp_path / "scratch"), encoding="utf-8")
    env = clean_env() | {"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"}  # no .venv/bin on PATH
    log = tmp_path / "output.txt"
    with log.open("w") as out:
        proc = subprocess.Popen(
            in_private_network(["bash", str(script)]),
            stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )  # fmt: skip
        try:
            proc.wait(timeout=300)
        finally:
            # Background jobs the script started (make run's child, servers) share its process group.
            for sig in (signal.SIGTERM, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)
                time.sleep(1)
            if proc.poll() is None:
                proc.wait(10)
    output = log.read_text(encoding="utf-8", errors="replace")
    assert proc.returncode == 0, f"{doc}: a documented command failed:\n{output[-6000:]}"
    assert "Traceback" not in output, output[-6000:]


@pytest.mark.parametrize("doc", DOCS)
def test_yaml_config_blocks_are_valid(doc: str) -> None:
    checked = 0
    for block in blocks(doc):
        if block.lang != "yaml" or block.marker.startswith("skip"):
            continue
        data = yaml.safe_load(block.body)
        try:
            settings_from_mapping(data, f"{doc} yaml block")
        except ConfigError as exc:
            pytest.fail(f"{doc}: a documented config does not load:\n{exc}\n---\n{block.body}")
        checked += 1
    assert checked or doc == "docs/reporting.md"


@pytest.mark.parametrize("doc", DOCS)
def test_inline_commands_exist(doc: str) -> None:
    """Commands quoted inline (`.venv/bin/…`) name real tools and scripts; subcommands accept --help."""
    text = (ROOT / doc).read_text(encoding="utf-8")
    for command in re.findall(r"`(\.venv/bin/[^`]+)`", text):
        words = command.split()
        assert (ROOT / words[0]).exists(), command
        if words[0].endswith("/python") and len(words) > 1 and words[1].endswith(".py"):
            assert (ROOT / words[1]).is_file(), command
        if words[0].endswith("/bauxite") and len(words) > 1:
            done = subprocess.run(
                [str(ROOT / words[0]), words[1], "--help"],
                capture_output=True,
                text=True,
                timeout=60,
                cwd=ROOT,
            )
            assert done.returncode == 0, (command, done.stderr)
