"""One SQLite database (WAL, ``synchronous=FULL``), one transaction per batch."""

from __future__ import annotations

from ._backend import DB_NAME as DB_NAME
from ._backend import STORE_TABLES as STORE_TABLES
from ._backend import SQLiteBackend as SQLiteBackend
from ._backend import create as create

__all__ = (
    "DB_NAME",
    "STORE_TABLES",
    "SQLiteBackend",
    "create",
)
