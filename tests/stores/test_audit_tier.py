"""Tiering: rotated audit archives move to ``archive_url``, verified, and are read
back from there by ``query`` and ``get_usage_stats`` as if they were on disk."""

from __future__ import annotations

import gzip
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from marcus_persist import CorruptDataError, open_runtime
from marcus_persist._core._objstore import open_object_store
from marcus_persist.backends.file._audit_tier import TIER_PREFIX
from tests.stores.audit_helpers import FakeClock
from tests.stores.test_audit_rotation import FIRST, TODAY, fill_days, noon, week_of

pytestmark = pytest.mark.anyio

OPTIONS: dict[str, Any] = {"audit_daily_days": 7, "audit_weekly_weeks": 2}


async def test_archives_move_off_the_disk_and_read_back_the_same(tmp_path: Path) -> None:
    data = tmp_path / "data"
    days = fill_days(data, FIRST, TODAY)
    url = f"file://{tmp_path}/archive"
    store = open_object_store(url)
    async with open_runtime(data, clock=FakeClock(noon(TODAY)), archive_url=url, **OPTIONS) as rt:
        await rt.audit.rotate()
        assert not list((data / "audit_logs" / "archive").iterdir())  # all moved
        remote = {o.key.removeprefix(TIER_PREFIX).rsplit(".", 1)[0]: o.key
                  for o in store.list(TIER_PREFIX)}  # fmt: skip
        old = [d for d in days if d < TODAY - timedelta(days=7)]
        archived = {week_of(d) for d in old if week_of(d) <= week_of(date(2026, 3, 1))}
        assert set(remote) == archived
        for week, key in remote.items():
            expected = b"".join(days[d] for d in sorted(old) if week_of(d) == week)
            assert gzip.decompress(store.get_bytes(key)) == expected
        assert len([e async for e in rt.audit.query()]) == 2 * len(days)
        assert (await rt.audit.get_usage_stats())["total_events"] == 2 * len(days)
        # a period only the remote holds: its events, from the remote alone
        span = [e async for e in rt.audit.query(start=date(2026, 2, 2), end=date(2026, 2, 8))]
        assert len(span) == 2 * 7
        assert all("2026-02-02" <= e["timestamp"][:10] <= "2026-02-08" for e in span)


async def test_a_damaged_remote_archive_is_refused_by_name(tmp_path: Path) -> None:
    data = tmp_path / "data"
    fill_days(data, FIRST, TODAY)
    url = f"file://{tmp_path}/archive"
    store = open_object_store(url)
    async with open_runtime(data, clock=FakeClock(noon(TODAY)), archive_url=url, **OPTIONS) as rt:
        await rt.audit.rotate()
        victim = store.list(TIER_PREFIX)[0].key
        path = tmp_path / "archive" / victim
        path.write_bytes(path.read_bytes()[:-10])  # truncated in the store
        with pytest.raises(CorruptDataError, match="damaged"):
            [e async for e in rt.audit.query()]


async def test_a_failed_upload_keeps_the_archive_on_disk(tmp_path: Path) -> None:
    """The archive folder of the store is a file: every upload fails; nothing leaves."""
    data = tmp_path / "data"
    days = fill_days(data, FIRST, TODAY)
    (tmp_path / "blocked").write_text("not a directory")
    url = f"file://{tmp_path}/blocked/archive"
    async with open_runtime(data, clock=FakeClock(noon(TODAY)), archive_url=url, **OPTIONS) as rt:
        await rt.audit.rotate()
        assert list((data / "audit_logs" / "archive").iterdir())
        assert len([e async for e in rt.audit.query()]) == 2 * len(days)


async def test_retention_applies_on_the_remote(tmp_path: Path) -> None:
    data = tmp_path / "data"
    fill_days(data, FIRST, TODAY)
    url = f"file://{tmp_path}/archive"
    store = open_object_store(url)
    async with open_runtime(data, clock=FakeClock(noon(TODAY)), archive_url=url, **OPTIONS) as rt:
        await rt.audit.rotate()
        before = len(store.list(TIER_PREFIX))
        assert before >= 2
    async with open_runtime(
        data,
        clock=FakeClock(noon(TODAY)),
        archive_url=url,
        audit_retention_days=(TODAY - date(2026, 2, 20)).days,
        **OPTIONS,
    ) as rt:
        await rt.audit.rotate()
        left = store.list(TIER_PREFIX)
        assert 0 < len(left) < before
        events = [e async for e in rt.audit.query()]
        assert events and min(e["timestamp"] for e in events) >= "2026-02-16"


async def test_the_audit_cli_reads_tiered_archives_from_archive_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from marcus_persist.cli._main import cli

    data = tmp_path / "data"
    days = fill_days(data, FIRST, TODAY)
    url = f"file://{tmp_path}/archive"
    async with open_runtime(data, clock=FakeClock(noon(TODAY)), archive_url=url, **OPTIONS) as rt:
        await rt.audit.rotate()
    args = ["audit", "stats", str(data), "--since", "2026-01-01", "--json"]
    without = CliRunner().invoke(cli, args)
    monkeypatch.setenv("MARCUS_PERSIST_ARCHIVE_URL", url)
    with_remote = CliRunner().invoke(cli, args)
    assert with_remote.exit_code == 0, with_remote.output
    assert f'"total_events":{2 * len(days)}' in with_remote.output
    assert f'"total_events":{2 * len(days)}' not in without.output
