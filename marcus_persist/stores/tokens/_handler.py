"""The tokens actor's side: the committed document, loaded and replayed; one
transaction per batch (:mod:`._transaction`).

Invariants: the committed document is never mutated; a transaction copies
only the sections and cells it touches, so readers on the event loop always
see a whole committed document. Archived days are written (durably) before
the live document that no longer holds them, and reports read the live
document first, then the archives: a day is never missed, and a day found in
both is the same day (taken once, by day key).
"""

from __future__ import annotations

from datetime import date
from typing import Any

import anyio

from marcus_persist._config import Config
from marcus_persist._core._clock import Clock
from marcus_persist._errors import CorruptDataError, ValidationError
from marcus_persist.backends._contract import TokenStorage
from marcus_persist.stores.tokens._deltas import fold_all, reloaded
from marcus_persist.stores.tokens._document import empty_document, normalize
from marcus_persist.stores.tokens._late import archived_keys
from marcus_persist.stores.tokens._messages import Archive, Record, SetBudget
from marcus_persist.stores.tokens._replay import load_logged
from marcus_persist.stores.tokens._transaction import TokensTransaction

__all__ = ("Archive", "Record", "SetBudget", "TokensHandler")


class TokensHandler:
    def __init__(self, storage: TokenStorage, clock: Clock, config: Config) -> None:
        self.storage = storage
        self.clock = clock
        self.keep_days = config.token_keep_days
        self.dedupe_days = config.token_dedupe_days
        self.prices = config.token_prices
        # the actor is the only writer of these; readers only look
        self.doc: dict[str, Any] = empty_document()
        self.seen: dict[str, str] = {}  # request_id -> the day it was recorded
        self.archived_on: date | None = None
        self.archived: set[str] = set()  # keys of the late records the archives hold
        #: the storage's version the document was loaded at (shared storage only)
        self.version = -1
        self.delta_batches = 0  # delta rows written since this process's last roll-up

    def load(self) -> None:
        """Read the live document, ours or Marcus's, then replay the records logged
        since it was written (blocking; at startup)."""
        raw, logged = load_logged(self.storage, normalize)
        self.doc = normalize(raw) if raw is not None else empty_document()
        self.doc = fold_all(self.doc, getattr(self.storage, "loaded_deltas", []))
        self.version = getattr(self.storage, "loaded_version", -1)
        # request ids live in ``seen`` only; the document gets them when it is written
        self.seen = {rid: day for day, ids in self.doc.pop("request_ids").items() for rid in ids}
        self.seen.update(getattr(self.storage, "loaded_requests", {}))  # claimed by deltas
        self.doc["request_ids"] = {}
        for month in self.storage.archive_months():
            self.archived |= archived_keys(self.storage.archive(month))
        txn = TokensTransaction(self, replaying=True)  # nothing logged: publishes nothing
        try:
            txn.replay_all(logged)
        except ValidationError as exc:
            raise CorruptDataError("token usage log", f"a logged record: {exc}") from None
        txn.publish()
        loaded = getattr(self.storage, "loaded", None)
        if loaded is not None:  # a storage that writes the document later, from a thread
            view = TokensTransaction(self, replaying=True)
            view._doc = self.doc  # never mutated: a transaction copies what it changes
            loaded(view._document, dict(self.seen))

    def begin(self) -> TokensTransaction:
        return TokensTransaction(self)

    async def current(self) -> dict[str, Any]:
        """The committed document a read is to use. On a storage several processes
        share (it has ``version``): this process's copy if no process committed since
        it was loaded, else the document reloaded now, so the read sees every record
        acknowledged before it began (``postgres/_versions.py``).

        The copy checked is the ``(version, document)`` pair taken when the read
        began, and that document is the one returned: while the check runs in a
        worker thread, the actor or another read may install another pair, and the
        version checked says nothing about that one. A reload replaces the copy
        only if it is newer: reads finishing out of order never move it back.
        """
        if not hasattr(self.storage, "version"):
            return self.doc
        version, doc = self.version, self.doc  # one pair, taken together
        fresh = await anyio.to_thread.run_sync(reloaded, self.storage, version)
        if fresh is None:
            return doc
        if fresh[0] > self.version:  # swapped whole, on the event loop
            self.version, self.doc = fresh
        return fresh[1]
