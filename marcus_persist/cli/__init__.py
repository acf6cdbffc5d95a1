"""``marcus-persist``: every command (click + rich). Nothing in the package imports this layer."""

from __future__ import annotations

from ._main import cli as cli
from ._main import main as main

__all__ = (
    "cli",
    "main",
)
