"""``doctor``: validate every file of a data directory, and repair without deleting.

Checks run the stores' own loaders in a report-only mode, so what doctor
calls corrupt is exactly what would stop the runtime from starting.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from marcus_persist._config import Config
from marcus_persist._core._appendlog import cut_torn_tail
from marcus_persist._core._atomic import is_temp_name
from marcus_persist._core._clock import SYSTEM_CLOCK
from marcus_persist._core._dirlock import LOCK_NAME, DirLock
from marcus_persist._core._fs import OS_FS
from marcus_persist._core._safeopen import open_reader, unsafe_entries
from marcus_persist._core._wal import scan_log
from marcus_persist._errors import CorruptDataError, DataDirLocked
from marcus_persist.backends._files import FileContext
from marcus_persist.backends.file._audit import FileAuditStorage
from marcus_persist.backends.file._backend import FileBackend
from marcus_persist.backends.file._logged import WAL_DIR
from marcus_persist.backends.file._logged_shards import LoggedShards, decode_record
from marcus_persist.backends.file._patterns_tokens import PATTERNS_DIR, FilePatternStorage
from marcus_persist.backends.file._sealed import cut_tail
from marcus_persist.backends.file._shards import LOG, ShardStore
from marcus_persist.backends.file._state import STATE_DIR, FileStateStorage
from marcus_persist.backends.file._tokens import FileTokenStorage
from marcus_persist.ops._doctor_alerts import check_growth
from marcus_persist.ops._doctor_engines import check_engines
from marcus_persist.ops._finding import Finding
from marcus_persist.ops.wal import describe_logs
from marcus_persist.stores.assignments import AssignmentsHandler
from marcus_persist.stores.audit._query import find_bad_lines, select_sources
from marcus_persist.stores.tokens import TokensHandler
from marcus_persist.stores.tokens._days import odd_keys
from marcus_persist.stores.tokens._document import normalize

__all__ = ("Finding", "diagnose")


def diagnose(data_dir: Path, *, repair: bool = False) -> list[Finding]:
    """Check every file under *data_dir*; with *repair*, quarantine what is corrupt
    and remove what crashed commits left. Never deletes data.

    A symbolic link, FIFO, socket or device inside *data_dir* is reported and
    nothing else is checked or repaired: the loaders would refuse it anyway, and
    a repair must never act through a link on what lies outside.

    :raises DataDirLocked: for *repair* while a runtime serves the directory
    :raises NotADirectoryError: if *data_dir* is not a directory
    """
    if not data_dir.is_dir():
        raise NotADirectoryError(20, "not a data directory", str(data_dir))
    unsafe = [
        Finding(str(path), f"{kind}: never followed or opened; remove it", "error")
        for path, kind in unsafe_entries(data_dir)
    ]
    if unsafe:
        return [*unsafe, Finding(str(data_dir), "other checks skipped until it is fixed", "info")]
    lock = DirLock(data_dir)
    findings: list[Finding] = []
    try:
        lock.acquire()
    except DataDirLocked as exc:
        if repair:
            raise
        findings.append(Finding(str(lock.path), f"in use: {exc}; checked read-only", "info"))
    try:
        findings += _leftovers(data_dir, repair)
        findings += _stores(data_dir, repair)
        findings += _state(data_dir, repair)
        findings += _tokens(data_dir, repair)
        findings += _audit(data_dir, repair)
        findings += check_engines(data_dir)  # the record, migrations, marcus_state.db
        findings += check_growth(data_dir)  # past a limit of the review's (alert_*)
    finally:
        lock.release()  # a no-op when it was not taken
    return findings


def _leftovers(data_dir: Path, repair: bool) -> list[Finding]:
    """Temp files of interrupted commits; files earlier repairs set aside."""
    found: list[Finding] = []
    for dirpath, dirs, files in os.walk(data_dir):
        for name in sorted(files + [d for d in dirs if is_temp_name(d)]):
            path = Path(dirpath, name)
            if is_temp_name(name):
                repaired = None
                if repair and path.is_file():
                    OS_FS.unlink(path)
                    repaired = "removed (an interrupted commit's temp file, never live)"
                found.append(Finding(str(path), "stale temp file", "warning", repaired))
            elif ".corrupt-" in name:
                found.append(Finding(str(path), "a quarantined file: inspect, then delete", "info"))
            elif name.endswith(".torn"):
                found.append(Finding(str(path), "a torn tail cut off at startup", "info"))
            elif name == LOCK_NAME and Path(dirpath) == data_dir:
                continue
    return found


def _stores(data_dir: Path, repair: bool) -> list[Finding]:
    """Load every store the way the runtime does, recording what is wrong."""
    torn = [
        Finding(
            str(Path(log.path) / segment.name),
            f"{segment.torn_bytes} unreadable bytes at the end: an unfinished append "
            "(cut off and kept in .torn at the next start)",
            "warning",
            "cut into .torn" if repair else None,
        )
        for log in describe_logs(data_dir)
        for segment in log.segments
        if segment.torn_bytes
    ]
    ctx = FileContext(data_dir, OS_FS, sync=True, on_corrupt="quarantine" if repair else "report")
    backend = FileBackend(ctx)
    try:
        AssignmentsHandler(backend.assignments(), SYSTEM_CLOCK).load()
    finally:
        backend.close()  # on repair: the log, replayed, is checkpointed into the files
    found = torn + [Finding(path, reason, "error") for path, reason in ctx.problems]
    found += [
        Finding(q.path, q.reason, "error", f"quarantined as {Path(q.moved_to).name}")
        for q in ctx.quarantined
    ]
    return found


def _audit(data_dir: Path, repair: bool) -> list[Finding]:
    """Torn last lines of day files (cut on repair, kept in ``.torn``) and unreadable lines."""
    directory = data_dir / "audit_logs"
    if not directory.is_dir():
        return []
    found: list[Finding] = []
    storage = FileAuditStorage(directory, OS_FS, "batch")
    for path in sorted(directory.glob("audit_*.jsonl")):
        if path.stat().st_size and _last_byte(path) != b"\n":
            repaired = None
            if repair:
                kept = cut_torn_tail(path)
                repaired = f"cut into {kept.name}" if kept else None
            found.append(Finding(str(path), "torn last line (no newline)", "warning", repaired))
    count, first = find_bad_lines(select_sources(storage.sources(), None, None))
    found += [Finding(bad.source, f"line {bad.line}: {bad.reason}", "warning") for bad in first]
    if count > len(first):
        more = f"{count - len(first)} more unreadable lines"
        found.append(Finding(str(directory), more, "warning"))
    return found


def _last_byte(path: Path) -> bytes:
    with open_reader(path) as stream:
        stream.seek(-1, os.SEEK_END)
        return stream.read(1)


def _state(data_dir: Path, repair: bool) -> list[Finding]:
    """The shard stores and their write-ahead logs: state and learned patterns."""
    found: list[Finding] = []
    for name, storage in ((STATE_DIR, FileStateStorage), (PATTERNS_DIR, FilePatternStorage)):
        found += _shard_store(data_dir, name, repair)
        found += _shard_log(data_dir, name, storage, repair)
    return found


def _shard_store(data_dir: Path, name: str, repair: bool) -> list[Finding]:
    """The manifest, every shard it names, and shard files it does not name."""
    directory = data_dir / name
    if not directory.is_dir():
        return []
    ctx = FileContext(data_dir, OS_FS, sync=True, on_corrupt="quarantine" if repair else "error")
    store = ShardStore(directory, ctx)
    found: list[Finding] = []
    try:
        store.open()
    except CorruptDataError as exc:
        return [Finding(exc.path, exc.reason, "error")]
    if store.torn_tail:
        found.append(_tail(directory / LOG, store.torn_tail, repair))
    for collection in store.collections():
        for shard in store.shards(collection):
            try:
                store.items_in(collection, shard)
            except CorruptDataError as exc:
                found.append(Finding(exc.path, exc.reason, "error"))
    orphans = store.orphans()
    if repair and orphans:
        store.sweep()
    found += [
        Finding(str(p), "shard file no manifest names", "warning", "removed" if repair else None)
        for p in orphans
    ]
    found += [
        Finding(q.path, q.reason, "error", f"quarantined as {Path(q.moved_to).name}")
        for q in ctx.quarantined
    ]
    return found


def _shard_log(
    data_dir: Path, name: str, storage: Callable[[FileContext], LoggedShards], repair: bool
) -> list[Finding]:
    """A shard store's write-ahead log: every record sound and readable. On repair
    it is replayed and checkpointed into the shards (a corrupt log moved aside
    first); its torn tails are reported with every store's (:func:`_stores`)."""
    directory = data_dir / name / WAL_DIR
    if not directory.is_dir():
        return []
    found: list[Finding] = []
    try:
        for segment in scan_log(directory, fs=OS_FS):
            for lsn, payload in segment.records:
                try:
                    decode_record(payload)
                except (ValueError, msgspec.DecodeError, RecursionError) as exc:
                    found.append(Finding(str(segment.path), f"record {lsn}: {exc}", "error"))
    except CorruptDataError as exc:
        found.append(Finding(exc.path, exc.reason, "error"))
    if not repair:
        return found
    ctx = FileContext(data_dir, OS_FS, sync=True, on_corrupt="quarantine")
    store = storage(ctx)
    try:
        store.replay()
    except CorruptDataError as exc:  # a sound record that is no batch of it: left as it is
        return [*found, Finding(exc.path, exc.reason, "error")]
    store.close()  # the log, replayed, is checkpointed into the shards
    fixed = {q.path: Path(q.moved_to).name for q in ctx.quarantined}
    return [
        msgspec.structs.replace(f, repaired=f"quarantined as {fixed[str(directory)]}")
        if str(directory) in fixed
        else f
        for f in found
    ]


def _tokens(data_dir: Path, repair: bool) -> list[Finding]:
    """``token_usage.json``, its log (``tokens/wal/``, or the previous format's
    ``token_usage.log``) and the archive months, read as the runtime reads them.
    A repair then loads them through their handler (quarantining what is corrupt)
    and checkpoints: the document holds every logged batch, the log is emptied."""
    ctx = FileContext(data_dir, OS_FS, sync=True, on_corrupt="report")
    storage = FileTokenStorage(ctx)
    odd: list[str] = []

    def check(raw: Any) -> Any:
        odd.extend(odd_keys(raw))
        return normalize(raw)

    storage.load(check)  # reported: nothing changes, nothing is opened for writing
    for month in storage.archive_months():
        storage.archive(month)
    found = [] if repair else [Finding(path, reason, "error") for path, reason in ctx.problems]
    if odd:
        problem = (
            f"day keys not written YYYY-MM-DD ({', '.join(odd[:5])}"
            f"{', ...' if len(odd) > 5 else ''}): read as the day each names, "
            "rewritten canonical at the next full write"
        )
        found.append(Finding(str(storage.path), problem, "warning"))
    if storage.torn_tail:
        found.append(_tail(storage.log_path, storage.torn_tail, repair))
    if repair:
        found += _repair_tokens(data_dir)
    return found


def _repair_tokens(data_dir: Path) -> list[Finding]:
    ctx = FileContext(data_dir, OS_FS, sync=True, on_corrupt="quarantine")
    storage = FileTokenStorage(ctx)
    found: list[Finding] = []
    try:
        TokensHandler(storage, SYSTEM_CLOCK, Config(data_dir=str(data_dir))).load()
        for month in storage.archive_months():
            storage.archive(month)
    except CorruptDataError as exc:  # a logged record no handler reads: kept, reported
        found.append(Finding(exc.path, exc.reason, "error"))
    finally:
        storage.close()  # the checkpoint (or, if nothing was loaded, nothing)
    found += [
        Finding(q.path, q.reason, "error", f"quarantined as {Path(q.moved_to).name}")
        for q in ctx.quarantined
    ]
    return found


def _tail(log_path: Path, tail: bytes, repair: bool) -> Finding:
    """Unreadable lines at the end of a log: an unfinished append, or its last commit damaged."""
    problem = (
        f"{len(tail)} unreadable bytes at its end (an unfinished append, or damage to the "
        "last commit): ignored, kept in .torn at the next commit"
    )
    repaired = None
    if repair:
        repaired = f"cut into {cut_tail(OS_FS, log_path, tail, sync=True).name}"
    return Finding(str(log_path), problem, "warning", repaired)
