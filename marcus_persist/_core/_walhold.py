"""Followers of a write-ahead log that hold its segments back from retirement.

A follower (replication, :mod:`marcus_persist._runtime._replicate`) registers,
per log directory, a function naming the newest segment it no longer needs;
:meth:`marcus_persist._core._wal.WriteAheadLog.retire` removes nothing above
it. Held segments stay in the log and are replayed at the next start like any
other, so holding them back never loses or changes data; they are retired by
a later checkpoint once the follower has them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

__all__ = ("hold_retirement", "retire_limit")

#: followers of a log (replication), by its resolved directory: each says the
#: newest segment it no longer needs
_followers: dict[Path, Callable[[], int]] = {}
_followers_lock = threading.Lock()


def hold_retirement(directory: Path, limit: Callable[[], int]) -> Callable[[], None]:
    """Keep the segments of the log in *directory* above ``limit()`` from retirement
    (a follower has not shipped them yet); returns what lets them go again.
    The records stay in the log, replayed at the next start like any other."""
    key = directory.resolve()
    with _followers_lock:
        _followers[key] = limit

    def release() -> None:
        with _followers_lock:
            if _followers.get(key) is limit:
                del _followers[key]

    return release


def retire_limit(directory: Path) -> int:
    """The newest segment of *directory*'s log that no follower still needs."""
    with _followers_lock:
        limit = _followers.get(directory.resolve())
    return limit() if limit is not None else 1 << 62
