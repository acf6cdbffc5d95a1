"""Core state: Marcus's collections (projects, events, context, memory) of keyed records."""

from __future__ import annotations

from ._store import StateHandler as StateHandler
from ._store import StateStore as StateStore
from ._store import stored_at as stored_at

__all__ = (
    "StateHandler",
    "StateStore",
    "stored_at",
)
