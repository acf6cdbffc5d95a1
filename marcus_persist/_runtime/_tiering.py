"""The runtime's tiering job: sealed token usage archives move to ``archive_url``
(the audit trail's move with its rotation, :mod:`marcus_persist.backends.file._audit`).

Each pass is one bounded remote call (:meth:`TokenStore.tier`, under
:func:`marcus_persist._core._bounded.call_remote`): one that outlives its deadline
is abandoned and counted as a failed attempt, and one still running when the
runtime closes is abandoned too, so a remote that hangs never holds a write or
the close. An archive leaves the disk only once its upload is verified, so an
abandoned pass leaves each archive either on the disk or verified up.
"""

from __future__ import annotations

import logging

import anyio
import msgspec

from marcus_persist._errors import PersistenceError
from marcus_persist.stores.tokens import TokenStore

__all__ = ("TIER_EVERY_SECONDS", "TieringMetrics", "TokenTiering")

log = logging.getLogger("marcus_persist")

#: a month is sealed on the first batch of a day at the most: an hour is plenty
TIER_EVERY_SECONDS = 3600.0


class TieringMetrics(msgspec.Struct, frozen=True):
    """What ``rt.token_tiering.metrics()`` says."""

    #: passes that ended, moved or failed
    passes: int
    #: months moved to ``archive_url`` (verified up, gone from the disk)
    moved: int
    #: failed passes (an upload failed, or the remote did not answer in time)
    retries: int
    last_error: str | None


class TokenTiering:
    """Moves the sealed monthly archives of *tokens* every *every* seconds."""

    def __init__(self, tokens: TokenStore, every: float = TIER_EVERY_SECONDS) -> None:
        self.tokens = tokens
        self.every = every
        self._passes = self._moved = self._retries = 0
        self._last_error: str | None = None
        #: set at the end of every pass (a fresh event for the next one)
        self.pass_ended = anyio.Event()

    def metrics(self) -> TieringMetrics:
        return TieringMetrics(self._passes, self._moved, self._retries, self._last_error)

    async def run(self) -> None:
        """Until cancelled: move the sealed monthly archives, then wait. A failed
        pass is logged and counted; what did not go up stays on the disk for the next."""
        while True:
            await self.tier_once()
            await anyio.sleep(self.every)

    async def tier_once(self) -> None:
        try:
            moved = await self.tokens.tier()
        except (PersistenceError, OSError) as exc:  # TimeoutError: an OSError
            self._retries += 1
            self._last_error = str(exc) or type(exc).__name__
            log.warning("token usage archives stay on disk for now: %s", self._last_error)
        else:
            self._moved += len(moved)
            if moved:
                log.info("token usage archives moved to archive_url: %s", moved)
        self._passes += 1
        ended, self.pass_ended = self.pass_ended, anyio.Event()
        ended.set()
