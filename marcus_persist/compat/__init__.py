"""Marcus's own persistence classes and signatures, served by a hosted runtime (a drop-in)."""

from __future__ import annotations

from ._classes import AssignmentPersistence as AssignmentPersistence
from ._classes import Decision as Decision
from ._classes import Event as Event
from ._classes import FilePersistence as FilePersistence
from ._classes import MemoryPersistence as MemoryPersistence
from ._classes import Persistence as Persistence
from ._classes import PersistenceBackend as PersistenceBackend
from ._classes import SQLitePersistence as SQLitePersistence

__all__ = (
    "AssignmentPersistence",
    "Decision",
    "Event",
    "FilePersistence",
    "MemoryPersistence",
    "Persistence",
    "PersistenceBackend",
    "SQLitePersistence",
)
