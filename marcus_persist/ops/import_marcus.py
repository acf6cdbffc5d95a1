"""``import-marcus``: bring an existing Marcus ``data/`` directory over as it is.

Blocking. The Marcus directory is only read: what is recognised is copied to
a staging directory, the stores' own startup loaders import it there (they
read Marcus's real shapes: ``marcus_state/*.json``, ``learned_patterns.json``,
``token_usage.json``, the assignments files, ``marcus_state.db``'s
``persistence`` table; ``project_history/`` records and the CostStore rows
given with ``costs=`` join the state and token usage there too), corrupt files
are quarantined there and reported, and :func:`._migrate.migrate` copies the
result into the target, verified.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from marcus_persist._config import Config
from marcus_persist._core._atomic import ensure_dir
from marcus_persist._core._fs import OS_FS
from marcus_persist._core._safeopen import describe, never, walk
from marcus_persist._core._snapshot import check_member, copy_file
from marcus_persist._errors import ValidationError
from marcus_persist._runtime._dirconfig import (
    DIR_ENGINES,
    DirRecord,
    read_record,
    uses_record,
    write_record,
)
from marcus_persist.backends import create_backend
from marcus_persist.backends._contract import check_collection_name
from marcus_persist.backends._files import FileContext
from marcus_persist.backends._names import check_file_name
from marcus_persist.backends.file._audit import FileAuditStorage
from marcus_persist.backends.file._audit_rotation import parse_source_name
from marcus_persist.backends.file._backend import FileBackend
from marcus_persist.backends.file._state import DOCUMENTED_ONLY, DOCUMENTED_ONLY_REASON
from marcus_persist.ops._import_costs import CostImport, import_costs
from marcus_persist.ops._import_databases import LANE_DATABASES, copy_database
from marcus_persist.ops._import_history import (
    HISTORY_DIR,
    copy_history,
    history_file,
    import_history,
)
from marcus_persist.ops.migrate._run import (
    PROGRESS_NAME,
    Endpoint,
    MigrationReport,
    OnProgress,
    migrate,
)
from marcus_persist.stores.patterns import PatternsHandler

__all__ = ("ImportReport", "Skipped", "import_marcus")

#: top-level entries of a Marcus data directory this import reads
KNOWN = frozenset(
    {
        "assignments",
        "audit_logs",
        "marcus_state",
        "marcus_state.db",
        "learned_patterns.json",
        "token_usage.json",
        HISTORY_DIR,
        *LANE_DATABASES,
    }
)
#: entries that belong to a database file or to the directory itself: not data, not reported
QUIET = frozenset(
    {".lock", "marcus_state.db-wal", "marcus_state.db-shm"}
    | {f"{name}-{part}" for name in LANE_DATABASES for part in ("wal", "shm", "journal")}
)


class Skipped(msgspec.Struct, frozen=True):
    path: str  #: relative to the Marcus directory
    reason: str


class ImportReport(msgspec.Struct):
    source: str
    files: list[str]  #: the files read (relative paths)
    skipped: list[Skipped]
    migration: MigrationReport
    #: Marcus's CostStore rows recorded into token usage (``costs=`` given)
    costs: CostImport | None = None
    #: records per state collection imported (``events``, ``decisions``,
    #: ``task_outcomes``, ... as Marcus named them), before the copy into the target
    state: dict[str, int] = msgspec.field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.migration.ok


def import_marcus(
    marcus_dir: Path,
    target: Config,
    *,
    costs: Path | None = None,
    on_progress: OnProgress | None = None,
) -> ImportReport:
    """Import *marcus_dir* into the (empty) data directory or database *target*.

    *costs* is Marcus's CostStore database (``~/.marcus/costs.db``; never read
    unless given): its rows join the token usage (:mod:`._import_costs`).

    :raises PersistenceError: if the target already holds data
    :raises ValidationError: *costs* is not a CostStore database (nothing written)
    """
    if not marcus_dir.is_dir():
        raise FileNotFoundError(f"{marcus_dir} is not a directory")
    if costs is not None and not costs.is_file():
        raise FileNotFoundError(f"{costs} is not a file")
    files, skipped = _survey(marcus_dir)
    databases = [f for f in files if f in LANE_DATABASES]  # copied whole, after the stores
    files = [f for f in files if f not in databases]
    history = [f for f in files if f.startswith(f"{HISTORY_DIR}/")]  # read, and copied after
    with tempfile.TemporaryDirectory(prefix="marcus-import-") as tmp:
        staging = Path(tmp) / "data"
        ensure_dir(staging, sync=False)
        for rel in files:
            _copy_in(marcus_dir / rel, staging / rel)
        more, state = _load_in_staging(staging, Path(tmp))
        skipped += more
        cost_report = _costs_in_staging(staging, costs, target) if costs is not None else None
        config = Config(data_dir=str(staging), backend="file")
        progress = target.path / PROGRESS_NAME if target.backend != "postgres" else None
        report = migrate(
            Endpoint(config),
            Endpoint(target),
            progress or Path(tmp) / PROGRESS_NAME,
            on_progress=on_progress,
            source_id=f"Marcus directory {marcus_dir.resolve()}",
        )
    if report.ok:
        _record_hybrid(target)
    for name in databases:
        files.append(name)
        if not report.ok:
            why: str | None = "not copied: the import did not finish"
        elif not uses_record(target):
            why = "not copied: the target has no directory; keep it beside Marcus"
        else:
            why = copy_database(marcus_dir / name, target.path, file_mode=target.file_mode_bits)
        if why is not None:
            skipped.append(Skipped(name, why))
    skipped += _copy_history(marcus_dir, history, target, report.ok)
    files = [f for f in files if f not in {s.path for s in skipped}]
    return ImportReport(str(marcus_dir), files, skipped, report, cost_report, state)


def _copy_history(
    marcus_dir: Path, history: list[str], target: Config, imported: bool
) -> list[Skipped]:
    """Marcus's project history files, as they are, into the target (Marcus's class
    keeps reading them there)."""
    if not history:
        return []
    if not imported:
        return [Skipped(f, "not copied: the import did not finish") for f in history]
    if not uses_record(target):
        why = "records imported; the file is not copied: the target has no directory"
        return [Skipped(f, why) for f in history]
    not_copied = copy_history(marcus_dir, history, target.path, file_mode=target.file_mode_bits)
    return [Skipped(f, why) for f, why in not_copied]


def _costs_in_staging(staging: Path, costs: Path, target: Config) -> CostImport:
    try:
        return import_costs(staging, costs, target)
    except sqlite3.DatabaseError as exc:
        raise ValidationError(f"costs: {costs} is not Marcus's CostStore database: {exc}") from None


def _record_hybrid(target: Config) -> None:
    """A hybrid target's engines go in its directory's record, so the next
    ``open_runtime`` of the directory finds each store where it was imported."""
    if not target.backends or not uses_record(target):
        return
    engines = {s: e for s, e in target.engines.items() if e in DIR_ENGINES}
    record = read_record(target.path) or DirRecord()
    write_record(target.path, DirRecord(backends={**record.backends, **engines}))


def _copy_in(source: Path, target: Path) -> None:
    """Copy a regular file (never through a link) keeping its modification time."""
    copy_file(source, target, OS_FS, sync=False)
    stamp = os.lstat(source)
    os.utime(target, ns=(stamp.st_atime_ns, stamp.st_mtime_ns), follow_symlinks=False)


def _survey(root: Path) -> tuple[list[str], list[Skipped]]:
    """The files to import, and every other entry with the reason it is left.

    Symbolic links, FIFOs and devices are never followed or read: each is
    reported as skipped. Every file kept passes the one path rule of backups
    (:func:`check_member`)."""
    files: list[str] = []
    skipped: list[Skipped] = []
    surveys = {
        "assignments": _assignments_file,
        "audit_logs": _audit_file,
        "marcus_state": _state_file,
        HISTORY_DIR: history_file,
    }
    with os.scandir(root) as listing:
        entries = sorted(listing, key=lambda e: e.name)
    for entry in entries:
        name = entry.name
        is_dir = entry.is_dir(follow_symlinks=False)
        if name in QUIET:
            continue
        if name not in KNOWN:
            skipped.append(Skipped(name, "not part of Marcus's data layout"))
        elif not (is_dir or entry.is_file(follow_symlinks=False)):
            kind = describe(entry.stat(follow_symlinks=False).st_mode)
            skipped.append(Skipped(name, f"{kind}: never followed, not imported"))
        elif is_dir and name in surveys:
            folder = Path(entry.path)
            for path in _regular_under(root, folder, skipped):
                rel = path.relative_to(root).as_posix()
                reason = surveys[name](folder, path)
                if reason is None:
                    files.append(rel)
                else:
                    skipped.append(Skipped(rel, reason))
        elif not is_dir and name.endswith((".json", ".db")):
            files.append(name)
        else:
            skipped.append(Skipped(name, "unexpected kind of entry"))
    return files, skipped


def _regular_under(root: Path, folder: Path, skipped: list[Skipped]) -> list[Path]:
    """The regular files under *folder*; anything else goes to *skipped*, unread."""
    found: list[Path] = []
    for path, kind in walk(folder, never):
        rel = path.relative_to(root).as_posix()
        try:
            check_member(rel)
        except ValueError as exc:
            skipped.append(Skipped(rel, f"not imported: {exc}"))
            continue
        if kind is not None:
            skipped.append(Skipped(rel, f"{kind}: never followed, not imported"))
        else:
            found.append(path)
    return found


def _audit_file(folder: Path, path: Path) -> str | None:
    """Why *path* under ``audit_logs/`` is not imported (``None``: it is)."""
    return None if parse_source_name(path.name) is not None else "not an audit log file"


def _state_file(folder: Path, path: Path) -> str | None:
    """Why *path* under ``marcus_state/`` is not imported (``None``: it is)."""
    if path.parent == folder and path.suffix == ".json" and _collection(path.stem):
        return None
    if path.relative_to(folder).parts[0] in DOCUMENTED_ONLY:
        return DOCUMENTED_ONLY_REASON
    return "not a collection file marcus_state/NAME.json"


def _assignments_file(folder: Path, path: Path) -> str | None:
    """Why *path* under ``assignments/`` is not imported (``None``: it is)."""
    inner = path.relative_to(folder).parts
    if inner == ("assignments.json",):
        return None
    if len(inner) == 2 and inner[0].startswith("project_") and inner[1] == "assignments.json":
        try:  # Marcus took any project id; ours must be a safe directory name
            check_file_name("project_id", inner[0].removeprefix("project_"))
        except ValidationError as exc:
            return f"not imported: {exc}; rename the directory"
        return None
    return "not an assignments file"


def _collection(name: str) -> bool:
    try:
        check_collection_name(name)
    except ValueError:
        return False
    return True


def _load_in_staging(staging: Path, scratch: Path) -> tuple[list[Skipped], dict[str, int]]:
    """Run the stores' importers on the staging copy; what they could not take, and
    the records per state collection they took."""
    ctx = FileContext(staging, OS_FS, False, "quarantine")
    backend = FileBackend(ctx)
    try:
        skipped = _import_stores(staging, scratch, backend, ctx)
        state = backend.state()
        return skipped, {c: state.count(c) for c in sorted(state.collections())}
    finally:
        backend.close()  # the logs opened, checkpointed into the staging files


def _import_stores(
    staging: Path, scratch: Path, backend: FileBackend, ctx: FileContext
) -> list[Skipped]:
    skipped: list[Skipped] = []
    backend.state().load()  # imports marcus_state/*.json
    for path, why in backend.state().left:  # another component's file: not state
        rel = path.relative_to(staging).as_posix()
        skipped.append(Skipped(rel, f"not imported: {why}"))
        path.unlink()  # the staging copy only (the source is never touched)
    legacy = staging / "learned_patterns.json"
    if legacy.exists():  # fields Marcus left out are stamped with the file's own time, so
        # importing the same directory again gives the same records (a resumed import agrees)
        clock = _FixedClock(datetime.fromtimestamp(legacy.stat().st_mtime, UTC))
        PatternsHandler(backend.patterns(), clock).load()
    skipped += [Skipped(rel, why) for rel, why in import_history(staging, backend)]
    database = staging / "marcus_state.db"
    if database.exists():
        skipped += _import_database(database, scratch, backend)
    for cut in FileAuditStorage(staging / "audit_logs", OS_FS, "none").load():
        original = cut.with_name(cut.name.removesuffix(".torn"))
        rel = original.relative_to(staging).as_posix()
        skipped.append(Skipped(rel, "its last line was incomplete (never acknowledged): left out"))
    # the remaining stores read their files when migrate opens them; check them now
    from marcus_persist.ops.migrate._read import assignments_of, tokens_of

    assignments_of(backend)
    tokens_of(backend, Config(data_dir=str(staging)))
    for q in ctx.quarantined:
        rel = Path(q.path).relative_to(staging).as_posix()
        skipped.append(Skipped(rel, f"corrupt, not imported: {q.reason}"))
    return skipped


class _FixedClock:
    def __init__(self, moment: datetime) -> None:
        self.moment = moment

    def now(self) -> datetime:
        return self.moment


def _import_database(database: Path, scratch: Path, into: FileBackend) -> list[Skipped]:
    """Marcus's SQLite ``persistence`` table, read by the sqlite backend, into the staging state."""
    alone = scratch / "db"
    alone.mkdir()
    database.replace(alone / database.name)
    sqlite = create_backend(Config(data_dir=str(alone), backend="sqlite"), OS_FS)
    try:
        state = sqlite.state()
        state.load()
        for collection in state.collections():
            for chunk in state.chunks(collection):
                into.state().commit({collection: dict(chunk)})
    except Exception as exc:  # a database we cannot read is reported, the rest imported
        return [Skipped("marcus_state.db", f"could not be read: {exc}")]
    finally:
        sqlite.close()
    return []
