"""State on the file backend's write-ahead log: one sync per batch, bytes that follow
the batch, checkpoints beside commits, recovery, the previous format upgraded."""

from __future__ import annotations

import errno
from pathlib import Path

import anyio
import pytest

from marcus_persist import PersistenceError, open_runtime
from marcus_persist._core._fs import FileSystem
from marcus_persist.backends._files import FileContext
from marcus_persist.backends.file._logged import CheckpointPolicy
from marcus_persist.backends.file._shards import ShardStore
from marcus_persist.backends.file._state import STATE_DIR
from tests.backends.file.test_assignments_wal import (
    CountingFS,
    GatedFS,
    a_flipped_record_is_refused,
    backend,
    one_sync_per_batch,
)
from tests.conftest import FaultyFS, crash_copy

pytestmark = pytest.mark.anyio


def wal_dir(root: Path) -> Path:
    return root / STATE_DIR / "wal"


def shards_alone(root: Path) -> dict[str, dict[str, dict[str, object]]]:
    """What the shards and manifest hold, read without the log."""
    store = ShardStore(root / STATE_DIR, FileContext(root, FileSystem(), False, "error"))
    store.open()
    return {c: dict(store.iter(c)) for c in store.collections()}


async def crashed_with_a_log(tmp_path: Path) -> Path:
    """A power loss's directory: shards checkpointed with ``tasks/t1`` and ``tasks/t2``,
    then a log that no checkpoint wrote (``t2`` deleted, ``t3`` and ``agents/a1`` stored)."""
    live, crashed = tmp_path / "live", tmp_path / "crashed"
    async with open_runtime(live) as rt:
        await rt.state.store_many("tasks", {"t1": {"n": 1}, "t2": {"n": 2}})
        assert await rt.checkpoint() == ["state"]
        await rt.state.delete("tasks", "t2")
        await rt.state.store("tasks", "t3", {"n": 3})
        await rt.state.store("agents", "a1", {"name": "x"})
        await crash_copy(live, crashed)
    return crashed


class TestCommitPath:
    async def test_exactly_one_sync_per_batch(self, tmp_path: Path) -> None:
        fs = CountingFS()
        async with open_runtime(tmp_path, fs=fs) as rt:
            await rt.state.store_many("big", {f"k{i}": {"i": i} for i in range(3000)})
            for n in range(20):
                with one_sync_per_batch(fs, rt, "state"):
                    async with anyio.create_task_group() as tg:  # often one batch of many keys
                        for k in range(n * 5):
                            tg.start_soon(rt.state.store, "big", f"k{k * 7}", {"n": n})
                        tg.start_soon(rt.state.store, "other", f"x{n}", {"n": n})
        async with open_runtime(tmp_path) as rt:
            assert await rt.state.count("big") == 3000
            assert (await rt.state.retrieve("big", "k7") or {})["n"] == 19
            assert await rt.state.count("other") == 20

    async def test_bytes_per_commit_follow_the_batch_not_the_data(self, tmp_path: Path) -> None:
        fs = CountingFS()
        written: list[int] = []
        async with open_runtime(tmp_path, fs=fs) as rt:
            for size in (10, 100_000):
                for start in range(0, size, 10_000):
                    items = {f"k{i:06d}": {"n": i} for i in range(start, min(size, start + 10_000))}
                    await rt.state.store_many(f"c{size:06d}", items)
                await rt.checkpoint()  # the collection's shards are on disk
                before = fs.written
                await rt.state.store(f"c{size:06d}", "k000005", {"n": -1})  # one key
                written.append(fs.written - before)
            assert await rt.state.count("c100000") == 100_000
        assert written[0] == written[1] < 300  # one record, whatever the collection holds


class TestCheckpoints:
    async def test_commits_and_reads_go_on_while_a_checkpoint_writes(self, tmp_path: Path) -> None:
        fs = GatedFS()
        files = backend(tmp_path, fs, CheckpointPolicy(max_bytes=1))  # every commit is due
        try:
            async with open_runtime(tmp_path, backend=files) as rt:
                fs.armed = True
                await rt.state.store("c", "k0", {"n": 0})  # starts a checkpoint...
                await anyio.to_thread.run_sync(fs.waiting.wait, 60)  # ...held at its rename
                for n in range(1, 50):
                    await rt.state.store("c", f"k{n}", {"n": n})  # not held behind it
                await rt.state.delete("c", "k0")
                assert await rt.state.count("c") == 49
                assert await rt.state.retrieve("c", "k0") is None
                assert sorted(k for k, _ in [kv async for kv in rt.state.iter("c")]) == sorted(
                    f"k{n}" for n in range(1, 50)
                )
                assert len(files.state().logged.segments()) == 2  # the new one takes them
                fs.gate.set()
        finally:
            fs.gate.set()
        assert len(shards_alone(tmp_path)["c"]) == 49  # the close wrote everything

    async def test_clean_close_leaves_shards_and_an_empty_log(self, tmp_path: Path) -> None:
        async with open_runtime(tmp_path) as rt:
            await rt.state.store("tasks", "t1", {"n": 1})
            assert not (tmp_path / STATE_DIR / "_manifest.json").exists()  # only the log
            assert await rt.checkpoint() == ["state"]
            assert await rt.checkpoint() == []  # nothing new
            await rt.state.store("tasks", "t2", {"n": 2})
            await rt.state.delete("tasks", "t1")
        assert list(shards_alone(tmp_path)["tasks"]) == ["t2"]
        assert [p.stat().st_size for p in wal_dir(tmp_path).iterdir()] == [0]

    async def test_size_limit_keeps_the_log_small(self, tmp_path: Path) -> None:
        files = backend(tmp_path, FileSystem(), CheckpointPolicy(max_bytes=4096))
        async with open_runtime(tmp_path, backend=files) as rt:
            for n in range(300):
                await rt.state.store("c", f"k{n % 7}", {"pad": "x" * 100, "n": n})
            logged = files.state().logged
            await anyio.to_thread.run_sync(logged.wait)
            assert len(logged.segments()) <= 2
            assert logged.size() < 2 * 4096 + 1024
            assert len(shards_alone(tmp_path)["c"]) == 7  # checkpoints wrote the shards
            assert await rt.state.count("c") == 7

    async def test_a_failed_checkpoint_keeps_everything(
        self, tmp_path: Path, faulty_fs: FaultyFS
    ) -> None:
        files = backend(tmp_path, faulty_fs, CheckpointPolicy())
        async with open_runtime(tmp_path, backend=files) as rt:
            await rt.state.store_many("c", {"a": {"n": 1}, "b": {"n": 2}})
            faulty_fs.fail["replace"] = errno.EIO  # the manifest's rename
            with pytest.raises(PersistenceError):
                await rt.checkpoint()
            await rt.state.delete("c", "a")  # commits go on, over the layer put back
            assert await rt.state.count("c") == 1
            assert (await rt.state.retrieve("c", "b") or {}).get("n") == 2
            del faulty_fs.fail["replace"]
            assert await rt.checkpoint() == ["state"]
            assert await rt.state.count("c") == 1
        assert list(shards_alone(tmp_path)["c"]) == ["b"]


class TestRecovery:
    async def test_a_log_left_by_a_crash_is_replayed(self, tmp_path: Path) -> None:
        crashed = await crashed_with_a_log(tmp_path)
        assert {c: sorted(r) for c, r in shards_alone(crashed).items()} == {"tasks": ["t1", "t2"]}
        async with open_runtime(crashed) as rt:
            assert await rt.state.collections() == ["agents", "tasks"]
            assert await rt.state.count("tasks") == 2
            assert await rt.state.retrieve("tasks", "t2") is None
            assert [r["n"] for r in await rt.state.query("tasks", limit=None)] == [3, 1]

    async def test_a_corrupt_log_is_refused_or_quarantined(self, tmp_path: Path) -> None:
        crashed = await crashed_with_a_log(tmp_path)
        await a_flipped_record_is_refused(crashed, wal_dir(crashed))
        async with open_runtime(crashed, on_corrupt="quarantine") as rt:
            assert await rt.state.count("tasks") == 2  # the shards
            assert [q.path for q in rt.quarantined] == [str(wal_dir(crashed))]

    async def test_the_previous_format_is_read_and_upgraded(self, tmp_path: Path) -> None:
        # a directory the shard store wrote directly (no log), as before issue 15
        store = ShardStore(tmp_path / STATE_DIR, FileContext(tmp_path, FileSystem(), True, "error"))
        store.open()
        store.commit({"tasks": {"t1": {"n": 1, "_stored_at": "2026-01-01T00:00:00+00:00"}}})
        assert not wal_dir(tmp_path).exists()
        async with open_runtime(tmp_path) as rt:
            assert await rt.state.retrieve("tasks", "t1") is not None
            await rt.state.store("tasks", "t2", {"n": 2})
        assert sorted(shards_alone(tmp_path)["tasks"]) == ["t1", "t2"]  # the first checkpoint
        assert [p.stat().st_size for p in wal_dir(tmp_path).iterdir()] == [0]


class TestCounts:
    async def test_counts_with_shards_not_read_yet(
        self, tmp_path: Path, faulty_fs: FaultyFS
    ) -> None:
        async with open_runtime(tmp_path) as rt:
            await rt.state.store_many(
                "c", {f"k{i}": {"n": i, "pad": "x" * 500} for i in range(300)}
            )
        files = backend(tmp_path, faulty_fs, CheckpointPolicy())
        async with open_runtime(tmp_path, backend=files) as rt:  # no shard in the cache
            await rt.state.store("c", "k1", {"n": -1})  # an update: the count stays
            await rt.state.delete_many("c", ["k2", "nope"])  # one existed
            await rt.state.store("c", "new", {"n": 0})
            layers = files.state().layers
            assert layers.live.unknown["c"] >= {"k1", "new"}  # the commits read no shard
            await rt.state.store("c", "k3", {"n": -3})
            faulty_fs.fail["fsync"] = errno.EIO  # the first new shard file's
            with pytest.raises(PersistenceError):
                await rt.checkpoint()  # the layer goes back under the live one
            del faulty_fs.fail["fsync"]
            await rt.state.delete("c", "k1")
            await rt.state.store("c", "k4", {"n": -4})
            assert layers.live.unknown["c"]  # put back not yet known: counted now
            assert await rt.state.count("c") == 299
            assert await rt.checkpoint() == ["state"]
            assert await rt.state.count("c") == 299
        assert len(shards_alone(tmp_path)["c"]) == 299
