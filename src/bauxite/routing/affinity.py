"""Which cluster recently served each prompt prefix, so follow-up requests can reuse its warm KV cache."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable


class PrefixAffinity:
    """A bounded LRU from prefix hash to cluster name. Key 0 means "unknown prefix" and is never stored.

    ``on_remember`` (set by shared state) hears every new or changed entry made here; entries learnt from
    other replicas come in through ``adopt`` and are not echoed back.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[int, str] = OrderedDict()
        self.on_remember: Callable[[int, str], None] | None = None

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, prefix_key: int) -> str | None:
        return self._entries.get(prefix_key) if prefix_key else None

    def remember(self, prefix_key: int, cluster: str) -> None:
        if not prefix_key:
            return
        changed = self._entries.get(prefix_key) != cluster
        self.adopt(prefix_key, cluster)
        if changed and self.on_remember is not None:
            self.on_remember(prefix_key, cluster)

    def adopt(self, prefix_key: int, cluster: str) -> None:
        """Store an entry without telling ``on_remember`` (it came from another replica)."""
        self._entries[prefix_key] = cluster
        self._entries.move_to_end(prefix_key)
        if len(self._entries) > self.capacity:
            self._entries.popitem(last=False)


def prefix_hash(data: bytes, key: bytes) -> int:
    """A stable 63-bit keyed hash (BLAKE2b, 8-byte digest) of a prompt prefix; never 0 (0 = no prefix).

    Stable across processes and replicas that share ``key`` (Python's ``hash()`` is salted per process), and
    keyed so that a stored hash cannot be matched against guessed prompts by anyone without the key.
    """
    digest = hashlib.blake2b(data, digest_size=8, key=key).digest()
    return (int.from_bytes(digest, "big") >> 1) or 1
