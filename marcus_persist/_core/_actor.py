"""The single writer of one data type: drain a batch, apply, commit once, answer.

Invariants:

* the actor is the only task that changes its store's committed state;
* a message that fails validation fails alone and leaves the staging overlay
  as it was, so the rest of its batch goes on;
* a batch is acknowledged only after its commit returned; a failed commit fails
  every caller of the batch and leaves the committed state unchanged;
* an answer that is a :class:`Deferred` is decided by the commit: after it,
  each such caller gets its own value or its own error;
* a batch that was taken is committed and answered even when the host is
  cancelled, and on the way out every message still in the inbox is too.
"""

from __future__ import annotations

import errno
import logging
import math
import time
from typing import Any, Generic, Protocol, TypeVar, cast

import anyio
from anyio.abc import TaskStatus

from marcus_persist._core._deferred import Deferred
from marcus_persist._core._mailbox import ActorStatistics, Barrier, Mailbox, Request
from marcus_persist._core._metrics import BATCH_SIZE_BOUNDS, COMMIT_SECONDS_BOUNDS, Histogram
from marcus_persist._errors import PersistenceError, RuntimeClosed

__all__ = ("Actor", "Handler", "Transaction")

log = logging.getLogger("marcus_persist")

M = TypeVar("M")
M_contra = TypeVar("M_contra", contravariant=True)

FINAL_FLUSH_SECONDS = 30.0


class Transaction(Protocol[M_contra]):
    """The staging overlay of one batch."""

    def apply(self, message: M_contra) -> Any:
        """Validate and stage one message; return the caller's answer.

        Must leave the overlay unchanged when it raises.
        """
        ...

    @property
    def changed(self) -> bool:
        """Whether anything was staged that needs a commit."""
        ...

    def commit(self) -> None:
        """Make the staged changes durable. Blocking; runs in a worker thread."""
        ...

    def publish(self) -> None:
        """Fold the staged changes into the committed state (on the event loop)."""
        ...


class Handler(Protocol[M_contra]):
    def begin(self) -> Transaction[M_contra]:
        """Start a staging overlay over the current committed state."""
        ...


class Actor(Generic[M]):
    """Owns one store's writes; run it with ``await task_group.start(actor.run)``."""

    def __init__(self, name: str, handler: Handler[M], *, inbox_size: int, max_batch: int) -> None:
        if inbox_size < 1 or max_batch < 1:
            raise ValueError("inbox_size and max_batch must be at least 1")
        self.name = name
        self.mailbox: Mailbox[M] = Mailbox(name, inbox_size)
        self._handler = handler
        self._max_batch = max_batch
        self._limiter = anyio.CapacityLimiter(1)  # commits never queue behind the host's threads
        self._batches = 0
        self._items = 0
        self._committed = 0
        self._failed_commits = 0
        #: failed commits by errno name (``other``: no errno), for monitoring
        self.failed_by_errno: dict[str, int] = {}
        self._last_commit = math.nan
        self.batch_sizes = Histogram(BATCH_SIZE_BOUNDS)
        self.commit_seconds = Histogram(COMMIT_SECONDS_BOUNDS)

    async def request(self, message: M) -> Any:
        return await self.mailbox.request(message)

    def statistics(self) -> ActorStatistics:
        return ActorStatistics(
            name=self.name,
            queued=self.mailbox.queued(),
            batches=self._batches,
            items=self._items,
            committed=self._committed,
            failed_commits=self._failed_commits,
            last_commit_seconds=self._last_commit,
            mean_batch_size=self._items / self._batches if self._batches else 0.0,
        )

    def __repr__(self) -> str:
        s = self.statistics()
        return (
            f"<Actor {self.name} queued={s.queued} batches={s.batches} items={s.items} "
            f"mean_batch={s.mean_batch_size:.1f} failed_commits={s.failed_commits}>"
        )

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        inbox = self.mailbox.inbox
        task_status.started()
        try:
            while True:
                try:
                    batch = [await inbox.receive()]
                except anyio.EndOfStream:
                    return
                batch.extend(self._drain(limit=self._max_batch - 1))
                with anyio.CancelScope(shield=True):
                    await self._handle(batch)
        except anyio.get_cancelled_exc_class():
            # The host is going away: stop intake, then commit what was received.
            self.mailbox.close()
            with anyio.move_on_after(FINAL_FLUSH_SECONDS, shield=True):
                while batch := self._drain(limit=self._max_batch):
                    await self._handle(batch)
            raise
        finally:
            # Whatever is still queued (flush timed out, or the actor failed)
            # is answered, never left hanging; late senders get RuntimeClosed.
            self.mailbox.close()
            for request in self._drain(limit=None):
                request.fail(RuntimeClosed(f"{self.name}: the runtime closed before this ran"))
            inbox.close()

    def _drain(self, limit: int | None) -> list[Request[M | Barrier]]:
        taken: list[Request[M | Barrier]] = []
        while limit is None or len(taken) < limit:
            try:
                taken.append(self.mailbox.inbox.receive_nowait())
            except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                break
        return taken

    async def hold(self) -> Barrier:
        """Stop this actor between batches; it resumes when ``barrier.release`` is set.

        Returns once every message sent before the call has been committed and
        answered. The caller must set ``release`` (in a ``finally``).
        """
        barrier = Barrier()
        try:
            await self.mailbox.request(barrier)
        except BaseException:
            # cancelled (or closed) before the actor reached it: the barrier may still be
            # in the inbox, and nobody would ever release it; let the actor pass it
            barrier.release.set()
            raise
        return barrier

    async def _handle(self, batch: list[Request[M | Barrier]]) -> None:
        """Process *batch*, splitting it at barriers (which hold the actor in place)."""
        segment: list[Request[M]] = []
        for request in batch:
            message = request.message
            if isinstance(message, Barrier):
                if segment:
                    await self._process(segment)
                    segment = []
                request.resolve(None)
                await message.release.wait()
            else:
                segment.append(cast("Request[M]", request))
        if segment:
            await self._process(segment)

    async def _process(self, batch: list[Request[M]]) -> None:
        self._batches += 1
        self._items += len(batch)
        self.batch_sizes.observe(len(batch))
        txn = self._handler.begin()
        staged: list[tuple[Request[M], Any]] = []
        for request in batch:
            try:
                answer = txn.apply(request.message)
            except Exception as exc:  # the message fails alone
                request.fail(exc)
            else:
                staged.append((request, answer))
        if not staged:
            return
        if txn.changed:
            started = time.perf_counter()
            try:
                await anyio.to_thread.run_sync(txn.commit, limiter=self._limiter)
            except Exception as exc:
                self._failed_commits += 1
                error = _as_commit_error(exc, self.name)
                code = errno.errorcode.get(error.errno or 0, "other")
                self.failed_by_errno[code] = self.failed_by_errno.get(code, 0) + 1
                log.error("%s: commit of %d messages failed: %s", self.name, len(staged), error)
                for request, _answer in staged:
                    request.fail(error)
                return
            finally:
                self._last_commit = time.perf_counter() - started
                self.commit_seconds.observe(self._last_commit)
            txn.publish()
        for request, answer in staged:
            if isinstance(answer, Deferred):  # the commit decided: a value or an error
                value, failure = answer.outcome()
                if failure is not None:
                    request.fail(failure)
                    continue
                answer = value
            self._committed += 1
            request.resolve(answer)


def _as_commit_error(exc: Exception, name: str) -> PersistenceError:
    if isinstance(exc, PersistenceError):
        return exc
    if isinstance(exc, OSError):
        wrapped = PersistenceError.from_os_error(exc, f"{name} commit")
    else:
        wrapped = PersistenceError(f"{name} commit failed: {exc!r}")
    wrapped.__cause__ = exc
    return wrapped
