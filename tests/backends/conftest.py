"""Fixtures of the backend tests beyond ``tests/conftest.py``'s: the Redis cache,
private servers a test may stop (see ``tests/_services.py`` for the rules)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests._services import drop_redis_namespace, unavailable


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

    def __init__(self, port: int | None = None) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            unavailable("redis-server is not installed")
            raise AssertionError("unreachable")
        self.port = port or free_port()  # a port: a restart where the last one ran
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._exe = exe
        self._start()

    def _start(self) -> None:
        exe = self._exe
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

    def restart(self) -> None:
        """Killed and started again on the same port, empty (it never saves)."""
        self.stop()
        self._start()


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    yield server
    server.stop()
