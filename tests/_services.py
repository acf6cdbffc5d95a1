"""Real PostgreSQL and Redis for the tests.

``MARCUS_TEST_PG_DSN`` and ``MARCUS_TEST_REDIS_URL`` name them; unset, the
usual local addresses are used (``postgresql://postgres@127.0.0.1:5432/test``,
``redis://127.0.0.1:6379/0``), so a machine running both needs no variable.
A service that does not answer skips its tests with the reason (``-ra`` lists
it); under ``CI=true`` it fails them instead. Each test gets its own schema
(and Redis namespace), dropped afterwards, so parallel runs never collide. The
fixtures live in ``tests/conftest.py``.
"""

from __future__ import annotations

import functools
import os

import pytest


def unavailable(why: str) -> None:
    """Skip, except under ``CI=true`` where a missing service is a failure."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{why}: CI must run the postgres/redis tests")
    pytest.skip(why)


DEFAULTS = {
    "MARCUS_TEST_PG_DSN": "postgresql://postgres@127.0.0.1:5432/test",
    "MARCUS_TEST_REDIS_URL": "redis://127.0.0.1:6379/0",
}


def service(variable: str) -> str:
    """The address in *variable* (else its usual local one), once it answers."""
    address = os.environ.get(variable) or DEFAULTS[variable]
    problem = _probe(variable, address)
    if problem is not None:
        unavailable(f"{variable}={address} does not answer ({problem})")
    return address


@functools.cache
def _probe(variable: str, address: str) -> str | None:
    """Why the service at *address* cannot be used, or ``None`` (asked once per run)."""
    try:
        if variable == "MARCUS_TEST_PG_DSN":
            import psycopg

            psycopg.connect(address, connect_timeout=5).close()
        else:
            import redis

            client = redis.Redis.from_url(address, socket_connect_timeout=5)
            try:
                client.ping()
            finally:
                client.close()
    except Exception as exc:  # any failure to connect means: not available here
        return f"{type(exc).__name__}: {exc}"
    return None


def drop_schema(dsn: str, schema: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def drop_redis_namespace(url: str, schema: str) -> None:
    drop_redis_keys(url, f"marcus_persist:*:{schema}:*")


def drop_redis_keys(url: str, pattern: str) -> None:
    """Delete every key matching *pattern* (a test's cache namespace)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(pattern, count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
