"""rt.state beyond the contract: Marcus's files and database, bad input, size independence."""

from __future__ import annotations

import errno
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from marcus_persist import (
    Config,
    ConfigError,
    CorruptDataError,
    PersistenceError,
    ValidationError,
    open_runtime,
)
from marcus_persist._core._fs import OS_FS, FileSystem
from marcus_persist.backends._files import FileContext
from marcus_persist.backends.file._shards import MANIFEST, SHARDS_DIR, ShardStore

pytestmark = pytest.mark.anyio


class CountingFS(FileSystem):
    """Counts bytes written and files read through the interface."""

    def __init__(self) -> None:
        self.written = 0
        self.reads: list[Path] = []

    def write(self, fd: int, data: bytes | memoryview) -> int:
        n = super().write(fd, data)
        self.written += n
        return n

    def read_bytes(self, path: Path) -> bytes:
        self.reads.append(path)
        return super().read_bytes(path)


def prefill(data: Path, count: int) -> None:
    """A state of *count* records in collection ``c``, written directly."""
    root = data / "marcus_state"
    root.mkdir(parents=True)
    store = ShardStore(root, FileContext(data, OS_FS, False, "error"))
    store.open()
    store.commit({"c": {f"k{i}": {"i": i, "text": "x" * 100} for i in range(count)}})


class TestSizeIndependence:
    async def test_one_key_commit_follows_the_batch(self, tmp_path: Path) -> None:
        written = {}
        for size in (100, 100_000):
            prefill(tmp_path / str(size), size)
            fs = CountingFS()
            async with open_runtime(tmp_path / str(size), fs=fs) as rt:
                await rt.state.store("c", "warm", {"i": -1})  # loads the shard it lands in
                fs.written = 0
                await rt.state.store("c", "new", {"i": -2, "text": "y" * 100})
                written[size] = fs.written
        assert 0 < written[100_000] <= 3 * written[100], written

    async def test_open_and_retrieve_read_the_manifest_and_one_shard(self, tmp_path: Path) -> None:
        prefill(tmp_path, 20_000)
        fs = CountingFS()
        async with open_runtime(tmp_path, fs=fs) as rt:
            assert await rt.state.count("c") == 20_000  # from the manifest alone
            got = await rt.state.retrieve("c", "k1234")
            assert got is not None and got["i"] == 1234
        shards = [p for p in fs.reads if p.parent.parent.name == SHARDS_DIR]
        assert len(shards) == 1
        assert len(list((tmp_path / "marcus_state" / SHARDS_DIR / "c").iterdir())) > 50


class TestMarcusFiles:
    def write_marcus(self, data: Path) -> dict[str, dict[str, Any]]:
        state = data / "marcus_state"
        state.mkdir(parents=True)
        collections: dict[str, dict[str, Any]] = {
            "projects": {
                f"p{i}": {"id": f"p{i}", "name": f"P{i}", "_stored_at": "2025-01-01T10:00:00"}
                for i in range(30)
            },
            "events": {
                f"e{i}": {"event_type": "t", "_stored_at": f"2025-01-0{1 + i % 9}T10:00:00"}
                for i in range(250)
            },
            "custom-things": {
                "x": {"anything": [1, 2, {"deep": None}], "_stored_at": "2025-01-01T10:00:00"}
            },
        }
        for name, records in collections.items():
            (state / f"{name}.json").write_text(json.dumps(records, indent=2))
        return collections

    async def test_every_record_is_imported_and_the_original_kept(self, tmp_path: Path) -> None:
        collections = self.write_marcus(tmp_path)
        async with open_runtime(tmp_path) as rt:
            for name, records in collections.items():
                assert await rt.state.count(name) == len(records)
                for key, record in records.items():
                    assert await rt.state.retrieve(name, key) == record
        state = tmp_path / "marcus_state"
        assert not list(state.glob("*.json")) or [p.name for p in state.glob("*.json")] == [
            MANIFEST
        ]
        kept = sorted(p.name.split(".imported-")[0] for p in state.glob("*.imported-*"))
        assert kept == sorted(f"{n}.json" for n in collections)
        async with open_runtime(tmp_path) as rt:  # nothing imported twice
            assert await rt.state.count("events") == 250

    async def test_crash_after_import_before_rename(self, tmp_path: Path) -> None:
        self.write_marcus(tmp_path)
        async with open_runtime(tmp_path) as rt:
            await rt.state.store("events", "later", {})
        state = tmp_path / "marcus_state"
        original = next(state.glob("events.json.imported-*"))
        original.rename(state / "events.json")  # as if the rename had not happened
        async with open_runtime(tmp_path) as rt:
            assert await rt.state.count("events") == 251
        assert not (state / "events.json").exists()

    async def test_corrupt_marcus_file_is_left_alone(self, tmp_path: Path) -> None:
        state = tmp_path / "marcus_state"
        state.mkdir(parents=True)
        (state / "events.json").write_text('{"e1": {"event_type": ')
        with pytest.raises(CorruptDataError, match=r"events\.json"):
            async with open_runtime(tmp_path):
                pass
        assert (state / "events.json").read_text() == '{"e1": {"event_type": '

    async def test_files_it_does_not_own_stay_where_they_are(self, tmp_path: Path) -> None:
        state = tmp_path / "marcus_state"
        state.mkdir(parents=True)
        # SubtaskManager's file, and one of another tool whose records lack _stored_at
        subtasks = {
            "subtasks": {"s1": {"id": "s1", "name": "x", "status": "todo"}},
            "parent_to_subtasks": {"p1": ["s1"]},
            "metadata": {"p1": {"shared_conventions": {}, "decomposed_by": "ai"}},
        }
        others = {
            "subtasks.json": json.dumps(subtasks, indent=2),
            "notes.json": json.dumps({"n1": {"text": "no stamp"}}),
            "list.json": json.dumps([1, 2]),
            "empty.json": "{}",
        }
        for name, text in others.items():
            (state / name).write_text(text)
        events = {"e1": {"event_type": "t", "_stored_at": "2025-01-01T10:00:00"}}
        (state / "events.json").write_text(json.dumps(events))
        for _ in range(2):  # and again on the next open
            async with open_runtime(tmp_path) as rt:
                assert await rt.state.retrieve("events", "e1") == events["e1"]
                assert "subtasks" not in await rt.state.collections()
                assert "notes" not in await rt.state.collections()
                left = {p.name for p, _why in rt.backend.state().left}  # type: ignore[attr-defined]
                assert left == set(others)
        for name, text in others.items():
            assert (state / name).read_text() == text
        assert not list(state.glob("subtasks.json.*")) and not list(state.glob("notes.json.*"))
        assert len(list(state.glob("events.json.imported-*"))) == 1

    async def test_marcus_sqlite_database_loads_every_record(self, tmp_path: Path) -> None:
        db = tmp_path / "marcus_state.db"
        conn = sqlite3.connect(db)
        conn.execute(
            "CREATE TABLE persistence (collection TEXT NOT NULL, key TEXT NOT NULL, "
            "data TEXT NOT NULL, stored_at TIMESTAMP NOT NULL, PRIMARY KEY (collection, key))"
        )
        base = datetime.now() - timedelta(days=40)  # Marcus writes naive local time
        rows = [
            (
                "events",
                f"e{i}",
                json.dumps({"event_type": "t", "n": i}),
                str(base + timedelta(days=i)),
            )
            for i in range(40)
        ] + [("decisions", "d1", json.dumps({"what": "use sqlite"}), str(base))]
        conn.executemany("INSERT INTO persistence VALUES (?, ?, ?, ?)", rows)
        conn.commit()
        conn.close()
        async with open_runtime(tmp_path, backend="sqlite") as rt:
            assert await rt.state.count("events") == 40
            for i in range(40):
                got = await rt.state.retrieve("events", f"e{i}")
                assert got is not None and got["n"] == i
            newest = await rt.state.query("events", limit=2)
            assert [r["n"] for r in newest] == [39, 38]
            assert await rt.state.clear_old("events", 10.5) == 30
            await rt.state.store("events", "fresh", {"event_type": "t"})
        conn = sqlite3.connect(db)
        assert conn.execute("SELECT COUNT(*) FROM persistence").fetchone()[0] == 12
        conn.close()


class TestBadInput:
    @pytest.mark.parametrize("backend", ["file", "sqlite"])
    async def test_rejected_before_anything_is_written(self, tmp_path: Path, backend: str) -> None:
        async with open_runtime(tmp_path, backend=backend) as rt:
            with pytest.raises(ValidationError, match="data"):
                await rt.state.store("c", "k", {"when": datetime.now()})
            with pytest.raises(ValidationError, match="key"):
                await rt.state.store("c", 5, {})  # type: ignore[arg-type]
            with pytest.raises(ValidationError, match="collection"):
                await rt.state.store("../etc", "k", {})
            with pytest.raises(ValidationError):
                await rt.state.store("c", "k", ["not", "a", "dict"])  # type: ignore[arg-type]
            with pytest.raises(ValidationError, match="event_type"):
                await rt.state.store("events", "e", {"event_type": 5})
            with pytest.raises(ValidationError, match="days"):
                await rt.state.clear_old("c", -1)
            assert await rt.state.collections() == []
        if backend == "file":
            assert not (tmp_path / "marcus_state" / SHARDS_DIR).exists()

    async def test_unknown_backend(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match="backend"):
            async with open_runtime(tmp_path, backend="mongo"):
                pass
        assert not (tmp_path / "marcus_state").exists()


class TestCommitFailure:
    async def test_failed_commit_fails_the_batch_and_changes_nothing(
        self, tmp_path: Path, faulty_fs: Any
    ) -> None:
        async with open_runtime(tmp_path, fs=faulty_fs) as rt:
            await rt.state.store("c", "k", {"v": 1})
            faulty_fs.fail["write"] = errno.ENOSPC
            with pytest.raises(PersistenceError) as caught:
                await rt.state.store_many("c", {"k": {"v": 2}, "other": {"v": 3}})
            assert caught.value.errno == errno.ENOSPC
            assert await rt.state.retrieve("c", "other") is None
            del faulty_fs.fail["write"]
            await rt.state.store("c", "after", {})  # the actor keeps serving
        async with open_runtime(tmp_path) as rt:
            got = await rt.state.retrieve("c", "k")
            assert got is not None and got["v"] == 1
            assert await rt.state.retrieve("c", "other") is None
            assert await rt.state.count("c") == 2


class TestChosenByConfig:
    async def test_marcus_config_selects_sqlite(self, tmp_path: Path) -> None:
        config = Config.from_marcus(
            {
                "features": {
                    "persistence": "sqlite",
                    "persistence_options": {"storage_dir": str(tmp_path / "marcus_state")},
                }
            }
        )
        async with open_runtime(config) as rt:
            await rt.state.store("projects", "p1", {"id": "p1"})
            await rt.assignments.assign("agent-1", "task-1", {})
            await rt.patterns.observe("dependency", "frontend_needs_api", 0.9)
            await rt.tokens.record("anthropic", 100, 50, cost_usd=0.01)
        conn = sqlite3.connect(tmp_path / "marcus_state.db")
        tables = {
            row[0]: conn.execute(f"SELECT COUNT(*) FROM {row[0]}").fetchone()[0]
            for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
        conn.close()
        assert tables == {
            "persistence": 1,
            "marcus_assignments": 1,
            "marcus_patterns": 1,
            "marcus_token_usage": tables.get("marcus_token_usage", -1),
            "marcus_token_log": tables.get("marcus_token_log", -1),  # batches since the document
        }
        assert tables["marcus_token_usage"] >= 1
        assert not (tmp_path / "assignments" / "assignments.json").exists()


class TestCorruptDatabase:
    async def test_not_a_database(self, tmp_path: Path) -> None:
        (tmp_path / "marcus_state.db").write_bytes(b"this is not sqlite" * 100)
        with pytest.raises(CorruptDataError, match=r"marcus_state\.db"):
            async with open_runtime(tmp_path, backend="sqlite"):
                pass
        assert (tmp_path / "marcus_state.db").read_bytes() == b"this is not sqlite" * 100


class _StoppedClock:
    def __init__(self, moment: datetime) -> None:
        self.moment = moment

    def now(self) -> datetime:
        return self.moment


class TestQueryOrder:
    async def test_the_same_instant_keeps_the_collection_order(self, tmp_path: Path) -> None:
        clock = _StoppedClock(datetime(2026, 1, 1, 10, 0, 0, 500, tzinfo=UTC))
        async with open_runtime(tmp_path, backend="memory", clock=clock) as rt:
            for key in ("k2", "k3", "k1"):
                await rt.state.store("c", key, {"v": key})
            clock.moment += timedelta(microseconds=1)
            await rt.state.store("c", "later", {"v": "later"})
            got = await rt.state.query("c", limit=None, key_field="_key")
            assert [r["_key"] for r in got] == ["later", "k2", "k3", "k1"]
            assert all(r["_key"] == r["v"] for r in got)
            by_second = await rt.state.query("c", limit=3, by_second=True)
            assert [r["v"] for r in by_second] == ["k2", "k3", "k1"]  # one second: kept order
            picked = await rt.state.query("c", lambda r: r["_key"] != "k3", key_field="_key")
            assert [r["_key"] for r in picked] == ["later", "k2", "k1"]


async def test_store_stamped_keeps_each_time(tmp_path: Path) -> None:
    async with open_runtime(tmp_path) as rt:
        await rt.state.store_stamped(
            "imported",
            {"a": ("2025-01-02T00:00:00+00:00", {"n": 1}), "b": ("2025-01-01", {"n": 2})},
        )
        got = await rt.state.retrieve("imported", "a")
        assert got == {"n": 1, "_stored_at": "2025-01-02T00:00:00+00:00"}
        assert [r["n"] for r in await rt.state.query("imported")] == [1, 2]  # newest first
        with pytest.raises(ValidationError, match="stored_at"):
            await rt.state.store_stamped("imported", {"c": (5, {"n": 3})})  # type: ignore[dict-item]
        assert await rt.state.retrieve("imported", "c") is None
