"""``Retry-After`` (RFC 9110 §10.2.3): delay-seconds or an HTTP-date, as seconds from now."""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime

MAX_RETRY_AFTER_S = 3600.0  # an upstream cannot take a cluster out of rotation for longer than this


def retry_after_s(value: str | None, now_unix: float | None = None) -> float | None:
    """Seconds to wait, clamped to [0, ``MAX_RETRY_AFTER_S``]; None when absent or unparseable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER_S)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP-date is always GMT
        return None
    now = time.time() if now_unix is None else now_unix
    return min(max(when.timestamp() - now, 0.0), MAX_RETRY_AFTER_S)
