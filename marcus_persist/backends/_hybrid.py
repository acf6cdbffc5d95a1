"""A hybrid: each store on its own engine, one backend object per engine used.

The runtime (and ``migrate``) speak to a :class:`HybridBackend` as to any
backend; each storage it hands out is its store's engine's. Engines share
nothing: a batch is atomic within its store, never across stores (the same
as on one engine, where each store's actor commits its own batches).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from marcus_persist.backends._contract import (
    AssignmentStorage,
    Backend,
    PatternStorage,
    StateStorage,
    TokenStorage,
)

__all__ = ("HybridBackend", "engine_for")


class HybridBackend:
    """Stores on several engines. *engines* maps an engine name to its backend,
    *choice* a store name to its engine name."""

    name = "hybrid"

    def __init__(self, engines: Mapping[str, Backend], choice: Mapping[str, str]) -> None:
        self.engines = dict(engines)
        self.choice = dict(choice)
        # one process owns the directory as soon as one store keeps files there
        self.uses_data_dir = any(b.uses_data_dir for b in self.engines.values())

    def for_store(self, store: str) -> Backend:
        """The backend that holds *store*."""
        return self.engines[self.choice[store]]

    def assignments(self) -> AssignmentStorage:
        return self.for_store("assignments").assignments()

    def state(self) -> StateStorage:
        return self.for_store("state").state()

    def patterns(self) -> PatternStorage:
        return self.for_store("patterns").patterns()

    def tokens(self) -> TokenStorage:
        return self.for_store("tokens").tokens()

    @property
    def quarantined(self) -> list[Any]:
        """Corrupt files every engine moved aside at startup."""
        found: list[Any] = []
        for backend in self.engines.values():
            ctx = getattr(backend, "ctx", None)
            if ctx is not None:
                found.extend(ctx.quarantined)
        return found

    def close(self) -> None:
        errors: list[BaseException] = []
        for backend in self.engines.values():
            try:
                backend.close()
            except Exception as exc:  # close every engine; the first error wins
                errors.append(exc)
        if errors:
            raise errors[0]

    def __repr__(self) -> str:
        stores = ", ".join(f"{s}={e}" for s, e in self.choice.items())
        return f"<HybridBackend {stores}>"


def engine_for(backend: Backend, store: str) -> Backend:
    """The backend that holds *store*: *backend* itself unless it is a hybrid."""
    return backend.for_store(store) if isinstance(backend, HybridBackend) else backend
