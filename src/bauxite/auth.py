"""API key → department. Keys are compared as SHA-256 digests; the key itself is never stored or logged."""

from __future__ import annotations

import os
from dataclasses import dataclass

from .settings import AuthSettings, sha256_hex


class AuthError(Exception):
    """Missing or unknown API key (HTTP 401)."""


@dataclass(frozen=True, slots=True)
class Caller:
    department: str
    allowed: frozenset[str]  # departments this caller may choose by header (includes the default)


class Authenticator:
    def __init__(self, settings: AuthSettings) -> None:
        self._settings = settings
        self._by_digest: dict[str, Caller] = {}
        for key in settings.keys:
            digest = key.sha256
            if key.key_env is not None:
                secret = os.environ.get(key.key_env)
                if not secret:
                    continue  # an unset env var simply enables no key; check-config warns about it
                digest = sha256_hex(secret)
            assert digest is not None
            self._by_digest[digest] = Caller(key.department, frozenset({key.department, *key.departments}))
        self._anonymous = Caller(settings.anonymous_department, frozenset({settings.anonymous_department}))

    @property
    def key_count(self) -> int:
        return len(self._by_digest)

    def departments(self) -> list[str]:
        """Every department a record can carry: label values come from here only."""
        names = {self._settings.anonymous_department} if self._settings.allow_anonymous else set()
        for key in self._settings.keys:
            names.add(key.department)
            names.update(key.departments)
        return sorted(names)

    def authenticate(self, authorization: str | None, department_header: str | None = None) -> str:
        """Department for this request, or ``AuthError``. Header choice is honoured only if allowed."""
        caller = self._lookup(authorization)
        if caller is None:
            if not self._settings.allow_anonymous:
                raise AuthError("Missing API key" if not authorization else "Incorrect API key provided")
            caller = self._anonymous
        if department_header and self._settings.department_header and department_header in caller.allowed:
            return department_header
        return caller.department

    def _lookup(self, authorization: str | None) -> Caller | None:
        if not authorization or authorization[:7].lower() != "bearer ":
            return None
        # Looking up the digest (not the key) means timing reveals nothing useful about stored keys.
        return self._by_digest.get(sha256_hex(authorization[7:].strip()))
