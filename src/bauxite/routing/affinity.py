"""Which cluster recently served each prompt prefix, so follow-up requests can reuse its warm KV cache."""

from __future__ import annotations

from collections import OrderedDict


class PrefixAffinity:
    """A bounded LRU from prefix hash to cluster name. Key 0 means "unknown prefix" and is never stored."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._entries: OrderedDict[int, str] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, prefix_key: int) -> str | None:
        return self._entries.get(prefix_key) if prefix_key else None

    def remember(self, prefix_key: int, cluster: str) -> None:
        if not prefix_key:
            return
        self._entries[prefix_key] = cluster
        self._entries.move_to_end(prefix_key)
        if len(self._entries) > self._capacity:
            self._entries.popitem(last=False)
