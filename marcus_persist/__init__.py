"""marcus_persist: crash-safe, actor-based persistence for Marcus, on asyncio and trio."""

import logging as _logging

from ._config import Config as Config
from ._core._mailbox import ActorStatistics as ActorStatistics
from ._errors import BackendError as BackendError
from ._errors import ConfigError as ConfigError
from ._errors import CorruptDataError as CorruptDataError
from ._errors import DataDirLocked as DataDirLocked
from ._errors import LockLost as LockLost
from ._errors import NotFound as NotFound
from ._errors import PersistenceError as PersistenceError
from ._errors import RuntimeClosed as RuntimeClosed
from ._errors import TaskAlreadyAssigned as TaskAlreadyAssigned
from ._errors import UnsafePathError as UnsafePathError
from ._errors import ValidationError as ValidationError
from ._errors import WrongThread as WrongThread
from ._runtime import Runtime as Runtime
from ._runtime import open_runtime as open_runtime
from .backends._files import Quarantined as Quarantined
from .backends.memory import MemoryBackend as MemoryBackend
from .stores.assignments import AssignmentStore as AssignmentStore
from .stores.audit import AuditStore as AuditStore
from .stores.patterns import PatternStore as PatternStore
from .stores.state import StateStore as StateStore
from .stores.tokens import TokenStore as TokenStore

__version__ = "0.1.0"

# a library logs, the host decides where it goes
_logging.getLogger("marcus_persist").addHandler(_logging.NullHandler())

__all__ = (
    "ActorStatistics",
    "AssignmentStore",
    "AuditStore",
    "BackendError",
    "Config",
    "ConfigError",
    "CorruptDataError",
    "DataDirLocked",
    "LockLost",
    "MemoryBackend",
    "NotFound",
    "PatternStore",
    "PersistenceError",
    "Quarantined",
    "Runtime",
    "RuntimeClosed",
    "StateStore",
    "TaskAlreadyAssigned",
    "TokenStore",
    "UnsafePathError",
    "ValidationError",
    "WrongThread",
    "open_runtime",
)
