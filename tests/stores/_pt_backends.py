"""Backends the patterns and tokens tests run on: file, memory, SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, TypeVar

import pytest

from marcus_persist import MemoryBackend, Runtime, open_runtime

T = TypeVar("T")

BACKENDS = ("file", "memory", "sqlite", "postgres")
Opener = Callable[..., AbstractAsyncContextManager[Runtime]]


def make_opener(kind: str, tmp_path: Path, request: pytest.FixtureRequest | None = None) -> Opener:
    """Opens a runtime on the same data each time, on backend *kind* (postgres: a
    schema of this test's own, from the ``pg`` fixture)."""
    memory = MemoryBackend()
    postgres: dict[str, Any] = {}
    if kind == "postgres":
        assert request is not None, "postgres needs the test's request for the pg fixture"
        postgres = request.getfixturevalue("pg")

    def open_(**options: Any) -> AbstractAsyncContextManager[Runtime]:
        if kind == "memory":
            return open_runtime(tmp_path, backend=memory, **options)
        return open_runtime(tmp_path, **{"backend": kind, **postgres, **options})

    return open_
