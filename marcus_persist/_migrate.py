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
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import msgspec

from . import _migrate_read as rd
from ._config import Config
from ._core._atomic import write_atomic
from ._core._dirlock import DirLock
from ._core._fs import OS_FS
from ._errors import PersistenceError
from ._runtime import prepare_data_dir
from .backends import Backend, create_backend
from .backends._contract import KeyedWrite
from .stores._audit_storage import AuditStorage, FileAuditStorage, MemoryAuditStorage
from .stores._pattern_records import check_patterns
from .stores._token_doc import normalize, with_marcus_totals
from .stores.assignments import check_records

__all__ = ("PROGRESS_NAME", "STORES", "Endpoint", "MigrationReport", "StoreResult", "migrate")

STORES = ("assignments", "state", "patterns", "tokens", "audit")
PROGRESS_NAME = ".migrate-progress.json"
CHUNK = 1000  #: records (or audit lines) per target commit

#: ``(store, records done so far, total or None)``
OnProgress = Callable[[str, int, "int | None"], None]


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


@dataclass
class _Opened:
    backend: Backend
    audit: AuditStorage | None
    config: Config


@contextlib.contextmanager
def _open(end: Endpoint, *, target: bool) -> Iterator[_Opened]:
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
        audit = end.audit
        provided = getattr(backend, "audit", None)
        if audit is None and callable(provided):
            audit = provided()
        elif audit is None and backend.uses_data_dir:
            audit = FileAuditStorage(config.path / "audit_logs", OS_FS, config.durability)
        elif audit is None and backend.name == "memory" and end.backend is None:
            audit = MemoryAuditStorage()
        yield _Opened(backend, audit, config)
    finally:
        if backend is not None and end.backend is None:
            backend.close()
        if lock is not None:
            lock.release()


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
    progress = _load_progress(progress_file)
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
            _save_progress(progress_file, progress)
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
            actual = _DIGEST[result.store](fresh)
            if actual != expected[result.store]:
                result.status = "mismatch"
                result.note = f"target has {actual.records} records, checksum {actual.checksum}"
    return report


def _copy_all(
    src: _Opened,
    dst: _Opened,
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
            if _DIGEST[store](src) != expected[store]:
                result.status = "mismatch"
                result.note = "the source changed since the earlier run: start again"
            report.stores.append(result)
            continue
        lacking = _lacks(store, src, dst)
        if lacking:
            report.stores.append(StoreResult(store, "skipped", note=lacking))
            continue
        expected[store] = _COPY[store](src, dst, progress, progress_file, tick)
        progress["done"][store] = list(expected[store])
        _save_progress(progress_file, progress)
        report.stores.append(StoreResult(store, "copied", *expected[store]))


def _lacks(store: str, src: _Opened, dst: _Opened) -> str:
    if store != "audit":
        return ""
    for side, name in ((src, "source"), (dst, "target")):
        if side.audit is None:
            return f"the {name} backend {side.backend.name} has no audit storage"
    return ""


def _refuse_unimported(src: _Opened) -> None:
    """Loading Marcus's files imports them (renames them): that is import-marcus's job."""
    if not src.backend.uses_data_dir:
        return
    root = src.config.path
    legacy = [p for p in (root / "marcus_state").glob("*.json") if p.name != "_manifest.json"]
    legacy += [p for p in (root / "learned_patterns.json",) if p.exists()]
    if legacy:
        names = ", ".join(sorted(p.relative_to(root).as_posix() for p in legacy))
        raise PersistenceError(
            f"{root} holds Marcus files not yet imported ({names}); "
            "bring them over with import-marcus"
        )


def _holds_data(dst: _Opened) -> bool:
    backend = dst.backend
    if any(rd.assignments_of(backend).values()) or backend.state().collections():
        return True
    if rd.patterns_of(backend):
        return True
    document, logged = backend.tokens().load(normalize)
    if document is not None or logged:
        return True
    return dst.audit is not None and bool(dst.audit.sources())


def _copy_assignments(
    src: _Opened, dst: _Opened, progress: dict[str, Any], path: Path, tick: OnProgress
) -> rd.Digest:
    scopes = rd.assignments_of(src.backend)
    storage = dst.backend.assignments()
    present = storage.load(check_records)
    total = sum(len(r) for r in scopes.values())
    done = 0
    for scope, records in scopes.items():
        storage.commit({scope: KeyedWrite(present.get(scope, {}), records)})
        done += len(records)
        tick("assignments", done, total)
    return rd.assignments_digest(scopes)


def _copy_state(
    src: _Opened, dst: _Opened, progress: dict[str, Any], path: Path, tick: OnProgress
) -> rd.Digest:
    source, target = src.backend.state(), dst.backend.state()
    collections = source.collections()
    total = sum(source.count(c) for c in collections)
    done = 0
    for collection in collections:
        if collection in progress["collections"]:
            done += source.count(collection)
            continue
        for chunk in source.chunks(collection):
            for start in range(0, len(chunk), CHUNK):
                part = chunk[start : start + CHUNK]
                target.commit({collection: dict(part)})
                done += len(part)
                tick("state", done, total)
        progress["collections"].append(collection)
        _save_progress(path, progress)
    return rd.state_digest(src.backend)


def _copy_patterns(
    src: _Opened, dst: _Opened, progress: dict[str, Any], path: Path, tick: OnProgress
) -> rd.Digest:
    records = rd.patterns_of(src.backend)
    storage = dst.backend.patterns()
    present = {key: p.stored() for key, p in storage.load(check_patterns).items()}
    keys = sorted(records)
    for start in range(0, len(keys), CHUNK):
        changes = {k: records[k] for k in keys[start : start + CHUNK]}
        storage.commit(KeyedWrite(present, changes))
        present.update(changes)
        tick("patterns", start + len(changes), len(keys))
    return rd.patterns_digest(records)


def _copy_tokens(
    src: _Opened, dst: _Opened, progress: dict[str, Any], path: Path, tick: OnProgress
) -> rd.Digest:
    tokens = rd.tokens_of(src.backend, src.config)
    storage = dst.backend.tokens()
    storage.load(normalize)
    document = with_marcus_totals(dict(tokens.document))
    storage.commit([], lambda: document, tokens.archives)
    tick("tokens", 1, 1)
    return rd.tokens_digest(tokens)


def _copy_audit(
    src: _Opened, dst: _Opened, progress: dict[str, Any], path: Path, tick: OnProgress
) -> rd.Digest:
    assert src.audit is not None and dst.audit is not None
    dst.audit.load()
    present: Counter[Any] = Counter()
    for day, lines in rd.audit_days(dst.audit):
        present[day] += len(lines)
    seen: Counter[Any] = Counter()
    done = 0
    for day, lines in rd.audit_days(src.audit):
        skip = max(0, present[day] - seen[day])  # the target holds a prefix of each day
        seen[day] += len(lines)
        todo = lines[skip:]
        for start in range(0, len(todo), CHUNK):
            dst.audit.append({day: todo[start : start + CHUNK]})
        done += len(lines)
        tick("audit", done, None)
    return rd.audit_digest(src.audit)


_COPY: dict[str, Callable[..., rd.Digest]] = {
    "assignments": _copy_assignments,
    "state": _copy_state,
    "patterns": _copy_patterns,
    "tokens": _copy_tokens,
    "audit": _copy_audit,
}


def _audit_digest(side: _Opened) -> rd.Digest:
    assert side.audit is not None
    return rd.audit_digest(side.audit)


_DIGEST: dict[str, Callable[[_Opened], rd.Digest]] = {
    "assignments": lambda s: rd.assignments_digest(rd.assignments_of(s.backend)),
    "state": lambda s: rd.state_digest(s.backend),
    "patterns": lambda s: rd.patterns_digest(rd.patterns_of(s.backend)),
    "tokens": lambda s: rd.tokens_digest(rd.tokens_of(s.backend, s.config)),
    "audit": _audit_digest,
}


def _load_progress(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {"format": 1, "done": {}, "collections": []}
    try:
        loaded = msgspec.json.decode(path.read_bytes())
    except msgspec.DecodeError as exc:
        raise PersistenceError(f"{path}: unreadable migration progress ({exc})") from None
    if not (
        isinstance(loaded, dict)
        and isinstance(loaded.get("done"), dict)
        and isinstance(loaded.get("collections"), list)
    ):
        raise PersistenceError(f"{path}: not a migration progress file")
    result: dict[str, Any] = loaded
    return result


def _save_progress(path: Path, progress: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, msgspec.json.encode(progress), fs=OS_FS, sync=True)
