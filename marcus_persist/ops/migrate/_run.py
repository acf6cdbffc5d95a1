"""``migrate``: copy every record of every store from one backend to another.

Blocking (run it in a worker thread or a CLI). The source is only read,
offline, under its directory lock; the target is written through its storage
contract, a bounded chunk per commit. Every write is idempotent (keyed puts,
a whole token document, audit days topped up to the source's line count), and
a progress file in the target records each finished store, so a rerun after
an interruption skips what is done and neither loses nor duplicates a record.
At the end each store is read back from a freshly opened target and its
count and checksum compared with the source's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import msgspec

from marcus_persist._config import Config
from marcus_persist._core._dirlock import DirLock
from marcus_persist._core._fs import OS_FS
from marcus_persist._core._objstore import ObjectStore, open_object_store
from marcus_persist._errors import PersistenceError
from marcus_persist._runtime import prepare_data_dir
from marcus_persist.backends import Backend, create_backend, engine_for
from marcus_persist.backends._audit import AuditStorage
from marcus_persist.backends.file._audit import FileAuditStorage
from marcus_persist.backends.file._patterns_tokens import LEGACY_KEYS, LEGACY_PATTERNS
from marcus_persist.backends.file._state import is_marcus_collection
from marcus_persist.backends.memory._audit import MemoryAuditStorage
from marcus_persist.ops.migrate import _read as rd
from marcus_persist.ops.migrate._copy import (
    COPY,
    DIGEST,
    OnProgress,
    Opened,
    load_progress,
    save_progress,
)
from marcus_persist.stores.tokens._document import normalize

__all__ = (
    "PROGRESS_NAME",
    "STORES",
    "Endpoint",
    "MigrationReport",
    "OnProgress",
    "StoreResult",
    "migrate",
)

STORES = ("assignments", "state", "patterns", "tokens", "audit")
PROGRESS_NAME = ".migrate-progress.json"


@dataclass
class Endpoint:
    """One side of a migration: a config (backend name, data dir, dsn), or a ready backend."""

    config: Config
    backend: Backend | None = None  #: a ready one (a shared ``MemoryBackend``); else built
    audit: AuditStorage | None = None  #: with a ready backend: its trail, if any

    def describe(self) -> str:
        name = self.backend.name if self.backend is not None else self.config.backend
        if name == "postgres":
            return f"postgres schema {self.config.pg_schema}"
        return f"{name} {self.config.path}" if name != "memory" else "memory"


class StoreResult(msgspec.Struct):
    store: str
    status: Literal["copied", "done earlier", "skipped", "mismatch"]
    records: int = 0
    checksum: str = ""
    note: str = ""


class MigrationReport(msgspec.Struct):
    source: str
    target: str
    stores: list[StoreResult]

    @property
    def ok(self) -> bool:
        return all(s.status != "mismatch" for s in self.stores)


@contextlib.contextmanager
def _open(end: Endpoint, *, target: bool) -> Iterator[Opened]:
    """Open *end* under its directory lock (a target gets its layout created)."""
    config = end.config
    backend = end.backend
    lock: DirLock | None = None
    try:
        if backend is None:
            backend = create_backend(config, OS_FS)
        if backend.uses_data_dir:
            lock = DirLock(config.path)
            if target:
                prepare_data_dir(config, lock)
            elif not config.path.is_dir():
                raise PersistenceError(f"source {config.path} is not a directory")
            else:
                lock.acquire()
        ctx = getattr(backend, "ctx", None)
        if ctx is not None and not target:
            ctx.read_only = True  # a log is read, never checkpointed into the source
        remote = None if target else read_tiered(backend, config)
        audit = end.audit
        keeper = engine_for(backend, "audit")  # a hybrid's audit engine
        provided = getattr(keeper, "audit", None)
        if audit is None and callable(provided):
            audit = provided()
        elif audit is None and keeper.uses_data_dir:
            audit = FileAuditStorage(config.path / "audit_logs", OS_FS, config.durability, remote)
        elif audit is None and keeper.name == "memory" and end.backend is None:
            audit = MemoryAuditStorage()
        yield Opened(backend, audit, config)
    finally:
        if backend is not None and end.backend is None:
            backend.close()
        if lock is not None:
            lock.release()


def read_tiered(backend: Backend, config: Config) -> ObjectStore | None:
    """The store of the source's ``archive_url``, where a runtime tiered its sealed
    archives (``None`` without one): its token storage reads them from there (the
    audit trail's storage is given it by the caller)."""
    if not config.archive_url:
        return None
    remote = open_object_store(config.archive_url, config.archive_endpoint)
    attach = getattr(engine_for(backend, "tokens").tokens(), "attach_remote", None)
    if attach is not None:
        attach(remote)
    return remote


def migrate(
    source: Endpoint,
    target: Endpoint,
    progress_file: Path,
    *,
    on_progress: OnProgress | None = None,
    source_id: str | None = None,
) -> MigrationReport:
    """Copy every store of *source* into *target*, resumably; verify counts and checksums.

    *source_id* names the source in the progress file (default: its
    description); a progress file of another source is refused. A store
    finished by an earlier run is checked against the source again: if the
    source changed since, the store is reported as a mismatch.

    :raises PersistenceError: if the target holds data and there is no
        progress file of an earlier run, or a directory is locked
    """
    report = MigrationReport(source.describe(), target.describe(), [])
    tick = on_progress or (lambda store, done, total: None)
    progress = load_progress(progress_file)
    identity = source_id or report.source
    if progress.setdefault("source", identity) != identity:
        raise PersistenceError(
            f"{progress_file} belongs to a migration from {progress['source']}, not {identity}"
        )
    expected: dict[str, rd.Digest] = {}
    with _open(source, target=False) as src:
        _refuse_unimported(src)  # before the target is created
        with _open(target, target=True) as dst:
            src.backend.state().load()
            dst.backend.state().load()
            if not progress_file.exists() and _holds_data(dst):
                raise PersistenceError(
                    f"target {report.target} already holds data; migrate into an empty target"
                )
            save_progress(progress_file, progress)
            try:
                _copy_all(src, dst, progress, progress_file, tick, expected, report)
            finally:
                if dst.audit is not None:
                    dst.audit.close()
    with _open(target, target=True) as fresh:
        fresh.backend.state().load()
        for result in report.stores:
            if result.store not in expected or result.status == "mismatch":
                continue
            actual = DIGEST[result.store](fresh)
            if actual != expected[result.store]:
                result.status = "mismatch"
                result.note = f"target has {actual.records} records, checksum {actual.checksum}"
    return report


def _copy_all(
    src: Opened,
    dst: Opened,
    progress: dict[str, Any],
    progress_file: Path,
    tick: OnProgress,
    expected: dict[str, rd.Digest],
    report: MigrationReport,
) -> None:
    for store in STORES:
        done = progress["done"].get(store)
        if done is not None:
            expected[store] = rd.Digest(*done)
            result = StoreResult(store, "done earlier", *done)
            if DIGEST[store](src) != expected[store]:
                result.status = "mismatch"
                result.note = "the source changed since the earlier run: start again"
            report.stores.append(result)
            continue
        lacking = _lacks(store, src, dst)
        if lacking:
            report.stores.append(StoreResult(store, "skipped", note=lacking))
            continue
        expected[store] = COPY[store](src, dst, progress, progress_file, tick)
        progress["done"][store] = list(expected[store])
        save_progress(progress_file, progress)
        report.stores.append(StoreResult(store, "copied", *expected[store]))


def _lacks(store: str, src: Opened, dst: Opened) -> str:
    if store != "audit":
        return ""
    for side, name in ((src, "source"), (dst, "target")):
        if side.audit is None:
            return f"the {name} backend {side.backend.name} has no audit storage"
    return ""


def _refuse_unimported(src: Opened) -> None:
    """Loading Marcus's files imports them (collections are renamed): that is
    import-marcus's job. ``learned_patterns.json`` stays Marcus's after a runtime
    imported it (our ``.imported-keys`` beside it says so): that one is no reason."""
    if not src.backend.uses_data_dir:
        return
    root = src.config.path
    legacy = [p for p in (root / "marcus_state").glob("*.json") if is_marcus_collection(p)]
    patterns = root / LEGACY_PATTERNS
    if patterns.exists() and not (root / LEGACY_KEYS).exists():
        legacy.append(patterns)
    if legacy:
        names = ", ".join(sorted(p.relative_to(root).as_posix() for p in legacy))
        raise PersistenceError(
            f"{root} holds Marcus files not yet imported ({names}); "
            "bring them over with import-marcus"
        )


def _holds_data(dst: Opened) -> bool:
    backend = dst.backend
    if any(rd.assignments_of(backend).values()) or backend.state().collections():
        return True
    if rd.patterns_of(backend):
        return True
    document, logged = backend.tokens().load(normalize)
    if document is not None or logged:
        return True
    return dst.audit is not None and bool(dst.audit.sources())
