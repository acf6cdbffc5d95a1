"""A handler whose every commit first runs a check (the data-directory lock's).

The check runs in the commit's own worker thread, just before the commit: a
check that raises fails the batch like a failed commit (nothing written,
every caller answered with the error, the actor goes on).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from marcus_persist._core._actor import Handler, Transaction

__all__ = ("Guarded",)

M = TypeVar("M")


class Guarded(Generic[M]):
    """*handler*, with *check* run before each commit of its transactions."""

    def __init__(self, handler: Handler[M], check: Callable[[], None]) -> None:
        self._handler = handler
        self._check = check

    def begin(self) -> Transaction[M]:
        return _GuardedTransaction(self._handler.begin(), self._check)


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
