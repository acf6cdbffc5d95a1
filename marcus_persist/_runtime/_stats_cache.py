"""``stats``: the Redis cache of assignment reads, as every process counted it.

The cache adds its counters to ``<namespace>:stats`` in Redis
(:mod:`marcus_persist.backends._redis_cache`), so they outlive the runtimes
and sum over every process of a deployment. Only a PostgreSQL assignments
store reads through the cache; on file and sqlite the owning process reads
its own memory and the cache is not used (this says so).
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from marcus_persist._config import Config
from marcus_persist._runtime._dirconfig import read_record, with_record

__all__ = ("CacheStats", "cache_stats")


class CacheStats(msgspec.Struct, frozen=True):
    engine: str  #: the assignments store's engine
    namespace: str | None = None  #: the Redis namespace read (``None``: not used)
    hits: int = 0
    misses: int = 0
    #: reads the store answered because Redis was unavailable
    fallbacks: int = 0
    errors: int = 0  #: Redis calls that failed
    hit_rate: float | None = None  #: hits per read that reached Redis
    note: str = ""


def cache_stats(data_dir: Path, redis_url: str | None = None) -> CacheStats | None:
    """The cache counters of *data_dir*'s assignments store; ``None`` without a
    ``redis_url`` (given, or ``MARCUS_PERSIST_REDIS_URL``).

    :raises ConfigError: if the environment's options are wrong
    """
    config = with_record(Config(data_dir=str(data_dir)).with_env(), read_record(data_dir))
    url = redis_url or config.redis_url
    if not url:
        return None
    engine = config.engine_of("assignments")
    if engine != "postgres":
        note = f"not used: on {engine} the owning process reads assignments from its memory"
        return CacheStats(engine, note=note)
    import redis

    from marcus_persist.backends._redis_cache import read_statistics

    try:
        namespace = _namespace(url, config)
        if namespace is None:
            note = f"several databases cache a schema {config.pg_schema!r}: name one in the DSN"
            return CacheStats(engine, note=note)
        counts = read_statistics(url, namespace)
    except redis.RedisError as exc:
        return CacheStats(engine, note=f"Redis unreachable: {exc}")
    looked = counts["hits"] + counts["misses"]
    rate = round(counts["hits"] / looked, 4) if looked else None
    return CacheStats(
        engine, namespace, counts["hits"], counts["misses"], counts["fallbacks"],
        counts["errors"], rate,
    )  # fmt: skip


def _namespace(url: str, config: Config) -> str | None:
    """The cache namespace of the deployment: its database from the DSN, else the
    one database whose counters Redis holds for the schema (``None``: several)."""
    import os

    from psycopg.conninfo import conninfo_to_dict

    from marcus_persist.backends._redis_cache import find_namespaces, namespace_of

    dsn = config.dsn or os.environ.get("MARCUS_PERSIST_PG_DSN")
    dbname = conninfo_to_dict(dsn).get("dbname") if dsn else None
    if isinstance(dbname, str) and dbname:
        return namespace_of(dbname, config.pg_schema)
    found = find_namespaces(url, config.pg_schema)
    if len(found) > 1:
        return None
    return found[0] if found else namespace_of("?", config.pg_schema)
