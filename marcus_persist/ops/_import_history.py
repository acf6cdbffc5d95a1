"""Marcus's project history (``data/project_history/<project_id>/``, written by
``ProjectHistoryPersistence`` in ``src/core/project_history.py``), for ``import-marcus``.

Marcus keeps three JSON files per project: ``decisions.json``
(``{"project_id", "project_name", "decisions": [Decision], "metadata"}``),
``artifacts.json`` (the same with ``"artifacts"``) and ``snapshot.json`` (one
``ProjectSnapshot``). Its own class reads them from there (and the
decisions and artifacts again from ``marcus.db``), so the import does both:

* every record joins the state, in ``project_history_decisions`` (by
  ``decision_id``), ``project_history_artifacts`` (by ``artifact_id``) and
  ``project_history_snapshots`` (by project id), each with its own time as
  ``_stored_at``; a key the state already holds is left as it is;
* the files are copied as they are into the target's ``project_history/``
  (after the stores, durably, never over an existing file), where Marcus's
  class keeps reading and writing them.

A file that is not of Marcus's shape is reported and copied, never dropped.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from marcus_persist._core._fs import OS_FS
from marcus_persist._core._snapshot import copy_file
from marcus_persist._errors import ValidationError
from marcus_persist.backends._names import check_file_name
from marcus_persist.backends.file._backend import FileBackend

__all__ = ("HISTORY_DIR", "copy_history", "history_file", "import_history")

HISTORY_DIR = "project_history"
#: Marcus's file name -> (state collection, the list inside it or ``None``, its key field)
FILES: dict[str, tuple[str, str | None, str]] = {
    "decisions.json": ("project_history_decisions", "decisions", "decision_id"),
    "artifacts.json": ("project_history_artifacts", "artifacts", "artifact_id"),
    "snapshot.json": ("project_history_snapshots", None, "project_id"),
}


def history_file(folder: Path, path: Path) -> str | None:
    """Why *path* under ``project_history/`` is not imported (``None``: it is)."""
    inner = path.relative_to(folder).parts
    if len(inner) != 2 or inner[1] not in FILES:
        return "not a project history file project_history/ID/(decisions|artifacts|snapshot).json"
    try:
        check_file_name("project_id", inner[0])
    except ValidationError as exc:
        return f"not imported: {exc}; rename the directory"
    return None


def import_history(staging: Path, into: FileBackend) -> list[tuple[str, str]]:
    """Put the records of ``staging/project_history`` into the staging state;
    ``(relative path, reason)`` for each file whose records could not be read."""
    problems: list[tuple[str, str]] = []
    folder = staging / HISTORY_DIR
    if not folder.is_dir():
        return problems
    state = into.state()
    for path in sorted(folder.glob("*/*.json")):
        if history_file(folder, path) is not None:
            continue
        rel = path.relative_to(staging).as_posix()
        collection, field, key_field = FILES[path.name]
        try:
            records = _records(path, field, key_field)
        except ValueError as exc:
            problems.append((rel, f"records not imported ({exc}); the file is copied as it is"))
            continue
        held = {key for chunk in state.chunks(collection) for key, _ in chunk}
        fresh = {k: r for k, r in records.items() if k not in held}
        if fresh:
            state.commit({collection: fresh})
    return problems


def _records(path: Path, field: str | None, key_field: str) -> dict[str, dict[str, Any]]:
    """``key -> record + _stored_at`` of one of Marcus's files; ``ValueError`` if not its shape."""
    try:
        document = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise ValueError("not a JSON object")
    entries = [document] if field is None else document.get(field)
    if not isinstance(entries, list):
        raise ValueError(f"no {field!r} array")
    fallback = datetime.fromtimestamp(path.stat().st_mtime, UTC).isoformat()
    out: dict[str, dict[str, Any]] = {}
    for index, entry in enumerate(entries):
        key = entry.get(key_field) if isinstance(entry, dict) else None
        if not isinstance(key, str) or not key:
            raise ValueError(f"entry {index} has no {key_field!r}")
        stamp = entry.get("timestamp", entry.get("snapshot_timestamp"))
        out[key] = {**entry, "_stored_at": stamp if isinstance(stamp, str) else fallback}
    return out


def copy_history(
    source_root: Path, files: list[str], target_dir: Path, *, file_mode: int = 0o600
) -> list[tuple[str, str]]:
    """Copy each of *files* (relative to *source_root*) to the same place under
    *target_dir*, durably; ``(relative path, reason)`` for each one not copied.
    A target file already holding the same bytes (a resumed import) is done."""
    not_copied: list[tuple[str, str]] = []
    fs = OS_FS.with_file_mode(file_mode)
    for rel in files:
        source, target = source_root / rel, target_dir / rel
        if os.path.lexists(target):
            if not _same(source, target):
                not_copied.append((rel, f"not copied: {target} exists already"))
            continue
        partial = target.with_name(f"{target.name}.tmp-import")
        try:
            copy_file(source, partial, fs, sync=True)
            os.replace(partial, target)
            fs.fsync_dir(target.parent)
        except OSError as exc:
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()
            not_copied.append((rel, f"could not be copied: {exc}"))
    return not_copied


def _same(one: Path, other: Path) -> bool:
    try:
        return _digest(one) == _digest(other)
    except OSError:
        return False


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
