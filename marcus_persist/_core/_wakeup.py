"""The cheapest one-shot wake-up each event loop offers, behind one interface.

A :class:`Wakeup` is made by the task that will wait on it, in its own event
loop; :meth:`Wakeup.set` (from that loop's thread) wakes the waiter, and
:func:`loop_caller` gives a thread a non-blocking way to run a function on
that loop (to answer a batch from a writer thread).

* asyncio: a bare future of the running loop, and ``call_soon_threadsafe``;
* trio: ``trio.lowlevel`` park (``wait_task_rescheduled``) and ``reschedule``,
  and the loop's ``TrioToken.run_sync_soon``;
* any other anyio backend: an ``anyio.Event``, and ``anyio.from_thread.run_sync``
  (which blocks the thread until the loop ran the function).

Invariants: a wake-up is set at most once (a second ``set`` is a no-op); a
waiter cancelled while parked is never rescheduled afterwards; ``set`` before
``wait`` makes ``wait`` return at its next checkpoint without parking.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, cast

import anyio
import anyio.from_thread
import anyio.lowlevel

if TYPE_CHECKING:
    import trio

__all__ = ("Wakeup", "loop_caller", "new_wakeup", "wakeup_factory")


class Wakeup(Protocol):
    """One waiter, woken once."""

    @property
    def is_set(self) -> bool: ...

    @property
    def withdrawn(self) -> bool:
        """Whether the waiter was cancelled while parked (known at once on asyncio
        and trio; the anyio fallback never knows and says ``False``)."""
        ...

    def set(self) -> None:
        """Wake the waiter (call from the loop's own thread); idempotent."""
        ...

    async def wait(self) -> None:
        """Return once :meth:`set` was called; a checkpoint (cancellable while parked)."""
        ...


class _AsyncioWakeup:
    __slots__ = ("_future",)

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._future: asyncio.Future[None] = loop.create_future()

    @property
    def is_set(self) -> bool:
        return self._future.done() and not self._future.cancelled()

    @property
    def withdrawn(self) -> bool:
        return self._future.cancelled()

    def set(self) -> None:
        if not self._future.done():  # cancelled waiters are left alone
            self._future.set_result(None)

    async def wait(self) -> None:
        if self._future.done() and not self._future.cancelled():
            await anyio.lowlevel.checkpoint()  # still a checkpoint, as anyio.Event.wait
            return
        await self._future


class _TrioWakeup:
    __slots__ = ("_parked", "_set", "_withdrawn")

    def __init__(self) -> None:
        self._set = False
        self._withdrawn = False
        self._parked: trio.lowlevel.Task | None = None

    @property
    def is_set(self) -> bool:
        return self._set

    @property
    def withdrawn(self) -> bool:
        return self._withdrawn

    def set(self) -> None:
        if self._set:
            return
        self._set = True
        task, self._parked = self._parked, None
        # Only a task still parked here: trio clears custom_sleep_data whenever a task
        # is rescheduled, so a task that left (cancelled, or woken by anything else)
        # is never rescheduled twice.
        if task is not None and task.custom_sleep_data is self:
            import trio

            trio.lowlevel.reschedule(task)

    async def wait(self) -> None:
        import trio

        if self._set:
            await trio.lowlevel.checkpoint()
            return
        self._parked = task = trio.lowlevel.current_task()
        task.custom_sleep_data = self

        def abort(_: Any) -> trio.lowlevel.Abort:
            self._parked = None  # cancelled while parked: set() must not reschedule it
            self._withdrawn = True
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)


class _EventWakeup:
    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = anyio.Event()

    @property
    def is_set(self) -> bool:
        return self._event.is_set()

    @property
    def withdrawn(self) -> bool:
        return False

    def set(self) -> None:
        self._event.set()

    async def wait(self) -> None:
        await self._event.wait()


def wakeup_factory() -> Callable[[], Wakeup]:
    """A maker of wake-ups for the running event loop (call it from that loop)."""
    native = anyio.lowlevel.current_token().native_token
    if isinstance(native, asyncio.AbstractEventLoop):
        loop = native
        return lambda: _AsyncioWakeup(loop)
    if type(native).__name__ == "TrioToken":
        return _TrioWakeup
    return _EventWakeup


def new_wakeup() -> Wakeup:
    """One wake-up for the running loop (prefer :func:`wakeup_factory` in hot paths)."""
    return wakeup_factory()()


def loop_caller() -> Callable[[Callable[..., object]], None]:
    """``call(fn)``: run ``fn()`` on the running loop, called from any other thread.

    Made on the loop; on asyncio and trio it never blocks the calling thread.
    """
    token = anyio.lowlevel.current_token()
    native = token.native_token
    if isinstance(native, asyncio.AbstractEventLoop):
        loop = native

        def soon(fn: Callable[..., object]) -> None:
            loop.call_soon_threadsafe(fn)

        return soon
    if type(native).__name__ == "TrioToken":
        return cast("trio.lowlevel.TrioToken", native).run_sync_soon

    def call(fn: Callable[..., object]) -> None:
        anyio.from_thread.run_sync(fn, token=token)

    return call
