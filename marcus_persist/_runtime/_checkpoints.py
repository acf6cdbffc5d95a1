"""Age-based checkpoints off the request path: a timer in the runtime's task group.

A commit starts a checkpoint when its store's log is due one (size or age), but a
log that no commit follows would otherwise wait for the next one (or the close)
however old it grows. Every quarter of ``wal_checkpoint_seconds`` this timer asks
the backend (a hybrid forwards to each of its engines that keeps a write-ahead
log) to start the checkpoints that are due (each in its own thread, beside
commits); it never blocks the event loop.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator

import anyio

from marcus_persist._errors import PersistenceError
from marcus_persist.backends import Backend, HybridBackend

__all__ = ("aged_checkpoints", "checkpoints_held", "run_aged_checkpoints")

log = logging.getLogger("marcus_persist")


def aged_checkpoints(backend: Backend) -> Callable[[], list[str]] | None:
    """What starts the due age-based checkpoints of *backend* (a hybrid's starts its
    engines'); ``None`` if no store of it keeps a write-ahead log."""
    if isinstance(backend, HybridBackend) and not backend.keeps_logs:
        return None
    start: Callable[[], list[str]] | None = getattr(backend, "checkpoint_aged", None)
    return start


async def run_aged_checkpoints(backend: Backend, seconds: float) -> None:
    """Until cancelled: every ``seconds / 4``, start the checkpoints that are due."""
    start = aged_checkpoints(backend)
    if start is None:  # nothing to wait for
        return
    while True:
        await anyio.sleep(max(seconds / 4, 0.01))
        try:
            await anyio.to_thread.run_sync(start)
        except (OSError, PersistenceError) as exc:  # the logs keep everything meanwhile
            log.error("age-based checkpoint could not start: %s", exc)


@contextlib.contextmanager
def checkpoints_held(backend: Backend) -> Iterator[None]:
    """No checkpoint of any engine of *backend* runs inside the block (blocking: call
    it in a worker thread). A backup copies each log with the files it completes."""
    held: Callable[[], contextlib.AbstractContextManager[None]] | None = getattr(
        backend, "checkpoints_held", None
    )
    if held is None:  # no write-ahead log
        yield
        return
    with held():
        yield
