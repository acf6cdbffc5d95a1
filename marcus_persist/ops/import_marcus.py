"""``import-marcus``: bring an existing Marcus ``data/`` directory over as it is.

Blocking. The Marcus directory is only read: what is recognised is copied to
a staging directory, the stores' own startup loaders import it there (they
read Marcus's real shapes: ``marcus_state/*.json``, ``learned_patterns.json``,
``token_usage.json``, the assignments files, ``marcus_state.db``'s
``persistence`` table), corrupt files are quarantined there and reported,
and :func:`._migrate.migrate` copies the result into the target, verified.
"""

from __future__ import annotations

import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from marcus_persist._config import Config
from marcus_persist._core._fs import OS_FS
from marcus_persist._errors import ValidationError
from marcus_persist.backends import create_backend
from marcus_persist.backends._contract import check_collection_name
from marcus_persist.backends._files import FileContext
from marcus_persist.backends._names import check_file_name
from marcus_persist.backends.file._audit import FileAuditStorage
from marcus_persist.backends.file._audit_rotation import parse_source_name
from marcus_persist.backends.file._backend import FileBackend
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
    }
)
#: entries that belong to a database file or to the directory itself: not data, not reported
QUIET = frozenset({".lock", "marcus_state.db-wal", "marcus_state.db-shm"})


class Skipped(msgspec.Struct, frozen=True):
    path: str  #: relative to the Marcus directory
    reason: str


class ImportReport(msgspec.Struct):
    source: str
    files: list[str]  #: the files read (relative paths)
    skipped: list[Skipped]
    migration: MigrationReport

    @property
    def ok(self) -> bool:
        return self.migration.ok


def import_marcus(
    marcus_dir: Path, target: Config, *, on_progress: OnProgress | None = None
) -> ImportReport:
    """Import *marcus_dir* into the (empty) data directory or database *target*.

    :raises PersistenceError: if the target already holds data
    """
    if not marcus_dir.is_dir():
        raise FileNotFoundError(f"{marcus_dir} is not a directory")
    files, skipped = _survey(marcus_dir)
    with tempfile.TemporaryDirectory(prefix="marcus-import-") as tmp:
        staging = Path(tmp) / "data"
        for rel in files:
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(marcus_dir / rel, staging / rel)
        staging.mkdir(exist_ok=True)
        skipped += _load_in_staging(staging, Path(tmp))
        config = Config(data_dir=str(staging), backend="file")
        progress = target.path / PROGRESS_NAME if target.backend != "postgres" else None
        report = migrate(
            Endpoint(config),
            Endpoint(target),
            progress or Path(tmp) / PROGRESS_NAME,
            on_progress=on_progress,
            source_id=f"Marcus directory {marcus_dir.resolve()}",
        )
    files = [f for f in files if f not in {s.path for s in skipped}]
    return ImportReport(str(marcus_dir), files, skipped, report)


def _survey(root: Path) -> tuple[list[str], list[Skipped]]:
    """The files to import, and every other entry with the reason it is left."""
    files: list[str] = []
    skipped: list[Skipped] = []
    for entry in sorted(root.iterdir()):
        name = entry.name
        if name in QUIET:
            continue
        if name not in KNOWN:
            skipped.append(Skipped(name, "not part of Marcus's data layout"))
        elif entry.is_file() and name.endswith((".json", ".db")):
            files.append(name)
        elif entry.is_dir() and name == "assignments":
            _survey_assignments(root, entry, files, skipped)
        elif entry.is_dir() and name == "audit_logs":
            for path in sorted(p for p in entry.rglob("*") if p.is_file()):
                rel = path.relative_to(root).as_posix()
                if parse_source_name(path.name) is not None:
                    files.append(rel)
                else:
                    skipped.append(Skipped(rel, "not an audit log file"))
        elif entry.is_dir() and name == "marcus_state":
            for path in sorted(p for p in entry.rglob("*") if p.is_file()):
                rel = path.relative_to(root).as_posix()
                if path.parent == entry and path.suffix == ".json" and _collection(path.stem):
                    files.append(rel)
                else:
                    skipped.append(Skipped(rel, "not a collection file marcus_state/NAME.json"))
        else:
            skipped.append(Skipped(name, "unexpected kind of entry"))
    return files, skipped


def _survey_assignments(root: Path, folder: Path, files: list[str], skip: list[Skipped]) -> None:
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        inner = path.relative_to(folder).parts
        project = (
            len(inner) == 2 and inner[0].startswith("project_") and inner[1] == "assignments.json"
        )
        if project:
            try:  # Marcus took any project id; ours must be a safe directory name
                check_file_name("project_id", inner[0].removeprefix("project_"))
            except ValidationError as exc:
                skip.append(Skipped(rel, f"not imported: {exc}; rename the directory"))
                continue
        if inner == ("assignments.json",) or project:
            files.append(rel)
        else:
            skip.append(Skipped(rel, "not an assignments file"))


def _collection(name: str) -> bool:
    try:
        check_collection_name(name)
    except ValueError:
        return False
    return True


def _load_in_staging(staging: Path, scratch: Path) -> list[Skipped]:
    """Run the stores' importers on the staging copy; report what they could not take."""
    skipped: list[Skipped] = []
    ctx = FileContext(staging, OS_FS, False, "quarantine")
    backend = FileBackend(ctx)
    backend.state().load()  # imports marcus_state/*.json
    legacy = staging / "learned_patterns.json"
    if legacy.exists():  # fields Marcus left out are stamped with the file's own time, so
        # importing the same directory again gives the same records (a resumed import agrees)
        clock = _FixedClock(datetime.fromtimestamp(legacy.stat().st_mtime, UTC))
        PatternsHandler(backend.patterns(), clock).load()
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
