"""The generic sharded file store: round trip, splits, crash leftovers, corruption, cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from marcus_persist import CorruptDataError, ValidationError
from marcus_persist._core._fs import OS_FS, FileSystem
from marcus_persist.backends._files import FileContext
from marcus_persist.backends._shards import MANIFEST, SHARDS_DIR, ShardStore


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

    def test_failed_commit_changes_nothing(self, tmp_path: Path) -> None:
        class FailRename(FileSystem):
            def replace(self, src: Path, dst: Path) -> None:
                raise OSError(28, "no space")

        store = make(tmp_path)
        store.commit({"c": {"k": {"v": 1}}})
        broken = ShardStore(tmp_path, FileContext(tmp_path, FailRename(), True, "error"))
        broken.open()
        with pytest.raises(OSError):
            broken.commit({"c": {"k": {"v": 2}, "other": {"v": 3}}})
        assert broken.get("c", "k") == {"v": 1}
        assert make(tmp_path).get("c", "other") is None
        assert len(list((tmp_path / SHARDS_DIR / "c").iterdir())) == 1

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
        (tmp_path / MANIFEST).write_text("not json")
        ctx = FileContext(tmp_path, OS_FS, True, "quarantine")
        fresh = ShardStore(tmp_path, ctx)
        fresh.open()
        assert fresh.collections() == []
        assert len(ctx.quarantined) == 2
        kept = [p for p in tmp_path.iterdir() if ".corrupt-" in p.name]
        assert len(kept) == 2

    def test_cache_is_bounded(self, tmp_path: Path) -> None:
        store = make(tmp_path, shard_bytes=2048, cache_bytes=8192)
        store.commit({"c": {f"k{i}": record(i) for i in range(500)}})
        for i in range(500):
            assert store.get("c", f"k{i}") == record(i)
        assert store._cached <= 8192 + 2048

    def test_bad_collection_name(self, tmp_path: Path) -> None:
        store = make(tmp_path)
        with pytest.raises(ValidationError):
            store.commit({"../x": {"k": {}}})
        assert not (tmp_path / MANIFEST).exists()
