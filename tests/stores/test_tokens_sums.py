"""A batch's records summed per cell (``stores/tokens/_sums.py``) stage exactly what
adding them record by record stages: the same document, key order included, the
same answers, the same logged records."""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from marcus_persist._config import Config
from marcus_persist.stores.tokens._handler import TokensHandler
from marcus_persist.stores.tokens._messages import (
    Archive,
    LoggedMessage,
    Message,
    Record,
    SetBudget,
)
from marcus_persist.stores.tokens._transaction import TokensTransaction

START = datetime(2026, 3, 8, 23, 0, tzinfo=UTC)
KEEP_DAYS = 3  # live: START's day and the 3 before it
CONFIG = Config(token_keep_days=KEEP_DAYS, token_dedupe_days=2)


class Clock:
    def __init__(self) -> None:
        self.moment = START

    def now(self) -> datetime:
        return self.moment


class Storage:
    """Token storage in memory: every commit's records and documents, the archives."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.documents: list[dict[str, Any]] = []
        self.archives: dict[str, dict[str, Any]] = {}

    def load(self, check: Any) -> tuple[None, list[dict[str, Any]]]:
        return None, []

    def archive_months(self) -> list[str]:
        return sorted(self.archives)

    def archive(self, month: str) -> dict[str, Any] | None:
        return json.loads(json.dumps(self.archives[month])) if month in self.archives else None

    def commit(
        self,
        records: list[dict[str, Any]],
        document: Callable[..., dict[str, Any]],
        archives: Mapping[str, dict[str, Any]],
    ) -> None:
        self.archives.update(archives)
        self.records.extend(records)
        whole = document()
        whole.pop("last_updated")
        self.documents.append(whole)


#: one step of a batch: a message, or ``hours`` to move the clock by
Step = Message | float

records = st.builds(
    lambda back, hour, provider, model, project, task, rid, tokens: Record(
        provider,
        model,
        tokens,
        tokens // 2,
        tokens * 3,
        project,
        task,
        (START - timedelta(days=back)).replace(hour=hour, minute=7),
        rid,
    ),
    st.sampled_from([0, 1, KEEP_DAYS, KEEP_DAYS + 1]),  # the window's edge, and past it
    st.sampled_from([0, 12, 23]),
    st.sampled_from(["anthropic", "openai"]),
    st.sampled_from([None, "m1", "m2"]),
    st.sampled_from([None, "p1", "p2"]),
    st.sampled_from([None, "t1", "t2", "t3"]),
    st.sampled_from([None, *(f"r{n}" for n in range(8))]),
    st.integers(0, 10_000),
)
steps = st.lists(
    st.one_of(
        records,
        records,
        records,
        st.builds(SetBudget, st.sampled_from(["p1", "p2"]), st.sampled_from([None, 5])),
        st.just(Archive(START.date())),
        st.sampled_from([0.5, 1.0]),  # the clock moves (past midnight: the window moves)
    ),
    max_size=40,
)


def _run(batches: list[list[Step]], record_by_record: bool) -> tuple[Any, ...]:
    """Stage each batch in one transaction (with *record_by_record*, the staged
    cells are brought up to date after every message), commit and publish it."""
    clock, storage = Clock(), Storage()
    handler = TokensHandler(storage, clock, CONFIG)
    handler.load()
    handler.archived_on = START.date()  # today's archiving is done (it would stage every sum)
    answers: list[Any] = []
    numbers = itertools.count()  # the keys of late records without a request id, alike
    with mock.patch.object(uuid, "uuid4", lambda: uuid.UUID(int=next(numbers))):
        for batch in batches:
            _stage(handler, clock, batch, record_by_record, answers)
    # the log replayed at load: one transaction, late records come logged late
    replayed = TokensHandler(Storage(), clock, CONFIG)
    replay = TokensTransaction(replayed, replaying=True)
    for raw in storage.records:
        replay.replay(msgspec.convert(raw, LoggedMessage))
        if record_by_record:
            replay.staged()
    replay.publish()
    return (
        json.dumps(replayed.doc),
        replayed.seen,
        answers,
        json.dumps(handler.doc),
        handler.seen,
        storage.records,
        json.dumps(storage.documents),
        json.dumps(storage.archives, sort_keys=True),
    )


def _stage(
    handler: TokensHandler,
    clock: Clock,
    batch: list[Step],
    record_by_record: bool,
    answers: list[Any],
) -> None:
    txn = handler.begin()
    for step in batch:
        if isinstance(step, float):
            clock.moment += timedelta(hours=step)
            continue
        try:
            answers.append(txn.apply(step))
        except Exception as exc:  # fails alone, as in the actor
            answers.append(repr(exc))
        if record_by_record:
            txn.staged()
    if txn.changed:
        txn.commit()
        txn.publish()


@settings(max_examples=150, deadline=None)
@given(st.lists(steps, min_size=1, max_size=4))
def test_summed_batches_stage_what_record_by_record_staging_does(
    batches: list[list[Step]],
) -> None:
    assert _run(batches, record_by_record=False) == _run(batches, record_by_record=True)


def test_a_day_only_this_batch_counted_stays_live_when_the_window_moves() -> None:
    """Midnight passes inside a batch: the oldest live day leaves the window, and a
    later record of that day is still counted live (its day is live: this batch
    counted it), never sent to the archive as late."""
    edge = (START - timedelta(days=KEEP_DAYS)).replace(hour=5)  # the oldest day still live
    first = Record("anthropic", "m1", 10, 1, 1, "p1", "t1", edge, "a")
    after = msgspec.structs.replace(first, request_id="b", task_id="t2")
    batch: list[Step] = [first, 2.0, after]  # 23:00 + 2 h: the next day
    summed = _run([batch], record_by_record=False)
    assert summed == _run([batch], record_by_record=True)
    assert summed[2] == [True, True]
    # both counted live, then the first record of the new day moved their day away whole
    archived = json.loads(summed[7])["2026-03"]["daily_usage"][edge.date().isoformat()]
    assert archived["anthropic"]["requests"] == 2
    assert edge.date().isoformat() not in json.loads(summed[3])["daily_usage"]
    assert not json.loads(summed[3])["late"]


def test_a_transaction_with_only_summed_records_is_changed() -> None:
    """Nothing reached the staged cells yet, and the batch still commits."""
    handler = TokensHandler(Storage(), Clock(), Config())
    handler.load()
    handler.archived_on = START.date()  # today's archiving is done: nothing else to stage
    txn: TokensTransaction = handler.begin()
    assert not txn.changed
    txn.apply(Record("openai", None, 1, 1, 1, None, None, START, None))
    assert txn.changed


def test_a_replayed_late_record_comes_after_the_records_logged_before_it() -> None:
    """A replay takes a record logged late as late (no lateness check stages the
    sums first): its project's tasks still come in the order they were logged."""
    live = Record("anthropic", None, 1, 1, 1, "p1", "t1", START, "a")
    late = Record("anthropic", None, 1, 1, 1, "p1", "t2", START - timedelta(days=9), "b")
    summed = _run([[live, late]], record_by_record=False)
    assert summed == _run([[live, late]], record_by_record=True)
    assert json.loads(summed[0])["project_usage"]["p1"]["tasks"] == ["t1", "t2"]
