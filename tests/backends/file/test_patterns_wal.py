"""Learned patterns on the file backend's write-ahead log: one sync per batch, bytes
that follow the batch, checkpoints into the shards, recovery, the previous format
upgraded; a hybrid forwards checkpoints to the engine that keeps the log."""

from __future__ import annotations

import threading
from pathlib import Path

import anyio
import pytest

from marcus_persist import open_runtime
from marcus_persist._core._fs import FileSystem
from marcus_persist.backends import HybridBackend
from marcus_persist.backends._contract import KeyedWrite, Record
from marcus_persist.backends._files import FileContext
from marcus_persist.backends.file import FileBackend
from marcus_persist.backends.file._patterns_tokens import (
    PATTERNS_COLLECTION,
    PATTERNS_DIR,
    FilePatternStorage,
)
from marcus_persist.backends.file._shards import ShardStore
from marcus_persist.stores.patterns._records import key_of, made
from tests._hybrid import REVIEW_HYBRID
from tests.backends.file.test_assignments_wal import (
    CountingFS,
    a_flipped_record_is_refused,
    one_sync_per_batch,
)
from tests.conftest import crash_copy

pytestmark = pytest.mark.anyio

#: patterns on files, the other structured stores on SQLite
PATTERNS_ON_FILES = {**REVIEW_HYBRID, "patterns": "file"}


def wal_dir(root: Path) -> Path:
    return root / PATTERNS_DIR / "wal"


def shards_alone(root: Path) -> dict[str, dict[str, object]]:
    """The patterns the shards and manifest hold, read without the log."""
    store = ShardStore(root / PATTERNS_DIR, FileContext(root, FileSystem(), False, "error"))
    store.open()
    return dict(store.iter(PATTERNS_COLLECTION)) if store.collections() else {}


async def crashed_with_a_log(tmp_path: Path) -> Path:
    """A power loss's directory: ``a`` (2 examples) checkpointed into the shards, then
    a log no checkpoint wrote (``a`` observed again, ``b`` new)."""
    live, crashed = tmp_path / "live", tmp_path / "crashed"
    async with open_runtime(live) as rt:
        await rt.patterns.observe("flow", "a", 0.5, examples=2)
        assert await rt.checkpoint() == ["patterns"]
        await rt.patterns.observe("flow", "a", 1.0, examples=2)
        await rt.patterns.observe("risk", "b", 0.25)
        await crash_copy(live, crashed)
    return crashed


def filled(data: Path, total: int) -> None:
    """*total* patterns committed in one batch and checkpointed (no fsync: set-up)."""
    storage = FilePatternStorage(FileContext(data, FileSystem(), False, "error"))
    storage.load(lambda document: document)
    stamp = "2026-01-01T00:00:00+00:00"
    changes: dict[str, Record | None] = {
        key_of("bulk", f"p{n:05d}"): made(
            "bulk", f"p{n:05d}", 500_000, 1, stamp, stamp, None
        ).stored()
        for n in range(total)
    }
    storage.commit(KeyedWrite({}, changes))
    storage.close()


class TestCommitPath:
    async def test_exactly_one_sync_per_batch(self, tmp_path: Path) -> None:
        fs = CountingFS()
        async with open_runtime(tmp_path, fs=fs) as rt:
            for n in range(10):
                with one_sync_per_batch(fs, rt, "patterns"):
                    async with anyio.create_task_group() as tg:  # often one batch of many
                        for k in range(n * 5 + 1):
                            tg.start_soon(rt.patterns.observe, "flow", f"p{k}", 0.5)
        async with open_runtime(tmp_path) as rt:
            assert len(rt.patterns) == 46
            got = await rt.patterns.get("flow", "p0")
            assert got is not None and got["examples"] == 10

    async def test_bytes_per_commit_follow_the_batch_not_the_data(self, tmp_path: Path) -> None:
        written: list[int] = []
        for total in (10, 5000):
            data = tmp_path / str(total)
            filled(data, total)  # checkpointed: the shards hold them all
            fs = CountingFS()
            async with open_runtime(data, fs=fs) as rt:
                assert len(rt.patterns) == total
                before = fs.written
                await rt.patterns.observe("bulk", "p00005", 0.9)  # one pattern
                written.append(fs.written - before)
        assert written[0] == written[1] < 400  # one record, whatever the store holds


class TestCheckpoints:
    async def test_clean_close_leaves_shards_and_an_empty_log(self, tmp_path: Path) -> None:
        async with open_runtime(tmp_path) as rt:
            await rt.patterns.observe("flow", "a", 0.5)
            assert shards_alone(tmp_path) == {}  # only the log holds it
            assert await rt.checkpoint() == ["patterns"]
            assert await rt.checkpoint() == []  # nothing new
            assert list(shards_alone(tmp_path)) == [key_of("flow", "a")]
            await rt.patterns.observe("flow", "b", 0.5)
            assert await rt.patterns.prune(min_confidence=0.9) == 2
            await rt.patterns.observe("flow", "c", 0.5)
        assert list(shards_alone(tmp_path)) == [key_of("flow", "c")]
        assert [p.stat().st_size for p in wal_dir(tmp_path).iterdir()] == [0]


class TestRecovery:
    async def test_a_log_left_by_a_crash_is_replayed_once(self, tmp_path: Path) -> None:
        crashed = await crashed_with_a_log(tmp_path)
        assert shards_alone(crashed)[key_of("flow", "a")]["examples"] == 2
        for _ in range(2):  # the second start reads what the first one's close wrote
            async with open_runtime(crashed) as rt:
                a = await rt.patterns.get("flow", "a")
                assert a is not None and (a["examples"], a["confidence"]) == (4, 0.75)
                assert await rt.patterns.get("risk", "b") is not None
                assert len(rt.patterns) == 2

    async def test_a_corrupt_log_is_refused_or_quarantined(self, tmp_path: Path) -> None:
        crashed = await crashed_with_a_log(tmp_path)
        await a_flipped_record_is_refused(crashed, wal_dir(crashed))
        async with open_runtime(crashed, on_corrupt="quarantine") as rt:
            a = await rt.patterns.get("flow", "a")
            assert a is not None and a["examples"] == 2  # the shards
            assert [q.path for q in rt.quarantined] == [str(wal_dir(crashed))]

    async def test_the_previous_format_is_read_and_upgraded(self, tmp_path: Path) -> None:
        # a directory the shard store wrote directly (no log), as before the log
        ctx = FileContext(tmp_path, FileSystem(), True, "error")
        store = ShardStore(tmp_path / PATTERNS_DIR, ctx)
        store.open()
        stamp = "2026-01-01T00:00:00+00:00"
        old = made("flow", "a", 1_000_000, 2, stamp, stamp, None).stored()
        store.commit({PATTERNS_COLLECTION: {key_of("flow", "a"): old}})
        assert not wal_dir(tmp_path).exists()
        async with open_runtime(tmp_path) as rt:
            a = await rt.patterns.get("flow", "a")
            assert a is not None and a["examples"] == 2
            await rt.patterns.observe("flow", "b", 0.5)
        assert sorted(shards_alone(tmp_path)) == [key_of("flow", "a"), key_of("flow", "b")]
        assert [p.stat().st_size for p in wal_dir(tmp_path).iterdir()] == [0]


class _Signalled(FileSystem):
    """Sets ``written`` when the patterns' manifest is replaced (a checkpoint's rename)."""

    def __init__(self) -> None:
        self.written = threading.Event()

    def replace(self, src: Path, dst: Path) -> None:
        super().replace(src, dst)
        if dst.parent.name == PATTERNS_DIR and dst.name == "_manifest.json":
            self.written.set()


class TestHybrid:
    async def test_rt_checkpoint_reaches_the_file_engine(self, tmp_path: Path) -> None:
        async with open_runtime(tmp_path, backends=PATTERNS_ON_FILES) as rt:
            await rt.patterns.observe("flow", "a", 0.5)
            await rt.state.store("c", "k", {"n": 1})  # on sqlite: nothing to checkpoint
            assert shards_alone(tmp_path) == {}
            assert await rt.checkpoint() == ["patterns"]
            assert list(shards_alone(tmp_path)) == [key_of("flow", "a")]
            assert await rt.checkpoint() == []

    async def test_a_backup_holds_the_file_engines_checkpoints(self, tmp_path: Path) -> None:
        async with open_runtime(tmp_path, backends=PATTERNS_ON_FILES) as rt:
            hybrid = rt.backend
            assert isinstance(hybrid, HybridBackend)
            files = hybrid.for_store("patterns")
            assert isinstance(files, FileBackend)
            logged = files.patterns().logged

            def held() -> bool:
                with hybrid.checkpoints_held():  # what rt.backup() takes
                    return logged._checkpoint_lock.locked()

            assert await anyio.to_thread.run_sync(held)
            assert not logged._checkpoint_lock.locked()

    async def test_the_age_timer_reaches_the_file_engine(self, tmp_path: Path) -> None:
        fs = _Signalled()
        async with open_runtime(
            tmp_path, fs=fs, backends=PATTERNS_ON_FILES, wal_checkpoint_seconds=0.01
        ) as rt:
            await rt.patterns.observe("flow", "a", 0.5)
            assert await anyio.to_thread.run_sync(fs.written.wait, 60)  # no other commit came
            assert list(shards_alone(tmp_path)) == [key_of("flow", "a")]
