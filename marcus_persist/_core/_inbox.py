"""The bounded inbox of one actor: a deque, one wake-up for the actor, FIFO senders.

Many senders, one receiver, all on one event loop (``anyio`` memory-stream
vocabulary: ``send``/``send_nowait``, ``receive``/``receive_nowait``,
``close``). A message *enters* the inbox when ``send_nowait`` returns, or,
for a sender that had to wait for room, when the receiver makes room and
admits it (senders are admitted in the order they came).

Invariants:

* at most ``size`` messages are in the inbox; senders beyond wait (backpressure);
* a sender cancelled before it was admitted never enters: the receiver skips a
  sender whose wake-up was withdrawn by the cancellation (asyncio and trio
  know it the moment the cancellation is delivered), so once ``cancel()``
  returned its message cannot arrive; a sender cancelled after it was
  admitted has sent: its message is processed like any other;
* closing the sending side (``close_sending``) stops intake: messages in the
  inbox are still received, senders still waiting for room get
  ``ClosedResourceError``; closing the receiving side (``close``, as the
  receiver closes an anyio receive stream) turns every later send into
  ``BrokenResourceError``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

import anyio
import anyio.lowlevel

from marcus_persist._core._wakeup import Wakeup, wakeup_factory

__all__ = ("Inbox",)

T = TypeVar("T")


class _Sender(Generic[T]):
    __slots__ = ("item", "refused", "wakeup")

    def __init__(self, item: T, wakeup: Wakeup) -> None:
        self.item = item
        self.wakeup = wakeup
        self.refused = False  # woken by a close, not admitted


class Inbox(Generic[T]):
    """A bounded FIFO from many senders to one receiver on one event loop."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("an inbox holds at least one message")
        self._size = size
        self._items: deque[T] = deque()
        self._senders: deque[_Sender[T]] = deque()  # waiting for room, in arrival order
        self._receiver: Wakeup | None = None  # the receiver, when it is parked
        self._send_closed = False
        self._receive_closed = False
        self._make: Callable[[], Wakeup] | None = None  # bound to the loop at first use

    def wakeup(self) -> Wakeup:
        """A fresh wake-up for this inbox's event loop (call on that loop)."""
        if self._make is None:
            self._make = wakeup_factory()
        return self._make()

    # -- the sending side -----------------------------------------------------

    def send_nowait(self, item: T) -> None:
        """Put *item* in the inbox if there is room and nobody waits before it.

        :raises anyio.WouldBlock: if the inbox is full (or senders are waiting)
        :raises anyio.ClosedResourceError: if the sending side was closed
        :raises anyio.BrokenResourceError: if the receiving side was closed
        """
        if self._send_closed:
            raise anyio.ClosedResourceError
        if self._receive_closed:
            raise anyio.BrokenResourceError
        if self._senders or len(self._items) >= self._size:
            raise anyio.WouldBlock
        self._items.append(item)
        if self._receiver is not None:
            self._receiver.set()

    async def send(self, item: T) -> None:
        """Put *item* in the inbox, waiting for room (in arrival order) if it is full.

        Returns without a checkpoint when there is room. Cancelled while it
        waits, the item was not sent.
        """
        try:
            self.send_nowait(item)
            return
        except anyio.WouldBlock:
            pass
        sender = _Sender(item, self.wakeup())
        self._senders.append(sender)
        try:
            await sender.wakeup.wait()
        except BaseException:
            if not sender.wakeup.is_set and sender in self._senders:
                self._senders.remove(sender)  # not admitted: withdrawn, nothing was sent
            raise
        if sender.refused:
            raise anyio.BrokenResourceError if self._receive_closed else anyio.ClosedResourceError

    def close_sending(self) -> None:
        """Stop intake; what is in the inbox is still received. Idempotent."""
        if self._send_closed:
            return
        self._send_closed = True
        self._refuse_senders()
        if self._receiver is not None:
            self._receiver.set()

    @property
    def send_closed(self) -> bool:
        return self._send_closed

    def __len__(self) -> int:
        """Messages in the inbox (senders waiting for room not counted)."""
        return len(self._items)

    def queued(self) -> int:
        """Messages in the inbox plus senders waiting for room."""
        return len(self._items) + len(self._senders)

    # -- the receiving side ---------------------------------------------------

    def receive_nowait(self) -> T:
        """Take the oldest message and admit the next waiting sender.

        :raises anyio.WouldBlock: if the inbox is empty and still open
        :raises anyio.EndOfStream: if it is empty and the sending side closed
        :raises anyio.ClosedResourceError: if the receiving side was closed
        """
        if self._receive_closed:
            raise anyio.ClosedResourceError
        if self._items:
            item = self._items.popleft()
            self._admit()
            return item
        if self._send_closed:
            raise anyio.EndOfStream
        raise anyio.WouldBlock

    async def receive(self) -> T:
        """Wait for a message (a checkpoint, like anyio's ``receive``).

        :raises anyio.EndOfStream: once the inbox is empty and the sending side closed
        """
        await anyio.lowlevel.checkpoint()
        while True:
            try:
                return self.receive_nowait()
            except anyio.WouldBlock:
                pass
            self._receiver = parked = self.wakeup()
            try:
                await parked.wait()
            finally:
                self._receiver = None

    async def wait(self) -> None:
        """Return once a message is waiting, the sending side closed, or :meth:`nudge`
        was called. Returns at once (no checkpoint) if one of them already holds;
        a checkpoint when it parks. Takes nothing."""
        if self._items or self._send_closed or self._receive_closed:
            return
        self._receiver = parked = self.wakeup()
        try:
            await parked.wait()
        finally:
            self._receiver = None

    def nudge(self) -> None:
        """Wake the receiver if it is parked (in :meth:`wait` or :meth:`receive`);
        ``receive`` parks again if there is still nothing to take."""
        if self._receiver is not None:
            self._receiver.set()

    @property
    def drained(self) -> bool:
        """Whether nothing is left to take and the sending side closed (or the receiving)."""
        return (not self._items and self._send_closed) or self._receive_closed

    def close(self) -> None:
        """Close the receiving side (the receiver is gone): later sends fail with
        ``BrokenResourceError``, waiting senders are refused, receives fail."""
        self._receive_closed = True
        self._refuse_senders()

    def _admit(self) -> None:
        while self._senders and len(self._items) < self._size:
            sender = self._senders.popleft()
            if sender.wakeup.withdrawn:  # cancelled before it got room: never sent
                continue
            self._items.append(sender.item)
            sender.wakeup.set()

    def _refuse_senders(self) -> None:
        while self._senders:
            sender = self._senders.popleft()
            sender.refused = True
            sender.wakeup.set()
