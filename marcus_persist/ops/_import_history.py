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
import os
from pathlib import Path

from marcus_persist._core._fs import OS_FS
from marcus_persist._core._snapshot import copy_file
from marcus_persist.backends.file._backend import FileBackend
from marcus_persist.stores.state._history import (
    HISTORY_DIR,
    history_file,
    history_files,
    read_history,
)

__all__ = ("HISTORY_DIR", "copy_history", "history_file", "import_history")


def import_history(staging: Path, into: FileBackend) -> list[tuple[str, str]]:
    """Put the records of ``staging/project_history`` into the staging state;
    ``(relative path, reason)`` for each file whose records could not be read."""
    problems: list[tuple[str, str]] = []
    state = into.state()
    for path in history_files(staging):
        rel = path.relative_to(staging).as_posix()
        try:
            entries = read_history(path)
        except ValueError as exc:
            problems.append((rel, f"records not imported ({exc}); the file is copied as it is"))
            continue
        for collection in sorted({e.collection for e in entries}):
            held = {key for chunk in state.chunks(collection) for key, _ in chunk}
            fresh = {
                e.key: {**e.record, "_stored_at": e.stored_at}
                for e in entries
                if e.collection == collection and e.key not in held
            }
            if fresh:
                state.commit({collection: fresh})
    return problems


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
