"""Storage backends, one contract (:mod:`._contract`), chosen by name."""

from __future__ import annotations

import importlib

from marcus_persist._config import BACKEND_NAMES, Config
from marcus_persist._core._fs import FileSystem
from marcus_persist.backends._contract import Backend

__all__ = ("BACKEND_NAMES", "Backend", "create_backend")


def create_backend(config: Config, fs: FileSystem) -> Backend:
    """Build the backend *config* names (the module is imported on demand)."""
    module = importlib.import_module(f"{__name__}.{config.backend}")
    backend: Backend = module.create(config, fs)
    return backend
