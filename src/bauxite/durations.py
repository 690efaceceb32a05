"""Duration strings such as ``30s``, ``5m``, ``1h``, ``250ms`` or plain seconds."""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import BeforeValidator

_UNITS_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")


def parse_duration_s(value: Any) -> float:
    """Seconds from a duration string or number; raises ``ValueError`` with the accepted forms."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as '30s', '5m', '1h' or a number of seconds")
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:  # an integer with hundreds of digits
            raise ValueError("a duration this large is not a usable number of seconds") from None
    else:
        match = _PATTERN.match(str(value))
        if not match:
            raise ValueError(
                f"expected a duration such as '250ms', '30s', '5m', '1h' or seconds, got {value!r}"
            )
        seconds = float(match.group(1)) * _UNITS_S[match.group(2) or "s"]
    if not math.isfinite(seconds):
        raise ValueError("a duration must be a finite number of seconds")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


DurationS = Annotated[float, BeforeValidator(parse_duration_s)]
"""A field in seconds that also accepts duration strings."""
