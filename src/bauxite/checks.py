"""Checks beyond the schema that need the environment (env vars). ``check-config`` and ``serve`` both run
them, so they agree: a problem refuses to start (exit 2), a note is printed as a warning by both."""

from __future__ import annotations

import os

from .settings import Settings


def check_settings(settings: Settings, file: str) -> tuple[list[str], list[str]]:
    """(problems, notes). Problems make the file invalid; notes are worth knowing."""
    from .telemetry.service import MULTIPROC_ENV

    problems: list[str] = []
    notes: list[str] = []
    token_env = settings.telemetry.token_env
    if token_env and not os.environ.get(token_env, "").strip():
        problems.append(
            f"telemetry.token_env: environment variable {token_env} is unset or empty; "
            "set it to the bearer token /metrics and /v1/carbon/* should require"
        )
    problems.extend(
        f"environment variable {name} is set: Prometheus multiprocess mode would write metric files "
        "to disk; unset it"
        for name in MULTIPROC_ENV
        if os.environ.get(name)
    )
    for index, key in enumerate(settings.auth.keys):
        if key.key_env and not os.environ.get(key.key_env):
            notes.append(
                f"auth.keys[{index}].key_env: environment variable {key.key_env} is not set; "
                "this key is DISABLED and its callers will get 401"
            )
    for index, cluster in enumerate(settings.clusters):
        if cluster.api_key_env and not os.environ.get(cluster.api_key_env):
            notes.append(
                f"clusters[{index}].api_key_env: environment variable {cluster.api_key_env} is not set; "
                "requests go upstream without a key"
            )
    if not settings.clusters:
        notes.append("no clusters configured: every model request will get 404")
    if not settings.auth.keys and not settings.auth.allow_anonymous:
        notes.append("no API keys and auth.allow_anonymous is false: every request will get 401")
    return [f"{file}: {p}" for p in problems], notes
