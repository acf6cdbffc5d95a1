"""Loaded shards in memory, least recently used first, bounded by their encoded bytes."""

from __future__ import annotations

from collections import OrderedDict

from marcus_persist.backends._contract import Record

__all__ = ("ShardCache",)

CacheKey = tuple[str, str]  # (collection, shard)


class ShardCache:
    """An LRU of ``(collection, shard) -> records``; the caller holds its store's lock.

    The newest entry is always kept, even past *limit* bytes, so a shard being
    read is never evicted by its own arrival.
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._entries: OrderedDict[CacheKey, tuple[dict[str, Record], int]] = OrderedDict()
        self._bytes = 0

    def get(self, key: CacheKey) -> dict[str, Record] | None:
        hit = self._entries.get(key)
        if hit is None:
            return None
        self._entries.move_to_end(key)
        return hit[0]

    def put(self, key: CacheKey, records: dict[str, Record], size: int) -> None:
        self.drop(key)
        self._entries[key] = (records, size)
        self._bytes += size
        while self._bytes > self._limit and len(self._entries) > 1:
            _key, (_records, evicted) = self._entries.popitem(last=False)
            self._bytes -= evicted

    def drop(self, key: CacheKey) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= old[1]

    @property
    def bytes(self) -> int:
        """Encoded bytes of the shards held."""
        return self._bytes

    def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0
