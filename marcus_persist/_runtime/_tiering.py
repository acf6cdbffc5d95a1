"""The runtime's tiering job: sealed token usage archives move to ``archive_url``
(the audit trail's move with its rotation, :mod:`marcus_persist.backends.file._audit`)."""

from __future__ import annotations

import logging

import anyio

from marcus_persist._errors import PersistenceError
from marcus_persist.stores.tokens import TokenStore

__all__ = ("TIER_EVERY_SECONDS", "run_token_tiering")

log = logging.getLogger("marcus_persist")

#: a month is sealed on the first batch of a day at the most: an hour is plenty
TIER_EVERY_SECONDS = 3600.0


async def run_token_tiering(tokens: TokenStore, every: float = TIER_EVERY_SECONDS) -> None:
    """Until cancelled: move the sealed monthly archives, then wait *every* seconds.
    A failed upload is logged; what did not go up stays on the disk for the next pass."""
    while True:
        try:
            moved = await tokens.tier()
        except (PersistenceError, OSError) as exc:
            log.warning("token usage archives stay on disk for now: %s", exc)
        else:
            if moved:
                log.info("token usage archives moved to archive_url: %s", moved)
        await anyio.sleep(every)
