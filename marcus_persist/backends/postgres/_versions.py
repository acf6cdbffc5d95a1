"""Store versions: how a process knows, with one cheap query, that its copy is current.

Patterns and token usage keep a copy of their committed data in each
process (indexes, the live document). Every write transaction of such a
store adds one to its own row ``(store, writer)`` of ``store_versions``
(*writer* names this runtime: no two processes share a row, so there is no
hot row), in the same transaction as the data: the row and the data commit
or roll back together, and a crash in between cannot lose a bump.

The store's version is the sum of its rows; it only grows. A reader reads
the version first and the data after (a later snapshot), so the data holds
every commit the version counts (token usage reads both in one statement:
its copy must hold *exactly* what the version counts, as a process's own commit
folds its batch into the copy). Before answering, a read compares the
current version with the one its copy was loaded at: equal means no commit
(of any process) happened since, so the copy holds every write acknowledged
before the read began; different means reload. ``LISTEN``/``NOTIFY`` cannot
replace the comparison: a notification arrives when the listener's
connection reads it, possibly after a read that began after the writer's
acknowledgement.
"""

from __future__ import annotations

import os
import socket
import uuid

from marcus_persist.backends.postgres._db import Connection

__all__ = ("WRITER", "bump", "read_version")

#: this runtime's row: host, pid and a random part (a reused pid gets a new row)
WRITER = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def bump(conn: Connection, table: str, store: str) -> int:
    """Count one commit of *store* in the current transaction of *conn*; returns the
    version with it, as this transaction sees it (the other rows as committed now).

    If that is one more than the version a process's copy was loaded at, no other
    process committed in between: the copy plus this batch is the stored state, and
    the copy may take the returned version (no reload on the next read).
    """
    row = conn.execute(
        f"WITH mine AS (INSERT INTO {table} (store, writer, n) VALUES (%(s)s, %(w)s, 1)"
        " ON CONFLICT (store, writer) DO UPDATE SET n = store_versions.n + 1 RETURNING n)"
        f" SELECT (SELECT n FROM mine) + (SELECT coalesce(sum(n), 0) FROM {table}"
        " WHERE store = %(s)s AND writer <> %(w)s)",
        {"s": store, "w": WRITER},
    ).fetchone()
    return int(row[0]) if row else 0


def read_version(conn: Connection, table: str, store: str) -> int:
    """The version of *store* now: the number of its commits so far."""
    row = conn.execute(
        f"SELECT coalesce(sum(n), 0) FROM {table} WHERE store = %s", (store,)
    ).fetchone()
    return int(row[0]) if row else 0
