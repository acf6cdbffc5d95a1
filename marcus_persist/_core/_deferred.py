"""An answer that is only known once the batch commits.

A handler whose database decides (a unique constraint, a row lock) cannot
answer in ``apply``: it returns a :class:`Deferred`, fills it in during
``commit``, and the actor settles each caller from it after the commit.
"""

from __future__ import annotations

from typing import Any

from marcus_persist._errors import PersistenceError

__all__ = ("Deferred",)


class Deferred:
    """One caller's answer, filled in by ``commit`` (a value or an error), at most once."""

    __slots__ = ("_done", "_error", "_value")

    def __init__(self) -> None:
        self._done = False
        self._value: Any = None
        self._error: BaseException | None = None

    @property
    def done(self) -> bool:
        return self._done

    def resolve(self, value: Any) -> None:
        if not self._done:
            self._done, self._value = True, value

    def fail(self, error: BaseException) -> None:
        if not self._done:
            self._done, self._error = True, error

    def outcome(self) -> tuple[Any, BaseException | None]:
        """``(value, error)``; an answer never filled in is an error, never a silent ``None``."""
        if not self._done:
            return None, PersistenceError("the commit did not settle this message")
        return self._value, self._error
