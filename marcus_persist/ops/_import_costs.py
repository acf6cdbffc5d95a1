"""Marcus's ``CostStore`` (``~/.marcus/costs.db``, ``src/cost_tracking/cost_store.py``)
into token usage, for ``import-marcus --costs PATH``.

Marcus keeps one ``token_events`` row per LLM call and prices it at query
time (``v_event_cost_inclusive``: its ``model_prices`` row in force at the
call, 0 when unpriced). Each row becomes one ``rt.tokens.record`` at the
row's own time, with that cost, its provider, model, project and task.
Marcus's ``total_tokens`` counts cache tokens too, so ``input_tokens`` here
is input + cache creation + cache read (the totals agree); the row's
``request_id`` (else ``costs-<event_id>``) makes a second record of the same
row count once. The database is only read (opened read-only).

Nothing is dropped silently: a row that cannot be recorded (a name our
rules refuse, negative tokens) is reported with the reason.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Generator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Any

import anyio
import msgspec

from marcus_persist._config import Config
from marcus_persist._errors import ValidationError
from marcus_persist._runtime import Runtime, open_runtime

__all__ = ("CostImport", "CostRow", "import_costs", "read_cost_rows")

#: records in flight at once (group commit batches them)
CONCURRENCY = 256


class CostRow(msgspec.Struct, frozen=True):
    event_id: int
    provider: str
    model: str
    input_tokens: int  #: input + cache creation + cache read
    output_tokens: int
    cost_usd: float | None  #: ``None``: the database has no price view
    project_id: str
    task_id: str | None
    request_id: str
    at: datetime


class CostImport(msgspec.Struct):
    source: str
    rows: int = 0  #: rows read from ``token_events``
    counted: int = 0  #: recorded into token usage
    already_counted: int = 0  #: a request id recorded before (counted once)
    tokens: int = 0  #: tokens of the rows counted (Marcus's ``total_tokens``)
    skipped: list[tuple[int, str]] = []  #: ``(event_id, reason)`` of rows not recorded


def read_cost_rows(path: Path) -> Generator[CostRow | tuple[int, str], None, None]:
    """Every row of ``token_events``, oldest first: a :class:`CostRow`, or
    ``(event_id, reason)`` when the row cannot be read as one (blocking; streamed).

    :raises sqlite3.DatabaseError: not a CostStore database
    """
    uri = f"{path.absolute().as_uri()}?mode=ro"
    # read in chunks from worker threads (one at a time): not tied to one thread
    with contextlib.closing(sqlite3.connect(uri, uri=True, check_same_thread=False)) as conn:
        conn.row_factory = sqlite3.Row
        views = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='view'")}
        if "v_event_cost_inclusive" in views:
            source = "v_event_cost_inclusive"
        else:  # an older CostStore: no price view, priced by token_prices here
            source = "(SELECT *, NULL AS cost_usd FROM token_events)"
        query = (
            "SELECT event_id, provider, model, input_tokens, cache_creation_tokens, "
            "cache_read_tokens, output_tokens, cost_usd, project_id, task_id, request_id, "
            f"timestamp FROM {source} ORDER BY timestamp, event_id"
        )
        for row in conn.execute(query):
            try:
                yield _row(row)
            except (TypeError, ValueError) as exc:
                yield (int(row["event_id"]), str(exc))


def _row(row: sqlite3.Row) -> CostRow:
    cached = [row["cache_creation_tokens"] or 0, row["cache_read_tokens"] or 0]
    inputs = [row["input_tokens"], *cached]
    if not all(isinstance(n, int) for n in [*inputs, row["output_tokens"]]):
        raise ValueError("token counts are not integers")
    cost = row["cost_usd"]
    return CostRow(
        event_id=int(row["event_id"]),
        provider=str(row["provider"]),
        model=str(row["model"]),
        input_tokens=sum(inputs),
        output_tokens=row["output_tokens"],
        cost_usd=None if cost is None else float(cost),
        project_id=str(row["project_id"]),
        task_id=None if row["task_id"] is None else str(row["task_id"]),
        request_id=str(row["request_id"] or f"costs-{row['event_id']}"),
        at=_moment(row["timestamp"]),
    )


def _moment(value: Any) -> datetime:
    """Marcus's ``...T..:..:..sssZ`` (or an older ``YYYY-MM-DD HH:MM:SS``, UTC)."""
    moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


async def record_costs(rt: Runtime, path: Path) -> CostImport:
    """Record every row of the CostStore at *path* into ``rt.tokens``."""
    report = CostImport(str(path))
    reader = read_cost_rows(path)

    async def one(row: CostRow) -> None:
        try:
            counted = await rt.tokens.record(
                row.provider,
                row.input_tokens,
                row.output_tokens,
                cost_usd=row.cost_usd,
                model=row.model,
                project_id=row.project_id,
                at=row.at,
                request_id=row.request_id,
                task_id=row.task_id,
            )
        except ValidationError as exc:
            report.skipped.append((row.event_id, str(exc)))
            return
        if counted:
            report.counted += 1
            report.tokens += row.input_tokens + row.output_tokens
        else:
            report.already_counted += 1

    try:
        while rows := await anyio.to_thread.run_sync(lambda: list(islice(reader, CONCURRENCY))):
            report.rows += len(rows)
            async with anyio.create_task_group() as tg:
                for row in rows:
                    if isinstance(row, CostRow):
                        tg.start_soon(one, row)
                    else:
                        report.skipped.append(row)
    finally:
        await anyio.to_thread.run_sync(reader.close)  # the connection, in a thread too
    report.skipped.sort()
    return report


def import_costs(staging: Path, path: Path, target: Config) -> CostImport:
    """Record the CostStore at *path* into the token usage of the staging directory
    *staging* (file backend, no fsync: the migration copies and verifies it),
    kept as *target* keeps it (its ``token_keep_days``, ``token_prices``); blocking.

    :raises sqlite3.DatabaseError: *path* is not a CostStore database
    """

    async def run() -> CostImport:
        config = Config(
            data_dir=str(staging),
            backend="file",
            durability="none",
            token_keep_days=target.token_keep_days,
            token_prices=target.token_prices,
        )
        async with open_runtime(config) as rt:
            return await record_costs(rt, path)

    # a loop of its own in a thread of its own: the caller may be inside an event loop
    with ThreadPoolExecutor(1, thread_name_prefix="import-costs") as pool:
        return pool.submit(anyio.run, run).result()
