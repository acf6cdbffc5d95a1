"""Replaying the tokens log at load: the logged batches decoded as typed messages.

A log of token usage is as long as the traffic (one record per AI call), and
replaying it one record at a time costs a few microseconds a record in
Python: minutes of log, seconds of startup. Two things make it cost the
cells instead:

* the storage decodes each logged batch straight into the messages
  (``msgspec`` with the message types, in C), where it supports that
  (:func:`load_logged`); a storage that hands back plain records has them
  converted here;
* a run of plain records (:func:`is_plain`: no message of another kind
  between them) is counted into the per-cell sums a batch uses at commit
  (:mod:`._sums`), each cell added to the document once
  (``TokensTransaction.replay_all``). Counters are integers, so the sums are
  exact, and the cells come out in the key order a record-by-record replay
  gives them.

Invariants: a request id counted once is never counted again (a record whose
id is counted already, before the run or earlier in it, is skipped, as the
handler does); a record whose day an archive holds already is refused (the
archive cut-off is read at the start of a run, which no plain record moves).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import msgspec

from marcus_persist._errors import CorruptDataError
from marcus_persist.backends._contract import TokenStorage
from marcus_persist.stores.tokens._messages import LoggedMessage, Record

__all__ = ("BATCH", "is_plain", "load_logged")

#: what the storage decodes a logged batch as
BATCH = list[LoggedMessage]


def load_logged(
    storage: TokenStorage, check: Callable[[dict[str, Any]], Any]
) -> tuple[dict[str, Any] | None, Iterable[LoggedMessage]]:
    """The storage's live document and the messages logged since, decoded (by a
    storage that decodes its log itself, as they are iterated).

    :raises CorruptDataError: a logged record that is not a message (maybe only
        once the messages are iterated)
    """
    load_typed = getattr(storage, "load_typed", None)
    if load_typed is not None:  # decodes the log's batches as messages itself
        document, typed = load_typed(check, BATCH)
        messages: Iterable[LoggedMessage] = typed
        return document, messages
    document, records = storage.load(check)
    try:
        return document, msgspec.convert(records, BATCH)
    except msgspec.ValidationError as exc:
        raise CorruptDataError("token usage log", f"a logged record: {exc}") from None


def is_plain(message: LoggedMessage) -> bool:
    """Whether *message* is a record counted live (not late): what a run of replay sums."""
    return type(message) is Record and message.late_key is None
