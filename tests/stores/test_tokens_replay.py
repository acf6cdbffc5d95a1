"""Replaying the tokens log at load (``stores/tokens/_replay.py``,
``TokensTransaction.replay_all``): runs of records summed per cell give exactly the
document, request ids and archive day a record-by-record replay gives, key order
included; the log's batches are decoded as messages."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import msgspec
import pytest

from marcus_persist import CorruptDataError, ValidationError
from marcus_persist._config import Config
from marcus_persist._core._clock import SYSTEM_CLOCK
from marcus_persist._core._codec import encode
from marcus_persist._core._fs import OS_FS
from marcus_persist.backends._files import FileContext
from marcus_persist.backends.file._tokens import FileTokenStorage
from marcus_persist.backends.memory._patterns_tokens import MemoryTokenStorage
from marcus_persist.stores.tokens._document import normalize
from marcus_persist.stores.tokens._handler import TokensHandler
from marcus_persist.stores.tokens._messages import (
    ArchivedDays,
    LateMoved,
    LoggedMessage,
    Record,
    SetBudget,
)
from marcus_persist.stores.tokens._transaction import TokensTransaction

DAY = datetime(2026, 3, 1, 22, 30, tzinfo=UTC)


def _log(seed: int) -> list[LoggedMessage]:
    """A log of plain records over three days (ids repeated, fields left out), with
    budgets, late records, an archive cut and a late move between them."""
    rng = random.Random(seed)
    out: list[LoggedMessage] = []
    for n in range(600):
        at = DAY + timedelta(minutes=rng.randrange(3 * 24 * 60))
        if n > 300:  # after the archive cut below: only days it keeps
            at = max(at, DAY + timedelta(days=1))
        rid = rng.choice([None, f"r{n}", f"r{rng.randrange(n + 1)}"])
        out.append(
            Record(
                rng.choice(["anthropic", "openai"]),
                rng.choice([None, "m1", "m2"]),
                rng.randrange(5000),
                rng.randrange(500),
                rng.randrange(10**6),
                rng.choice([None, "p1", "p2", "p3"]),
                rng.choice([None, "t1", "t2"]),
                at,
                rid,
            )
        )
        if n == 100:
            out.append(SetBudget("p1", 5_000_000))
        if n in (150, 151, 450):
            late = Record("openai", "m1", 7, 3, 11, "p2", "t9", DAY - timedelta(days=200), None)
            out.append(msgspec.structs.replace(late, late_key=f"late-{n}"))
        if n == 300:  # drops the first day (kept 90 days), forgets ids before the third
            today = (DAY + timedelta(days=91)).date()
            out.append(ArchivedDays(today, "2026-03-02", "2026-03-03"))
        if n == 460:
            out.append(LateMoved(["late-150", "late-450"]))
    return out


def _handler() -> TokensHandler:
    handler = TokensHandler(MemoryTokenStorage(), SYSTEM_CLOCK, Config(data_dir="unused"))
    handler.seen = {"r3": "2026-03-01"}  # counted before the log: never counted again
    return handler


def _one_by_one(messages: list[LoggedMessage]) -> TokensHandler:
    handler = _handler()
    txn = TokensTransaction(handler, replaying=True)
    for message in messages:
        txn.replay(message)
    txn.publish()
    return handler


def _summed(messages: list[LoggedMessage]) -> TokensHandler:
    handler = _handler()
    txn = TokensTransaction(handler, replaying=True)
    txn.replay_all(messages)
    txn.publish()
    return handler


@pytest.mark.parametrize("seed", range(3))
def test_summed_runs_give_the_record_by_record_document(seed: int) -> None:
    messages = _log(seed)
    expected, got = _one_by_one(messages), _summed(messages)
    assert encode(got.doc) == encode(expected.doc)  # the same cells, in the same key order
    assert got.seen == expected.seen
    assert got.archived_on == expected.archived_on == (DAY + timedelta(days=91)).date()
    requests = sum(c["requests"] for c in got.doc["project_usage"].values())
    assert requests > 300  # the log was not mostly skipped


def test_a_record_of_an_archived_day_is_refused_as_one_by_one() -> None:
    cut = ArchivedDays(date(2026, 6, 1), "2026-03-03", "2026-05-30")
    old = Record("openai", None, 1, 1, 1, None, None, DAY, None)
    for replay in (_one_by_one, _summed):
        with pytest.raises(ValidationError, match="already archived"):
            replay([cut, old])


def _storage(tmp_path: Path) -> FileTokenStorage:
    return FileTokenStorage(FileContext(tmp_path, OS_FS, False, "error"))


def test_the_log_is_decoded_as_messages(tmp_path: Path) -> None:
    messages = _log(0)[:40]
    storage = _storage(tmp_path)
    storage.load(normalize)
    records = [msgspec.to_builtins(m) for m in messages]
    storage.commit(records[:25], lambda seen=None: {}, {})
    storage.commit(records[25:], lambda seen=None: {}, {})
    # opened again as after a crash: no checkpoint, the log holds both batches
    document, logged = _storage(tmp_path).load_typed(normalize, list[LoggedMessage])
    assert document is None
    assert list(logged) == messages
    assert _storage(tmp_path).load(normalize)[1] == records  # the plain records, as before


def test_a_record_that_is_not_a_batch_of_messages_is_corruption(tmp_path: Path) -> None:
    storage = _storage(tmp_path)
    storage.load(normalize)
    storage.commit([{"type": "Record", "provider": "openai"}], lambda seen=None: {}, {})
    _document, logged = _storage(tmp_path).load_typed(normalize, list[LoggedMessage])
    with pytest.raises(CorruptDataError, match="record 1: not a batch of logged messages"):
        list(logged)  # decoded as replay reaches it
    handler = TokensHandler(_storage(tmp_path), SYSTEM_CLOCK, Config(data_dir=str(tmp_path)))
    with pytest.raises(CorruptDataError, match="record 1"):
        handler.load()
    assert handler.seen == {}  # nothing of the log published
