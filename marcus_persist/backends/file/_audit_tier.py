"""Tiering of the audit trail: sealed archives (``audit_logs/archive/``) move to the
object store of ``archive_url``, and are read back from there (blocking; the
rotation thread and the readers' threads).

Invariants:

* an archive leaves the disk only once its remote copy is verified (uploaded,
  read back, SHA-256 compared): a failed upload keeps it where it was, for the
  next rotation to try again;
* a remote archive's key carries its checksum
  (``tier/audit_logs/archive/<name>.<sha256>``): each read checks it before a
  line is parsed, then the same verified gzip reader as a local archive
  applies the same bad-data rules;
* a later day of an archived week makes a new weekly (the old one stays):
  both are read, each holding other days, never a day twice;
* retention applies on the remote as on the disk (by the last day of a week).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import IO, cast

from marcus_persist._core._fs import FileSystem
from marcus_persist._core._objstore import ObjectStore
from marcus_persist._core._tier import Tiered, fetch_verified, list_tiered, move_to_store
from marcus_persist.backends._audit import AuditSource
from marcus_persist.backends.file._audit_members import VerifiedWeekly
from marcus_persist.backends.file._audit_rotation import parse_source_name

__all__ = ("TIER_PREFIX", "oldest_kept", "remote_sources", "tier_archives")

log = logging.getLogger("marcus_persist")

TIER_PREFIX = "tier/audit_logs/archive/"
_NAME = re.compile(r"audit_\d{4}-W\d{2}\.jsonl\.gz")


def tier_archives(
    directory: Path, store: ObjectStore, fs: FileSystem, *, sync: bool, oldest_kept: date | None
) -> list[str]:
    """Move every archive of ``directory/archive`` to *store*, verified; apply
    retention (*oldest_kept*) to what *store* holds; the names moved.

    :raises PersistenceError, OSError: the upload failed (that archive stays on disk)
    """
    moved: list[str] = []
    archive_dir = directory / "archive"
    for path in sorted(archive_dir.glob("audit_*.jsonl.gz")) if archive_dir.is_dir() else []:
        if parse_source_name(path.name) is None or path.is_symlink():
            continue
        if move_to_store(store, TIER_PREFIX, path, fs, sync=sync) is not None:
            moved.append(path.name)
    if oldest_kept is not None:
        for tiered in list_tiered(store, TIER_PREFIX, _NAME):
            parsed = parse_source_name(tiered.name)
            if parsed is not None and parsed[1] < oldest_kept:
                store.delete(tiered.key)
    return moved


def remote_sources(store: ObjectStore) -> list[AuditSource]:
    """The archives in *store*, each opened by downloading it (checked against the
    checksum its key carries) into a private temp file read as a local archive."""
    found = []
    for tiered in list_tiered(store, TIER_PREFIX, _NAME):
        parsed = parse_source_name(tiered.name)
        if parsed is None:
            continue
        first, last, _daily = parsed
        found.append(
            AuditSource(f"{store.url}/{tiered.key}", first, last, _opener(store, tiered), False)
        )
    return found


def _opener(store: ObjectStore, tiered: Tiered) -> Callable[[], IO[bytes]]:
    def open_remote() -> IO[bytes]:
        with fetch_verified(store, tiered, ".jsonl.gz") as path:
            return cast(IO[bytes], VerifiedWeekly(path))  # open now: the name can go

    return open_remote


def oldest_kept(today: date, retention_days: int | None) -> date | None:
    return None if retention_days is None else today - timedelta(days=retention_days)
