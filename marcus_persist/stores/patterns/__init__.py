"""Learned patterns: observations folded into confidence, indexed by key, type and project."""

from __future__ import annotations

from ._store import PROJECT_TYPE as PROJECT_TYPE
from ._store import PatternsHandler as PatternsHandler
from ._store import PatternStore as PatternStore
from ._store import run_prune_schedule as run_prune_schedule

__all__ = (
    "PROJECT_TYPE",
    "PatternStore",
    "PatternsHandler",
    "run_prune_schedule",
)
