"""The embedded default: Marcus's JSON files, shards and logs under the data directory."""

from __future__ import annotations

from ._backend import FileAssignmentStorage as FileAssignmentStorage
from ._backend import FileBackend as FileBackend
from ._backend import create as create

__all__ = (
    "FileAssignmentStorage",
    "FileBackend",
    "create",
)
