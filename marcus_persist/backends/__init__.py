"""Storage backends, one contract (:mod:`._contract`), chosen by name (one per store
with the ``backends`` option: :mod:`._hybrid`)."""

from __future__ import annotations

import importlib

from marcus_persist._config import BACKEND_NAMES, Config
from marcus_persist._core._fs import FileSystem
from marcus_persist.backends._contract import Backend
from marcus_persist.backends._hybrid import HybridBackend, engine_for

__all__ = ("BACKEND_NAMES", "Backend", "HybridBackend", "create_backend", "engine_for")


def create_backend(config: Config, fs: FileSystem) -> Backend:
    """Build the backend *config* names (the module is imported on demand): one
    engine's, or a :class:`HybridBackend` with one backend object per engine used."""
    choice = config.engines
    names = sorted(set(choice.values()))
    engines = {name: _engine(name, config, fs) for name in names}
    if len(engines) == 1:
        return engines[names[0]]
    return HybridBackend(engines, choice)


def _engine(name: str, config: Config, fs: FileSystem) -> Backend:
    module = importlib.import_module(f"{__name__}.{name}")
    backend: Backend = module.create(config, fs)
    return backend
