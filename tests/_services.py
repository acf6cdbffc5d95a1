"""Real PostgreSQL and Redis for the tests: addresses from the environment.

``MARCUS_TEST_PG_DSN`` and ``MARCUS_TEST_REDIS_URL`` (``.ci/run`` sets both).
Unset, the tests skip; under ``CI=true`` a missing service fails instead. Each
test gets its own schema (and Redis namespace), dropped afterwards, so
parallel runs never collide. The fixtures live in ``tests/conftest.py``.
"""

from __future__ import annotations

import os

import pytest


def unavailable(why: str) -> None:
    """Skip, except under ``CI=true`` where a missing service is a failure."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{why}: CI must run the postgres/redis tests")
    pytest.skip(why)


def service(variable: str) -> str:
    value = os.environ.get(variable)
    if not value:
        unavailable(f"{variable} is not set")
    return value or ""


def drop_schema(dsn: str, schema: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def drop_redis_namespace(url: str, schema: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(f"marcus_persist:*:{schema}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
