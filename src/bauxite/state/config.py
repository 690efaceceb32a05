"""The ``state:`` config section: where replicas share routing and reporting state.

Without ``url`` or ``url_env`` every replica keeps its own state in process (the default). With one, the
replicas share a Redis or Valkey server: intensity values (one replica fetches, all read), cluster
cool-downs, per-cluster in-flight counts, the KV-cache affinity map and closed report windows.
"""

from __future__ import annotations

import os

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..durations import DurationS

SCHEMES = ("redis://", "rediss://", "unix://")  # what the Redis/Valkey client connects to


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot name a Redis/Valkey server (a message), or None when its scheme is usable."""
    if not url.startswith(SCHEMES):
        shown = url if "@" not in url else "<a URL with credentials>"
        return (f"{shown!r} is not a Redis URL: it must start with redis://, rediss:// (TLS) or unix:// "
                "(e.g. redis://localhost:6379/0)")  # fmt: skip
    return None


class StateSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # redis://host:6379/0 (or rediss:// for TLS). A URL carrying a password belongs in ``url_env``.
    url: str | None = None
    url_env: str | None = None  # name of the environment variable holding the URL
    prefix: str = Field(default="bauxite", pattern=r"^[A-Za-z0-9_.:-]{1,64}$")  # key namespace
    sync_interval: DurationS = Field(default=0.1, gt=0, le=10)  # push/pull of counts, cool-downs, affinity
    timeout: DurationS = Field(default=0.5, gt=0, le=10)  # per Redis command; then local fallback
    peer_stale_after: DurationS = Field(default=3.0, gt=0)  # a replica silent this long counts no load

    @model_validator(mode="after")
    def _one_url(self) -> StateSettings:
        if self.url and self.url_env:
            raise ValueError("give either state.url or state.url_env, not both")
        if self.url is not None and (problem := url_problem(self.url)) is not None:
            raise ValueError(f"state.url: {problem}")
        if self.url and "@" in self.url.split("//", 1)[-1].split("/", 1)[0]:
            raise ValueError("state.url carries credentials; put the URL in an environment variable and "
                             "name it in state.url_env")  # fmt: skip
        return self

    @property
    def configured(self) -> bool:
        """Whether the file asks for a shared store (``url`` or ``url_env``), set or not."""
        return bool(self.url or self.url_env)

    def resolved_url(self) -> str | None:
        """The URL to connect to, or None for in-process state (also when ``url_env`` is unset)."""
        if self.url_env:
            return os.environ.get(self.url_env) or None
        return self.url
