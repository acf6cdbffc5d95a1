"""Replication's bounds: a remote call that never returns, the segments held
while the remote is down, and the retention of bases on the remote."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import pytest

import marcus_persist._runtime._open as runtime_open
from marcus_persist import BackendError, PersistenceError, open_runtime
from marcus_persist._core import _bounded
from marcus_persist._core._objstore import ObjectStore, open_object_store
from marcus_persist._core._remote import list_remote_backups
from marcus_persist._core._wal import scan_log
from marcus_persist._runtime._monitor_live import Monitor
from marcus_persist.backends.file._audit_tier import TIER_PREFIX as AUDIT_PREFIX
from marcus_persist.backends.file._tokens_tier import TIER_PREFIX
from marcus_persist.ops.remote import restore_from_store
from tests.conftest import archive_store
from tests.runtime.test_replicate import stored_tasks
from tests.stores.audit_helpers import FakeClock
from tests.stores.test_audit_rotation import FIRST, TODAY, fill_days, noon
from tests.stores.test_tokens_tier import KEEP, NOW, fill, local_months


class StuckStore:
    """A ``file://`` store whose uploads of log records hang, while :attr:`stuck`
    is set, until :attr:`release` is set (a remote that stopped answering)."""

    def __init__(self, inner: ObjectStore, prefix: str = "") -> None:
        self.inner = inner
        self.url = inner.url
        self.prefix = prefix  # of the keys whose calls hang (subclasses)
        self.stuck = threading.Event()
        self.entered = threading.Event()
        self.release = threading.Event()

    def hang(self, key: str) -> None:
        """Hang, while :attr:`stuck` is set, if *key* is under :attr:`prefix`."""
        if self.stuck.is_set() and key.startswith(self.prefix):
            self.entered.set()
            self.release.wait()

    def put_bytes(self, key: str, data: bytes) -> None:
        if "/log/" in key:
            self.hang(key)
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
    monkeypatch.setattr(_bounded, "REMOTE_CALL_SECONDS", 0.2)
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


class DownStore:
    """A ``file://`` store whose uploads fail while :attr:`down` is set."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner
        self.url = inner.url
        self.down = threading.Event()

    def put_bytes(self, key: str, data: bytes) -> None:
        if self.down.is_set():
            raise BackendError(f"{self.url}/{key}: upload failed: the remote is down")
        self.inner.put_bytes(key, data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.mark.anyio
async def test_past_the_hold_bound_the_log_is_kept_and_said_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The remote is down while more than ``replicate_hold_mb`` of log is written:
    every segment stays (a checkpoint retires none of them), the metrics say the
    bound is passed, one warning is logged; once the remote is back all goes up."""
    store = DownStore(open_object_store(f"file://{tmp_path}/archive"))
    monkeypatch.setattr(runtime_open, "open_object_store", lambda *_a: store)
    data = tmp_path / "data"
    pad = "x" * 60_000
    async with open_runtime(
        data, archive_url="file:///ignored", replicate_interval_seconds=0.05, replicate_hold_mb=1
    ) as rt:
        replicator = rt.replicator
        assert replicator is not None
        await replicator.sync()
        store.down.set()
        for i in range(25):  # 1.5 MB of log
            await rt.assignments.save_assignment(f"w{i}", f"t{i}", {"pad": pad})
        await rt.checkpoint()  # would retire the segments: they are not up yet
        for _ in range(3):
            await replicator.next_pass()
        metrics = replicator.metrics()
        assert metrics.over_hold and metrics.hold_exceeded == 1
        assert metrics.held_bytes > metrics.hold_limit_bytes == 1 << 20
        lsns = [lsn for s in scan_log(data / "assignments" / "wal") for lsn, _ in s.records]
        assert len(lsns) >= 25
        warned = [r for r in caplog.records if "replicate_hold_mb" in r.getMessage()]
        assert len(warned) == 1
        alerts = {a.name: a for a in (await Monitor(rt).snapshot()).alerts}
        assert alerts["replication_held_bytes"].firing  # the growth alert, live
        store.down.clear()
        await replicator.sync()
        metrics = replicator.metrics()
        assert not metrics.over_hold and metrics.held_bytes == 0
    restored = tmp_path / "restored"
    await anyio.to_thread.run_sync(restore_from_store, store.inner, restored, None)
    tasks = await anyio.to_thread.run_sync(stored_tasks, restored)
    assert tasks == {f"w{i}": f"t{i}" for i in range(25)}


@pytest.mark.anyio
async def test_retention_keeps_the_newest_bases_and_every_instant_after_the_oldest(
    tmp_path: Path, archive: dict[str, Any]
) -> None:
    """Each start takes a base; with ``replicate_retention=2`` the third start's base
    prunes the first (with its log) once it is up. Every instant from the oldest
    kept base on restores exactly; one before it is refused, not half-restored."""
    data = tmp_path / "data"
    timeline: list[tuple[datetime, dict[str, str]]] = []
    state: dict[str, str] = {}
    for run in range(3):
        async with open_runtime(
            data, replicate_interval_seconds=0.05, replicate_retention=2, **archive
        ) as rt:
            replicator = rt.replicator
            assert replicator is not None
            await replicator.sync()  # this start's base is up before the writes
            for i in range(2):
                await rt.assignments.save_assignment(f"w{i}", f"t{run}-{i}", {})
                state[f"w{i}"] = f"t{run}-{i}"
                timeline.append((datetime.now(UTC), dict(state)))
            await replicator.sync()
            assert replicator.metrics().pruned_bases == (1 if run == 2 else 0)
    store = archive_store(archive)
    backups = await anyio.to_thread.run_sync(list_remote_backups, store)
    assert len(backups) == 2
    oldest = datetime.fromisoformat(backups[0].created_at)
    kept = [(t, s) for t, s in timeline if t >= oldest]
    assert len(kept) == 4  # the second and third runs' writes
    for n, (instant, expected) in enumerate(kept):
        target = tmp_path / f"restored-{n}"
        await anyio.to_thread.run_sync(restore_from_store, store, target, instant)
        assert await anyio.to_thread.run_sync(stored_tasks, target) == expected
    with pytest.raises(PersistenceError, match="no backup was taken at or before"):
        await anyio.to_thread.run_sync(restore_from_store, store, tmp_path / "x", timeline[0][0])
    assert not (tmp_path / "x").exists()


class StuckUploads(StuckStore):
    """A ``file://`` store whose file uploads under :attr:`prefix` hang (and only they)."""

    def put_bytes(self, key: str, data: bytes) -> None:
        self.inner.put_bytes(key, data)

    def put_file(self, key: str, path: Path) -> tuple[int, str]:
        self.hang(key)
        return self.inner.put_file(key, path)


@pytest.mark.anyio
async def test_a_stuck_snapshot_upload_is_abandoned_and_its_copy_deleted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SQLite snapshot's upload hangs: past its deadline it is a failed attempt
    (counted), no staged copy is left, writes go on, and the runtime closes while
    the upload is still stuck."""
    store = StuckUploads(open_object_store(f"file://{tmp_path}/archive"), "sqlite/")
    monkeypatch.setattr(runtime_open, "open_object_store", lambda *_a: store)
    monkeypatch.setattr(_bounded, "REMOTE_CALL_SECONDS", 0.2)
    data = tmp_path / "data"
    try:
        async with open_runtime(
            data, backend="sqlite", archive_url="file:///ignored", replicate_interval_seconds=0.05
        ) as rt:
            replicator = rt.sqlite_replicator
            assert replicator is not None
            await rt.assignments.save_assignment("w0", "t0", {})
            assert await replicator.ship_now() or replicator.metrics().snapshots >= 1
            up = replicator.metrics().snapshots
            store.stuck.set()
            await rt.assignments.save_assignment("w1", "t1", {})
            await replicator.failing.wait()
            metrics = replicator.metrics()
            assert metrics.retries >= 1 and metrics.last_error == "TimeoutError"
            assert metrics.snapshots == up  # the abandoned one is not counted
            with pytest.raises(TimeoutError):  # a host's call is bounded alike
                await replicator.ship_now()
            await rt.assignments.save_assignment("w2", "t2", {})  # a write never waits on it
            assert (await rt.assignments.get_assignment("w2")) is not None
        assert not store.release.is_set()  # closed with the upload still stuck
        assert store.entered.is_set()
        staging = data / "backups" / ".replica-sqlite"
        assert not staging.exists() or not any(staging.iterdir())  # no copy left behind
    finally:
        store.release.set()


async def stuck_after_sealing(
    data: Path, clock: FakeClock, kind: type[StuckStore], monkeypatch: pytest.MonkeyPatch
) -> StuckStore:
    """Token usage with January and February sealed on the disk; then the next
    runtime's ``archive_url`` is a *kind* store, stuck on the token archives, with
    a deadline of 0.2 s."""
    async with open_runtime(data, clock=clock, **KEEP) as rt:
        await fill(rt, clock)
    store = kind(open_object_store(f"file://{data.parent}/archive"), TIER_PREFIX)
    store.stuck.set()
    monkeypatch.setattr(runtime_open, "open_object_store", lambda *_a: store)
    monkeypatch.setattr(_bounded, "REMOTE_CALL_SECONDS", 0.2)
    return store


@pytest.mark.anyio
async def test_a_stuck_tiering_pass_is_abandoned_and_deletes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hourly tiering job's upload of a sealed month hangs: past its deadline the
    pass is a failed one (counted), every archive stays on the disk, token usage is
    still recorded, and the runtime closes while the upload is still stuck."""
    data, clock = tmp_path / "data", FakeClock(NOW)
    store = await stuck_after_sealing(data, clock, StuckUploads, monkeypatch)
    try:
        async with open_runtime(data, clock=clock, archive_url="file:///ignored", **KEEP) as rt:
            tiering = rt.token_tiering
            assert tiering is not None
            while tiering.metrics().passes == 0:  # the pass the job makes at start
                await tiering.pass_ended.wait()
            metrics = tiering.metrics()
            assert metrics.retries == 1 and metrics.last_error == "TimeoutError"
            assert metrics.moved == 0
            # a host's call is bounded alike: its deadline, or its wait for the stuck
            # pass (as long as that deadline), whichever ends first
            with pytest.raises((TimeoutError, BackendError)):
                await rt.tokens.tier()
            # and the thread it left waits for the stuck pass no longer than the deadline
            tier = rt.tokens._h.storage.remote  # type: ignore[attr-defined]
            with pytest.raises(BackendError, match="still runs"):
                await anyio.to_thread.run_sync(
                    lambda: tier.move_sealed(
                        data / "token_usage_archive", "2026-03", sync=False, lock=threading.Lock()
                    )
                )
            assert await rt.tokens.record("openai", 1, 1, 0.5)  # a write never waits on it
            assert local_months(data) == ["2026-01.json", "2026-02.json", "2026-03.json"]
        assert not store.release.is_set()  # closed with the upload still stuck
        assert store.entered.is_set()
        assert local_months(data) == ["2026-01.json", "2026-02.json", "2026-03.json"]
    finally:
        store.release.set()


@pytest.mark.anyio
async def test_a_stuck_audit_tiering_is_abandoned_and_deletes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The move of the audit archives after a rotation hangs: the rotation ends past
    the deadline with every archive still on the disk, a later rotation does not
    run a second move beside the stuck one, events are still logged and read, and
    the runtime closes while the upload is still stuck."""
    data = tmp_path / "data"
    days = fill_days(data, FIRST, TODAY)
    store = StuckUploads(open_object_store(f"file://{tmp_path}/archive"), AUDIT_PREFIX)
    store.stuck.set()
    monkeypatch.setattr(runtime_open, "open_object_store", lambda *_a: store)
    monkeypatch.setattr(_bounded, "REMOTE_CALL_SECONDS", 0.2)
    archive = data / "audit_logs" / "archive"
    options: dict[str, Any] = {"audit_daily_days": 7, "audit_weekly_weeks": 2}
    try:
        async with open_runtime(
            data, clock=FakeClock(noon(TODAY)), archive_url="file:///ignored", **options
        ) as rt:
            await rt.audit.rotate()  # the move is abandoned past its deadline
            assert store.entered.is_set()
            held = sorted(p.name for p in archive.iterdir())
            assert held  # nothing left the disk
            await rt.audit.rotate()  # refused while the first move runs, not run beside it
            assert sorted(p.name for p in archive.iterdir()) == held
            warned = [r.getMessage() for r in caplog.records if "stay on disk" in r.getMessage()]
            assert "TimeoutError" in warned[0] and "still runs" in warned[-1]
            await rt.audit.log_event("test", "c1", "agent", "ping", {"n": 1})
            await rt.audit.sync()
            assert len([e async for e in rt.audit.query()]) == 2 * len(days) + 1
        assert not store.release.is_set()  # closed with the upload still stuck
        assert sorted(p.name for p in archive.iterdir()) == held
    finally:
        store.release.set()


class StuckListing(StuckUploads):
    """A :class:`StuckUploads` whose listings under :attr:`prefix` hang too."""

    def list(self, prefix: str) -> Any:
        self.hang(prefix)
        return self.inner.list(prefix)


@pytest.mark.anyio
async def test_a_remote_that_hangs_at_start_does_not_hold_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Token usage reads the months tiered to ``archive_url`` as it starts: a listing
    that never answers is abandoned past its deadline, the start goes on with the
    months on the disk (said in a warning), usage is recorded, and a report says
    the remote did not answer instead of waiting on it."""
    data, clock = tmp_path / "data", FakeClock(NOW)
    store = await stuck_after_sealing(data, clock, StuckListing, monkeypatch)
    try:
        async with open_runtime(data, clock=clock, archive_url="file:///ignored", **KEEP) as rt:
            assert store.entered.is_set()
            assert any("unreachable at start" in r.getMessage() for r in caplog.records)
            with pytest.raises(TimeoutError):  # a report never goes without those months
                await rt.tokens.by_provider()
            assert await rt.tokens.record("openai", 1, 1, 0.5)
            assert rt.token_tiering is not None
            while rt.token_tiering.metrics().passes == 0:  # its listing hangs too
                await rt.token_tiering.pass_ended.wait()
            # a timeout: the pass's deadline, or its listing's (the late ids the start
            # could not read), whichever ends first
            assert rt.token_tiering.metrics().retries == 1
        assert not store.release.is_set()  # closed with the listing still stuck
    finally:
        store.release.set()
