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
  cancelled, and on the way out every message still in the inbox is too;
* with a :class:`PipelinedHandler`, batch *k+1* is staged on top of batch *k*
  while *k* commits (:mod:`._pipeline`); commits still run one at a time, in
  order, answers go out in commit order, and a failed *k* fails *k+1*.
"""

from __future__ import annotations

import errno
import logging
import math
import time
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar, cast

import anyio
from anyio.abc import TaskStatus

from marcus_persist._core._deferred import Deferred
from marcus_persist._core._mailbox import ActorStatistics, Barrier, Mailbox, Request
from marcus_persist._core._metrics import BATCH_SIZE_BOUNDS, COMMIT_SECONDS_BOUNDS, Histogram
from marcus_persist._core._pipeline import Pipeline
from marcus_persist._core._txn import Handler as Handler
from marcus_persist._core._txn import PipelinedHandler as PipelinedHandler
from marcus_persist._core._txn import Staged as Staged
from marcus_persist._core._txn import Transaction as Transaction
from marcus_persist._errors import PersistenceError, RuntimeClosed

__all__ = ("Actor", "Handler", "PipelinedHandler", "Staged", "Transaction")

log = logging.getLogger("marcus_persist")

M = TypeVar("M")

FINAL_FLUSH_SECONDS = 30.0


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
        self._pipeline: Pipeline[M] | None = None
        if isinstance(handler, PipelinedHandler):
            self._pipeline = Pipeline(
                self.mailbox.inbox,
                handler,
                name=name,
                max_batch=max_batch,
                settle=self._settle,
                count=self._count,
            )

    @property
    def pipelined(self) -> bool:
        """Whether batch *k+1* is staged while batch *k* commits."""
        return self._pipeline is not None

    def request(self, message: M) -> Coroutine[Any, Any, Any]:
        """``await actor.request(message)``: the mailbox's request (no frame of its own)."""
        return self.mailbox.request(message)

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
        task_status.started()
        pipeline = self._pipeline
        try:
            if pipeline is not None:
                await pipeline.serve()
            else:
                await self._serve()
        except anyio.get_cancelled_exc_class():
            # The host is going away: stop intake, then commit what was received.
            self.mailbox.close()
            with anyio.move_on_after(FINAL_FLUSH_SECONDS, shield=True):
                if pipeline is not None:
                    await pipeline.land()
                while batch := self._drain(limit=self._max_batch):
                    await self._handle(batch)
            raise
        finally:
            # Whatever is still queued (flush timed out, or the actor failed)
            # is answered, never left hanging; late senders get RuntimeClosed.
            self.mailbox.close()
            closed = RuntimeClosed(f"{self.name}: the runtime closed before this ran")
            if pipeline is not None:
                pipeline.abandon(closed)
            for request in self._drain(limit=None):
                request.fail(closed)
            self.mailbox.inbox.close()

    async def _serve(self) -> None:
        inbox = self.mailbox.inbox
        while True:
            try:
                batch = [await inbox.receive()]
            except anyio.EndOfStream:
                return
            batch.extend(self._drain(limit=self._max_batch - 1))
            with anyio.CancelScope(shield=True):
                await self._handle(batch)

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
        self._count(len(batch))
        txn = self._handler.begin()
        staged = [item for request in batch if (item := self._stage(txn, request)) is not None]
        if staged:
            await self._settle(txn, staged)

    def _count(self, size: int) -> None:
        self._batches += 1
        self._items += size
        self.batch_sizes.observe(size)

    @staticmethod
    def _stage(txn: Transaction[M], request: Request[Any]) -> Staged | None:
        """Apply one message to *txn*; ``None`` if it failed alone (its caller is told)."""
        try:
            answer = txn.apply(request.message)
        except Exception as exc:  # the message fails alone
            request.fail(exc)
            return None
        return request, answer

    async def _settle(
        self, txn: Transaction[M], staged: list[Staged], durable: Callable[[], None] | None = None
    ) -> PersistenceError | None:
        """Commit *txn* (in the worker thread), publish it, call *durable*, then answer
        its callers in order.

        :returns: the commit's error (every caller of *staged* got it), else ``None``
        """
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
                return error
            finally:
                self._last_commit = time.perf_counter() - started
                self.commit_seconds.observe(self._last_commit)
            txn.publish()
        if durable is not None:
            durable()
        committed = len(staged)
        for request, answer in staged:
            if answer.__class__ is Deferred:  # the commit decided: a value or an error
                value, failure = answer.outcome()
                if failure is not None:
                    request.fail(failure)
                    committed -= 1
                    continue
                answer = value
            request.resolve(answer)
        self._committed += committed
        return None


def _as_commit_error(exc: Exception, name: str) -> PersistenceError:
    if isinstance(exc, PersistenceError):
        return exc
    if isinstance(exc, OSError):
        wrapped = PersistenceError.from_os_error(exc, f"{name} commit")
    else:
        wrapped = PersistenceError(f"{name} commit failed: {exc!r}")
    wrapped.__cause__ = exc
    return wrapped
