"""Marcus's project history files (``data/project_history/<project_id>/``, written by
``ProjectHistoryPersistence`` in ``src/core/project_history.py``), read as state records.

Marcus keeps three JSON files per project: ``decisions.json``
(``{"project_id", "project_name", "decisions": [Decision], "metadata"}``),
``artifacts.json`` (the same with ``"artifacts"``) and ``snapshot.json`` (one
``ProjectSnapshot``). Their records go to ``project_history_decisions`` (by
``decision_id``), ``project_history_artifacts`` (by ``artifact_id``) and
``project_history_snapshots`` (by project id), each with its own time as
``_stored_at``. The files stay Marcus's: read, never written or moved.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from marcus_persist._errors import ValidationError
from marcus_persist.backends._names import check_file_name

__all__ = ("HISTORY_DIR", "HistoryEntry", "history_file", "history_files", "read_history")

HISTORY_DIR = "project_history"
#: Marcus's file name -> (state collection, the list inside it or ``None``, its key field)
FILES: dict[str, tuple[str, str | None, str]] = {
    "decisions.json": ("project_history_decisions", "decisions", "decision_id"),
    "artifacts.json": ("project_history_artifacts", "artifacts", "artifact_id"),
    "snapshot.json": ("project_history_snapshots", None, "project_id"),
}


class HistoryEntry(msgspec.Struct, frozen=True):
    collection: str
    key: str
    stored_at: str  #: the entry's own time, UTC ISO-8601 (else the file's)
    record: dict[str, Any]  #: the entry as Marcus wrote it
    digest: str  #: what identifies the entry from one read to the next


def history_file(folder: Path, path: Path) -> str | None:
    """Why *path* under ``project_history/`` is not one of Marcus's files (``None``: it is)."""
    inner = path.relative_to(folder).parts
    if len(inner) != 2 or inner[1] not in FILES:
        return "not a project history file project_history/ID/(decisions|artifacts|snapshot).json"
    try:
        check_file_name("project_id", inner[0])
    except ValidationError as exc:
        return f"not imported: {exc}; rename the directory"
    return None


def history_files(data_dir: Path) -> list[Path]:
    """Marcus's history files under *data_dir* (regular files only)."""
    folder = data_dir / HISTORY_DIR
    if not folder.is_dir() or folder.is_symlink():
        return []
    return [
        p
        for p in sorted(folder.glob("*/*.json"))
        if history_file(folder, p) is None and p.is_file() and not p.is_symlink()
    ]


def read_history(path: Path) -> list[HistoryEntry]:
    """The entries of one of Marcus's files (blocking).

    :raises ValueError: not JSON, or not of Marcus's shape (an entry without its key)
    """
    collection, field, key_field = FILES[path.name]
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
    out = []
    for index, entry in enumerate(entries):
        key = entry.get(key_field) if isinstance(entry, dict) else None
        if not isinstance(key, str) or not key:
            raise ValueError(f"entry {index} has no {key_field!r}")
        stamp = _utc(entry.get("timestamp", entry.get("snapshot_timestamp"))) or fallback
        raw = msgspec.json.encode([collection, entry], order="sorted")
        out.append(
            HistoryEntry(collection, key, stamp, entry, hashlib.sha256(raw).hexdigest()[:32])
        )
    return out


def _utc(value: Any) -> str | None:
    """*value* as UTC ISO-8601 (a naive time is taken as UTC), or ``None``."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat()
