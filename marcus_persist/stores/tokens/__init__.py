"""Token usage and costs: per day, per project, against budgets."""

from __future__ import annotations

from ._store import TokensHandler as TokensHandler
from ._store import TokenStore as TokenStore

__all__ = (
    "TokenStore",
    "TokensHandler",
)
