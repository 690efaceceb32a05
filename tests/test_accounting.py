"""Accounting never breaks a request: failures inside it lose precision, not responses."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from harness import Harness, fleet_config

MESSAGES: Any = [{"role": "user", "content": "hello"}]


def test_energy_failures_do_not_fail_requests() -> None:
    with Harness(fleet_config()) as h:
        assert h.gateway is not None

        def broken(*args: object, **kwargs: object) -> object:
            raise RuntimeError("estimator exploded")

        h.gateway.energy.estimate = broken  # type: ignore[method-assign,assignment]
        h.gateway.energy.settle = broken  # type: ignore[method-assign,assignment]
        client = openai.OpenAI(base_url=h.base_url + "/v1", api_key="k", max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model="tiny-8b", messages=MESSAGES, max_tokens=3
        )
        assert raw.parse().choices[0].message.content == "green " * 3
        assert "x-bauxite-energy-wh" not in raw.headers  # unknown, so not claimed
        assert raw.headers["x-bauxite-cluster"] in {"east", "west"}
        stream = client.chat.completions.create(model="tiny-8b", messages=MESSAGES, max_tokens=3, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "green " * 3


@pytest.mark.parametrize("allowed", [True, False])
def test_department_header_only_selects_allowed_departments(
    monkeypatch: pytest.MonkeyPatch, allowed: bool
) -> None:
    monkeypatch.setenv("TEST_KEY_ML", "sk-ml")
    auth = {
        "department_header": "x-bauxite-department" if allowed else None,
        "keys": [{"key_env": "TEST_KEY_ML", "department": "ml", "departments": ["ml-research"]}],
    }
    with Harness(fleet_config(auth=auth)) as h:
        client = openai.OpenAI(base_url=h.base_url + "/v1", api_key="sk-ml", max_retries=0)
        for choice in ("ml-research", "finance", "free text <script>"):
            client.chat.completions.create(
                model="tiny-8b",
                messages=MESSAGES,
                max_tokens=1,
                extra_headers={"x-bauxite-department": choice},
            )
        departments = [r.department for r in h.wait_records(3)]
        assert departments == (["ml-research", "ml", "ml"] if allowed else ["ml", "ml", "ml"])
