"""A read-through Redis cache of hot assignments, in front of a shared database.

The store stays the source of truth (PostgreSQL); the cache only saves it
reads and never holds the only copy of anything. (On file and SQLite the one
owning process holds every committed assignment and reads it from memory,
faster than any Redis round trip, so no cache is made there.) Keys are
versioned so no reader ever gets a stale entry:

* every cached key ``K`` (a worker's record, or a task's holder) has a
  generation ``g:K``, a random token each write replaces (never a counter,
  so a Redis restarted empty cannot bring an old generation back); entries
  live at ``d:<gen>:K``;
* a reader reads the generation and the entry in one script; on a miss it
  reads the database and stores what it read under the generation it saw;
* a writer bumps ``g:K`` of everything its batch touched *after* the commit
  and *before* its callers are answered.

A reader that raced a writer stores its (possibly old) value under a
generation nobody reads any more, so a value read from the cache was current
when the writer answered. Entries also expire (``ttl``), which bounds how long
a missed invalidation (Redis unreachable for the writer only) can show.

Redis errors never reach callers: the cache steps aside for ``retry_after``
seconds and every read goes to the store (counted: ``fallbacks``); a writer
still tries to invalidate meanwhile (peers may be filling a Redis that came
back). A writer that could not invalidate purges the whole namespace when
Redis is back. What this leaves open: a writer that cannot reach a Redis its peers
still reach answers its callers while the peers may read the old entry, for
at most ``ttl`` seconds or until the writer's purge. A Redis restarted
empty leaves nothing to purge; one that kept its data is purged by the
writer's next call.

Every process adds its counters (hits, misses, fallbacks, errors) to the hash
``<namespace>:stats`` at most once a second and when it closes, so
``marcus-persist stats`` shows them for the whole deployment
(:func:`read_statistics`); counts made while Redis was down are added once it
answers again.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterable
from typing import Any

import msgspec
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from marcus_persist._core._codec import decode, encode

__all__ = ("AssignmentCache", "CacheKey", "find_namespaces", "namespace_of", "read_statistics")

log = logging.getLogger("marcus_persist")

#: (kind, scope, id): ``("w", scope, worker_id)`` -> record or None,
#: ``("t", scope, task_id)`` -> holder worker id or None; scope ``""`` is global
CacheKey = tuple[str, str, str]

# A generation is a fresh random token, never a counter: Redis restarted without
# its data would count again from 0, and a reader that looked a generation up
# before the restart could fill an old value under a number a later write reaches.
_INVALIDATE = """
for _, key in ipairs(KEYS) do
  redis.call('SET', key, ARGV[2], 'EX', ARGV[1])
end
return #KEYS
"""

# A key never invalidated (or whose generation expired) is at generation
# '0.<epoch>': the epoch is made by the first lookup after Redis (re)started
# empty, so a fill under a generation read before a restart is never read after it.
_LOOKUP = """
local g = redis.call('GET', KEYS[1])
if not g then
  local e = redis.call('GET', KEYS[2])
  if not e then
    redis.call('SET', KEYS[2], ARGV[3])
    e = ARGV[3]
  end
  g = '0.' .. e
end
return {g, redis.call('GET', ARGV[1] .. g .. ARGV[2])}
"""


#: the counters added to ``<namespace>:stats``
STATS_FIELDS = ("hits", "misses", "fallbacks", "errors")
FLUSH_SECONDS = 1.0


def namespace_of(dbname: str, schema: str) -> str:
    """The cache namespace of the PostgreSQL database *dbname*'s schema *schema*."""
    return f"marcus_persist:{dbname}:{schema}"


def find_namespaces(url: str, schema: str) -> list[str]:
    """Every namespace whose counters Redis holds for a schema named *schema*.

    :raises redis.RedisError: if Redis cannot be read
    """
    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        keys = client.scan_iter(namespace_of("*", schema) + ":stats", count=1000)
        return sorted((k.decode() if isinstance(k, bytes) else str(k))[:-6] for k in keys)
    finally:
        client.close()


def read_statistics(url: str, namespace: str) -> dict[str, int]:
    """The counters every process of *namespace* added (zero when none did).

    :raises redis.RedisError: if Redis cannot be read
    """
    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        raw = client.hgetall(f"{namespace}:stats")
    finally:
        client.close()
    found = {(k.decode() if isinstance(k, bytes) else str(k)): int(v) for k, v in raw.items()}
    return {field: found.get(field, 0) for field in STATS_FIELDS}


class CacheStatistics(msgspec.Struct, frozen=True):
    """The cache's counters since the runtime opened."""

    hits: int
    misses: int
    errors: int  #: Redis calls that failed
    available: bool
    #: reads the store answered because Redis was unavailable
    fallbacks: int = 0

    @property
    def hit_rate(self) -> float | None:
        """Hits per read that reached Redis (``None`` before the first)."""
        looked = self.hits + self.misses
        return self.hits / looked if looked else None


class AssignmentCache:
    """Versioned read-through entries under ``<namespace>:``; blocking, thread-safe."""

    def __init__(
        self, url: str, namespace: str, *, ttl: int = 60, retry_after: float = 1.0
    ) -> None:
        self.namespace = namespace
        self.ttl = ttl
        self.retry_after = retry_after
        self._client = redis.Redis.from_url(
            url,
            socket_timeout=0.5,
            socket_connect_timeout=0.5,
            retry=Retry(NoBackoff(), 0),  # fail fast: the store answers instead
        )
        self._lookup = self._client.register_script(_LOOKUP)
        self._invalidate = self._client.register_script(_INVALIDATE)
        self._lock = threading.Lock()
        self._down_until = 0.0
        self._dirty = False  # an invalidation was lost: purge before trusting entries
        self.hits = self.misses = self.errors = self.fallbacks = 0
        # counts not yet added to <namespace>:stats (guarded by _lock)
        self._pending = dict.fromkeys(STATS_FIELDS, 0)
        self._next_flush = 0.0

    def statistics(self) -> CacheStatistics:
        return CacheStatistics(self.hits, self.misses, self.errors, self._usable(), self.fallbacks)

    def _gen_key(self, key: CacheKey) -> str:
        kind, scope, ident = key
        return f"{self.namespace}:g:{kind}:{scope}:{ident}"

    def _data_key(self, key: CacheKey) -> tuple[str, str]:
        """The entry key without its generation: ``(before, after)``."""
        kind, scope, ident = key
        return f"{self.namespace}:d:", f":{kind}:{scope}:{ident}"

    def _usable(self) -> bool:
        return time.monotonic() >= self._down_until

    def _count(self, field: str) -> None:
        with self._lock:
            setattr(self, field, getattr(self, field) + 1)
            self._pending[field] += 1

    def flush_statistics(self, *, force: bool = False) -> None:
        """Add the counts made since the last flush to ``<namespace>:stats`` (at most
        once a second unless *force*); kept for the next flush if Redis fails."""
        now = time.monotonic()
        with self._lock:
            if not force and now < self._next_flush:
                return
            pending = {k: v for k, v in self._pending.items() if v}
            self._pending = dict.fromkeys(STATS_FIELDS, 0)
            self._next_flush = now + FLUSH_SECONDS
        if not pending:
            return
        try:
            pipe = self._client.pipeline(transaction=False)
            for field, count in pending.items():
                pipe.hincrby(f"{self.namespace}:stats", field, count)
            pipe.execute()
        except redis.RedisError:
            with self._lock:
                for field, count in pending.items():
                    self._pending[field] += count

    def _failed(self, exc: Exception, what: str) -> None:
        with self._lock:
            self.errors += 1
            self._pending["errors"] += 1
            if time.monotonic() >= self._down_until:
                log.warning("redis cache unavailable (%s: %s); reading the store", what, exc)
            self._down_until = time.monotonic() + self.retry_after

    def _recover(self) -> bool:
        """Drop every entry once after lost invalidations (generations stay, so they
        only grow); ``False`` if Redis is down."""
        if not self._dirty:
            return True
        try:
            for batch in _chunks(self._client.scan_iter(f"{self.namespace}:d:*", count=1000), 500):
                self._client.delete(*batch)
        except redis.RedisError as exc:
            self._failed(exc, "purge")
            return False
        self._dirty = False
        log.info("redis cache back; purged %s after lost invalidations", self.namespace)
        return True

    def lookup(self, key: CacheKey) -> tuple[bool, Any, str | None]:
        """``(hit, value, generation)``; on a miss, pass the generation to :meth:`fill`.

        The generation is ``None`` when Redis is unavailable (then do not fill).
        """
        if not self._usable() or not self._recover():
            self._count("fallbacks")
            return False, None, None
        before, after = self._data_key(key)
        try:
            gen, raw = self._lookup(
                keys=[self._gen_key(key), f"{self.namespace}:epoch"],
                args=[before, after, uuid.uuid4().hex],
            )
        except redis.RedisError as exc:
            self._failed(exc, "lookup")
            self._count("fallbacks")
            return False, None, None
        generation = gen.decode() if isinstance(gen, bytes) else str(gen)
        self._count("misses" if raw is None else "hits")
        self.flush_statistics()  # Redis answers: at most one more call a second
        if raw is None:
            return False, None, generation
        return True, decode(raw), generation

    def fill(self, key: CacheKey, generation: str, value: Any) -> None:
        """Store *value* read from the database under the *generation* seen before reading."""
        before, after = self._data_key(key)
        try:
            self._client.set(f"{before}{generation}{after}", encode(value), ex=self.ttl)
        except redis.RedisError as exc:
            self._failed(exc, "fill")

    def invalidate(self, keys: Iterable[CacheKey]) -> None:
        """Bump the generation of every key a committed batch touched (one script call)."""
        unique = sorted(set(keys))
        if not unique:
            return
        # Not behind the back-off of reads: a peer may reach Redis (restarted, say)
        # and fill entries this write makes old, so a writer always tries (once
        # while backing off); only a failed try leaves them to the purge.
        usable = self._usable()
        if not self._recover():
            self._dirty = True
            return
        gen_keys = [self._gen_key(key) for key in unique]
        for attempt in (1, 2) if usable else (2,):  # 2: on a new connection (a restart)
            try:
                # generations outlive every entry (ttl) by far
                self._invalidate(keys=gen_keys, args=[86_400, uuid.uuid4().hex])
                return
            except redis.RedisError as exc:
                if attempt == 2:
                    self._dirty = True
                    self._failed(exc, "invalidate")

    def close(self) -> None:
        for _ in range(2):  # a connection Redis dropped fails once, then reconnects
            self.flush_statistics(force=True)
            if not any(self._pending.values()):
                break
        self._client.close()


def _chunks(items: Iterable[Any], size: int) -> Iterable[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
