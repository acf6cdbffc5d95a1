"""Request/reply over a bounded memory object stream.

A caller's :meth:`Mailbox.request` puts a :class:`Request` in the inbox (waiting
while it is full: backpressure) and then waits until the actor answers it.
"""

from __future__ import annotations

import threading
from typing import Any, Generic, TypeVar

import anyio
import msgspec
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

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
    """One message and the slot its answer goes into; answered exactly once."""

    __slots__ = ("_done", "_error", "_value", "message")

    def __init__(self, message: M) -> None:
        self.message = message
        self._done = anyio.Event()
        self._value: Any = None
        self._error: BaseException | None = None

    @property
    def answered(self) -> bool:
        return self._done.is_set()

    def resolve(self, value: Any) -> None:
        if not self._done.is_set():
            self._value = value
            self._done.set()

    def fail(self, error: BaseException) -> None:
        if not self._done.is_set():
            self._error = error
            self._done.set()

    async def outcome(self) -> Any:
        await self._done.wait()
        if self._error is not None:
            raise self._error
        return self._value


class Mailbox(Generic[M]):
    """The bounded inbox of one actor."""

    def __init__(self, name: str, size: int) -> None:
        self.name = name
        send, receive = anyio.create_memory_object_stream[Request[M | Barrier]](size)
        self._send: MemoryObjectSendStream[Request[M | Barrier]] = send
        self.inbox: MemoryObjectReceiveStream[Request[M | Barrier]] = receive
        # anyio streams and events belong to the loop of the thread that made them
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
        request: Request[M | Barrier] = Request(message)
        try:
            try:
                # Room in the inbox: no wait, so skip send()'s extra scheduling
                # round-trip (awaiting the answer below is this call's checkpoint).
                self._send.send_nowait(request)
            except anyio.WouldBlock:
                await self._send.send(request)  # full: wait for room (backpressure)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            raise RuntimeClosed(f"{self.name}: the runtime is closed") from None
        return await request.outcome()

    def post_nowait(self, request: Request[M | Barrier]) -> None:
        """Put *request* in the inbox without waiting; nobody needs to await its answer.

        :raises anyio.WouldBlock: if the inbox is full
        :raises RuntimeClosed: if the runtime no longer takes messages
        :raises WrongThread: if called from another thread than the runtime's
        """
        self._check_thread()
        try:
            self._send.send_nowait(request)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            raise RuntimeClosed(f"{self.name}: the runtime is closed") from None

    def close(self) -> None:
        """Stop intake: messages already sent are still processed and answered."""
        self._send.close()

    def queued(self) -> int:
        stats = self._send.statistics()
        return stats.current_buffer_used + stats.tasks_waiting_send

    @property
    def closed(self) -> bool:
        return self._send.statistics().open_send_streams == 0
