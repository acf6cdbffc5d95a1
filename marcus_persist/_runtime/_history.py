"""Marcus's project history imported when a runtime opens its data directory.

``ProjectHistoryPersistence`` keeps writing ``data/project_history/<id>/*.json``
(:mod:`marcus_persist.stores.state._history`): at every start the entries no
earlier start imported join the state (a key the state holds is left as it
is), through ``rt.state`` (durable, one batch per collection). What was
imported is remembered by digest in our ``project_history.imported-keys``, so
a record deleted here never comes back. Marcus's files are only read: one
that cannot be read is logged and left as it is.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import anyio
import msgspec

from marcus_persist._core._atomic import write_atomic
from marcus_persist._runtime._handle import Runtime
from marcus_persist.stores.state._history import (
    HISTORY_DIR,
    HistoryEntry,
    history_files,
    read_history,
)

__all__ = ("MARKER", "import_project_history")

log = logging.getLogger("marcus_persist")

#: the digests of the history entries imported (ours, beside Marcus's directory)
MARKER = f"{HISTORY_DIR}.imported-keys"


async def import_project_history(rt: Runtime) -> int:
    """Import what is new in the directory's project history; how many records."""
    entries = await anyio.to_thread.run_sync(_read_all, rt.data_dir)
    if not entries:
        return 0
    marker = rt.data_dir / MARKER
    seen = await anyio.to_thread.run_sync(_seen, marker)
    new = [e for e in entries if e.digest not in seen]
    if not new:
        return 0
    imported = 0
    for collection in sorted({e.collection for e in new}):
        fresh: dict[str, tuple[str, Any]] = {}
        for e in new:
            if e.collection == collection and await rt.state.retrieve(collection, e.key) is None:
                fresh[e.key] = (e.stored_at, e.record)
        if fresh:
            await rt.state.store_stamped(collection, fresh)
            imported += len(fresh)
    digests = sorted(seen | {e.digest for e in entries})
    data = msgspec.json.encode(digests)
    # after the records: a crash between them imports nothing twice (held keys are kept)
    await anyio.to_thread.run_sync(
        lambda: write_atomic(marker, data, fs=rt._fs, sync=rt.config.fsync)
    )
    if imported:
        log.info("imported %d records of Marcus's project history", imported)
    return imported


def _read_all(data_dir: Path) -> list[HistoryEntry]:
    entries: list[HistoryEntry] = []
    for path in history_files(data_dir):
        try:
            entries += read_history(path)
        except (OSError, ValueError) as exc:
            log.warning("%s: %s; left as it is, its records not imported now", path, exc)
    return entries


def _seen(marker: Path) -> set[str]:
    try:
        found = msgspec.json.decode(marker.read_bytes(), type=list[str])
    except FileNotFoundError:
        return set()
    except (OSError, msgspec.DecodeError) as exc:  # ours, and only a memo: held keys are kept
        log.warning("%s cannot be read (%s): every history entry not held is imported", marker, exc)
        return set()
    return set(found)
