"""The versioned PostgreSQL schema: additive, idempotent migrations applied at open.

Each migration has a number, a name and SQL (``{schema}`` is the quoted
schema name). :func:`migrate` applies the ones missing from
``schema_version`` in one transaction, under an advisory lock, so several
processes opening the same database at once apply each migration exactly
once. A migration only adds (``CREATE ... IF NOT EXISTS``, ``ADD COLUMN IF
NOT EXISTS``), so code one version older still runs on a newer schema.

To add a store's tables, append ``(next number, name, sql)`` to
:data:`MIGRATIONS`; never edit or reorder an applied one.
"""

from __future__ import annotations

import logging
import re

import psycopg
from psycopg import sql

__all__ = ("MIGRATIONS", "check_schema_name", "migrate")

log = logging.getLogger("marcus_persist")

_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")

MIGRATIONS: tuple[tuple[int, str, str], ...] = (
    (
        1,
        "assignments",
        # scope '' is the global assignments, else a project id (never empty).
        # The UNIQUE (scope, task_id) constraint is what keeps a task held by
        # at most one worker across every process sharing the database.
        """
        CREATE TABLE IF NOT EXISTS {schema}.assignments (
            scope text NOT NULL,
            worker_id text NOT NULL,
            task_id text NOT NULL,
            record jsonb NOT NULL,
            committed_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (scope, worker_id),
            CONSTRAINT assignments_one_holder UNIQUE (scope, task_id)
        )
        """,
    ),
    (
        2,
        "state",
        """
        CREATE TABLE IF NOT EXISTS {schema}.state (
            collection text NOT NULL,
            key text NOT NULL,
            data jsonb NOT NULL,
            PRIMARY KEY (collection, key)
        )
        """,
    ),
    (
        3,
        "patterns and token usage",
        """
        CREATE TABLE IF NOT EXISTS {schema}.patterns (
            key text PRIMARY KEY,
            type text NOT NULL,
            data jsonb NOT NULL
        );
        CREATE INDEX IF NOT EXISTS patterns_by_type ON {schema}.patterns (type);
        CREATE TABLE IF NOT EXISTS {schema}.token_usage (
            name text PRIMARY KEY,
            data jsonb NOT NULL
        )
        """,
    ),
    (
        4,
        "audit events partitioned by day",
        # one partition per UTC day, made on demand (see _audit): retention
        # drops a partition. id orders a day's lines; the index is per partition.
        """
        CREATE TABLE IF NOT EXISTS {schema}.audit_events (
            day date NOT NULL,
            id bigserial NOT NULL,
            line bytea NOT NULL
        ) PARTITION BY RANGE (day);
        CREATE INDEX IF NOT EXISTS audit_events_by_id ON {schema}.audit_events (id)
        """,
    ),
    (
        5,
        "store versions",
        # one counter per (store, writing process), bumped inside every write
        # transaction of the store: their sum only grows, so a reader that saw the
        # same sum before has seen every commit (see _versions). No row is shared
        # by two writers: no hot row.
        """
        CREATE TABLE IF NOT EXISTS {schema}.store_versions (
            store text NOT NULL,
            writer text NOT NULL,
            n bigint NOT NULL,
            PRIMARY KEY (store, writer)
        )
        """,
    ),
    (
        6,
        "token usage deltas and request ids",
        # a batch of token records is one delta row (no lock on the live
        # document: no hot row), folded into the live document by readers and
        # by every locked batch (the roll-up). A request id is counted once:
        # its row here is claimed by the batch that counts it.
        """
        CREATE TABLE IF NOT EXISTS {schema}.token_deltas (
            id bigserial PRIMARY KEY,
            data jsonb NOT NULL
        );
        CREATE TABLE IF NOT EXISTS {schema}.token_requests (
            request_id text PRIMARY KEY,
            day text NOT NULL
        );
        INSERT INTO {schema}.token_requests (request_id, day)
        SELECT rid, d.day FROM {schema}.token_usage u,
            jsonb_each(u.data -> 'request_ids') AS d(day, ids),
            jsonb_array_elements_text(d.ids) AS rid
        WHERE u.name = 'live' AND jsonb_typeof(u.data -> 'request_ids') = 'object'
            AND jsonb_typeof(d.ids) = 'array'
        ON CONFLICT DO NOTHING
        """,
    ),
)


def check_schema_name(name: str) -> str:
    """A schema name we can use unquoted in logs and keys: lower-case identifier."""
    if not _NAME.fullmatch(name):
        raise ValueError(
            f"pg_schema: {name!r} must be lower-case letters, digits and '_' "
            "(not starting with a digit), at most 63 characters"
        )
    return name


def migrate(conn: psycopg.Connection[object], schema: str) -> int:
    """Create *schema* and apply every missing migration; returns the schema version.

    Blocking. *conn* must be in autocommit mode (each call is its own transaction).
    """
    name = sql.Identifier(schema)
    with conn.transaction():
        # serialises concurrent openers; released at the end of the transaction
        conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
            (f"marcus_persist.migrate:{schema}",),
        )
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(name))
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {}.schema_version ("
                " version integer PRIMARY KEY,"
                " name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            ).format(name)
        )
        row = conn.execute(
            sql.SQL("SELECT coalesce(max(version), 0) FROM {}.schema_version").format(name)
        ).fetchone()
        current = int(row[0]) if row else 0  # type: ignore[index]
        for version, label, text in MIGRATIONS:
            if version <= current:
                continue
            conn.execute(sql.SQL(text).format(schema=name))
            conn.execute(
                sql.SQL("INSERT INTO {}.schema_version (version, name) VALUES (%s, %s)").format(
                    name
                ),
                (version, label),
            )
            log.info("postgres schema %s: applied migration %d (%s)", schema, version, label)
            current = version
    known = MIGRATIONS[-1][0]
    if current > known:
        log.warning(
            "postgres schema %s is at version %d, newer than this code (%d)", schema, current, known
        )
    return current
