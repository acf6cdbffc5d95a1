"""The SQL of the shared assignments table, composed once per runtime."""

from __future__ import annotations

from psycopg import sql

__all__ = ("AssignmentStatements",)


class AssignmentStatements:
    """Every statement the assignments handler and its batches run, on table *t*."""

    def __init__(self, t: sql.Composed) -> None:
        self.claim = sql.SQL(
            # the worker's previous assignment and the task's other holder (if
            # any), then the write unless another worker holds the task; a
            # retried assign of the task the worker already holds changes nothing
            "WITH old AS (SELECT task_id, record FROM {t}"
            " WHERE scope = %(s)s AND worker_id = %(w)s),"
            " holder AS (SELECT worker_id FROM {t}"
            " WHERE scope = %(s)s AND task_id = %(t)s AND worker_id <> %(w)s),"
            " up AS (INSERT INTO {t} AS a (scope, worker_id, task_id, record)"
            " SELECT %(s)s, %(w)s, %(t)s, %(r)s::jsonb WHERE NOT EXISTS (SELECT 1 FROM holder)"
            " ON CONFLICT (scope, worker_id) DO UPDATE"
            " SET task_id = excluded.task_id, record = excluded.record, committed_at = now()"
            " WHERE %(always)s OR a.task_id <> excluded.task_id RETURNING 1)"
            " SELECT (SELECT task_id FROM old), (SELECT record FROM old),"
            " (SELECT worker_id FROM holder), EXISTS (SELECT 1 FROM up)"
        ).format(t=t)
        # the same for a run of assigns (or saves) naming distinct workers and
        # distinct tasks: one statement over one JSON array of messages
        # ({"s", "w", "t", "r"}: scope, worker, task, record), one row per message
        # in order. A worker that has a row is moved by an UPDATE (a little cheaper
        # than an upsert), a new one inserted; the record comes back only when
        # nothing was written (a retried assign's answer)
        claim_many = (
            "WITH i AS (SELECT * FROM ROWS FROM (jsonb_to_recordset(%s::jsonb)"
            " AS (s text, w text, t text, r jsonb)) WITH ORDINALITY AS i(s, w, t, r, n)),"
            " old AS (SELECT i.n, a.task_id, a.record FROM i"
            " JOIN {t} a ON a.scope = i.s AND a.worker_id = i.w),"
            " holder AS (SELECT i.n, a.worker_id FROM i"
            " JOIN {t} a ON a.scope = i.s AND a.task_id = i.t AND a.worker_id <> i.w),"
            " moved AS (UPDATE {t} a SET task_id = i.t, record = i.r, committed_at = now()"
            " FROM i WHERE a.scope = i.s AND a.worker_id = i.w {only_moves}"
            " AND NOT EXISTS (SELECT 1 FROM holder h WHERE h.n = i.n) RETURNING i.n),"
            " added AS (INSERT INTO {t} (scope, worker_id, task_id, record)"
            " SELECT i.s, i.w, i.t, i.r FROM i"
            " WHERE NOT EXISTS (SELECT 1 FROM old o WHERE o.n = i.n)"
            " AND NOT EXISTS (SELECT 1 FROM holder h WHERE h.n = i.n)"
            " RETURNING scope, worker_id),"
            " w AS (SELECT i.n, EXISTS (SELECT 1 FROM moved m WHERE m.n = i.n)"
            " OR EXISTS (SELECT 1 FROM added d WHERE d.scope = i.s AND d.worker_id = i.w)"
            " AS written FROM i)"
            " SELECT o.task_id, CASE WHEN NOT w.written THEN o.record END, h.worker_id, w.written"
            " FROM i JOIN w ON w.n = i.n LEFT JOIN old o ON o.n = i.n"
            " LEFT JOIN holder h ON h.n = i.n ORDER BY i.n"
        )
        self.assign_many = sql.SQL(claim_many).format(
            t=t, only_moves=sql.SQL("AND a.task_id <> i.t")
        )
        self.save_many = sql.SQL(claim_many).format(t=t, only_moves=sql.SQL(""))
        self.record = sql.SQL("SELECT record FROM {} WHERE scope = %s AND worker_id = %s").format(t)
        self.lock_row = sql.SQL(
            "SELECT record FROM {} WHERE scope = %s AND worker_id = %s FOR UPDATE"
        ).format(t)
        self.lock_rows = sql.SQL(
            "SELECT a.scope, a.worker_id, a.record FROM {} a"
            " JOIN unnest(%s::text[], %s::text[]) AS k(s, w) ON a.scope = k.s AND a.worker_id = k.w"
            " FOR UPDATE OF a"
        ).format(t)
        self.delete_many = sql.SQL(
            "DELETE FROM {} a USING unnest(%s::text[], %s::text[]) AS k(s, w)"
            " WHERE a.scope = k.s AND a.worker_id = k.w"
        ).format(t)
        self.set_many = sql.SQL(
            "UPDATE {} a SET record = k.r::jsonb, committed_at = now()"
            " FROM unnest(%s::text[], %s::text[], %s::text[]) AS k(s, w, r)"
            " WHERE a.scope = k.s AND a.worker_id = k.w"
        ).format(t)
        self.holder = sql.SQL("SELECT worker_id FROM {} WHERE scope = %s AND task_id = %s").format(
            t
        )
        self.delete = sql.SQL(
            "DELETE FROM {} WHERE scope = %s AND worker_id = %s RETURNING task_id"
        ).format(t)
        self.set = sql.SQL(
            "UPDATE {} SET task_id = %s, record = %s::jsonb, committed_at = now()"
            " WHERE scope = %s AND worker_id = %s"
        ).format(t)
        self.all = sql.SQL(
            "SELECT worker_id, record, task_id FROM {} WHERE scope = %s ORDER BY worker_id"
        ).format(t)
        # the keys as one JSON array of strings (cheaper to send than a text[])
        self.lock_keys = sql.SQL(
            "SELECT count(pg_advisory_xact_lock(h)) FROM"
            " (SELECT DISTINCT hashtextextended(k, 0) AS h"
            " FROM jsonb_array_elements_text(%s::jsonb) AS k ORDER BY h) AS ordered"
        )
