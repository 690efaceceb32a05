"""Label interning: every label value becomes a small integer id before it enters the ring buffer.

Tables are closed over configured names (models, regions, departments, clusters), so a value that did not
come from configuration collapses into one fallback value and can never become a new series. Tables for values
the code produces (route reasons, intensity sources) are open, but only for short ``[a-z0-9_]`` tokens and
only up to a small cap — a guard against a bug ever turning request text into a label.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..records import ENDPOINTS, enum_index

if TYPE_CHECKING:
    from ..settings import Settings

OTHER = "other"
NONE = "none"  # region/cluster of a request that was never routed
NO_REASON = 0xFFFF  # reason id stored for a record without a routing decision; no interned id reaches it
_TOKEN = re.compile(r"^[a-z0-9_]{1,40}$")
OPEN_CAP = 64


class Interner:
    """Bidirectional str <-> id map. Id 0 is the fallback value; ids fit in an unsigned 16-bit field."""

    def __init__(self, fixed: Iterable[str], *, open_cap: int = 0, fallback: str = OTHER) -> None:
        self._values: list[str] = [fallback]
        self._ids: dict[str, int] = {fallback: 0}
        self._open_cap = open_cap
        self._open_used = 0
        for value in fixed:
            self._add(value)

    def _add(self, value: str) -> int:
        found = self._ids.get(value)
        if found is None:
            if len(self._values) >= NO_REASON:
                return 0
            found = len(self._values)
            self._values.append(value)
            self._ids[value] = found
        return found

    def id(self, value: str) -> int:
        """The id for ``value``; the fallback id for anything not admitted."""
        found = self._ids.get(value)
        if found is not None:
            return found
        if self._open_used < self._open_cap and _TOKEN.match(value):
            self._open_used += 1
            return self._add(value)
        return 0

    def value(self, ident: int) -> str:
        return self._values[ident] if 0 <= ident < len(self._values) else self._values[0]

    @property
    def values(self) -> tuple[str, ...]:
        return tuple(self._values)

    def __len__(self) -> int:
        return len(self._values)


@dataclass(frozen=True, slots=True)
class LabelTables:
    models: Interner
    regions: Interner
    clusters: Interner
    departments: Interner
    reasons: Interner
    sources: Interner
    endpoints: Interner

    @classmethod
    def from_settings(cls, settings: Settings) -> LabelTables:
        """Tables seeded in a fixed order, so every process built from the same settings gives a value the
        same id (``serve --workers`` relies on it: workers write ids, one other process reads them)."""
        from ..intensity.registry import PROVIDERS
        from ..routing.router import REASONS

        # The same set the auth module can assign: the anonymous department only when anonymous access is on.
        departments: dict[str, None] = {}
        if settings.auth.allow_anonymous:
            departments[settings.auth.anonymous_department] = None
        for key in settings.auth.keys:
            departments[key.department] = None
            departments.update(dict.fromkeys(key.departments))
        regions = dict.fromkeys(c.region for c in settings.clusters)
        return cls(
            models=Interner(settings.model_names()),
            regions=Interner([NONE, *regions]),
            clusters=Interner([NONE, *(c.name for c in settings.clusters)]),
            departments=Interner(departments),
            reasons=Interner(REASONS, open_cap=OPEN_CAP),
            sources=Interner(PROVIDERS, open_cap=OPEN_CAP),
            endpoints=Interner(ENDPOINTS),
        )

    def served_pairs(self, settings: Settings) -> list[tuple[int, int]]:
        """(model id, region id) for every model a configured cluster serves, in configuration order."""
        pairs: dict[tuple[int, int], None] = {}
        for cluster in settings.clusters:
            for model in cluster.models:
                pairs[(self.models.id(model.name), self.regions.id(cluster.region))] = None
        return list(pairs)

    def served_endpoints(self, settings: Settings) -> list[tuple[int, int]]:
        """(endpoint id, model id) for every API and model a configured cluster serves together."""
        pairs: dict[tuple[int, int], None] = {}
        for cluster in settings.clusters:
            for endpoint in cluster.endpoints:
                for model in cluster.models:
                    pairs[(enum_index("endpoint", endpoint), self.models.id(model.name))] = None
        return list(pairs)
