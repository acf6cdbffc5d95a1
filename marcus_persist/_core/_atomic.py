"""Atomic, durable file replacement and directory creation (blocking; run in a thread).

The commit protocol of DESIGN.md: write ``NAME.tmp-<unique>`` beside the live
file, fsync it, rename it over ``NAME``, fsync the directory. The live file is
never written in place, so a crash leaves either the old or the new bytes.

Nothing is written through a symbolic link: the live file's directory must be
a real directory, the live file (if any) a regular file. A replacement is
never more open than the file it replaces: its mode is the file system's
``file_mode`` narrowed by the live file's (an operator's ``chmod 600`` stays).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import uuid
from pathlib import Path

from marcus_persist._core._fs import OS_FS, FileSystem
from marcus_persist._core._safeopen import check_dir, describe
from marcus_persist._errors import UnsafePathError

__all__ = (
    "TEMP_MARKER",
    "ensure_dir",
    "is_temp_name",
    "remove_stale_temps",
    "replace_file",
    "write_atomic",
    "write_new",
)

TEMP_MARKER = ".tmp-"
_TEMP_NAME = re.compile(r".+\.tmp-[0-9a-f]{12}$")


def write_atomic(path: Path, data: bytes, *, fs: FileSystem = OS_FS, sync: bool = True) -> None:
    """Replace *path* with *data* so that a crash leaves the old or the new content.

    With ``sync=False`` the fsyncs are skipped (durability ``none``): still
    atomic against a process crash, not against power loss.
    """
    replace_file(fs, path, data, sync, [])


def replace_file(fs: FileSystem, path: Path, data: bytes, sync: bool, renamed: list[bool]) -> None:
    """:func:`write_atomic`, telling the caller (through *renamed*) whether the
    rename happened before a failure (then the new content may be live).

    :raises UnsafePathError: if *path*'s directory is a symbolic link, or *path*
        is anything but a regular file
    """
    mode = _replacement_mode(fs, path)
    tmp = path.with_name(f"{path.name}{TEMP_MARKER}{uuid.uuid4().hex[:12]}")
    try:
        write_new(tmp, data, fs=fs, sync=sync, mode=mode)  # durable before the rename
        fs.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            fs.unlink(tmp)
        raise
    renamed.append(True)
    if sync:
        fs.fsync_dir(path.parent)  # the rename itself is durable


def _replacement_mode(fs: FileSystem, path: Path) -> int | None:
    """The mode the new content of *path* gets, if narrower than ``fs.file_mode``."""
    try:
        live = os.lstat(path).st_mode
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(live):
        raise UnsafePathError(str(path), f"is {describe(live)}, not a regular file")
    narrowed = fs.file_mode & stat.S_IMODE(live)
    return narrowed if narrowed != fs.file_mode else None


def write_new(
    path: Path,
    data: bytes,
    *,
    fs: FileSystem = OS_FS,
    sync: bool = True,
    mode: int | None = None,
) -> None:
    """Create *path* (it must not exist) holding *data*, fsynced unless ``sync=False``;
    with *mode*, narrower permissions than the file system's ``file_mode``.

    Its directory entry is not yet durable: the caller fsyncs the directory
    (or renames the file and fsyncs that directory). On failure it is removed.

    :raises UnsafePathError: if *path*'s directory is a symbolic link (never written through)
    """
    check_dir(path.parent)
    fd = fs.create(path)
    try:
        try:
            if mode is not None:
                fs.chmod(fd, mode)
            fs.write_all(fd, data)
            if sync:
                fs.fsync(fd)
        finally:
            fs.close(fd)
    except BaseException:
        # the file is new and nothing names it yet: a failed one must not stay
        # (on a full disk its pages are what the retry of the commit needs)
        with contextlib.suppress(OSError):
            fs.unlink(path)
        raise


def ensure_dir(path: Path, *, fs: FileSystem = OS_FS, sync: bool = True) -> None:
    """Create *path* and missing parents, each made durable in its parent.

    :raises UnsafePathError: if *path* is a symbolic link, a FIFO, a socket or a device
    :raises NotADirectoryError: if it is a regular file
    """
    missing: list[Path] = []
    cursor = path
    while not os.path.lexists(cursor):
        missing.append(cursor)
        cursor = cursor.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            fs.mkdir(directory)
        if sync:
            fs.fsync_dir(directory.parent)
    if not check_dir(path):
        raise FileNotFoundError(2, "removed while it was being created", str(path))


def is_temp_name(name: str) -> bool:
    """True for the name of a temp file written by :func:`write_atomic`."""
    return _TEMP_NAME.fullmatch(name) is not None


def remove_stale_temps(root: Path, *, fs: FileSystem = OS_FS) -> list[Path]:
    """Delete temp files (and temp directories of unfinished backups) that a
    crash left under *root*; return what was removed.

    Only called while holding the data-directory lock, so no live commit owns them.
    """
    removed: list[Path] = []
    for dirpath, dirs, files in os.walk(root):
        for name in [d for d in dirs if is_temp_name(d)]:
            shutil.rmtree(Path(dirpath, name))
            removed.append(Path(dirpath, name))
            dirs.remove(name)
        for name in files:
            if is_temp_name(name):
                stale = Path(dirpath, name)
                fs.unlink(stale)
                removed.append(stale)
    return removed
