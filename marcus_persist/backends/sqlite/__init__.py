"""One SQLite database (WAL, ``synchronous=FULL``), one transaction per batch."""

from __future__ import annotations

from ._backend import DB_NAME as DB_NAME
from ._backend import STORE_TABLES as STORE_TABLES
from ._backend import SQLiteBackend as SQLiteBackend
from ._backend import create as create
from ._patterns_tokens import EXTRA_TABLES as EXTRA_TABLES

__all__ = (
    "DB_NAME",
    "EXTRA_TABLES",
    "STORE_TABLES",
    "SQLiteBackend",
    "create",
)
