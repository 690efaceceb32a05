"""Canary strings sent in prompts, ``user`` fields and headers appear nowhere the gateway keeps or emits.

Checked: /metrics, /v1/carbon/reports, every log record and everything written to stdout/stderr, the telemetry
ring buffer's bytes, the records handed to sinks, and every file created or changed during the run in the
test's temporary directory, the system temporary directory and the repository.
"""

from __future__ import annotations

import logging
import os
import random
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from anthropic.types import MessageParam

from bauxite.settings import sha256_hex
from harness import Harness, fleet_config

REPO = Path(__file__).resolve().parent.parent
KEY = "privacy-test-key-7f3a"
# The test's own HTTP clients log what they send at DEBUG (the anthropic SDK its request bodies, httpx its
# URLs); what is checked is everything the gateway and the fleet log.
CLIENT_LOGGERS = ("anthropic", "openai", "httpx", "httpcore")
SKIP_DIRS = {".git", ".venv", "node_modules", ".mypy_cache", ".ruff_cache", ".hypothesis", "__pycache__"}


def canaries() -> dict[str, str]:
    marker = f"CANARY{uuid.uuid4().hex}"
    rng = random.Random(marker)
    card = "4" + "".join(str(rng.randrange(10)) for _ in range(15))
    return {
        "marker": marker,
        "email": f"{marker.lower()}@example.com",
        "card": " ".join(card[i : i + 4] for i in range(0, 16, 4)),
        "card_plain": card,
    }


def files_changed_since(root: Path, since: float) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS]
        for name in filenames:
            path = Path(dirpath) / name
            try:
                info = path.lstat()
            except OSError:
                continue
            if info.st_mtime >= since and path.is_file() and info.st_size < 64 * 1024 * 1024:
                yield path


def http_get(url: str, token: str | None = None) -> bytes:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(request, timeout=10) as response:
        body: bytes = response.read()
        return body


def send_canary_traffic(harness: Harness, c: dict[str, str]) -> None:
    secret_text = f"My e-mail is {c['email']}, card {c['card']} ({c['card_plain']}), ref {c['marker']}."
    headers = {
        "X-Canary": c["marker"],
        "User-Agent": f"agent {c['marker']}",
        "X-Forwarded-For": c["email"],
    }
    client = openai.OpenAI(
        base_url=harness.base_url + "/v1", api_key=KEY, max_retries=0, default_headers=headers
    )
    client.chat.completions.create(
        model="tiny-8b", messages=[{"role": "user", "content": secret_text}], max_tokens=4, user=c["email"]
    )
    for _ in client.chat.completions.create(
        model="tiny-8b",
        messages=[{"role": "system", "content": c["marker"]}, {"role": "user", "content": secret_text}],
        max_tokens=4,
        stream=True,
        user=c["marker"],
    ):
        pass
    client.completions.create(model="tiny-8b", prompt=secret_text, max_tokens=3, user=c["card"])
    client.embeddings.create(model="embed-small", input=[secret_text, c["card"]], user=c["marker"])
    # Failures must not echo canaries into telemetry or logs either.
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(
            model=f"model-{c['marker']}", messages=[{"role": "user", "content": "x"}]
        )
    # A department header the key may not use is refused (400 malformed, 403 not the key's), never echoed raw.
    with pytest.raises(openai.BadRequestError) as malformed:
        client.chat.completions.create(
            model="tiny-8b", messages=[{"role": "user", "content": secret_text}],
            extra_headers={"X-Bauxite-Department": c["email"]},
        )  # fmt: skip
    assert c["email"] not in malformed.value.message
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(
            model="tiny-8b", messages=[{"role": "user", "content": secret_text}],
            extra_headers={"X-Bauxite-Department": c["marker"]},
        )  # fmt: skip
    bad_key = openai.OpenAI(base_url=harness.base_url + "/v1", api_key=c["marker"], max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad_key.chat.completions.create(model="tiny-8b", messages=[{"role": "user", "content": secret_text}])
    send_agent_api_canaries(harness, c, secret_text, headers)


def send_agent_api_canaries(
    harness: Harness, c: dict[str, str], secret_text: str, headers: dict[str, str]
) -> None:
    """The same canaries through the Responses and Anthropic Messages APIs (bodies, keys, ids, errors)."""
    client = openai.OpenAI(
        base_url=harness.base_url + "/v1", api_key=KEY, max_retries=0, default_headers=headers
    )
    created = client.responses.create(
        model="tiny-8b", instructions=c["marker"], input=secret_text, max_output_tokens=3, user=c["email"]
    )
    client.responses.retrieve(created.id)
    for _ in client.responses.create(model="tiny-8b", input=secret_text, max_output_tokens=3, stream=True):
        pass
    claude = anthropic.Anthropic(
        base_url=harness.base_url, api_key=KEY, max_retries=0, default_headers=headers
    )
    said: list[MessageParam] = [{"role": "user", "content": secret_text}]
    claude.messages.create(model="tiny-8b", max_tokens=3, system=c["marker"], messages=said,
                           metadata={"user_id": c["email"]})  # fmt: skip
    with claude.messages.stream(model="tiny-8b", max_tokens=3, messages=said) as stream:
        "".join(stream.text_stream)
    claude.messages.count_tokens(model="tiny-8b", messages=said)
    with pytest.raises(anthropic.NotFoundError):
        claude.messages.create(model=f"model-{c['marker']}", max_tokens=1, messages=said)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(f"resp_{c['marker']}")
    bad_key = anthropic.Anthropic(base_url=harness.base_url, api_key=c["marker"], max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        bad_key.messages.create(model="tiny-8b", max_tokens=1, messages=said)


def needles(c: dict[str, str]) -> list[bytes]:
    out = []
    for value in c.values():
        out += [value.encode(), value.lower().encode(), value.encode("utf-16-le")]
    return out


def test_canaries_never_leave_the_request(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    start = time.time() - 1
    c = canaries()
    config: dict[str, Any] = fleet_config(
        auth={
            "allow_anonymous": False,
            "department_header": "X-Bauxite-Department",
            "keys": [{"department": "research", "departments": ["ops"], "sha256": sha256_hex(KEY)}],
        }
    )
    with Harness(config) as harness:
        send_canary_traffic(harness, c)
        records = harness.wait_records(4)
        assert harness.gateway is not None
        telemetry = harness.gateway.telemetry
        ring_bytes = harness.call(_ring_bytes_before_drain(telemetry))
        metrics = http_get(harness.base_url + "/metrics")
        harness.call(_close_window(telemetry))
        reports = http_get(harness.base_url + "/v1/carbon/reports")
    captured = capfd.readouterr()

    assert b"bauxite_requests_total" in metrics and b'"windows"' in reports
    assert any(r.department == "research" for r in records)
    places: dict[str, bytes] = {
        "/metrics": metrics,
        "/v1/carbon/reports": reports,
        "ring buffer": ring_bytes,
        "records": repr(records).encode(),
        "logs": "\n".join(
            r.getMessage() + repr(r.args) + repr(r.__dict__)
            for r in caplog.records
            if not r.name.startswith(CLIENT_LOGGERS)
        ).encode(),
        "stdout": captured.out.encode(),
        "stderr": captured.err.encode(),
    }
    for root in {tmp_path, Path(tempfile.gettempdir()), REPO}:
        for path in files_changed_since(root, start):
            try:
                places[str(path)] = path.read_bytes()
            except OSError:
                continue
    assert all(needle in b"".join(needles(c)) for needle in needles(c))  # the search itself works
    leaks = [(where, needle) for where, data in places.items() for needle in needles(c) if needle in data]
    assert leaks == []


async def _ring_bytes_before_drain(telemetry: Any) -> bytes:
    data: bytes = telemetry.ring.raw_bytes()
    return data


async def _close_window(telemetry: Any) -> None:
    telemetry.close_window()


def test_buffer_bytes_hold_records(tmp_path: Path) -> None:
    """The ring check above is meaningful: records really are in the bytes it scans (ids, counts, floats)."""
    config = fleet_config()
    with Harness(config) as harness:
        client = openai.OpenAI(base_url=harness.base_url + "/v1", api_key="x", max_retries=0)
        client.chat.completions.create(
            model="tiny-8b", messages=[{"role": "user", "content": "hi"}], max_tokens=3
        )
        harness.wait_records(1)
        assert harness.gateway is not None
        data = harness.call(_ring_bytes_before_drain(harness.gateway.telemetry))
    assert any(data[:128])
    with pytest.raises(urllib.error.URLError):
        http_get(harness.base_url + "/metrics")  # stopped: nothing left listening
