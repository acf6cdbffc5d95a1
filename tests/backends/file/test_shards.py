"""The generic sharded file store: round trip, splits, crash leftovers, corruption, cache."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from marcus_persist import CorruptDataError, ValidationError
from marcus_persist._core._fs import OS_FS, FileSystem
from marcus_persist.backends._files import FileContext
from marcus_persist.backends.file._shards import LOG, MANIFEST, SHARDS_DIR, ShardStore


class CountingFS(FileSystem):
    """Counts bytes written through the interface."""

    def __init__(self) -> None:
        self.written = 0

    def write(self, fd: int, data: bytes | memoryview) -> int:
        n = super().write(fd, data)
        self.written += n
        return n


def make(root: Path, fs: FileSystem = OS_FS, **kw: int) -> ShardStore:
    store = ShardStore(root, FileContext(root, fs, True, "error"), **kw)
    store.open()
    return store


def record(i: int) -> dict[str, object]:
    return {"n": i, "text": "x" * 80}


class TestShardStore:
    def test_round_trip_and_reopen(self, tmp_path: Path) -> None:
        store = make(tmp_path)
        store.commit({"a": {"k1": {"v": 1}, "k2": {"v": 2}}, "b": {"k": {"v": 3}}})
        store.commit({"a": {"k1": None}})
        again = make(tmp_path)
        assert again.get("a", "k1") is None
        assert again.get("a", "k2") == {"v": 2}
        assert again.get("b", "k") == {"v": 3}
        assert again.count("a") == 1
        assert again.collections() == ["a", "b"]

    def test_splits_keep_every_key_once(self, tmp_path: Path) -> None:
        store = make(tmp_path, shard_bytes=2048)
        for start in range(0, 600, 100):
            store.commit({"c": {f"k{i}": record(i) for i in range(start, start + 100)}})
        assert len(store.shards("c")) > 8
        reopened = make(tmp_path, shard_bytes=2048)
        keys = [k for k, _ in reopened.iter("c")]
        assert sorted(keys) == sorted(f"k{i}" for i in range(600))
        assert reopened.count("c") == 600
        assert all(reopened.get("c", f"k{i}") == record(i) for i in range(600))
        # only the live version of each shard is on disk
        files = list((tmp_path / SHARDS_DIR / "c").iterdir())
        assert len(files) == len(reopened.shards("c"))

    def test_iteration_from_before_a_split(self, tmp_path: Path) -> None:
        store = make(tmp_path, shard_bytes=2048)
        store.commit({"c": {f"k{i}": record(i) for i in range(10)}})
        before = store.shards("c")
        store.commit({"c": {f"k{i}": record(i) for i in range(10, 300)}})
        seen = [k for shard in before for k, _ in store.items_in("c", shard)]
        assert sorted(seen) == sorted(f"k{i}" for i in range(300))

    def test_one_key_commit_writes_bytes_of_a_shard_not_the_collection(
        self, tmp_path: Path
    ) -> None:
        cost = {}
        for size in (100, 20_000):
            fs = CountingFS()
            store = make(tmp_path / str(size), fs)
            store.commit({"c": {f"k{i}": record(i) for i in range(size)}})
            fs.written = 0
            store.commit({"c": {"new": record(-1)}})
            cost[size] = fs.written
        assert cost[20_000] <= 3 * cost[100], cost

    def test_crash_leftovers_are_swept(self, tmp_path: Path) -> None:
        store = make(tmp_path)
        store.commit({"c": {"k": {"v": 1}}})
        orphan = tmp_path / SHARDS_DIR / "c" / "0-0.999.json"
        orphan.write_text('{"k": {"v": "never committed"}}')
        again = make(tmp_path)
        assert orphan.exists()  # opening reads the manifest only
        assert again.get("c", "k") == {"v": 1}
        again.commit({"c": {"k": {"v": 2}}})  # sweeps first; never reuses an orphan's version
        assert not orphan.exists()
        assert make(tmp_path).get("c", "k") == {"v": 2}

    def test_failed_checkpoint_changes_nothing(self, tmp_path: Path) -> None:
        class FailRename(FileSystem):
            def replace(self, src: Path, dst: Path) -> None:
                raise OSError(28, "no space")

        broken = ShardStore(tmp_path, FileContext(tmp_path, FailRename(), True, "error"))
        broken.open()
        with pytest.raises(OSError):  # the first commit writes the base manifest
            broken.commit({"c": {"k": {"v": 2}, "other": {"v": 3}}})
        assert broken.get("c", "k") is None
        assert make(tmp_path).collections() == []
        assert list((tmp_path / SHARDS_DIR / "c").iterdir()) == []

    @pytest.mark.parametrize("failing", ["write", "fsync"])
    def test_failed_append_is_cut_off(self, tmp_path: Path, failing: str) -> None:
        class FailLog(FileSystem):
            def __init__(self) -> None:
                self.log_fds: set[int] = set()
                self.armed = True

            def open_append(self, path: Path) -> int:
                fd = super().open_append(path)
                if path.name == LOG:
                    self.log_fds.add(fd)
                return fd

            def close(self, fd: int) -> None:
                self.log_fds.discard(fd)
                super().close(fd)

            def write(self, fd: int, data: bytes | memoryview) -> int:
                if failing == "write" and self.armed and fd in self.log_fds:
                    super().write(fd, bytes(data)[:7])  # a torn piece reaches the file
                    raise OSError(28, "no space")
                return super().write(fd, data)

            def fsync(self, fd: int) -> None:
                if failing == "fsync" and self.armed and fd in self.log_fds:
                    raise OSError(5, "EIO")
                super().fsync(fd)

        fs = FailLog()
        store = ShardStore(tmp_path, FileContext(tmp_path, fs, True, "error"))
        store.open()
        store.commit({"c": {"k": {"v": 1}}})  # the base
        with pytest.raises(OSError):
            store.commit({"c": {"k": {"v": 2}, "other": {"v": 3}}})
        assert store.get("c", "k") == {"v": 1}
        reopened = make(tmp_path)
        assert reopened.get("c", "k") == {"v": 1} and reopened.get("c", "other") is None
        fs.armed = False
        store.commit({"c": {"later": {"v": 4}}})  # appends after the cut
        again = make(tmp_path)
        assert again.get("c", "later") == {"v": 4} and again.get("c", "other") is None

    def test_log_replays_and_checkpoints(self, tmp_path: Path) -> None:
        store = make(tmp_path, shard_bytes=2048)
        for i in range(400):
            store.commit({"c": {f"k{i}": record(i)}})
        log_size = (tmp_path / LOG).stat().st_size if (tmp_path / LOG).exists() else 0
        assert log_size <= max(256 << 10, (tmp_path / MANIFEST).stat().st_size)
        again = make(tmp_path, shard_bytes=2048)
        assert again.count("c") == 400
        assert all(again.get("c", f"k{i}") == record(i) for i in range(400))
        assert len(list((tmp_path / SHARDS_DIR / "c").iterdir())) == len(again.shards("c"))

    def test_torn_log_line_is_ignored(self, tmp_path: Path) -> None:
        store = make(tmp_path)
        store.commit({"c": {"k": {"v": 1}}})
        store.commit({"c": {"k2": {"v": 2}}})
        with (tmp_path / LOG).open("ab") as f:
            f.write(b'{"seq": 99, "collections": {"c": {"0-0": [99')
        again = make(tmp_path)
        assert again.get("c", "k2") == {"v": 2}
        again.commit({"c": {"k3": {"v": 3}}})  # writes a new base
        assert not (tmp_path / LOG).exists()
        assert make(tmp_path).get("c", "k3") == {"v": 3}

    def test_garbage_inside_the_log_is_corruption(self, tmp_path: Path) -> None:
        store = make(tmp_path)
        store.commit({"c": {"k": {"v": 1}}})
        store.commit({"c": {"k2": {"v": 2}}})
        lines = (tmp_path / LOG).read_bytes()
        (tmp_path / LOG).write_bytes(b"garbage\n" + lines)  # a valid line follows it
        with pytest.raises(CorruptDataError, match="line 1"):
            make(tmp_path)

    def test_garbage_after_the_last_valid_line_is_an_unfinished_append(
        self, tmp_path: Path
    ) -> None:
        # a crash mid-append may leave garbage holding a "\n"; it was never acknowledged
        store = make(tmp_path)
        store.commit({"c": {"k": {"v": 1}}})
        store.commit({"c": {"k2": {"v": 2}}})
        with (tmp_path / LOG).open("ab") as f:
            f.write(b"\x00garbage\n\x17more")
        reopened = make(tmp_path)
        assert reopened.get("c", "k2") == {"v": 2}

    def test_corrupt_manifest_and_shard(self, tmp_path: Path) -> None:
        store = make(tmp_path)
        store.commit({"c": {"k": {"v": 1}}})
        shard = next((tmp_path / SHARDS_DIR / "c").iterdir())
        shard.write_text("[1, 2")
        with pytest.raises(CorruptDataError):
            make(tmp_path).get("c", "k")
        manifest = tmp_path / MANIFEST
        manifest.write_text("{}")
        with pytest.raises(CorruptDataError):
            make(tmp_path)
        assert manifest.read_text() == "{}"  # left as it was

    def test_quarantine_moves_manifest_and_its_shards_aside(self, tmp_path: Path) -> None:
        store = make(tmp_path)
        store.commit({"c": {"k": {"v": 1}}})
        store.commit({"c": {"k2": {"v": 1}}})  # a log line too
        (tmp_path / MANIFEST).write_text("not json")
        ctx = FileContext(tmp_path, OS_FS, True, "quarantine")
        fresh = ShardStore(tmp_path, ctx)
        fresh.open()
        assert fresh.collections() == []
        assert len(ctx.quarantined) == 3
        kept = [p for p in tmp_path.iterdir() if ".corrupt-" in p.name]
        assert len(kept) == 3
        fresh.commit({"c": {"new": {}}})
        assert make(tmp_path).collections() == ["c"]

    def test_cache_is_bounded(self, tmp_path: Path) -> None:
        store = make(tmp_path, shard_bytes=2048, cache_bytes=8192)
        store.commit({"c": {f"k{i}": record(i) for i in range(500)}})
        for i in range(500):
            assert store.get("c", f"k{i}") == record(i)
        assert store._cache.bytes <= 8192 + 2048

    def test_bad_collection_name(self, tmp_path: Path) -> None:
        store = make(tmp_path)
        with pytest.raises(ValidationError):
            store.commit({"../x": {"k": {}}})
        assert not (tmp_path / MANIFEST).exists()

    def test_failure_after_the_rename_leaves_a_readable_store(self, tmp_path: Path) -> None:
        class FailRootFsync(FileSystem):
            def fsync_dir(self, path: Path) -> None:
                if path == tmp_path:
                    raise OSError(5, "EIO")
                super().fsync_dir(path)

        store = make(tmp_path)
        store.commit({"c": {"k": {"v": 1}}})
        broken = ShardStore(tmp_path, FileContext(tmp_path, FailRootFsync(), True, "error"))
        broken.open()
        with pytest.raises(OSError):
            broken.commit({"c": {"k": {"v": 2}}})
        assert broken.get("c", "k") == {"v": 1}  # not acknowledged: memory is as before
        survived = make(tmp_path).get("c", "k")  # the rename did happen: either is allowed,
        assert survived in ({"v": 1}, {"v": 2})  # but never a missing shard
        again = make(tmp_path)
        again.commit({"c": {"other": {"v": 3}}})
        assert make(tmp_path).get("c", "other") == {"v": 3}

    @pytest.mark.parametrize("seed", [1, 2])
    def test_matches_a_dict_through_splits_checkpoints_and_reopens(
        self, tmp_path: Path, seed: int
    ) -> None:
        rng = random.Random(seed)
        model: dict[str, dict[str, dict[str, object]]] = {}
        store = ShardStore(tmp_path, FileContext(tmp_path, OS_FS, False, "error"), shard_bytes=1024)
        store._manifest._checkpoint_bytes = 2048  # checkpoint often
        store.open()
        for step in range(200):
            batch: dict[str, dict[str, dict[str, object] | None]] = {}
            for _ in range(rng.randint(1, 8)):
                coll = rng.choice(["a", "b"])
                key = f"k{rng.randint(0, 150)}"
                value = None if rng.random() < 0.3 else {"s": step, "pad": "p" * rng.randint(0, 60)}
                batch.setdefault(coll, {})[key] = value
            store.commit(batch)
            for coll, changes in batch.items():
                for key, value in changes.items():
                    if value is None:
                        model.get(coll, {}).pop(key, None)
                    else:
                        model.setdefault(coll, {})[key] = value
            if step % 50 == 49:
                store = make(tmp_path, shard_bytes=1024)
                store._manifest._checkpoint_bytes = 2048
            for coll in ("a", "b"):
                assert store.count(coll) == len(model.get(coll, {}))
        for coll in ("a", "b"):
            assert dict(store.iter(coll)) == model.get(coll, {})
            assert dict(make(tmp_path).iter(coll)) == model.get(coll, {})


class Crash(BaseException):
    """The process dies here."""


class CrashAt(FileSystem):
    """Dies at the n-th mutating call."""

    def __init__(self, at: int) -> None:
        self.at = at
        self.calls = 0

    def _step(self) -> None:
        self.calls += 1
        if self.calls == self.at:
            raise Crash

    def create(self, path: Path) -> int:
        self._step()
        return super().create(path)

    def open_append(self, path: Path) -> int:
        self._step()
        return super().open_append(path)

    def write(self, fd: int, data: bytes | memoryview) -> int:
        self._step()
        return super().write(fd, bytes(data)[: max(1, len(data) // 2)])  # short writes too

    def fsync(self, fd: int) -> None:
        self._step()
        super().fsync(fd)

    def replace(self, src: Path, dst: Path) -> None:
        self._step()
        super().replace(src, dst)

    def unlink(self, path: Path) -> None:
        self._step()
        super().unlink(path)

    def fsync_dir(self, path: Path) -> None:
        self._step()
        super().fsync_dir(path)


class TestCrashAtEveryStep:
    @pytest.mark.parametrize("checkpoint", [False, True])
    def test_a_batch_is_all_or_nothing(self, tmp_path: Path, checkpoint: bool) -> None:
        before = {f"k{i}": record(i) for i in range(40)}
        batch: dict[str, dict[str, object] | None] = {f"k{i}": record(-i) for i in range(0, 60, 3)}
        batch["k1"] = None
        after = {k: v for k, v in before.items() if k != "k1"}
        after.update({k: v for k, v in batch.items() if v is not None})
        at = 0
        while True:
            at += 1
            root = tmp_path / str(at)
            setup = make(root, shard_bytes=1024)
            setup.commit({"c": before})
            fs = CrashAt(at)
            store = ShardStore(root, FileContext(root, fs, True, "error"), shard_bytes=1024)
            store.open()
            if checkpoint:
                store._manifest._must_checkpoint = True
            try:
                store.commit({"c": batch, "d": {"x": {"v": 1}}})
                done = True
            except Crash:
                done = False
            reopened = make(root, shard_bytes=1024)
            state = dict(reopened.iter("c"))
            assert state in (before, after), f"crash at step {at}"
            assert (reopened.get("d", "x") is not None) == (state == after)
            if done:
                assert state == after
                break
            reopened.commit({"c": {"again": {"v": 2}}})  # and it keeps working
            assert make(root).get("c", "again") == {"v": 2}
        assert at > 10
