"""Tiering of token usage: sealed monthly archives move to ``archive_url`` (``file://``
and ``s3://``), verified, and reports read them back from there as from the disk."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

import marcus_persist._runtime._open as runtime_open
from marcus_persist import CorruptDataError, PersistenceError, Runtime, open_runtime
from marcus_persist._core._objstore import (
    FileObjectStore,
    _verify,
    open_object_store,
    sha256_of,
)
from marcus_persist.backends.file._tokens_tier import TIER_PREFIX

from ..conftest import archive_store
from .audit_helpers import FakeClock

pytestmark = pytest.mark.anyio

DAYS = [date(2026, 1, 3), date(2026, 1, 20), date(2026, 2, 5), date(2026, 2, 25), date(2026, 3, 10)]
NOW = datetime(2026, 4, 20, 12, tzinfo=UTC)  # keep 30 days: January and February are sealed
KEEP: dict[str, Any] = {"token_keep_days": 30}


async def fill(rt: Runtime, clock: FakeClock) -> None:
    for n, day in enumerate(DAYS):
        clock.moment = datetime(day.year, day.month, day.day, 9, tzinfo=UTC)
        await rt.tokens.record("anthropic", 100 + n, n, 0.25 * (n + 1), f"m{n % 2}", "p")
    clock.moment = NOW
    await rt.tokens.record("openai", 7, 7, 0.5)  # the first batch of the day archives


async def fill_after_the_job(rt: Runtime, clock: FakeClock) -> None:
    """:func:`fill`, once the runtime's tiering job made its pass at start (then it
    waits an hour): the ``tier()`` calls that follow are the only ones that move
    months (a CI run saw the job tier January mid-fill, then January again)."""
    tiering = rt.token_tiering
    assert tiering is not None
    while tiering.metrics().passes == 0:
        await tiering.pass_ended.wait()
    await fill(rt, clock)


async def reports(rt: Runtime) -> Any:
    return (
        await rt.tokens.daily(date(2026, 1, 1), date(2026, 4, 30)),
        await rt.tokens.daily(date(2026, 2, 1), date(2026, 2, 28)),
        await rt.tokens.by_provider(),
    )


def local_months(data: Path) -> list[str]:
    return sorted(p.name for p in (data / "token_usage_archive").iterdir())


async def test_sealed_months_move_and_reports_read_the_same(
    tmp_path: Path, archive: dict[str, Any]
) -> None:
    data, clock = tmp_path / "data", FakeClock(NOW)
    store = archive_store(archive)
    async with open_runtime(data, clock=clock, **KEEP, **archive) as rt:
        await fill_after_the_job(rt, clock)
        before = await reports(rt)
        assert len(before[0]) == len(DAYS) + 1
        assert await rt.tokens.tier() == ["2026-01", "2026-02"]
        assert local_months(data) == ["2026-03.json"]  # March still has live days
        keys = [o.key.removeprefix(TIER_PREFIX)[:19] for o in store.list(TIER_PREFIX)]
        assert keys == ["2026-01.000001.json", "2026-02.000001.json"]
        assert await reports(rt) == before
    async with open_runtime(data, clock=clock, **KEEP, **archive) as rt:  # loads through
        assert await reports(rt) == before
        # late usage for a tiered month: pending (a commit never reads the remote),
        # then the next pass brings its archive back, merges and moves it up as a
        # newer generation
        late = datetime(2026, 2, 5, 18, tzinfo=UTC)
        assert await rt.tokens.record("anthropic", 1000, 0, 2.0, "m0", at=late)
        assert "2026-02.json" not in local_months(data)
        feb = (await rt.tokens.daily(date(2026, 2, 5), date(2026, 2, 5)))["2026-02-05"]
        assert feb["anthropic"]["requests"] == 2
        assert await rt.tokens.tier() == ["2026-02"]
        keys = [o.key.removeprefix(TIER_PREFIX)[:19] for o in store.list(TIER_PREFIX)]
        assert keys == ["2026-01.000001.json", "2026-02.000002.json"]  # the old one went
        again = (await rt.tokens.daily(date(2026, 2, 5), date(2026, 2, 5)))["2026-02-05"]
        assert again == feb


class _Truncating(FileObjectStore):
    """Stores every object without its last byte: each upload fails its read-back."""

    def put_file(self, key: str, path: Path) -> tuple[int, str]:
        data = path.read_bytes()
        self._write(key, lambda out: out.write(data[:-1]))
        _verify(self, key, (len(data), sha256_of(data)))  # raises: it differs
        return len(data), sha256_of(data)


async def test_a_truncated_upload_deletes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, clock = tmp_path / "data", FakeClock(NOW)
    async with open_runtime(data, clock=clock, **KEEP) as rt:
        await fill(rt, clock)
        before = await reports(rt)
    # truncating from the start: the tiering job's own pass at start fails alike
    truncating = _Truncating(tmp_path / "archive")
    monkeypatch.setattr(runtime_open, "open_object_store", lambda *_a: truncating)
    options: dict[str, Any] = {"archive_url": f"file://{tmp_path}/archive"}
    async with open_runtime(data, clock=clock, **KEEP, **options) as rt:
        with pytest.raises(CorruptDataError, match="read back"):
            await rt.tokens.tier()
        assert local_months(data) == ["2026-01.json", "2026-02.json", "2026-03.json"]
        assert await reports(rt) == before


@pytest.mark.parametrize("where", ["file", "s3"])
async def test_a_failed_upload_deletes_nothing(
    tmp_path: Path, where: str, request: pytest.FixtureRequest
) -> None:
    """Every upload fails (``file://``: the store's folder is a file; ``s3://``: the
    bucket does not exist on the server); nothing leaves the disk, the runtime
    starts and records."""
    data, clock = tmp_path / "data", FakeClock(NOW)
    async with open_runtime(data, clock=clock, **KEEP) as rt:
        await fill(rt, clock)
        before = await reports(rt)
    (tmp_path / "blocked").write_text("not a directory")
    options: dict[str, Any] = {"archive_url": f"file://{tmp_path}/blocked/archive"}
    if where == "s3":
        endpoint = request.getfixturevalue("s3_endpoint")
        options = {"archive_url": "s3://no-such-bucket/marcus", "archive_endpoint": endpoint}
    async with open_runtime(data, clock=clock, **KEEP, **options) as rt:
        with pytest.raises((OSError, PersistenceError)):
            await rt.tokens.tier()
        assert local_months(data) == ["2026-01.json", "2026-02.json", "2026-03.json"]
        assert await rt.tokens.record("openai", 1, 1, 0.5)
    async with open_runtime(data, clock=clock, **KEEP) as rt:
        assert (await reports(rt))[1] == before[1]  # February, read from the disk


async def test_a_damaged_remote_month_is_refused_by_name(tmp_path: Path) -> None:
    data, clock = tmp_path / "data", FakeClock(NOW)
    options: dict[str, Any] = {"archive_url": f"file://{tmp_path}/archive"}
    async with open_runtime(data, clock=clock, **KEEP, **options) as rt:
        await fill_after_the_job(rt, clock)
        await rt.tokens.tier()
        victim = open_object_store(options["archive_url"]).list(TIER_PREFIX)[0].key
        path = tmp_path / "archive" / victim
        path.write_bytes(path.read_bytes()[:-10])  # truncated in the store
        with pytest.raises(CorruptDataError, match="damaged"):
            await rt.tokens.daily(date(2026, 1, 1), date(2026, 1, 31))
        # a month the damage does not touch still reads
        assert (await rt.tokens.daily(date(2026, 2, 1), date(2026, 2, 28)))["2026-02-05"]


async def test_quarantine_moves_a_damaged_remote_month_aside_onto_the_disk(
    tmp_path: Path,
) -> None:
    data, clock = tmp_path / "data", FakeClock(NOW)
    options: dict[str, Any] = {"archive_url": f"file://{tmp_path}/archive"}
    async with open_runtime(data, clock=clock, **KEEP, **options) as rt:
        await fill_after_the_job(rt, clock)
        await rt.tokens.tier()
    store = open_object_store(options["archive_url"])
    victim = store.list(TIER_PREFIX)[0].key  # January
    damaged = (tmp_path / "archive" / victim).read_bytes().replace(b"anthropic", b"anthrop1c")
    (tmp_path / "archive" / victim).write_bytes(damaged)
    store.put_bytes(victim[:-64] + sha256_of(damaged), damaged)  # its key agrees: the seal won't
    store.delete(victim)
    async with open_runtime(data, clock=clock, on_corrupt="quarantine", **KEEP, **options) as rt:
        days = await rt.tokens.daily(date(2026, 1, 1), date(2026, 2, 28))
        assert sorted(days) == ["2026-02-05", "2026-02-25"]  # January is set aside
        aside = [p for p in (data / "token_usage_archive").iterdir() if "corrupt" in p.name]
        assert [p.read_bytes() for p in aside] == [damaged]  # byte-identical
        assert [k.key[len(TIER_PREFIX) :][:7] for k in store.list(TIER_PREFIX)] == ["2026-02"]


async def test_stats_counts_tiered_months_given_archive_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from marcus_persist.cli._main import cli

    data, clock = tmp_path / "data", FakeClock(NOW)
    url = f"file://{tmp_path}/archive"
    async with open_runtime(data, clock=clock, archive_url=url, **KEEP) as rt:
        await fill_after_the_job(rt, clock)
        await rt.tokens.tier()
    monkeypatch.delenv("MARCUS_PERSIST_ARCHIVE_URL", raising=False)
    without = CliRunner().invoke(cli, ["stats", str(data), "--json"])
    monkeypatch.setenv("MARCUS_PERSIST_ARCHIVE_URL", url)
    with_remote = CliRunner().invoke(cli, ["stats", str(data), "--json"])
    assert with_remote.exit_code == 0, with_remote.output
    assert f'"requests":{len(DAYS) + 1}' in with_remote.output
    assert f'"requests":{len(DAYS) + 1}' not in without.output


async def tiered_run(tmp_path: Path) -> tuple[Path, FakeClock, str, Any]:
    """A data directory whose sealed months went up to ``file://``: it, its clock, the
    URL and the reports before."""
    data, clock = tmp_path / "data", FakeClock(NOW)
    url = f"file://{tmp_path}/archive"
    async with open_runtime(data, clock=clock, archive_url=url, **KEEP) as rt:
        await fill_after_the_job(rt, clock)
        before = await reports(rt)
        assert await rt.tokens.tier() == ["2026-01", "2026-02"]
        assert local_months(data) == ["2026-03.json"]  # January and February went up
    return data, clock, url, before


async def test_a_migration_reads_the_tiered_months_from_archive_url(tmp_path: Path) -> None:
    from marcus_persist._config import Config
    from marcus_persist.ops.migrate._run import PROGRESS_NAME, Endpoint, migrate

    data, clock, url, before = await tiered_run(tmp_path)
    source = Endpoint(Config(data_dir=str(data), archive_url=url))
    target = Endpoint(Config(data_dir=str(tmp_path / "b"), backend="sqlite"))
    assert migrate(source, target, tmp_path / "b" / PROGRESS_NAME).ok
    async with open_runtime(tmp_path / "b", backend="sqlite", clock=clock, **KEEP) as rt:
        assert await reports(rt) == before


async def test_an_in_place_move_to_sqlite_reads_the_tiered_months(tmp_path: Path) -> None:
    from marcus_persist._config import Config
    from marcus_persist.ops.migrate._inplace import migrate_in_place

    data, clock, url, before = await tiered_run(tmp_path)
    report = migrate_in_place(data, ["tokens"], "sqlite", base=Config(archive_url=url))
    assert [s.status for s in report.stores] == ["migrated"]
    async with open_runtime(data, clock=clock, **KEEP) as rt:  # tokens on sqlite now
        assert await reports(rt) == before
