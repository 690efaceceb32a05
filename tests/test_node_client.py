"""The official ``openai`` Node client (npm) against the gateway's Responses API.

``make test`` installs it into tests/node/node_modules from the lock file (``make node-deps``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from agent_helpers import endpoint_tokens
from harness import Harness, fleet_config

NODE_DIR = Path(__file__).parent / "node"


def run_node(script: str, *args: str) -> dict[str, object]:
    node = shutil.which("node")
    assert node, (
        "node is missing: install the Debian package 'nodejs' (make test does: scripts/system-deps.sh)"
    )
    assert (NODE_DIR / "node_modules" / "openai").is_dir(), (
        "the openai npm package is missing: run `make node-deps`"
    )
    done = subprocess.run(
        [node, str(NODE_DIR / script), *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_node_openai_client_responses_create_stream_and_retrieve() -> None:
    with Harness(fleet_config()) as h:
        metered = endpoint_tokens(h, "responses", "completion")
        out = run_node("responses.mjs", h.base_url + "/v1")
        records = h.wait_records(2)
        assert endpoint_tokens(h, "responses", "completion") == metered + 6 + 4
    assert out["text"] == "green " * 6 and out["streamedText"] == "green " * 4
    assert out["retrievedId"] == out["createdId"]
    assert (out["first"], out["last"]) == ("response.created", "response.completed")
    usage, streamed = out["usage"], out["streamedUsage"]
    assert isinstance(usage, dict) and isinstance(streamed, dict)
    assert (usage["output_tokens"], streamed["output_tokens"]) == (6, 4)
    assert [(r.endpoint, r.status, r.completion_tokens) for r in records] == [
        ("responses", "ok", 6),
        ("responses", "ok", 4),
    ]
    assert records[0].prompt_tokens == usage["input_tokens"]
