"""Suite 2 for the state store and learned patterns: deliberately broken
commits must be caught by the crash-point machinery, naming the crash point, while
the real code passes the same workload (and the same injected fault).

Each variant is patched at the narrowest point, by behaviour (which call is made,
in which order), never by byte format: the file formats may change underneath.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import pytest

from marcus_persist._core._atomic import write_new
from marcus_persist._core._fs import FileSystem
from marcus_persist.backends.file import _manifest, _shards
from marcus_persist.backends.file._manifest import LOG, Manifest
from marcus_persist.backends.file._shards import ShardStore

from .oracle import History, run_steps
from .simfs import Fault, SimFS
from .state_oracle import STATE, checkpoint_often
from .test_audit_broken_variants import caught
from .test_crash_points import fail_nth
from .test_state_crash_points import MULTI_SHARD, REBASE, THREE_COMMITS, state_crash_run

pytestmark = pytest.mark.anyio


Runner = Callable[[SimFS, Path], Awaitable[None]]


class _Overridden:
    """A file system that passes every call through but those in *overrides*, which
    get the real file system first: ``override(real_fs, *args)``."""

    def __init__(self, inner: FileSystem, overrides: dict[str, Callable[..., None]]) -> None:
        self._inner, self._overrides = inner, overrides

    def __getattr__(self, name: str) -> Any:
        override = self._overrides.get(name)
        if override is None:
            return getattr(self._inner, name)
        return functools.partial(override, self._inner)


def _skip(_fs: FileSystem, _target: object) -> None:
    """No fsync at all: whatever was written is acknowledged unsynced."""


def _retry(fs: FileSystem, fd: int) -> None:
    try:
        fs.fsync(fd)
    except OSError:
        fs.fsync(fd)  # "succeeds": the kernel already dropped the pages


def _skip_collection_dirs(fs: FileSystem, path: Path) -> None:
    if path.parent.name != _shards.SHARDS_DIR:  # a collection's own directory: skipped
        fs.fsync_dir(path)


def with_fs(method: Any, **overrides: Callable[..., None]) -> Any:
    """*method* of an object holding a ``_ctx`` FileContext, run with some of its
    file-system calls changed (the narrowest patch: that one object, that one method)."""

    def patched(self: Any, *args: Any) -> Any:
        real = self._ctx
        fs = cast(FileSystem, _Overridden(real.fs, overrides))
        self._ctx = dataclasses.replace(real, fs=fs)
        try:
            return method(self, *args)
        finally:
            self._ctx = real

    return patched


async def last_fsync_of(tmp: Path, fragment: str, run: Runner) -> Fault:
    """A fault failing, once, the last fsync of the file named *fragment* in a clean run
    of *run* (a later append, not the first commit's checkpoint)."""
    root = tmp / "probe"
    root.mkdir(parents=True)
    fs = SimFS(root)
    await run(fs, root / "data")
    fsyncs = [op for op in fs.trace if op.kind == "fsync"]
    return fail_nth("fsync", max(i for i, op in enumerate(fsyncs, 1) if op.path.endswith(fragment)))


async def _state_clean(fs: SimFS, data: Path) -> None:
    history = History(STATE)
    for step in THREE_COMMITS:  # one session each, as state_crash_run: each close checkpoints
        await run_steps(history, fs, data, [step])


class TestStateBrokenVariants:
    async def test_superseded_shard_unlinked_before_the_manifest_is_durable(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        original = Manifest.commit

        def unlink_first(self: Manifest, seq: int, meta: Any, changes: Any, *rest: Any) -> None:
            # every older version of each shard this commit changes (or drops) goes first
            shards = self.base_path.parent / _shards.SHARDS_DIR
            for collection, entries in changes.items():
                for shard in entries:
                    for path in sorted((shards / collection).glob(f"{shard}.*.json")):
                        if path.name != f"{shard}.{seq}.json":
                            self._ctx.fs.unlink(path)
            original(self, seq, meta, changes, *rest)

        monkeypatch.setattr(Manifest, "commit", unlink_first)
        violations, fs = await state_crash_run("early unlink", MULTI_SHARD, tmp_path)
        assert any(op.kind == "unlink" and "_shards/docs" in op.path for op in fs.trace)
        caught("superseded shard unlinked before the manifest is durable", violations)

    async def test_new_shard_files_not_fsynced_before_the_manifest_names_them(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        def unsynced_shards(path: Path, data: bytes, *, fs: FileSystem, sync: bool) -> None:
            is_shard = path.parent.parent.name == _shards.SHARDS_DIR  # not the manifest base
            write_new(path, data, fs=fs, sync=sync and not is_shard)

        monkeypatch.setattr(_shards, "write_new", unsynced_shards)
        violations, _fs = await state_crash_run("unsynced shards", THREE_COMMITS, tmp_path)
        caught("new shard files not fsynced before the manifest names them", violations)

    async def test_shard_directory_not_fsynced_before_the_manifest_names_its_files(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        commit = with_fs(ShardStore.commit, fsync_dir=_skip_collection_dirs)
        monkeypatch.setattr(ShardStore, "commit", commit)
        violations, _fs = await state_crash_run("no shard dir fsync", MULTI_SHARD, tmp_path)
        caught("shard directory not fsynced before the manifest names its files", violations)

    async def test_state_commit_acknowledged_before_the_log_fsync(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(Manifest, "_append", with_fs(Manifest._append, fsync=_skip))
        violations, fs = await state_crash_run("ack before log fsync", THREE_COMMITS, tmp_path)
        assert any(op.kind == "write" and op.path.endswith(LOG) for op in fs.trace)
        caught("state commit acknowledged before the manifest log fsync", violations)

    @pytest.mark.parametrize("flaw", ["no fsync", "no directory fsync"])
    async def test_manifest_base_renamed_unsynced(
        self, flaw: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        def broken(
            fs: FileSystem, path: Path, data: bytes, sync: bool, renamed: list[bool]
        ) -> None:
            tmp = path.with_name(f"{path.name}.tmp-{len(data):012x}")
            write_new(tmp, data, fs=fs, sync=sync and flaw != "no fsync")
            fs.replace(tmp, path)
            renamed.append(True)
            if sync and flaw != "no directory fsync":
                fs.fsync_dir(path.parent)

        checkpoint_often(monkeypatch, Manifest)
        monkeypatch.setattr(_manifest, "replace_file", broken)
        violations, _fs = await state_crash_run(f"base, {flaw}", REBASE, tmp_path)
        caught(f"manifest base renamed with {flaw}", violations)

    async def test_failed_log_fsync_retried_and_acknowledged(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        fault = await last_fsync_of(tmp_path, LOG, _state_clean)
        # the real code under the same fault: never acknowledged, the oracle holds
        real, fs = await state_crash_run("real", THREE_COMMITS, tmp_path / "real", fault)
        assert real == [] and any(op.kind == "fsync_failed" for op in fs.trace)
        fault = await last_fsync_of(tmp_path / "again", LOG, _state_clean)
        monkeypatch.setattr(Manifest, "_append", with_fs(Manifest._append, fsync=_retry))
        violations, _fs = await state_crash_run("retried", THREE_COMMITS, tmp_path / "b", fault)
        caught("failed manifest log fsync retried and acknowledged", violations)
