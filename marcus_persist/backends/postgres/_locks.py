"""Transaction-scoped advisory locks on the keys one batch names, in one global order.

Two levels, so a batch naming thousands of keys does not fill the server's
shared lock table (``max_locks_per_transaction`` x connections): each group
(a state collection, the patterns table) is locked *shared* by a batch naming
at most :data:`FINE` of its keys, which then locks each of them exclusively;
a batch naming more locks the whole group *exclusively* instead. Every batch
takes its group locks first, sorted by name, then its key locks, sorted: no
two batches can wait on each other in a cycle. Released at ``COMMIT``/``ROLLBACK``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from marcus_persist.backends.postgres._db import Connection

__all__ = ("FINE", "lock_keys")

FINE = 256  # keys of one group locked one by one; beyond, the group is locked whole

_SEP = "\x1f"


def lock_keys(conn: Connection, prefix: str, groups: Mapping[str, Sequence[str]]) -> None:
    """Lock *groups* (``{group: keys}``) for the current transaction of *conn*.

    *prefix* names the schema and the store (locks are per database).
    """
    fine: list[str] = []
    for group in sorted(groups):
        keys = set(groups[group])
        name = f"{prefix}{_SEP}{group}"
        if len(keys) > FINE:
            conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (name,))
        else:
            conn.execute("SELECT pg_advisory_xact_lock_shared(hashtextextended(%s, 0))", (name,))
            fine.extend(f"{name}{_SEP}{key}" for key in keys)
    if fine:
        # sorted by the lock id itself: the order the server acquires them in
        conn.execute(
            "SELECT pg_advisory_xact_lock(id) FROM"
            " (SELECT DISTINCT hashtextextended(k, 0) AS id FROM unnest(%s::text[]) AS u(k)) AS l"
            " ORDER BY id",
            (fine,),
        )
