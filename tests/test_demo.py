"""`bauxite demo` as a user runs it: a subprocess that serves the openai client and stops on Ctrl-C."""

from __future__ import annotations

import logging
import re
import signal
import subprocess
import sys
import time
import urllib.request

import anthropic
import openai
import pytest


def test_demo_serves_and_stops_cleanly() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bauxite.cli", "demo", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        base = ""
        deadline = time.monotonic() + 60
        while not base and time.monotonic() < deadline:
            line = proc.stdout.readline()
            match = re.search(r"OpenAI base URL : (http://127\.0\.0\.1:\d+)/v1", line)
            base = match.group(1) if match else ""
        assert base, "the demo did not print its base URL"
        client = openai.OpenAI(base_url=base + "/v1", api_key="demo", max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model="llama-3.1-8b", messages=[{"role": "user", "content": "Hi"}], max_tokens=3
        )
        assert raw.parse().choices[0].message.content
        assert float(raw.headers["x-bauxite-carbon-grams"]) > 0
        with urllib.request.urlopen(base + "/metrics", timeout=10) as resp:
            assert b"bauxite_request_carbon_grams_total" in resp.read()
        with urllib.request.urlopen(base + "/v1/carbon/intensity", timeout=10) as resp:
            assert b'"provider":"trace"' in resp.read()
        response = client.responses.create(model="llama-3.1-8b", input="Hi", max_output_tokens=3)
        assert response.output_text and response.usage is not None and response.usage.output_tokens == 3
        claude = anthropic.Anthropic(base_url=base, api_key="demo", max_retries=0)
        message = claude.messages.create(
            model="llama-3.1-8b", max_tokens=3, messages=[{"role": "user", "content": "Hi"}]
        )
        assert message.usage.output_tokens == 3
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, output
        assert "Traceback" not in output
    finally:
        if proc.poll() is None:
            proc.kill()


def test_every_demo_model_has_a_known_size(caplog: pytest.LogCaptureFixture) -> None:
    """The shipped demo must not rest on labelled default sizes: each model the clusters serve resolves from
    the shipped table or EcoLogits (no start-up warnings), and the embedding model is the small encoder."""
    from bauxite.checks import _unknown_hardware_and_models
    from bauxite.demo import embedded_demo_settings
    from bauxite.energy.params import EcoLogitsRepository, resolve_params

    settings = embedded_demo_settings()
    with caplog.at_level(logging.WARNING, logger="bauxite.energy.params"):
        sizes = {name: resolve_params(name, {}, EcoLogitsRepository()) for name in settings.model_names()}
        assert _unknown_hardware_and_models(settings) == []
    assert not [r for r in caplog.records if "no known size" in r.getMessage()]
    assert all(params.source != "default" for params in sizes.values()), sizes
    embedding = [params for params in sizes.values() if params.encoder]
    assert len(embedding) == 1 and embedding[0].active_b == pytest.approx(0.0334)
