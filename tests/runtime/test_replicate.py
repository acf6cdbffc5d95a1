"""Continuous replication to ``archive_url``: point-in-time restore, a remote that goes down."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import pytest

from marcus_persist import ConfigError, open_runtime
from marcus_persist._core._fs import OS_FS
from marcus_persist._core._remote import list_remote_backups
from marcus_persist._core._snapshot import BACKUPS_DIR
from marcus_persist._core._wal import scan_log
from marcus_persist._runtime._replicate import STAGING
from marcus_persist.backends._assignments import check_records
from marcus_persist.backends._files import FileContext
from marcus_persist.backends.file import FileAssignmentStorage
from marcus_persist.ops.remote import restore_from_store
from tests._s3 import CutProxy

from ..conftest import archive_store

SEED = 18
INSTANTS = 20


def stored_tasks(data: Path) -> dict[str, str]:
    """The global assignments as a restart would load them: files plus the log replayed."""
    ctx = FileContext(data, OS_FS, sync=False, on_corrupt="error")
    raw = FileAssignmentStorage(ctx).load(check_records).get(None, {})
    return {worker: record["task_id"] for worker, record in raw.items()}


@pytest.mark.anyio
async def test_restore_to_random_instants_reproduces_the_acknowledged_state(
    tmp_path: Path, archive: dict[str, Any]
) -> None:
    """A seeded run of assigns, upserts and removals, checkpointed now and then (the
    log's segments retire meanwhile); after each acknowledgement the instant and
    the state are noted. Restored to 20 of those instants (picked by the seed), the
    directory holds exactly the state acknowledged at each."""
    rng = random.Random(SEED)
    timeline: list[tuple[datetime, dict[str, str]]] = []
    state: dict[str, str] = {}
    async with open_runtime(tmp_path / "data", replicate_interval_seconds=0.05, **archive) as rt:
        assert rt.replicator is not None
        await rt.replicator.sync()  # the base is up before the first write
        for step in range(80):
            worker = f"w{rng.randrange(8)}"
            if worker in state and rng.random() < 0.3:
                await rt.assignments.remove_assignment(worker)
                del state[worker]
            else:
                task = f"t{step}"
                await rt.assignments.save_assignment(worker, task, {"step": step})
                state[worker] = task
            timeline.append((datetime.now(UTC), dict(state)))
            if step % 20 == 19:
                await rt.checkpoint()
        await rt.replicator.sync()
        assert rt.replicator.metrics().shipped_records >= 80
    store = archive_store(archive)
    for n, index in enumerate(sorted(rng.sample(range(len(timeline)), INSTANTS))):
        instant, expected = timeline[index]
        target = tmp_path / f"restored-{n}"
        await anyio.to_thread.run_sync(restore_from_store, store, target, instant)
        assert await anyio.to_thread.run_sync(stored_tasks, target) == expected, index
    latest = tmp_path / "latest"
    await anyio.to_thread.run_sync(restore_from_store, store, latest, None)
    async with open_runtime(latest) as rt:
        found = {w: await rt.assignments.get_assignment(w) for w in state}
    assert {w: (r or {}).get("task_id") for w, r in found.items()} == state


@pytest.fixture
def cut(s3_archive: dict[str, Any]) -> Iterator[tuple[CutProxy, dict[str, Any]]]:
    """A cut proxy in front of this test's bucket, and the options that go through it."""
    port = urlsplit(s3_archive["archive_endpoint"]).port
    assert port is not None
    proxy = CutProxy(port)
    try:
        yield proxy, {**s3_archive, "archive_endpoint": proxy.endpoint}
    finally:
        proxy.close()


@pytest.mark.anyio
async def test_a_remote_that_goes_down_delays_replication_never_a_write(
    tmp_path: Path, s3_archive: dict[str, Any], cut: tuple[CutProxy, dict[str, Any]]
) -> None:
    """Cut the connection to the server: every write is still acknowledged, the
    failures are counted, nothing not yet shipped leaves the disk (a checkpoint
    keeps the segments), and once the server is back everything goes up."""
    proxy, options = cut
    data = tmp_path / "data"
    async with open_runtime(data, replicate_interval_seconds=0.05, **options) as rt:
        replicator = rt.replicator
        assert replicator is not None
        await replicator.sync()
        proxy.down.set()
        for i in range(20):
            await rt.assignments.assign(f"w{i}", f"t{i}", {"i": i})
        await replicator.failing.wait()
        await rt.checkpoint()  # would retire the segments: they are not up yet
        logged = [lsn for s in scan_log(data / "assignments" / "wal") for lsn, _ in s.records]
        assert len(logged) >= 20
        metrics = (await rt.metrics()).replication
        assert metrics is not None and metrics.retries >= 1 and metrics.last_error
        proxy.down.clear()
        await replicator.sync()
        assert (await rt.metrics()).replication.retries >= 1  # type: ignore[union-attr]
        assert not any((data / BACKUPS_DIR / STAGING).glob("backup-*"))
    restored = tmp_path / "restored"
    store = archive_store(s3_archive)
    await anyio.to_thread.run_sync(restore_from_store, store, restored, None)
    assert await anyio.to_thread.run_sync(stored_tasks, restored) == {
        f"w{i}": f"t{i}" for i in range(20)
    }


@pytest.mark.anyio
async def test_the_base_stays_on_disk_until_its_upload_is_verified(
    tmp_path: Path, s3_archive: dict[str, Any], cut: tuple[CutProxy, dict[str, Any]]
) -> None:
    """The server is down from the start: the base is copied locally and kept there
    (retried) until the server takes it; then it goes and the remote has it."""
    proxy, options = cut
    proxy.down.set()
    data = tmp_path / "data"
    async with open_runtime(data, replicate_interval_seconds=0.05, **options) as rt:
        replicator = rt.replicator
        assert replicator is not None
        await rt.assignments.assign("w1", "t1", {})
        await replicator.failing.wait()
        assert list((data / BACKUPS_DIR / STAGING).glob("backup-*"))
        proxy.down.clear()
        await replicator.sync()
        assert not list((data / BACKUPS_DIR / STAGING).glob("backup-*"))
    backups = await anyio.to_thread.run_sync(list_remote_backups, archive_store(s3_archive))
    assert len(backups) == 1


@pytest.mark.anyio
async def test_instants_on_both_sides_of_a_new_base_restore_exactly(tmp_path: Path) -> None:
    """Once a base's log passes ``wal_checkpoint_mb`` the replicator takes a new base;
    the old chain is closed at that pause. Instants before and after it restore
    exactly the acknowledged state."""
    rng = random.Random(SEED)
    archive: dict[str, Any] = {"archive_url": f"file://{tmp_path}/archive"}
    timeline: list[tuple[datetime, dict[str, str]]] = []
    state: dict[str, str] = {}
    filler = "x" * 2048
    async with open_runtime(
        tmp_path / "data", replicate_interval_seconds=0.05, wal_checkpoint_mb=1, **archive
    ) as rt:
        replicator = rt.replicator
        assert replicator is not None
        await replicator.sync()
        step = 0
        while replicator.metrics().bases < 2 or step < 700:
            worker = f"w{rng.randrange(50)}"
            await rt.assignments.save_assignment(worker, f"t{step}", {"pad": filler})
            state[worker] = f"t{step}"
            timeline.append((datetime.now(UTC), dict(state)))
            step += 1
            if step % 100 == 0:
                await replicator.sync()
        await replicator.sync()
    store = archive_store(archive)
    backups = await anyio.to_thread.run_sync(list_remote_backups, store)
    assert len(backups) >= 2
    second = datetime.fromisoformat(backups[1].created_at)
    before = [i for i, (t, _s) in enumerate(timeline) if t < second]
    after = [i for i, (t, _s) in enumerate(timeline) if t > second]
    assert before and after
    for n, index in enumerate(rng.sample(before, 3) + rng.sample(after, 3)):
        instant, expected = timeline[index]
        target = tmp_path / f"restored-{n}"
        await anyio.to_thread.run_sync(restore_from_store, store, target, instant)
        assert await anyio.to_thread.run_sync(stored_tasks, target) == expected, index


@pytest.mark.anyio
async def test_archive_url_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MARCUS_PERSIST_ARCHIVE_URL", f"file://{tmp_path}/archive")
    async with open_runtime(tmp_path / "data") as rt:
        assert rt.replicator is not None
        await rt.replicator.sync()  # the base is up
        await rt.assignments.assign("w1", "t1", {})
        await rt.replicator.sync()
        metrics = (await rt.metrics()).replication
        assert metrics is not None and metrics.shipped_records == 1 and metrics.base
    monkeypatch.delenv("MARCUS_PERSIST_ARCHIVE_URL")
    async with open_runtime(tmp_path / "plain") as rt:
        assert rt.replicator is None and (await rt.metrics()).replication is None


@pytest.mark.anyio
async def test_a_bad_archive_url_refuses_to_open_and_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="archive_url"):
        async with open_runtime(tmp_path / "data", archive_url="ftp://somewhere/x"):
            pass
    assert not (tmp_path / "data").exists()


@pytest.mark.anyio
async def test_a_file_archive_inside_the_data_directory_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with pytest.raises(ConfigError, match="inside the data directory"):
        async with open_runtime(data, archive_url=f"file://{data}/archive"):
            pass
    async with open_runtime(data, archive_url=f"file://{data}/backups/archive") as rt:
        assert rt.replicator is not None
        await rt.replicator.sync()
