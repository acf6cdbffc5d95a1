"""Keys stay findable while shards split, in the live store and after reopening."""

from __future__ import annotations

from pathlib import Path

from marcus_persist._core._fs import OS_FS
from marcus_persist.backends._files import FileContext
from marcus_persist.backends.file._shards import ShardStore


def test_keys_found_after_splits_in_the_same_store_and_after_reopen(tmp_path: Path) -> None:
    def store() -> ShardStore:
        opened = ShardStore(tmp_path, FileContext(tmp_path, OS_FS, False, "error"), shard_bytes=300)
        opened.open()
        return opened

    live = store()
    for batch in range(20):  # every batch splits shards further
        live.commit({"c": {f"k{batch}-{n}": {"v": n} for n in range(25)}})
        for earlier in range(batch + 1):
            assert live.get("c", f"k{earlier}-7") == {"v": 7}
    assert len(live.shards("c")) > 16
    reopened = store()
    assert all(reopened.get("c", f"k{b}-{n}") == {"v": n} for b in range(20) for n in range(25))
    assert sorted(k for k, _ in reopened.iter("c")) == sorted(k for k, _ in live.iter("c"))
