"""``doctor``, ``stats``, ``backup`` and ``restore`` on a hybrid data directory."""

from __future__ import annotations

from pathlib import Path

import anyio
import msgspec

from marcus_persist import open_runtime
from marcus_persist._runtime._dirconfig import RECORD_NAME, DirRecord, read_record, write_record
from marcus_persist._runtime._stats import collect_stats
from marcus_persist.ops.backup import restore_backup
from marcus_persist.ops.doctor import diagnose
from marcus_persist.ops.migrate._inplace import migrate_in_place
from tests._hybrid import REVIEW_HYBRID

from .test_migrate import populate
from .test_migrate_in_place import digests


async def moved(tmp_path: Path, stores: list[str]) -> Path:
    """A populated directory with *stores* moved to sqlite in place."""
    data = tmp_path / "data"
    await populate(data)
    await anyio.to_thread.run_sync(lambda: migrate_in_place(data, stores, "sqlite"))
    return data


def problems(data: Path) -> list[tuple[str, str]]:
    return [(Path(f.path).name, f.severity) for f in diagnose(data) if f.severity != "info"]


class TestDoctor:
    async def test_a_hybrid_directory_is_clean_and_says_where_stores_are(
        self, tmp_path: Path
    ) -> None:
        data = await moved(tmp_path, ["assignments", "state"])
        findings = await anyio.to_thread.run_sync(diagnose, data)
        assert [f for f in findings if f.severity != "info"] == []
        facts = " ".join(f.problem for f in findings)
        assert "assignments on sqlite, state on sqlite" in facts
        assert "migrated in place" in facts  # the named backups

    async def test_a_damaged_database_is_an_error(self, tmp_path: Path) -> None:
        data = await moved(tmp_path, ["state"])
        db = data / "marcus_state.db"
        db.write_bytes(b"this is not a database" + b"\0" * 4096)
        assert ("marcus_state.db", "error") in problems(data)

    async def test_a_bad_row_is_an_error(self, tmp_path: Path) -> None:
        import sqlite3

        data = await moved(tmp_path, ["state"])
        with sqlite3.connect(data / "marcus_state.db") as conn:
            conn.execute("UPDATE persistence SET data = '{nope' WHERE key = 'k1'")
        assert [severity for _name, severity in problems(data)] == ["error"]

    async def test_an_unfinished_migration_and_a_bad_record(self, tmp_path: Path) -> None:
        data = await moved(tmp_path, ["state"])
        (data / ".migrate-tokens.json").write_bytes(b"{}")
        assert problems(data) == [(".migrate-tokens.json", "warning")]
        (data / RECORD_NAME).write_text('{"backends": {"state": "oracle"}}')
        assert (RECORD_NAME, "error") in problems(data)


class TestStats:
    async def test_counts_come_from_where_the_stores_are(self, tmp_path: Path) -> None:
        data = await moved(tmp_path, ["assignments", "state", "patterns"])
        rows = {t.name: t.records for t in collect_stats(data).types}
        assert rows["assignments"] == 2
        assert rows["marcus_state"] == 2501
        assert rows["learned_patterns"] == 6


class TestBackupRestore:
    async def test_a_hybrid_backup_restores_every_record_on_its_engines(
        self, tmp_path: Path
    ) -> None:
        data = await moved(tmp_path, ["state"])
        async with open_runtime(data, backends={"assignments": "sqlite"}) as rt:
            await rt.assignments.assign("agent-9", "task-9", {})  # sqlite, by option
        write_record(data, DirRecord(backends={"state": "sqlite", "assignments": "sqlite"}))
        before = digests(data)
        async with open_runtime(data) as rt:
            path = await rt.backup()
        restored = tmp_path / "restored"
        await anyio.to_thread.run_sync(restore_backup, path, restored)
        record = read_record(restored)
        assert record is not None and record.backends == {
            "state": "sqlite",
            "assignments": "sqlite",
        }
        assert digests(restored) == before
        async with open_runtime(restored) as rt:
            assert await rt.assignments.get_worker_for_task("task-9") == "agent-9"
            assert await rt.state.count("projects") == 2500

    async def test_the_review_hybrid_by_option_round_trips(self, tmp_path: Path) -> None:
        data = tmp_path / "data"
        await populate(data, backends=REVIEW_HYBRID)
        async with open_runtime(data, backends=REVIEW_HYBRID) as rt:
            path = await rt.backup()
        restored = tmp_path / "restored"
        await anyio.to_thread.run_sync(restore_backup, path, restored)
        async with open_runtime(restored, backends=REVIEW_HYBRID) as rt:
            assert await rt.state.count("projects") == 2500
            assert msgspec.json.encode(await rt.assignments.get_assignment("agent-1"))
