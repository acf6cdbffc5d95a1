"""Marcus's own class names and signatures over the runtime: change the imports, keep the code.

``FilePersistence``, ``SQLitePersistence``, ``MemoryPersistence`` (Marcus's
``PersistenceBackend``), ``Persistence`` (its facade), ``AssignmentPersistence``,
``AuditLogger``, ``TokenTracker`` and ``AIUsageMiddleware`` can be built bare,
inside a running event loop or not, as Marcus builds them. They are backed by
one runtime per data directory on a private loop (see :mod:`._host`), opened
on the first call that needs it, each object on the engine and place it
names, so every write goes through the actors (single writer, group commit,
durable when the call returns).
``close()`` releases it; at interpreter exit whatever is still open is
flushed and closed.
"""

from __future__ import annotations

from ._ai_usage import AIUsageMiddleware as AIUsageMiddleware
from ._ai_usage import ai_usage_middleware as ai_usage_middleware
from ._ai_usage import track_project_tokens as track_project_tokens
from ._assignments import AssignmentPersistence as AssignmentPersistence
from ._audit import AuditLogger as AuditLogger
from ._audit import get_audit_logger as get_audit_logger
from ._backends import FilePersistence as FilePersistence
from ._backends import MemoryPersistence as MemoryPersistence
from ._backends import PersistenceBackend as PersistenceBackend
from ._backends import SQLitePersistence as SQLitePersistence
from ._events import Decision as Decision
from ._events import Event as Event
from ._events import Persistence as Persistence
from ._tokens import TokenTracker as TokenTracker
from ._tokens import token_tracker as token_tracker

__all__ = (
    "AIUsageMiddleware",
    "AssignmentPersistence",
    "AuditLogger",
    "Decision",
    "Event",
    "FilePersistence",
    "MemoryPersistence",
    "Persistence",
    "PersistenceBackend",
    "SQLitePersistence",
    "TokenTracker",
    "ai_usage_middleware",
    "get_audit_logger",
    "token_tracker",
    "track_project_tokens",
)
