"""Which cluster created which stored response (Responses API), so follow-ups reach the cluster that has it.

A vLLM cluster keeps a response it created (for ``GET /v1/responses/{id}`` and ``previous_response_id``) in
its own memory; another cluster does not know the id. The map holds only ids and cluster names — never
content — in memory, bounded: the oldest entries are forgotten first, as the upstream forgets too.
"""

from __future__ import annotations

from collections import OrderedDict

DEFAULT_CAPACITY = 100_000  # ~100 bytes an entry: ~10 MB at most


class ResponseIds:
    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._capacity = capacity
        self._owner: OrderedDict[str, str] = OrderedDict()

    def remember(self, response_id: str, cluster: str) -> None:
        self._owner[response_id] = cluster
        self._owner.move_to_end(response_id)
        if len(self._owner) > self._capacity:
            self._owner.popitem(last=False)

    def cluster(self, response_id: str) -> str | None:
        """The cluster that created ``response_id``, or None when unknown (never seen, or forgotten)."""
        return self._owner.get(response_id)

    def __len__(self) -> int:
        return len(self._owner)
