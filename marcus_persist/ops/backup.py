"""``restore``: make a data directory hold exactly a backup's files, verified first.

Blocking (run it in a worker thread). Restore verifies every checksum before
it touches the target, and never deletes: files it replaces are moved under
``backups/pre-restore-*``. Taking a backup is the runtime's (``rt.backup()``,
built on :mod:`marcus_persist._core._snapshot`).
"""

from __future__ import annotations

import contextlib
import uuid
from datetime import UTC, datetime
from pathlib import Path

from marcus_persist._core._atomic import TEMP_MARKER, ensure_dir
from marcus_persist._core._fs import OS_FS, FileSystem
from marcus_persist._core._snapshot import (
    BACKUPS_DIR,
    BackupManifest,
    copy_file,
    data_files,
    verify_backup,
)
from marcus_persist._errors import CorruptDataError, PersistenceError, UnsafePathError

__all__ = ("restore_backup",)


def restore_backup(
    backup: Path, data_dir: Path, *, force: bool = False, fs: FileSystem = OS_FS
) -> BackupManifest:
    """Make *data_dir* hold exactly the backup's files (verified first).

    The caller holds *data_dir*'s lock. A non-empty target is refused unless
    *force*; then every file that would be replaced or would not belong is
    first moved under ``backups/pre-restore-<time>/`` (nothing is deleted).

    Every path the manifest names passes :func:`check_member` (relative,
    normalised, inside the target, never the lock); each is checked before
    anything in the target changes.

    :raises PersistenceError: if the target is not empty and *force* is not set
    :raises CorruptDataError: if the backup differs from its manifest or the
        manifest names a path outside what a data directory holds
    :raises UnsafePathError: at a symbolic link or special file in the backup or
        the target, or where the target holds a directory the backup has a file for
    """
    manifest = verify_backup(backup)
    present = list(data_files(data_dir)) if data_dir.exists() else []
    if present and not force:
        raise PersistenceError(
            f"{data_dir} is not empty ({len(present)} files); restore with force to replace it"
        )
    for rel in manifest.files:
        if (data_dir / rel).is_dir():  # the tree holds no symlink: this is a real directory
            raise UnsafePathError(str(data_dir / rel), "is a directory; the backup has a file")
    if present:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        aside = data_dir / BACKUPS_DIR / f"pre-restore-{stamp}"
        for rel in present:
            ensure_dir((aside / rel).parent, fs=fs)
            fs.replace(data_dir / rel, aside / rel)
            fs.fsync_dir((data_dir / rel).parent)
    for rel, expected in manifest.files.items():
        target = data_dir / rel
        ensure_dir(target.parent, fs=fs)
        staged = target.with_name(f"{target.name}{TEMP_MARKER}{uuid.uuid4().hex[:12]}")
        if copy_file(backup / rel, staged, fs, sync=True) != expected:
            with contextlib.suppress(OSError):
                fs.unlink(staged)
            raise CorruptDataError(str(backup / rel), "changed while it was being restored")
        fs.replace(staged, target)
        fs.fsync_dir(target.parent)
    return manifest
