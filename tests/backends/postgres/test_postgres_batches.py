"""One batch on PostgreSQL answers exactly as running its messages in order would,
whichever way it is sent (one statement per run, pipelined, savepoint each)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from marcus_persist import TaskAlreadyAssigned
from marcus_persist._core._clock import SYSTEM_CLOCK
from marcus_persist._core._deferred import Deferred
from marcus_persist.backends._assignments import Assign, Message, Remove, Save
from marcus_persist.backends.postgres._assignments import PgAssignmentsHandler
from marcus_persist.backends.postgres._db import PgDatabase


@pytest.fixture
def handler(pg: dict[str, Any]) -> Iterator[PgAssignmentsHandler]:
    db = PgDatabase(pg["dsn"], pg["pg_schema"], pool_size=2)
    handler = PgAssignmentsHandler(db, None, SYSTEM_CLOCK)
    handler.load()
    yield handler
    db.close()


def batch(handler: PgAssignmentsHandler, *messages: Message) -> list[Any]:
    """Commit *messages* as one batch; each answer, or the error its caller would get."""
    txn = handler.begin()
    answers: list[Deferred] = [txn.apply(message) for message in messages]
    txn.commit()
    results: list[Any] = []
    for answer in answers:
        value, error = answer.outcome()
        results.append(error if error is not None else value)
    return results


def holders(handler: PgAssignmentsHandler) -> dict[str, str]:
    rows = handler._db_all("")
    return {worker: task for worker, _record, task in rows}


def assign(worker: str, task: str) -> Assign:
    return Assign(None, worker, task, {})


def test_a_task_freed_earlier_in_the_batch_can_be_taken_later(
    handler: PgAssignmentsHandler,
) -> None:
    batch(handler, assign("w1", "tA"))
    moved, taken, other = batch(handler, assign("w1", "tB"), assign("w2", "tA"), assign("w3", "tC"))
    assert moved["task_id"] == "tB" and taken["task_id"] == "tA" and other["task_id"] == "tC"
    assert holders(handler) == {"w1": "tB", "w2": "tA", "w3": "tC"}


def test_a_task_freed_later_in_the_batch_is_still_taken_when_asked(
    handler: PgAssignmentsHandler,
) -> None:
    batch(handler, assign("w2", "tA"))
    refused, moved = batch(handler, assign("w4", "tA"), assign("w2", "tD"))
    assert isinstance(refused, TaskAlreadyAssigned) and refused.holder == "w2"
    assert moved["task_id"] == "tD"
    assert holders(handler) == {"w2": "tD"}


def test_runs_that_name_a_worker_twice_keep_their_order(handler: PgAssignmentsHandler) -> None:
    first = batch(handler, assign("w7", "t7"))[0]
    results = batch(
        handler,
        Save(None, "w5", "t5", {}),
        Save(None, "w5", "t6", {"v": 2}),
        assign("w6", "t8"),
        Remove(None, "w6"),
        assign("w8", "t8"),
        assign("w7", "t7"),  # retried: the stored record is the answer
        assign("w9", "t7"),
    )
    assert results[:5] == [None, None, results[2], True, results[4]]
    assert results[5] == first
    assert isinstance(results[6], TaskAlreadyAssigned) and results[6].holder == "w7"
    assert holders(handler) == {"w5": "t6", "w7": "t7", "w8": "t8"}


def test_one_run_moves_inserts_and_answers_retries(handler: PgAssignmentsHandler) -> None:
    """One statement: workers with a row move (UPDATE), new ones are inserted, a
    retried assign writes nothing and answers the stored record, a save of the
    same task rewrites it, a refused one changes nothing."""
    first = batch(handler, assign("w1", "t1"), assign("w2", "t2"), Save(None, "w3", "t3", {}))
    results = batch(
        handler,
        assign("w1", "t1"),  # retried
        assign("w2", "t9"),  # moves
        assign("w4", "t4"),  # new
        assign("w5", "t3"),  # held by w3
    )
    assert results[0] == first[0]
    assert results[1]["task_id"] == "t9" and results[2]["task_id"] == "t4"
    assert isinstance(results[3], TaskAlreadyAssigned) and results[3].holder == "w3"
    saved = batch(handler, Save(None, "w3", "t3", {"v": 2}), Save(None, "w6", "t6", {}))
    assert saved == [None, None]
    assert holders(handler) == {"w1": "t1", "w2": "t9", "w3": "t3", "w4": "t4", "w6": "t6"}
    assert handler._db_record(("w", "", "w3"))["task_data"] == {"v": 2}  # type: ignore[index]
    assert handler._db_record(("w", "", "w1")) == first[0]


def test_a_run_of_updates_answers_each_in_order(handler: PgAssignmentsHandler) -> None:
    from marcus_persist import NotFound, ValidationError
    from marcus_persist.backends._assignments import Update

    batch(handler, *(assign(f"w{n}", f"t{n}") for n in range(1, 7)))

    def progress(record: dict[str, Any]) -> dict[str, Any]:
        return {**record, "progress_percentage": 10}

    def boom(record: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("boom")

    results = batch(
        handler,
        Update(None, "w1", progress),
        Update(None, "w2", boom),
        Update(None, "nobody", progress),
        Update(None, "w3", lambda r: None),  # frees t3 ...
        Update(None, "w4", lambda r: {**r, "task_id": "t3"}),  # ... which w4 takes
        Update(None, "w5", lambda r: {**r, "task_id": "t1"}),  # held by w1
        Update(None, "w6", lambda r: {"no": "task"}),
    )
    assert results[0]["progress_percentage"] == 10
    assert isinstance(results[1], RuntimeError)
    assert isinstance(results[2], NotFound)
    assert results[3] is None
    assert results[4]["task_id"] == "t3"
    assert isinstance(results[5], TaskAlreadyAssigned) and results[5].holder == "w1"
    assert isinstance(results[6], ValidationError)
    assert holders(handler) == {"w1": "t1", "w2": "t2", "w4": "t3", "w5": "t5", "w6": "t6"}
    assert handler._db_record(("w", "", "w1")) == results[0]


def test_the_whole_collection_storage_round_trips(handler: PgAssignmentsHandler) -> None:
    """``backend.assignments()``: what a copy between backends goes through."""
    from marcus_persist.backends._assignments import check_records
    from marcus_persist.backends._contract import KeyedWrite
    from marcus_persist.backends.postgres._backend import PostgresAssignmentStorage

    storage = PostgresAssignmentStorage(handler.db)
    marcus = {"task_id": "t1", "assigned_at": "2025-08-31T10:15:00", "custom": {"kept": True}}
    storage.commit(
        {
            None: KeyedWrite({}, {"w1": marcus, "w2": {"task_id": "t2"}}),
            "alpha": KeyedWrite({}, {"w1": {"task_id": "t1"}}),
        }
    )
    storage.commit({None: KeyedWrite({}, {"w2": None})})
    assert storage.load(check_records) == {None: {"w1": marcus}, "alpha": {"w1": {"task_id": "t1"}}}
