"""``bauxite check-config``: checks beyond the schema that need the environment (env vars, regions)."""

from __future__ import annotations

import os

from .settings import Settings


def check_settings(settings: Settings, file: str) -> tuple[list[str], list[str]]:
    """(problems, notes). Problems make the file invalid; notes are worth knowing."""
    problems: list[str] = []
    notes: list[str] = []
    for index, key in enumerate(settings.auth.keys):
        if key.key_env and not os.environ.get(key.key_env):
            notes.append(
                f"auth.keys[{index}].key_env: environment variable {key.key_env} is not set; key disabled"
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
