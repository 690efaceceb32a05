"""The simulated fleet speaks the Responses and Messages APIs in vLLM's wire format, and only those a
simulated cluster declares."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import anthropic
import openai

from harness import Harness, fleet_config


def call(url: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_sim_serves_both_apis_to_official_clients_directly() -> None:
    one = [{"name": "east", "region": "us-east-1", "models": ["tiny-8b"]}]
    with Harness(fleet_config(clusters=one)) as h:
        assert h.fleet is not None
        base = h.fleet.url("east")
        response = openai.OpenAI(base_url=base, api_key="x", max_retries=0).responses.create(
            model="tiny-8b", input="four tokens of input", max_output_tokens=4
        )
        assert response.output_text == "green " * 4 and response.usage is not None
        assert response.usage.input_tokens == 5 and response.usage.output_tokens == 4
        status, stored = call(f"{base}/responses/{response.id}")  # vLLM keeps it for retrieval
        assert status == 200 and stored["id"] == response.id and stored["usage"]["output_tokens"] == 4
        claude = anthropic.Anthropic(base_url=base.removesuffix("/v1"), api_key="x", max_retries=0)
        message = claude.messages.create(
            model="tiny-8b", max_tokens=3, messages=[{"role": "user", "content": "four tokens of input"}]
        )
        assert message.usage.input_tokens == 5 and message.usage.output_tokens == 3
        assert message.usage.cache_read_input_tokens is None  # vLLM reports no cache fields
        assert (
            claude.messages.count_tokens(
                model="tiny-8b", messages=[{"role": "user", "content": "four tokens of input"}]
            ).input_tokens
            == 5
        )


def test_sim_cluster_without_an_api_answers_404_like_a_missing_route() -> None:
    one = [{"name": "east", "region": "us-east-1", "models": ["tiny-8b"], "sim": {"endpoints": ["chat"]}}]
    with Harness(fleet_config(clusters=one)) as h:
        assert h.fleet is not None
        base = h.fleet.url("east")
        assert call(f"{base}/responses", {"model": "tiny-8b", "input": "x"})[0] == 404
        assert call(f"{base}/messages", {"model": "tiny-8b", "max_tokens": 1, "messages": []})[0] == 404
        chat = {"model": "tiny-8b", "messages": [{"role": "user", "content": "x"}], "max_tokens": 1}
        assert call(f"{base}/chat/completions", chat)[0] == 200
