"""The hybrid the persistence review recommends, as the tests and benchmarks run it:
structured data on SQLite, the append-only logs (audit trail, token usage) on files."""

from __future__ import annotations

#: the ``backends`` option (over the default ``backend="file"``)
REVIEW_HYBRID = {"assignments": "sqlite", "state": "sqlite", "audit": "file", "patterns": "sqlite"}
