"""Injected I/O faults shared by the suite-3 files: the fault kinds, the plan that
fails the N-th file-system call, and the N = 1, 2, ... loop until an operation completes.

SQLite's I/O-error tests are the model: every call of an operation fails in
turn, once and then persistently, with every errno a disk can give.
"""

from __future__ import annotations

import errno
from collections.abc import Awaitable, Callable

__all__ = ("KINDS", "Plan", "fault_matrix", "fault_matrix_for_loop")

KINDS: tuple[int | str, ...] = (
    errno.EIO,
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EFBIG,
    errno.EROFS,
    "short",  # the write takes half the bytes: the caller must loop
    "zero",  # the write takes nothing: the caller must give up, not spin
)


class Plan:
    """Fail the N-th call after arming, once or until cleared."""

    def __init__(self, n: int, kind: int | str, persistent: bool) -> None:
        self.n, self.kind, self.persistent = n, kind, persistent
        self.armed = False
        self.count = 0
        self.fired = 0

    def __call__(self, _call: int, method: str) -> int | str | None:
        if not self.armed:
            return None
        if self.kind in ("short", "zero") and method != "write":
            return None  # short writes count write calls only
        self.count += 1
        if self.count == self.n or (self.persistent and self.count > self.n):
            self.fired += 1
            return self.kind
        return None


async def fault_matrix(
    case: Callable[[Plan, int], Awaitable[bool]],
    *,
    limit: int,
    kinds: tuple[int | str, ...] = KINDS,
) -> int:
    """Run ``case(plan, number)`` for every kind, once and persistently, N = 1, 2, ...
    until a case reports the operation completed; return how many cases ran."""
    cases = 0
    for kind in kinds:
        for persistent in (False, True):
            for n in range(1, limit):
                cases += 1
                if await case(Plan(n, kind, persistent), cases):
                    break  # the operation completed before the N-th call
            else:
                raise AssertionError(f"never completed with {kind!r} (persistent={persistent})")
    return cases


async def fault_matrix_for_loop(
    case: Callable[[Plan, int], Awaitable[bool]], *, limit: int, anyio_backend: str
) -> int:
    """``fault_matrix`` over every other kind: asyncio takes the even ones, trio the odd
    ones (the handling runs in a worker thread, the loop only delivers the error; both
    loops together cover every kind); check each kind ran more than the first call in
    both modes, and return how many cases ran."""
    kinds = KINDS[0::2] if anyio_backend == "asyncio" else KINDS[1::2]
    cases = await fault_matrix(case, limit=limit, kinds=kinds)
    assert cases > 2 * len(kinds)
    return cases
