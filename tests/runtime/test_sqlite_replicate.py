"""Replication of the SQLite database to ``archive_url``: snapshots, and a restore to
the newest one at or before an instant (``file://`` and ``s3://``)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import pytest

from marcus_persist import CorruptDataError, open_runtime
from marcus_persist._core._sqlship import DbSnapshot, list_snapshots, thin
from marcus_persist.ops.remote import restore_from_store

from ..conftest import archive_store

pytestmark = pytest.mark.anyio

#: the sqlite engine alone, and a hybrid whose assignments are on sqlite
ENGINES: list[dict[str, Any]] = [
    {"backend": "sqlite"},
    {"backend": "file", "backends": {"assignments": "sqlite"}},
]


async def _tasks(target: Path, engines: dict[str, Any], workers: list[str]) -> dict[str, Any]:
    async with open_runtime(target, **engines) as rt:
        found = {w: await rt.assignments.get_assignment(w) for w in workers}
    return {w: (r or {}).get("task_id") for w, r in found.items()}


@pytest.mark.parametrize("engines", ENGINES, ids=["sqlite", "hybrid"])
async def test_restore_at_an_instant_holds_what_was_committed_before_it_only(
    tmp_path: Path, archive: dict[str, Any], engines: dict[str, Any]
) -> None:
    async with open_runtime(tmp_path / "data", **engines, **archive) as rt:
        assert rt.replicator is not None and rt.sqlite_replicator is not None
        await rt.replicator.sync()  # the base is up before the first write
        # (the task snapshots too, every interval: how many snapshots there are varies)
        await rt.assignments.save_assignment("w1", "t1", {})
        await rt.sqlite_replicator.ship_now()  # t1 is up
        between = datetime.now(UTC)  # after that snapshot's instant
        await rt.assignments.save_assignment("w2", "t2", {})
        await rt.assignments.save_assignment("w1", "t3", {})
        await rt.sqlite_replicator.ship_now()
        metrics = rt.sqlite_replicator.metrics()
        assert (await rt.metrics()).sqlite_replication == metrics
        assert metrics.snapshots >= 2 and metrics.retries == 0
        assert metrics.shipped_until_ns > int(between.timestamp() * 1e9)
        assert not await rt.sqlite_replicator.ship_now()  # nothing committed since
        assert rt.sqlite_replicator.metrics().snapshots == metrics.snapshots
    store = archive_store(archive)
    assert len(list_snapshots(store)) >= 2  # (and one at close, if it changed)
    earlier = tmp_path / "earlier"
    restored = await anyio.to_thread.run_sync(restore_from_store, store, earlier, between)
    assert "marcus_state.db" in restored.databases
    assert restored.databases["marcus_state.db"] <= between
    assert await _tasks(earlier, engines, ["w1", "w2"]) == {"w1": "t1", "w2": None}
    latest = tmp_path / "latest"
    await anyio.to_thread.run_sync(restore_from_store, store, latest, None)
    assert await _tasks(latest, engines, ["w1", "w2"]) == {"w1": "t3", "w2": "t2"}


async def test_a_damaged_snapshot_is_refused_and_nothing_is_left(tmp_path: Path) -> None:
    archive: dict[str, Any] = {"archive_url": f"file://{tmp_path}/archive"}
    async with open_runtime(tmp_path / "data", backend="sqlite", **archive) as rt:
        assert rt.replicator is not None and rt.sqlite_replicator is not None
        await rt.replicator.sync()
        await rt.assignments.save_assignment("w1", "t1", {})
        await rt.sqlite_replicator.ship_now()
    from click.testing import CliRunner

    from marcus_persist.cli._main import cli

    listed = CliRunner().invoke(cli, ["backups", "--from", archive["archive_url"]])
    assert listed.exit_code == 0, listed.output
    assert "marcus_state.db: " in listed.output and " snapshots from " in listed.output
    store = archive_store(archive)
    newest = list_snapshots(store)[-1]
    path = tmp_path / "archive" / newest.key
    path.write_bytes(path.read_bytes()[:-100])  # truncated in the store
    target = tmp_path / "restored"
    with pytest.raises(CorruptDataError, match="damaged"):
        await anyio.to_thread.run_sync(restore_from_store, store, target, None)
    assert not target.exists()


def test_thinning_keeps_recent_snapshots_then_one_per_hour_then_one_per_day() -> None:
    hour = 3_600_000_000_000
    now = 100 * 24 * hour
    ages = [0, 60, 300, 700, 800, 2 * 3600 + 10, 2 * 3600 + 20, 3 * 86400 + 5, 3 * 86400 + 9]
    snaps = [DbSnapshot(f"k{a}", "db", now - a * 1_000_000_000, "0" * 64, 1) for a in ages]
    doomed = {s.key for s in thin(snaps, now, keep_all_seconds=600)}
    # 700 and 800 s old share an hour: the newer stays; likewise at 2 h and at 3 days
    assert doomed == {"k800", "k7220", "k259209"}


async def test_a_failed_upload_fails_the_snapshot_only(tmp_path: Path) -> None:
    """The store's folder is a file: every snapshot fails to go up; commits go on, no
    staged copy is left."""
    (tmp_path / "blocked").write_text("not a directory")
    archive: dict[str, Any] = {"archive_url": f"file://{tmp_path}/blocked/archive"}
    data = tmp_path / "data"
    async with open_runtime(data, backend="sqlite", **archive) as rt:
        assert rt.sqlite_replicator is not None
        await rt.assignments.save_assignment("w1", "t1", {})
        with pytest.raises(OSError):
            await rt.sqlite_replicator.ship_now()
        await rt.assignments.save_assignment("w2", "t2", {})
        assert rt.sqlite_replicator.metrics().snapshots == 0
        assert not (data / "backups" / ".replica-sqlite").exists()
    assert await _tasks(data, {"backend": "sqlite"}, ["w1", "w2"]) == {"w1": "t1", "w2": "t2"}
