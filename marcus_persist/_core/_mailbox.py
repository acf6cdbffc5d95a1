"""Request/reply over a bounded inbox (:mod:`._inbox`).

A caller's :meth:`Mailbox.request` puts a :class:`Request` in the inbox (waiting
while it is full: backpressure) and then waits until the actor answers it. The
caller parks on the cheapest wake-up its loop offers (:mod:`._wakeup`), made
by a factory the mailbox binds to the loop at its first request.
"""

from __future__ import annotations

import threading
from typing import Any, Generic, TypeVar

import anyio
import anyio.lowlevel
import msgspec

from marcus_persist._core._inbox import Inbox
from marcus_persist._core._wakeup import Wakeup, new_wakeup
from marcus_persist._errors import RuntimeClosed, WrongThread

__all__ = ("ActorStatistics", "Barrier", "Mailbox", "Request")

M = TypeVar("M")


class ActorStatistics(msgspec.Struct, frozen=True):
    """A snapshot of one actor's counters."""

    name: str
    queued: int  #: messages waiting in the inbox (and senders blocked on it)
    batches: int  #: batches committed or failed so far
    items: int  #: messages taken from the inbox so far
    failed_commits: int
    last_commit_seconds: float
    mean_batch_size: float
    committed: int = 0  #: messages acknowledged as durable


class Barrier:
    """A control message: the actor stops between two batches until released.

    It travels through the inbox like any message, so everything sent before
    it is committed (and everything after it waits) while it holds: a point at
    which the store's files are consistent, for an online backup.
    """

    __slots__ = ("release",)

    def __init__(self) -> None:
        self.release = anyio.Event()


class Request(Generic[M]):
    """One message and the slot its answer goes into; answered exactly once.

    Answer it (``resolve``/``fail``) from the event loop's thread only. A
    request nobody awaits needs no wake-up: one is made by :meth:`outcome`
    if none was given.
    """

    __slots__ = ("_answered", "_error", "_value", "_wakeup", "message")

    def __init__(self, message: M, wakeup: Wakeup | None = None) -> None:
        self.message = message
        self._answered = False
        self._wakeup = wakeup
        self._value: Any = None
        self._error: BaseException | None = None

    @property
    def answered(self) -> bool:
        return self._answered

    def resolve(self, value: Any) -> None:
        if not self._answered:
            self._answered, self._value = True, value
            if self._wakeup is not None:
                self._wakeup.set()

    def fail(self, error: BaseException) -> None:
        if not self._answered:
            self._answered, self._error = True, error
            if self._wakeup is not None:
                self._wakeup.set()

    async def outcome(self) -> Any:
        """The answer (or raise its error); a checkpoint, cancellable while waiting."""
        if self._answered:
            await anyio.lowlevel.checkpoint()
        else:
            if self._wakeup is None:
                self._wakeup = new_wakeup()
            await self._wakeup.wait()
        if self._error is not None:
            raise self._error
        return self._value


class Mailbox(Generic[M]):
    """The bounded inbox of one actor."""

    def __init__(self, name: str, size: int) -> None:
        self.name = name
        #: the actor's receiving side (``receive``, ``receive_nowait``, ``close``)
        self.inbox: Inbox[Request[M | Barrier]] = Inbox(size)
        # the inbox and its wake-ups belong to the loop of the thread that made them
        self._thread = threading.get_ident()

    def _check_thread(self) -> None:
        if threading.get_ident() != self._thread:
            raise WrongThread(
                f"{self.name}: called from another thread than the runtime's; "
                "use rt.from_thread(fn, *args) there"
            )

    async def request(self, message: M | Barrier) -> Any:
        """Send *message* and return the actor's answer once it is durable.

        :raises RuntimeClosed: if the runtime no longer takes messages
        :raises WrongThread: if called from another thread than the runtime's
        """
        self._check_thread()
        inbox = self.inbox
        wakeup = inbox.wakeup()
        request: Request[M | Barrier] = Request(message, wakeup)
        try:
            try:
                inbox.send_nowait(request)  # with room, no wait: the answer's wait below
            except anyio.WouldBlock:  # is this call's checkpoint
                await inbox.send(request)  # full: wait for room; cancelled: nothing sent
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            raise RuntimeClosed(f"{self.name}: the runtime is closed") from None
        await wakeup.wait()  # as request.outcome(), one frame less on the hot path
        if request._error is not None:
            raise request._error
        return request._value

    def post_nowait(self, request: Request[M | Barrier]) -> None:
        """Put *request* in the inbox without waiting; nobody needs to await its answer.

        :raises anyio.WouldBlock: if the inbox is full
        :raises RuntimeClosed: if the runtime no longer takes messages
        :raises WrongThread: if called from another thread than the runtime's
        """
        self._check_thread()
        try:
            self.inbox.send_nowait(request)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            raise RuntimeClosed(f"{self.name}: the runtime is closed") from None

    def close(self) -> None:
        """Stop intake: messages already sent are still processed and answered."""
        self.inbox.close_sending()

    def queued(self) -> int:
        """Messages in the inbox plus callers waiting for room in it."""
        return self.inbox.queued()

    @property
    def closed(self) -> bool:
        return self.inbox.send_closed
