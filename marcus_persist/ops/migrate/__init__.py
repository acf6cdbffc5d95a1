"""``migrate``: copy every store from one backend or directory to another, resumable."""

from __future__ import annotations

from ._run import PROGRESS_NAME as PROGRESS_NAME
from ._run import STORES as STORES
from ._run import Endpoint as Endpoint
from ._run import MigrationReport as MigrationReport
from ._run import OnProgress as OnProgress
from ._run import StoreResult as StoreResult
from ._run import migrate as migrate

__all__ = (
    "PROGRESS_NAME",
    "STORES",
    "Endpoint",
    "MigrationReport",
    "OnProgress",
    "StoreResult",
    "migrate",
)
