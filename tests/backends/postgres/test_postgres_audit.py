"""The audit trail on PostgreSQL: day partitions made on demand, the same query API,
rotation drops partitions past retention, two runtimes append to one trail."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import anyio
import psycopg
import pytest

from marcus_persist import open_runtime
from marcus_persist.backends._audit import RotationPolicy
from marcus_persist.backends.postgres._audit import PostgresAuditStorage, partition_name
from marcus_persist.backends.postgres._db import PgDatabase
from tests.stores.audit_helpers import FakeClock

pytestmark = pytest.mark.anyio

MAY31 = datetime(2026, 5, 31, 23, 59, 59, 900000, tzinfo=UTC)


def partitions(pg: dict[str, Any]) -> list[str]:
    with psycopg.connect(pg["dsn"]) as conn:
        rows = conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " JOIN pg_class p ON p.oid = i.inhparent"
            " JOIN pg_namespace n ON n.oid = p.relnamespace"
            " WHERE n.nspname = %s AND p.relname = 'audit_events' ORDER BY 1",
            (pg["pg_schema"],),
        ).fetchall()
    return [name for (name,) in rows]


async def test_events_land_in_the_partition_of_their_utc_day(pg: dict[str, Any]) -> None:
    clock = FakeClock(MAY31)
    async with open_runtime(**pg, clock=clock) as rt:
        for n in range(3):
            await rt.audit.log_event("tool_call", "a", "agent", "t", {"n": n})
        clock.moment = MAY31 + timedelta(seconds=0.2)  # 2026-06-01
        for n in range(3, 5):
            await rt.audit.log_event("tool_call", "b", "agent", "get_task", {"n": n})
        assert [e["details"]["n"] async for e in rt.audit.query()] == [0, 1, 2, 3, 4]
        june = [e["details"]["n"] async for e in rt.audit.query(date(2026, 6, 1))]
        assert june == [3, 4]
        assert [e["client_id"] async for e in rt.audit.query(client_id="b")] == ["b", "b"]
        stats = await rt.audit.get_usage_stats()
        assert stats["total_events"] == 5
        assert stats["unique_clients"] == 2
        assert stats["bad_lines"] == 0
    assert partitions(pg) == ["audit_events_20260531", "audit_events_20260601"]
    async with open_runtime(**pg) as rt:  # durable: a new runtime reads it all back
        assert len([e async for e in rt.audit.query()]) == 5


async def test_two_runtimes_append_to_one_trail(pg: dict[str, Any]) -> None:
    clock = FakeClock(MAY31 - timedelta(hours=1))
    async with open_runtime(**pg, clock=clock) as a, open_runtime(**pg, clock=clock) as b:

        async def log(rt: Any, who: str) -> None:
            for n in range(50):
                await rt.audit.log_event("tool_call", who, "agent", "t", {"n": n})

        async with anyio.create_task_group() as tg:
            for rt, who in ((a, "a"), (b, "b"), (a, "a2"), (b, "b2")):
                tg.start_soon(log, rt, who)
        events = [e async for e in b.audit.query()]
    assert len(events) == 200
    for who in ("a", "b", "a2", "b2"):  # each caller's events in its own order
        assert [e["details"]["n"] for e in events if e["client_id"] == who] == list(range(50))


async def test_rotation_drops_days_past_retention(pg: dict[str, Any]) -> None:
    clock = FakeClock(datetime(2026, 3, 1, 12, tzinfo=UTC))
    async with open_runtime(**pg, clock=clock) as rt:
        for day in range(10):
            clock.moment = datetime(2026, 3, 1 + day, 12, tzinfo=UTC)
            await rt.audit.log_event("tool_call", "a", "agent", "t", {"day": day})
    db = PgDatabase(pg["dsn"], pg["pg_schema"], pool_size=2)
    try:
        storage = PostgresAuditStorage(db)
        storage.load()
        assert storage.rotate(date(2026, 3, 10), RotationPolicy()).deleted == []  # no retention
        report = storage.rotate(date(2026, 3, 10), RotationPolicy(retention_days=3))
        assert report.deleted == [partition_name(date(2026, 3, d)) for d in range(1, 7)]
        assert [s.first for s in storage.sources()] == [date(2026, 3, d) for d in range(7, 11)]
        assert storage.rotate(date(2026, 3, 10), RotationPolicy(retention_days=3)).deleted == []
        # a day dropped under a running writer is made again on its next append
        storage.append({date(2026, 3, 1): [b'{"late": true}\n']})
        assert partition_name(date(2026, 3, 1)) in partitions(pg)
        other = PostgresAuditStorage(db)  # another process, which dropped it meanwhile
        assert other.rotate(date(2026, 3, 10), RotationPolicy(retention_days=3)).deleted == [
            partition_name(date(2026, 3, 1))
        ]
        storage.append({date(2026, 3, 1): [b'{"later": true}\n']})
        lines = storage.sources()[0].open().read().splitlines()
        assert lines == [b'{"later": true}']
    finally:
        db.close()
    async with open_runtime(**pg) as rt:
        days = [e["details"]["day"] async for e in rt.audit.query() if "details" in e]
        assert days == [6, 7, 8, 9]


async def test_a_day_is_read_a_page_at_a_time(
    pg: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from marcus_persist.backends.postgres import _audit as _pg_audit

    monkeypatch.setattr(_pg_audit, "PAGE", 7)
    clock = FakeClock(datetime(2026, 4, 2, 9, tzinfo=UTC))
    async with open_runtime(**pg, clock=clock) as rt:
        async with anyio.create_task_group() as tg:
            for n in range(30):
                tg.start_soon(rt.audit.log_event, "tool_call", "a", "agent", "t", {"n": n})
        found = sorted([e["details"]["n"] async for e in rt.audit.query()])
        assert found == list(range(30))
        assert (await rt.audit.get_usage_stats())["total_events"] == 30
