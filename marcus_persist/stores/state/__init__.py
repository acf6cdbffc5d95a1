"""Core state: Marcus's collections (projects, events, context, memory) of keyed records."""

from __future__ import annotations

from ._handler import StateHandler as StateHandler
from ._handler import stored_at as stored_at
from ._store import StateStore as StateStore

__all__ = (
    "StateHandler",
    "StateStore",
    "stored_at",
)
