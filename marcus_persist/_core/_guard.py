"""A handler whose every commit first runs a check (the data-directory lock's).

The check runs in the commit's own worker thread, just before the commit: a
check that raises fails the batch like a failed commit (nothing written,
every caller answered with the error, the actor goes on). A pipelined
handler stays pipelined once guarded (``Guarded`` then makes a
:class:`GuardedPipelined`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from marcus_persist._core._actor import Handler, PipelinedHandler, Transaction

__all__ = ("Guarded", "GuardedPipelined")

M = TypeVar("M")


class Guarded(Generic[M]):
    """*handler*, with *check* run before each commit of its transactions."""

    def __new__(cls, handler: Handler[M], check: Callable[[], None]) -> Guarded[M]:
        if cls is Guarded and isinstance(handler, PipelinedHandler):
            cls = GuardedPipelined  # keep the opt-in the wrapped handler made
        return super().__new__(cls)

    def __init__(self, handler: Handler[M], check: Callable[[], None]) -> None:
        self._handler = handler
        self._check = check

    def begin(self) -> Transaction[M]:
        return _GuardedTransaction(self._handler.begin(), self._check)


class GuardedPipelined(Guarded[M]):
    """A guarded :class:`~._actor.PipelinedHandler`: overlays stage on top of guarded ones."""

    def begin_after(self, below: Transaction[M] | None) -> Transaction[M]:
        handler = self._handler
        assert isinstance(handler, PipelinedHandler)
        inner = below._txn if isinstance(below, _GuardedTransaction) else below
        return _GuardedTransaction(handler.begin_after(inner), self._check)


class _GuardedTransaction(Generic[M]):
    def __init__(self, txn: Transaction[M], check: Callable[[], None]) -> None:
        self._txn = txn
        self._check = check

    def apply(self, message: M) -> Any:
        return self._txn.apply(message)

    @property
    def changed(self) -> bool:
        return self._txn.changed

    def commit(self) -> None:
        self._check()  # the directory is still ours: else write nothing
        self._txn.commit()

    def publish(self) -> None:
        self._txn.publish()
