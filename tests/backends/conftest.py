"""Real PostgreSQL and Redis for the backend tests: addresses from the environment.

``MARCUS_TEST_PG_DSN`` and ``MARCUS_TEST_REDIS_URL`` (``.ci/run`` sets both).
Unset, the tests skip; under ``CI=true`` a missing service fails instead. Each
test gets its own schema (and Redis namespace), dropped afterwards, so
parallel runs never collide.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

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


@pytest.fixture
def pg_dsn() -> str:
    return service("MARCUS_TEST_PG_DSN")


@pytest.fixture
def redis_url() -> str:
    return service("MARCUS_TEST_REDIS_URL")


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


@pytest.fixture
def pg_schema(pg_dsn: str) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:16]}"
    yield name
    drop_schema(pg_dsn, name)


@pytest.fixture
def pg(pg_dsn: str, pg_schema: str) -> dict[str, Any]:
    """``open_runtime(**pg)`` opens a runtime on this test's schema (no cache)."""
    return {"backend": "postgres", "dsn": pg_dsn, "pg_schema": pg_schema}


@pytest.fixture
def pg_cached(pg: dict[str, Any], redis_url: str) -> Iterator[dict[str, Any]]:
    """Like ``pg``, with the Redis cache; the namespace is deleted afterwards."""
    yield {**pg, "redis_url": redis_url}
    drop_redis_namespace(redis_url, pg["pg_schema"])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PrivateRedis:
    """A redis-server of this test's own, on a free port, that the test may stop."""

    def __init__(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            unavailable("redis-server is not installed")
            raise AssertionError("unreachable")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = subprocess.Popen(
            [
                exe,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise
                time.sleep(0.02)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    yield server
    server.stop()
