"""Several Marcus servers on one PostgreSQL (psycopg 3, worker threads), optional Redis cache."""

from __future__ import annotations

from ._backend import PgDatabase as PgDatabase
from ._backend import PostgresAssignmentStorage as PostgresAssignmentStorage
from ._backend import PostgresBackend as PostgresBackend
from ._backend import create as create

__all__ = (
    "PgDatabase",
    "PostgresAssignmentStorage",
    "PostgresBackend",
    "create",
)
