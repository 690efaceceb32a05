"""API key → department. Keys are compared as SHA-256 digests; the key itself is never stored or logged."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from .errors import BadRequest, Forbidden
from .settings import AuthSettings, sha256_hex

# What a department name chosen by header may look like: it becomes a record field and a metric label.
DEPARTMENT_RE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


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
        """Department for this request. Raises ``AuthError`` (401) for a missing or unknown key; when
        ``auth.department_header`` is configured and sent (non-empty): ``BadRequest`` (400 ``invalid_header``)
        for a value that is not a department name, ``Forbidden`` (403 ``department_not_allowed``) for one
        the key may not choose — never a silent charge to the key's default department."""
        caller = self._lookup(authorization)
        if caller is None:
            if not self._settings.allow_anonymous:
                raise AuthError("Missing API key" if not authorization else "Incorrect API key provided")
            caller = self._anonymous
        header = self._settings.department_header
        if not department_header or not header:
            return caller.department
        if department_header in caller.allowed:
            return department_header
        if not DEPARTMENT_RE.fullmatch(department_header):
            # Not echoed: it could be anything the client sent.
            raise BadRequest(
                f"header {header} must be a department name: 1-64 letters, digits, '_', '.', ':' or '-'",
                "invalid_header",
                header,
            )
        raise Forbidden(
            f"this API key may not charge department {department_header!r} (header {header})",
            "department_not_allowed",
            header,
        )

    def _lookup(self, authorization: str | None) -> Caller | None:
        if not authorization or authorization[:7].lower() != "bearer ":
            return None
        # Looking up the digest (not the key) means timing reveals nothing useful about stored keys.
        return self._by_digest.get(sha256_hex(authorization[7:].strip()))
