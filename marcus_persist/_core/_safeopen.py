"""Opening files and walking directories without following what a hostile tree holds.

The one place the runtime opens a file by name (blocking; run it in a worker
thread). Every open adds ``O_NOFOLLOW`` (a symbolic link as the last component
is refused by the kernel, atomically, not checked then raced) and
``O_NONBLOCK`` (a FIFO never blocks the open), then ``fstat``s what it got and
refuses anything but a regular file. Directories are checked with ``lstat``
(a symbolic link to a directory is refused, never descended). Refusals are
:class:`UnsafePathError` naming the path; other ``OSError``s keep their path.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from marcus_persist._errors import UnsafePathError

__all__ = (
    "check_dir",
    "check_tree",
    "describe",
    "never",
    "open_file",
    "open_reader",
    "read_file",
    "regular_files",
    "unsafe_entries",
    "walk",
)

_SAFE = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def describe(mode: int) -> str:
    """What a file of this ``st_mode`` is, in words (for error messages)."""
    for test, name in (
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISDIR, "a directory"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def open_file(path: Path, flags: int, mode: int = 0o600) -> int:
    """``os.open`` *path* refusing symlinks and non-regular files; return the fd.

    The descriptor is left blocking again once it is known to be a regular file.

    :raises UnsafePathError: if *path* is a symbolic link, a FIFO, a socket or a device
    :raises IsADirectoryError: if it is a directory (naming it, as ``open`` does)
    """
    try:
        fd = os.open(path, flags | _SAFE, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # O_NOFOLLOW met a symlink at the last component
            raise UnsafePathError(str(path), "is a symbolic link; refusing to follow it") from None
        if exc.errno == errno.ENXIO:  # opening a FIFO (or socket) for writing, no reader
            _refuse(path)
        raise
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        if not stat.S_ISREG(info.st_mode):
            raise UnsafePathError(str(path), f"is {describe(info.st_mode)}, not a regular file")
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _refuse(path: Path) -> None:
    """Raise :class:`UnsafePathError` saying what *path* is (if it can still be told)."""
    try:
        kind = describe(os.lstat(path).st_mode)
    except OSError:
        return  # gone meanwhile: the caller re-raises the open's own error
    raise UnsafePathError(str(path), f"is {kind}, not a regular file")


def open_reader(path: Path) -> BinaryIO:
    """A binary reader of the regular file *path* (see :func:`open_file`)."""
    return os.fdopen(open_file(path, os.O_RDONLY), "rb")


def read_file(path: Path) -> bytes:
    """Every byte of the regular file *path* (see :func:`open_file`)."""
    with open_reader(path) as reader:
        return reader.read()


def check_dir(path: Path) -> bool:
    """Whether *path* is a real directory (``False`` if it does not exist).

    :raises UnsafePathError: if it is a symbolic link, a FIFO, a socket or a device
    :raises NotADirectoryError: if it is a regular file (naming it)
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return False
    if stat.S_ISREG(mode):
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(path))
    if not stat.S_ISDIR(mode):
        raise UnsafePathError(str(path), f"is {describe(mode)}, expected a directory")
    return True


def walk(root: Path, prune: Callable[[Path], bool]) -> Iterator[tuple[Path, str | None]]:
    """Every entry under *root* but directories, sorted, depth first, with ``None``
    for a regular file or else what it is; directories *prune* accepts are skipped.
    Symbolic links are reported, never followed."""
    with os.scandir(root) as listing:
        entries = sorted(listing, key=lambda e: e.name)
    for entry in entries:
        path = Path(entry.path)
        if entry.is_dir(follow_symlinks=False):
            if not prune(path):
                yield from walk(path, prune)
        elif entry.is_file(follow_symlinks=False):
            yield path, None
        else:
            yield path, describe(entry.stat(follow_symlinks=False).st_mode)


def never(path: Path) -> bool:
    """A *prune* that enters every directory."""
    return False


def unsafe_entries(root: Path) -> Iterator[tuple[Path, str]]:
    """Every entry under *root* that is neither a regular file nor a real directory,
    with what it is."""
    for path, kind in walk(root, never):
        if kind is not None:
            yield path, kind


def regular_files(root: Path, *, prune: Callable[[Path], bool] = never) -> Iterator[Path]:
    """Every regular file under *root* (sorted, depth first), not entering the
    directories *prune* accepts.

    :raises UnsafePathError: at the first symbolic link, FIFO, socket or device
    """
    for path, kind in walk(root, prune):
        if kind is not None:
            raise UnsafePathError(
                str(path), f"is {kind}; only regular files and directories belong here"
            )
        yield path


def check_tree(root: Path) -> None:
    """Refuse a tree that holds a symbolic link, a FIFO, a socket or a device.

    :raises UnsafePathError: naming the first such entry
    """
    for _ in regular_files(root):
        pass
