"""Pipelined group commit: batch *k+1* is taken and staged while batch *k* commits.

An actor whose handler is a :class:`~._txn.PipelinedHandler` runs this loop
instead of its plain one. One batch at a time is *in the air* (its commit
runs in the worker thread, driven by a committer task); meanwhile the actor takes what
arrives and applies it to a *next* overlay begun on top of the flying one.
When the flight lands, the next batch takes off at once.

Invariants (the plain loop's, plus):

* commits never overlap and run in the order the batches were taken; a batch
  takes off only after the one below it was published;
* answers go out in commit order: a batch's callers are answered by its own
  flight, after its own commit returned (never when the batch below lands);
  a message that failed alone in a batch staged on top of a flight is told
  when that batch takes off (its error was judged on the flight's staged
  state, which might still fail);
* nothing is visible to readers before its own commit: overlays are private
  to the actor until ``publish``;
* a failed flight fails the batch staged on top of it (every message taken
  there, with an error naming the failed commit); that overlay is
  dropped, so the state the next batch stages on is the last durable one;
* a batch that was taken is committed and answered even when the host is
  cancelled: flights are shielded, and :meth:`Pipeline.land` commits what was
  staged on the way out;
* a barrier lands everything before it (the flight, then the next batch)
  before it holds the actor.

A batch flies *inline* (the actor awaits its commit itself, as the plain loop
does: no committer task to wake, no landing to be woken by) when there is
nothing to overlap: it starts from idle, nothing is left waiting once it was
taken, and nothing arrived while the last flight was in the air. A closed loop
of callers that all sit in one batch (1, 100, 1,000 callers: up to the batch
limit) then costs what the plain loop costs; a start from idle takes all that
waits (:data:`SPLIT_AT`), so such a loop stays one group. Once something
arrives during a flight (or a batch leaves messages waiting), the next batch
goes to the committer task and batches overlap again. The guarantees above
hold either way: an inline flight is one that nothing was staged on.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

import anyio
from anyio.abc import TaskGroup

from marcus_persist._core._inbox import Inbox
from marcus_persist._core._mailbox import Barrier, Request
from marcus_persist._core._txn import PipelinedHandler, Staged, Transaction
from marcus_persist._core._wakeup import Wakeup
from marcus_persist._errors import BackendError, PersistenceError

__all__ = ("Pipeline",)

M = TypeVar("M")

#: ``settle(txn, staged, durable) -> error or None`` (see :class:`Pipeline`)
Settle = Callable[
    [Transaction[M], list[Staged], Callable[[], None]], Awaitable[PersistenceError | None]
]
#: a start from idle with at least this many waiting takes off with half of them
#: and stages the rest on top (``None``: never split). Off by default: a split
#: turns a closed loop of N callers into two groups of N/2 that stay apart for
#: good (each group's answers go out while the other's batch commits), so every
#: round pays two commits instead of one. At 1,000 callers that lost to the plain
#: loop (file/asyncio 0.55-0.67 on/off, benchmarks/pipeline_ab, issue 16): a
#: commit's fixed cost (thread hop, log frame, fsync) doubles, and the overlap
#: it buys is small where the commit's work holds the GIL.
SPLIT_AT: int | None = None
#: fly a batch inline when there is nothing to overlap (see the module docstring);
#: ``False`` hands every batch to the committer task (tests of the overlap set it)
INLINE = True


class _Batch(Generic[M]):
    """One overlay, the messages staged in it, and (once it flew) how it landed."""

    __slots__ = ("error", "flying", "landed", "rejected", "staged", "taken", "txn")

    def __init__(self, txn: Transaction[M]) -> None:
        self.txn = txn
        self.staged: list[Staged] = []
        self.rejected: list[tuple[Request[Any], Exception]] = []  # failed alone, not told yet
        self.taken = 0  # messages taken into it, staged or failed alone
        self.flying = False  # its commit started
        self.landed = anyio.Event()
        self.error: PersistenceError | None = None  # set if its commit failed


class Pipeline(Generic[M]):
    """The pipelined loop of one actor (see the module docstring)."""

    def __init__(
        self,
        inbox: Inbox[Request[Any]],
        handler: PipelinedHandler[M],
        *,
        name: str,
        max_batch: int,
        settle: Settle[M],
        count: Callable[[int], None],
    ) -> None:
        """*settle* commits, publishes and answers one batch (the actor's own, shared
        with its plain loop), calling its third argument once the batch is durable
        and published, before any caller is answered; *count* records a batch's
        size in the statistics."""
        self._inbox = inbox
        self._handler = handler
        self._name = name
        self._max_batch = max_batch
        self._settle = settle
        self._count = count
        self._flight: _Batch[M] | None = None  # committing in the worker thread
        self._next: _Batch[M] | None = None  # staged on top of the flight
        self._barrier: Request[Any] | None = None  # taken; holds once all below it landed
        self._tg: TaskGroup | None = None  # set while serve() runs (and its committer)
        self._committer: Wakeup | None = None  # the committer task, parked for a flight
        self._arrived = False  # something arrived while the last flight was in the air

    async def serve(self) -> None:
        """Take, stage and commit batches until the inbox ends (cancellable between them)."""
        inbox = self._inbox
        async with anyio.create_task_group() as tg:
            self._tg = tg
            tg.start_soon(self._commit_flights)
            try:
                while True:
                    if self._barrier is not None:
                        await self._hold()
                        continue
                    flight = self._flight
                    if flight is None:
                        if self._next is None:
                            try:
                                request = await inbox.receive()
                            except anyio.EndOfStream:
                                tg.cancel_scope.cancel()  # nothing in the air: the committer goes
                                return
                            waiting = len(inbox)
                            self._take(request)
                            split = SPLIT_AT is not None and waiting >= SPLIT_AT
                            self._fill(waiting // 2 if split else None)
                            if INLINE and not self._arrived and not len(inbox):
                                await self._fly_inline()  # nothing to overlap
                                continue
                        self._take_off()
                        continue
                    # batch k is in the air: stage k+1 on top of it until it lands (or,
                    # durable, hands over to k+1 before its callers are answered)
                    self._fill()
                    while self._flight is flight and self._barrier is None:
                        if flight.landed.is_set():
                            self._touch_down()
                            self._take_off()
                        elif self._room() == 0 or inbox.drained:
                            await flight.landed.wait()
                        else:
                            await inbox.wait()  # a message, a close, or the landing's nudge
                            self._fill()
            finally:
                self._tg = None

    async def land(self) -> None:
        """Wait for the flight, then commit the batch staged on top of it: when this
        returns nothing is in the air or staged (every caller taken was answered)."""
        while self._flight is not None or self._next is not None:
            flight = self._flight
            if flight is not None:
                if not flight.flying:  # its task never ran (cancelled before it started)
                    await self._fly(flight)
                await flight.landed.wait()
                if self._flight is flight:  # else it handed over to the next batch
                    self._touch_down()
            elif self._next is not None:
                batch, self._next = self._next, None
                self._flight = batch
                await self._fly(batch)

    async def _hold(self) -> None:
        """Land everything taken before the barrier, then hold until it is released."""
        with anyio.CancelScope(shield=True):
            await self.land()
            request, self._barrier = self._barrier, None
            assert request is not None and isinstance(request.message, Barrier)
            request.resolve(None)
            await request.message.release.wait()

    def abandon(self, error: BaseException) -> None:
        """Fail whatever is still staged or held (the actor is going away)."""
        for batch in (self._flight, self._next):
            if batch is not None:
                for request, _answer in batch.staged:
                    request.fail(error)
                for request, _exc in batch.rejected:
                    request.fail(error)
        self._flight = self._next = None
        if self._barrier is not None:
            self._barrier.fail(error)
            self._barrier = None

    # -- internals ----------------------------------------------------------------
    def _room(self) -> int:
        return self._max_batch - (self._next.taken if self._next is not None else 0)

    def _fill(self, limit: int | None = None) -> None:
        """Take what is waiting (never waits), up to the batch limit (or *limit* more)
        or a barrier."""
        room = self._room() if limit is None else min(limit, self._room())
        receive, take = self._inbox.receive_nowait, self._take
        while room > 0 and self._barrier is None:
            try:
                request = receive()
            except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                return
            take(request)  # one more in the staged batch, or the barrier (which stops it)
            room -= 1

    def _take(self, request: Request[Any]) -> None:
        if isinstance(request.message, Barrier):
            self._barrier = request
            return
        batch = self._next
        if batch is None:
            below = self._flight.txn if self._flight is not None else None
            batch = self._next = _Batch(self._handler.begin_after(below))
        batch.taken += 1
        try:
            answer = batch.txn.apply(request.message)
        except Exception as exc:  # fails alone; told at take-off (see the module docstring)
            batch.rejected.append((request, exc))
        else:
            batch.staged.append((request, answer))

    def _touch_down(self) -> None:
        """The flight landed: forget it; a failure fails the batch staged on top of it."""
        flight, self._flight = self._flight, None
        batch = self._next
        if flight is None or flight.error is None or batch is None:
            return
        self._next = None
        self._count(batch.taken)
        # the same kind as the failure below: a caller that retries on BackendError
        # (the database went away) retries these too
        kind = BackendError if isinstance(flight.error, BackendError) else PersistenceError
        error = kind(
            f"{self._name}: not committed: the batch it was staged on failed: {flight.error}",
            errno=flight.error.errno,
        )
        error.__cause__ = flight.error
        for request, _answer in batch.staged:
            request.fail(error)
        for request, _exc in batch.rejected:
            request.fail(error)

    def _take_off(self, *, inline: bool = False) -> None:
        """Start the commit of the staged batch (nothing may be in the air); *inline*:
        the caller flies it itself."""
        assert self._flight is None and self._tg is not None
        batch, self._next = self._next, None
        if batch is None:
            return
        if not batch.staged:  # every message failed alone: nothing to commit
            self._count(batch.taken)
            self._reject(batch)
            return
        self._flight = batch
        if not inline and self._committer is not None:
            self._committer.set()

    async def _commit_flights(self) -> None:
        """The committer task: flies each batch that takes off, one at a time, in order
        (one task for every flight: no task to spawn per batch)."""
        while True:
            batch = self._flight
            if batch is None or batch.flying:
                self._committer = parked = self._inbox.wakeup()
                try:
                    await parked.wait()
                finally:
                    self._committer = None
                continue
            await self._fly(batch)

    def _handover(self) -> None:
        """The flight is durable and published: the batch staged on top of it takes
        off now, before the flight's callers are answered, so its commit overlaps
        their answers (and what they send next). Only while :meth:`serve` runs."""
        if self._tg is None or self._barrier is not None or self._next is None:
            return  # (nothing staged: the flight stays the flight until it lands)
        self._flight = None
        self._take_off()

    @staticmethod
    def _reject(batch: _Batch[M]) -> None:
        """Tell the messages that failed alone (the batch below them is durable)."""
        for request, exc in batch.rejected:
            request.fail(exc)
        batch.rejected.clear()

    async def _fly_inline(self) -> None:
        """Take off the staged batch and commit it in the actor's own task (nothing
        can be staged on it meanwhile), then touch down."""
        self._take_off(inline=True)
        batch = self._flight
        if batch is not None:
            await self._fly(batch)
            self._touch_down()

    async def _fly(self, batch: _Batch[M]) -> None:
        batch.flying = True
        self._count(batch.taken)
        self._reject(batch)
        try:
            with anyio.CancelScope(shield=True):
                batch.error = await self._settle(batch.txn, batch.staged, self._handover)
        finally:
            # its callers were answered, none has run yet: what waits now (or was
            # staged, or took off on top of it) arrived while it was in the air
            self._arrived = (
                self._flight is not batch or self._next is not None or bool(len(self._inbox))
            )
            batch.landed.set()
            self._inbox.nudge()
