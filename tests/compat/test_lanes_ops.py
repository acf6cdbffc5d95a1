"""A second engine's database in the data directory (Marcus's ``marcus.db``, a compat
lane) is backed up with the stores, checked by ``doctor`` and counted by ``stats``."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from marcus_persist._core._snapshot import verify_backup
from marcus_persist._runtime import Runtime
from marcus_persist._runtime._stats import collect_stats
from marcus_persist.compat import FilePersistence, SQLitePersistence
from marcus_persist.ops.backup import restore_backup
from marcus_persist.ops.doctor import diagnose

pytestmark = pytest.mark.anyio


async def _backup(rt: Runtime) -> Path:
    return await rt.backup()


async def _lane_names(rt: Runtime) -> list[str]:
    return [actor.name for actor in rt.lane_actors]


@pytest.mark.parametrize("first", ["file", "sqlite"])
async def test_a_backup_holds_the_lane_database(tmp_path: Path, first: str) -> None:
    data = tmp_path / "data"
    data.mkdir()
    # either order: a SQLite database alone opens without the runtime, then joins it
    if first == "sqlite":
        events = SQLitePersistence(data / "marcus.db")
        await events.store("events", "e0", {"n": 0})
        registry = FilePersistence(data / "marcus_state")
    else:
        registry = FilePersistence(data / "marcus_state")
        await registry.store("projects", "p0", {"name": "first"})
        events = SQLitePersistence(data / "marcus.db")
    try:
        await registry.store("projects", "p1", {"name": "Todo"})
        for n in range(1, 20):
            await events.store("events", f"e{n}", {"n": n})
        assert "state@marcus.db" in await registry.host.call(_lane_names)
        backup = await registry.host.call(_backup)
    finally:
        registry.close()
        events.close()
    files = verify_backup(backup).files
    assert "marcus.db" in files
    restored = tmp_path / "restored"
    restore_backup(backup, restored)
    again = SQLitePersistence(restored / "marcus.db")
    try:
        got = await again.retrieve("events", "e19")
        assert got is not None and got["n"] == 19
        assert len(await again.query("events", limit=100)) == (20 if first == "sqlite" else 19)
    finally:
        again.close()


async def test_stats_and_doctor_count_and_check_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    events = SQLitePersistence(data / "marcus.db")
    try:
        for n in range(3):
            await events.store("events", f"e{n}", {"n": n})
        await events.store("context", "c1", {"x": 1})
    finally:
        events.close()
    row = {t.name: t for t in collect_stats(data).types}["marcus.db"]
    assert row.records == 4 and row.bytes > 0 and row.files >= 1
    assert row.oldest is not None and row.newest is not None
    [fine] = [f for f in diagnose(data) if f.path.endswith("marcus.db")]
    assert fine.severity == "info" and "4 records in 2 collections" in fine.problem

    with sqlite3.connect(data / "marcus.db") as conn:  # a tool wrote a row Marcus cannot read
        conn.execute(
            "INSERT INTO persistence (collection, key, data, stored_at) "
            "VALUES ('events', 'bad', 'not json', '2025-01-01 00:00:00')"
        )
    (data / "other.db").write_bytes(b"not a database" * 100)
    found = {Path(f.path).name: f for f in diagnose(data) if f.path.endswith(".db")}
    assert found["marcus.db"].severity == "error"
    assert "1 rows of persistence are not JSON objects (first: events/bad)" in (
        found["marcus.db"].problem
    )
    assert found["other.db"].severity == "error" and "not a usable" in found["other.db"].problem
    rows = {t.name: t for t in collect_stats(data).types}
    assert rows["marcus.db"].records == 5 and rows["other.db"].records is None
    assert (data / "other.db").read_bytes() == b"not a database" * 100  # never changed
