"""Reading stored JSON files, and what happens to the ones that are corrupt."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

import msgspec

from marcus_persist._core._codec import decode
from marcus_persist._core._fs import FileSystem
from marcus_persist._errors import CorruptDataError, UnsafePathError

__all__ = ("FileContext", "Quarantined", "read_json")

log = logging.getLogger("marcus_persist")

T = TypeVar("T")


class Quarantined(msgspec.Struct, frozen=True):
    """A corrupt file moved aside at startup, byte-identical, and what replaced it."""

    path: str
    moved_to: str
    reason: str
    started_from: str = "empty"


@dataclass
class FileContext:
    """What every file-backed storage shares: where, how durably, and the corrupt-file policy."""

    root: Path
    fs: FileSystem
    sync: bool
    #: ``report`` (used by ``doctor``) records the problem and changes nothing
    on_corrupt: Literal["error", "quarantine", "report"]
    #: read what is stored, write nothing (a migration's source): logs are replayed, never
    #: opened for appends or checkpointed
    read_only: bool = False
    #: called before a checkpoint writes files beside commits (the runtime's lock check:
    #: it raises when the data directory is no longer this runtime's)
    guard: Callable[[], None] | None = None
    quarantined: list[Quarantined] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)

    def quarantine(self, path: Path, reason: str) -> None:
        """Rename *path* aside (never delete it), durably, and record it."""
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        moved = path.with_name(f"{path.name}.corrupt-{stamp}")
        self.fs.replace(path, moved)
        self.fs.fsync_dir(path.parent)
        self.quarantined.append(Quarantined(str(path), str(moved), reason))
        log.warning("quarantined %s (%s) as %s; starting without it", path, reason, moved.name)


def read_json(
    path: Path,
    ctx: FileContext,
    shape: Callable[[Any], T],
    *,
    unwrap: Callable[[bytes], bytes] | None = None,
) -> T | None:
    """Parse *path* and check its *shape* (which raises ``ValueError``).

    *unwrap* checks the raw bytes first (a checksum) and returns the JSON to
    parse; it raises ``ValueError`` too.

    A missing file gives ``None``. A corrupt one raises ``CorruptDataError``
    with the file untouched, or under the quarantine policy is moved aside and
    gives ``None``.
    """
    try:
        raw = ctx.fs.read_bytes(path)
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        reason = "is a directory, expected a JSON file"
    except UnsafePathError as exc:  # a symlink, a FIFO, a device: never followed or read
        reason = exc.reason
    else:
        try:
            return shape(_parse(unwrap(raw) if unwrap is not None else raw))
        except ValueError as exc:
            reason = str(exc)
    if ctx.on_corrupt == "error":
        raise CorruptDataError(str(path), reason)
    if ctx.on_corrupt == "report":
        ctx.problems.append((str(path), reason))
    else:
        ctx.quarantine(path, reason)
    return None


def _parse(raw: bytes) -> Any:
    if not raw.strip():
        raise ValueError("file is empty")
    try:
        return decode(raw)
    except msgspec.DecodeError as exc:
        raise ValueError(f"not valid JSON: {exc}") from None
    except RecursionError:  # msgspec's nesting limit: a hostile or damaged file, not a crash
        raise ValueError("not valid JSON: nested too deeply") from None
