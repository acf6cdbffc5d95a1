"""marcus_persist: crash-safe, actor-based persistence for Marcus, on asyncio and trio."""

from ._config import Config as Config
from ._core._mailbox import ActorStatistics as ActorStatistics
from ._errors import BackendError as BackendError
from ._errors import ConfigError as ConfigError
from ._errors import CorruptDataError as CorruptDataError
from ._errors import DataDirLocked as DataDirLocked
from ._errors import NotFound as NotFound
from ._errors import PersistenceError as PersistenceError
from ._errors import RuntimeClosed as RuntimeClosed
from ._errors import TaskAlreadyAssigned as TaskAlreadyAssigned
from ._errors import ValidationError as ValidationError
from ._runtime import Runtime as Runtime
from ._runtime import open_runtime as open_runtime
from .backends._files import Quarantined as Quarantined
from .backends.memory import MemoryBackend as MemoryBackend
from .stores.assignments import AssignmentStore as AssignmentStore
from .stores.patterns import PatternStore as PatternStore
from .stores.tokens import TokenStore as TokenStore

__version__ = "0.1.0"

__all__ = (
    "ActorStatistics",
    "AssignmentStore",
    "BackendError",
    "Config",
    "ConfigError",
    "CorruptDataError",
    "DataDirLocked",
    "MemoryBackend",
    "NotFound",
    "PatternStore",
    "PersistenceError",
    "Quarantined",
    "Runtime",
    "RuntimeClosed",
    "TaskAlreadyAssigned",
    "TokenStore",
    "ValidationError",
    "open_runtime",
)
