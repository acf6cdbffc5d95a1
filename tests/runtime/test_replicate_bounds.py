"""Replication's bounds: a remote call that never returns, the segments held
while the remote is down, and the retention of bases on the remote."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

import marcus_persist._runtime._open as runtime_open
from marcus_persist import open_runtime
from marcus_persist._core._objstore import ObjectStore, open_object_store
from marcus_persist._runtime import _replicate


class StuckStore:
    """A ``file://`` store whose uploads of log records hang, while :attr:`stuck`
    is set, until :attr:`release` is set (a remote that stopped answering)."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner
        self.url = inner.url
        self.stuck = threading.Event()
        self.entered = threading.Event()
        self.release = threading.Event()

    def put_bytes(self, key: str, data: bytes) -> None:
        if self.stuck.is_set() and "/log/" in key:
            self.entered.set()
            self.release.wait()
        self.inner.put_bytes(key, data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.mark.anyio
async def test_a_call_that_never_returns_is_abandoned_and_never_holds_the_close(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An upload hangs: past its deadline it is a failed attempt (counted), writes
    go on, and the runtime closes while the call is still stuck."""
    store = StuckStore(open_object_store(f"file://{tmp_path}/archive"))
    monkeypatch.setattr(runtime_open, "open_object_store", lambda *_a: store)
    monkeypatch.setattr(_replicate, "REMOTE_CALL_SECONDS", 0.2)
    try:
        async with open_runtime(
            tmp_path / "data", archive_url="file:///ignored", replicate_interval_seconds=0.05
        ) as rt:
            replicator = rt.replicator
            assert replicator is not None
            await replicator.sync()
            store.stuck.set()
            await rt.assignments.assign("w1", "t1", {})
            await replicator.failing.wait()
            metrics = replicator.metrics()
            assert metrics.retries >= 1 and metrics.last_error == "TimeoutError"
            await rt.assignments.assign("w2", "t2", {})  # a write never waits on it
            assert (await rt.assignments.get_assignment("w2")) is not None
        assert not store.release.is_set()  # closed with the call still stuck
        assert store.entered.is_set()
    finally:
        store.release.set()
