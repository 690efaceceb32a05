"""Accounting never breaks a request: failures inside it lose precision, not responses."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from bauxite.errors import CODES
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


def test_department_header_is_ignored_unless_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_KEY_ML", "sk-ml")
    auth = {"keys": [{"key_env": "TEST_KEY_ML", "department": "ml", "departments": ["ml-research"]}]}
    with Harness(fleet_config(auth=auth)) as h:
        client = openai.OpenAI(base_url=h.base_url + "/v1", api_key="sk-ml", max_retries=0)
        for choice in ("ml-research", "finance", "free text <script>"):
            client.chat.completions.create(
                model="tiny-8b",
                messages=MESSAGES,
                max_tokens=1,
                extra_headers={"x-bauxite-department": choice},
            )
        assert [r.department for r in h.wait_records(3)] == ["ml", "ml", "ml"]


def test_department_header_selects_only_the_keys_departments(monkeypatch: pytest.MonkeyPatch) -> None:
    """A department the key does not own is a 403, a value that is no department name a 400: never a silent
    charge to the key's default department, and never the raw value echoed back."""
    monkeypatch.setenv("TEST_KEY_R", "sk-research")
    auth = {
        "department_header": "x-bauxite-department",
        "keys": [{"key_env": "TEST_KEY_R", "department": "research", "departments": ["research-ml"]}],
    }
    with Harness(fleet_config(auth=auth)) as h:
        client = openai.OpenAI(base_url=h.base_url + "/v1", api_key="sk-research", max_retries=0)

        def chat(department: str) -> None:
            client.chat.completions.create(
                model="tiny-8b",
                messages=MESSAGES,
                max_tokens=1,
                extra_headers={"x-bauxite-department": department},
            )

        chat("research-ml")
        chat("research")
        with pytest.raises(openai.PermissionDeniedError) as denied:
            chat("finance")
        assert denied.value.status_code == 403
        assert denied.value.code == "department_not_allowed"
        assert denied.value.type == "permission_error" and "finance" in denied.value.message
        for malformed in ("a b", "x" * 300, "free text <script>"):
            with pytest.raises(openai.BadRequestError) as bad:
                chat(malformed)
            assert bad.value.code == "invalid_header" and bad.value.param == "x-bauxite-department"
            assert malformed not in bad.value.message and len(bad.value.message) < 200
        assert "invalid_header" in CODES and CODES["department_not_allowed"] == 403
        # The models list charges nobody: the header does not matter there.
        assert (
            client.models.with_raw_response.list(extra_headers={"x-bauxite-department": "a b"}).status_code
            == 200
        )
        chat("research-ml")
        assert [r.department for r in h.wait_records(3)] == ["research-ml", "research", "research-ml"]
