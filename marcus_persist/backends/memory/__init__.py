"""Everything in this process's memory: tests, and reopening a shared ``MemoryBackend``."""

from __future__ import annotations

from ._backend import MemoryBackend as MemoryBackend
from ._backend import create as create

__all__ = (
    "MemoryBackend",
    "create",
)
