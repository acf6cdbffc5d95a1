"""A hybrid: each store on its own engine, one backend object per engine used.

The runtime (and ``migrate``) speak to a :class:`HybridBackend` as to any
backend; each storage it hands out is its store's engine's. Engines share
nothing: a batch is atomic within its store, never across stores (the same
as on one engine, where each store's actor commits its own batches).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
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

    @property
    def keeps_logs(self) -> bool:
        """Whether an engine keeps a write-ahead log (has checkpoints to forward)."""
        return bool(self._each("checkpoint_aged"))

    def _each(self, method: str) -> list[Callable[..., Any]]:
        """*method* of every engine that has it (the engines that keep a write-ahead log)."""
        found = (getattr(backend, method, None) for backend in self.engines.values())
        return [bound for bound in found if bound is not None]

    def checkpoint(self) -> list[str]:
        """Checkpoint every engine's logged stores now (blocking); the stores that had
        something to write."""
        return [store for checkpoint in self._each("checkpoint") for store in checkpoint()]

    @contextlib.contextmanager
    def checkpoints_held(self) -> Iterator[None]:
        """No checkpoint of any engine runs inside the block (a backup copies each log
        with the files it completes)."""
        with contextlib.ExitStack() as stack:
            for held in self._each("checkpoints_held"):
                stack.enter_context(held())
            yield

    def checkpoint_aged(self) -> list[str]:
        """Start the due age-based checkpoints of every engine; the stores that started one."""
        return [store for start in self._each("checkpoint_aged") for store in start()]

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
