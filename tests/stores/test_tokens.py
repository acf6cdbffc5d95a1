"""Token usage: exact aggregation, idempotent retries, archives, budgets, Marcus's file."""

from __future__ import annotations

import errno
import json
import shutil
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from marcus_persist import CorruptDataError, MemoryBackend, Runtime, ValidationError, open_runtime
from marcus_persist.backends._contract import DocumentFn
from marcus_persist.backends._files import FileContext
from marcus_persist.backends.file._logged import CheckpointPolicy
from marcus_persist.backends.file._sealed import seal_document
from marcus_persist.backends.file._tokens import FileTokenStorage

from ..conftest import FaultyFS
from ._pt_backends import BACKENDS, Opener, make_opener

pytestmark = pytest.mark.anyio


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.moment = now

    def now(self) -> datetime:
        return self.moment


T0 = datetime(2026, 3, 1, 23, 59, 59, 900000, tzinfo=UTC)


@pytest.fixture(params=BACKENDS)
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    """Opens a runtime on the same data each time, on the backend under test."""
    return make_opener(str(request.param), tmp_path, request)


class TestRecord:
    async def test_across_midnight_and_providers_exact(self, opener: Opener) -> None:
        clock = FakeClock(T0)
        after = T0 + timedelta(seconds=1)  # the next UTC day
        calls = []
        for n in range(300):
            provider = ("anthropic", "openai", "local")[n % 3]
            calls.append(
                (provider, 1000 + n, 10 * n, 0.1 if n % 2 else 0.07, T0 if n < 140 else after)
            )
        async with opener(clock=clock) as rt, anyio.create_task_group() as tg:
            for provider, inputs, outputs, cost, at in calls:
                tg.start_soon(rt.tokens.record, provider, inputs, outputs, cost, "m1", "proj", at)
        async with opener(clock=clock) as rt:
            days = await rt.tokens.daily(T0.date(), after.date())
            assert sorted(days) == ["2026-03-01", "2026-03-02"]
            for day, moment in (("2026-03-01", T0), ("2026-03-02", after)):
                for provider, usage in days[day].items():
                    mine = [c for c in calls if c[0] == provider and c[4] == moment]
                    assert usage["requests"] == len(mine)
                    assert usage["input_tokens"] == sum(c[1] for c in mine)
                    assert usage["output_tokens"] == sum(c[2] for c in mine)
                    assert usage["tokens_used"] == sum(c[1] + c[2] for c in mine)
                    cents = sum(round(c[3] * 100) for c in mine)
                    assert round(usage["cost_usd"] * 100) == cents
                    assert usage["cost_usd"] == cents / 100  # exact, not a float sum
                    assert usage["models"]["m1"]["requests"] == len(mine)
            project = await rt.tokens.project("proj")
            assert project is not None
            assert project["total_tokens"] == sum(c[1] + c[2] for c in calls)
            assert project["total_cost"] == sum(round(c[3] * 100) for c in calls) / 100
            assert project["requests"] == 300

    async def test_retried_request_id_counted_once(self, opener: Opener) -> None:
        async with opener() as rt:
            async with anyio.create_task_group() as tg:  # retries in one batch
                for _ in range(20):
                    tg.start_soon(
                        rt.tokens.record, "anthropic", 100, 50, 0.01, None, "p", None, "req-1"
                    )
            assert await rt.tokens.record("anthropic", 100, 50, 0.01, request_id="req-1") is False
        async with opener() as rt:  # and after a restart
            assert await rt.tokens.record("anthropic", 100, 50, 0.01, request_id="req-1") is False
            assert await rt.tokens.record("anthropic", 100, 50, 0.01, request_id="req-2") is True
            usage = (await rt.tokens.by_provider())["anthropic"]
            assert (usage["requests"], usage["tokens_used"], usage["cost_usd"]) == (2, 300, 0.02)
            assert (await rt.tokens.by_project())["p"]["requests"] == 1

    async def test_cost_from_the_price_table(self, opener: Opener) -> None:
        prices = {"claude-x": {"input": 3.0, "output": 15.0}}  # USD per million tokens
        async with opener(token_prices=prices) as rt:
            await rt.tokens.record("anthropic", 1_000_000, 100_000, model="claude-x")
            await rt.tokens.record("anthropic", 10, 10, model="unpriced")
            usage = (await rt.tokens.by_provider())["anthropic"]
            assert usage["models"]["claude-x"]["cost_usd"] == 4.5
            assert usage["models"]["unpriced"]["cost_usd"] == 0

    @pytest.mark.parametrize(
        ("args", "kwargs", "field"),
        [
            (("anthropic", -1, 0), {}, "input_tokens"),
            (("anthropic", 1, 1.5), {}, "output_tokens"),
            (("anthropic", 1, 1, float("nan")), {}, "cost_usd"),
            (("anthropic", 1, 1, -0.01), {}, "cost_usd"),
            (("", 1, 1), {}, "provider"),
            (("anthropic", 1, 1), {"at": datetime(2026, 1, 1)}, "at"),
            (("anthropic", 1, 1), {"project_id": ""}, "project_id"),
        ],
    )
    async def test_bad_input_rejected_nothing_written(
        self, tmp_path: Path, args: tuple[Any, ...], kwargs: dict[str, Any], field: str
    ) -> None:
        memory = MemoryBackend()
        async with open_runtime(tmp_path, backend=memory) as rt:
            with pytest.raises(ValidationError, match=field):
                await rt.tokens.record(*args, **kwargs)
            assert rt.tokens.record_nowait(*args, **kwargs) is False
            assert rt.tokens.dropped == 1
        assert memory.tokens().document is None


class TestRecordNowait:
    async def test_queued_and_durable_by_close(self, opener: Opener) -> None:
        async with opener() as rt:
            for n in range(50):
                assert rt.tokens.record_nowait("anthropic", n, 1, 0.01, request_id=f"r{n}")
        async with opener() as rt:
            usage = (await rt.tokens.by_provider())["anthropic"]
            assert (usage["requests"], usage["input_tokens"]) == (50, sum(range(50)))

    async def test_full_inbox_and_closed_runtime_never_raise(self, tmp_path: Path) -> None:
        async with open_runtime(tmp_path, backend=MemoryBackend(), inbox_size=1) as rt:
            queued = [rt.tokens.record_nowait("a", 1, 1) for _ in range(5)]  # no checkpoint
            assert queued[0] is True and False in queued
            assert rt.tokens.dropped == queued.count(False)
        store = rt.tokens
        assert store.record_nowait("a", 1, 1) is False

    async def test_failed_commit_is_counted_not_raised(self, tmp_path: Path) -> None:
        fs = FaultyFS()
        async with open_runtime(tmp_path, fs=fs) as rt:
            fs.fail["fsync"] = errno.EIO
            assert rt.tokens.record_nowait("a", 1, 1) is True
            # poll the condition, no deadline of ours (pytest-timeout guards a hang)
            while rt.tokens.dropped == 0:
                await anyio.lowlevel.checkpoint()
            del fs.fail["fsync"]
            assert await rt.tokens.by_provider() == {}


class TestReports:
    async def test_archive_and_report_equal_the_unarchived_report(
        self, opener: Opener, tmp_path: Path
    ) -> None:
        start = datetime(2026, 1, 1, 10, tzinfo=UTC)

        async def workload(rt: Runtime, clock: FakeClock) -> None:
            for n in range(75):
                clock.moment = start + timedelta(days=n)
                for provider in ("anthropic", "openai"):
                    await rt.tokens.record(provider, 100 + n, n, 0.013 * (n % 4), f"m{n % 2}")

        async def reports(rt: Runtime) -> Any:
            first, last = start.date(), (start + timedelta(days=74)).date()
            middle = await rt.tokens.daily(date(2026, 1, 30), date(2026, 2, 2))
            return await rt.tokens.daily(first, last), await rt.tokens.by_provider(), middle

        clock = FakeClock(start)
        async with open_runtime(tmp_path / "baseline", backend=MemoryBackend(), clock=clock) as rt:
            await workload(rt, clock)  # 90 days kept: nothing archived
            expected = await reports(rt)
        assert len(expected[0]) == 75
        assert list(expected[2]) == ["2026-01-30", "2026-01-31", "2026-02-01", "2026-02-02"]
        clock = FakeClock(start)
        async with opener(clock=clock, token_keep_days=30) as rt:
            await workload(rt, clock)
            # the first batch of each new day already moved the days older than 30
            assert len(rt.tokens._h.doc["daily_usage"]) <= 31
            assert await rt.tokens.archive() == 0  # nothing left to move today
            assert await reports(rt) == expected
        async with opener(clock=clock, token_keep_days=30) as rt:
            assert await reports(rt) == expected

    async def test_archive_files_by_month(self, tmp_path: Path) -> None:
        clock = FakeClock(datetime(2026, 1, 5, tzinfo=UTC))
        async with open_runtime(tmp_path, clock=clock, token_keep_days=10) as rt:
            await rt.tokens.record("anthropic", 5, 5, 1.25)
            clock.moment = datetime(2026, 3, 1, tzinfo=UTC)
            assert await rt.tokens.archive() == 1
        archived = json.loads((tmp_path / "token_usage_archive" / "2026-01.json").read_text())
        assert archived["daily_usage"]["2026-01-05"]["anthropic"]["cost_usd"] == 1.25
        live = json.loads((tmp_path / "token_usage.json").read_text())
        assert live["daily_usage"] == {}
        assert live["project_usage"] == {}

    async def test_a_record_for_an_archived_day_goes_to_its_archive(self, opener: Opener) -> None:
        clock = FakeClock(datetime(2026, 1, 5, 12, tzinfo=UTC))
        async with opener(clock=clock, token_keep_days=10) as rt:
            await rt.tokens.record("anthropic", 5, 5, 1.0)
            assert await rt.tokens.archive(date(2026, 1, 20)) == 1
            assert await rt.tokens.record("anthropic", 5, 5, 1.0) is True  # same day, archived
            days = await rt.tokens.daily(date(2026, 1, 5), date(2026, 1, 5))
            assert days["2026-01-05"]["anthropic"]["requests"] == 2
            assert rt.tokens._h.doc["daily_usage"] == {}  # never split into a live day

    async def test_spend_rate_projection_budgets(self, opener: Opener) -> None:
        clock = FakeClock(datetime(2026, 5, 1, 12, 30, tzinfo=UTC))
        async with opener(clock=clock) as rt:
            for task in ("t1", "t2"):
                await rt.tokens.record("a", 1000, 0, 0.5, project_id="p", task_id=task)
                await rt.tokens.record("a", 1000, 0, 0.5, project_id="p", task_id=task)
            await rt.tokens.record(
                "a", 10, 0, 0.01, project_id="q", at=clock.moment - timedelta(hours=5)
            )
            rate = await rt.tokens.spend_rate(timedelta(hours=2))
            assert rate == {"tokens_per_hour": 2000.0, "cost_usd_per_hour": 1.0}
            projection = await rt.tokens.projection("p", remaining_tasks=3)
            assert projection["basis"] == "tasks"
            assert (projection["tokens"], projection["cost_usd"]) == (6000, 3.0)
            assert projection["total_usd"] == 5.0
            await rt.tokens.set_budget("p", 1.5)
            await rt.tokens.set_budget("q", 1.0)
            over = await rt.tokens.over_budget()
            assert over == [
                {"project_id": "p", "budget_usd": 1.5, "spent_usd": 2.0, "over_usd": 0.5}
            ]
        async with opener(clock=clock) as rt:
            assert await rt.tokens.budgets() == {"p": 1.5, "q": 1.0}
            await rt.tokens.set_budget("p", None)
            assert await rt.tokens.over_budget() == []


class TestMarcusFile:
    @pytest.mark.parametrize("kind", ["file", "sqlite"])
    async def test_tracker_file_loads_as_project_totals(self, tmp_path: Path, kind: str) -> None:
        legacy = {
            "project_tokens": {"project-001": 500000, "project-002": 7},
            "project_costs": {"project-001": 12.5, "project-002": 0.01},
            "last_updated": "2025-08-31T10:00:00",
        }
        (tmp_path / "token_usage.json").write_text(json.dumps(legacy))
        async with make_opener(kind, tmp_path)() as rt:
            projects = await rt.tokens.by_project()
            assert projects["project-001"]["total_tokens"] == 500000
            assert projects["project-001"]["total_cost"] == 12.5
            assert projects["project-002"]["total_tokens"] == 7
            assert projects["project-002"]["total_cost"] == 0.01
            await rt.tokens.record("anthropic", 1000, 0, 0.5, project_id="project-001")
        async with make_opener(kind, tmp_path)() as rt:
            totals = await rt.tokens.project("project-001")
            assert totals is not None and totals["total_cost"] == 13.0
        if kind != "file":
            return
        written = json.loads((tmp_path / "token_usage.json").read_text())
        assert written["project_tokens"]["project-001"] == 501000  # Marcus can still read it
        assert written["project_costs"]["project-001"] == 13.0
        assert written["project_costs"]["project-002"] == 0.01

    @pytest.mark.parametrize("kind", ["file", "sqlite"])
    async def test_daily_usage_shape_loads(self, tmp_path: Path, kind: str) -> None:
        document = {
            "daily_usage": {
                "2025-08-31": {
                    "anthropic": {"tokens_used": 145000, "cost_usd": 3.45, "requests": 89}
                }
            },
            "project_usage": {"project-001": {"total_tokens": 500000, "total_cost": 12.5}},
        }
        (tmp_path / "token_usage.json").write_text(json.dumps(document))
        clock = FakeClock(datetime(2025, 9, 1, tzinfo=UTC))
        async with make_opener(kind, tmp_path)(clock=clock) as rt:
            day = (await rt.tokens.daily(date(2025, 8, 31), date(2025, 8, 31)))["2025-08-31"]
            usage = day["anthropic"]
            assert (usage["tokens_used"], usage["cost_usd"], usage["requests"]) == (
                145000,
                3.45,
                89,
            )
            project = await rt.tokens.project("project-001")
            assert project is not None
            assert (project["total_tokens"], project["total_cost"]) == (500000, 12.5)


async def test_the_demo_records_tokens_and_patterns(tmp_path: Path) -> None:
    from marcus_persist.cli._demo import run_demo

    report = await run_demo(tmp_path, agents=10, seconds=0.3)
    assert report.token_requests == report.tasks_completed > 0
    assert 0 < report.patterns <= 10
    assert abs(report.token_cost_usd - 0.0081 * report.tasks_completed) <= 0.005 + 1e-9


class TestLog:
    """On files a batch is one fsynced log line; the document is written whole at checkpoints."""

    async def test_batches_append_and_replay_after_reopen(self, tmp_path: Path) -> None:
        async with open_runtime(tmp_path) as rt:
            await rt.tokens.record("anthropic", 1, 1, 0.01, request_id="first")  # a checkpoint
            async with anyio.create_task_group() as tg:
                for n in range(30):
                    tg.start_soon(
                        rt.tokens.record, "anthropic", n, 1, 0.01, None, "p", None, f"r{n}"
                    )
            await rt.tokens.set_budget("p", 0.2)
        assert not (tmp_path / "token_usage.log").exists()  # the log is tokens/wal/
        assert [p.stat().st_size for p in (tmp_path / "tokens" / "wal").iterdir()] == [0]
        assert json.loads((tmp_path / "token_usage.json").read_text())["daily_usage"] != {}
        async with open_runtime(tmp_path) as rt:
            usage = (await rt.tokens.by_provider())["anthropic"]
            assert (usage["requests"], usage["input_tokens"]) == (31, 1 + sum(range(30)))
            assert usage["cost_usd"] == 0.31
            assert await rt.tokens.record("anthropic", 5, 5, 1.0, request_id="r7") is False
            assert await rt.tokens.over_budget() == [
                {"project_id": "p", "budget_usd": 0.2, "spent_usd": 0.3, "over_usd": 0.1}
            ]

    async def test_a_torn_last_line_is_kept_aside_and_ignored(self, tmp_path: Path) -> None:
        async with open_runtime(tmp_path) as rt:
            for n in range(3):
                await rt.tokens.record("anthropic", 10, 0, 0.5, request_id=f"r{n}")
        torn = b'{"seq":99,"records":[{"type":"Record","provider":"anth'
        with (tmp_path / "token_usage.log").open("ab") as log:
            log.write(torn)
        for expected in (3, 4):
            async with open_runtime(tmp_path) as rt:
                usage = (await rt.tokens.by_provider())["anthropic"]
                assert (usage["requests"], usage["cost_usd"]) == (expected, expected * 0.5)
                if expected == 3:
                    await rt.tokens.record("anthropic", 10, 0, 0.5, request_id="r3")
        assert (tmp_path / "token_usage.log.torn").read_bytes() == torn

    async def test_garbage_before_a_sound_record_is_corruption(self, tmp_path: Path) -> None:
        live, crashed = tmp_path / "live", tmp_path / "crashed"
        async with open_runtime(live) as rt:
            await rt.tokens.record("anthropic", 10, 0, 0.5)
            assert await rt.checkpoint() == ["tokens"]
            await rt.tokens.record("anthropic", 10, 0, 0.5)
            await anyio.to_thread.run_sync(
                lambda: shutil.copytree(live, crashed, ignore=shutil.ignore_patterns(".lock"))
            )
        wal = crashed / "tokens" / "wal"
        (segment,) = [p for p in wal.iterdir() if p.stat().st_size]
        segment.write_bytes(b"not a record" + segment.read_bytes())
        with pytest.raises(CorruptDataError, match="followed by a sound record"):
            async with open_runtime(crashed):
                pass
        async with open_runtime(crashed, on_corrupt="quarantine") as rt:
            assert [q.path for q in rt.quarantined] == [str(wal)]
            usage = (await rt.tokens.by_provider())["anthropic"]
            assert usage["requests"] == 1  # the checkpoint; the log is aside
            await rt.tokens.record("anthropic", 10, 0, 0.5)
        async with open_runtime(crashed) as rt:
            assert (await rt.tokens.by_provider())["anthropic"]["requests"] == 2


def _document_at(done: list[int]) -> DocumentFn:
    """A document holding the batches *done* (a copy: it is written later, in a thread)."""
    held = list(done)
    return lambda seen=None: {"logged": held}


def test_checkpoints_bound_the_log_and_a_failed_append_is_never_replayed(tmp_path: Path) -> None:
    fs = FaultyFS()
    ctx = FileContext(tmp_path, fs, True, "error")
    storage = FileTokenStorage(ctx, CheckpointPolicy(max_bytes=120))
    assert storage.load(lambda d: d) == (None, [])
    storage.loaded(_document_at([]), {})
    logged: list[int] = []
    for n in range(40):
        if n == 25:
            fs.fail["fsync"] = errno.EIO
            with pytest.raises(OSError):
                storage.commit([{"n": n}], _document_at([*logged, n]), {})
            del fs.fail["fsync"]
            continue  # not acknowledged: must never come back
        storage.commit([{"n": n}], _document_at([*logged, n]), {})
        logged.append(n)
        storage.logged.wait()
        assert storage.logged.size() <= 2 * 120 + 100  # checkpoints retire what they hold
    document, records = FileTokenStorage(ctx).load(lambda d: d)  # as after a crash
    assert document is not None and document["wal_lsn"] >= 1
    # the checkpoint holds everything before it, the log the rest: together every batch once
    replayed = [r["n"] for r in records]
    assert document["logged"] + replayed == logged
    assert 25 not in replayed


def test_records_a_checkpoint_holds_are_skipped_and_a_gap_is_refused(tmp_path: Path) -> None:
    """A crash after the checkpoint's rename, before its segments were retired: the
    records it holds are in the log still, and count once. Records missing between the
    checkpoint and the log are corruption, never skipped."""
    ctx = FileContext(tmp_path, FaultyFS(), True, "error")
    storage = FileTokenStorage(ctx)
    storage.load(lambda d: d)
    for n in range(3):
        storage.commit([{"n": n}], _document_at(list(range(n + 1))), {})
    wal = storage.logged.wal_dir
    before = {p.name: p.read_bytes() for p in wal.iterdir()}
    assert storage.checkpoint()
    for name, data in before.items():  # as if the segments were never retired
        (wal / name).write_bytes(data)
    document, records = FileTokenStorage(ctx).load(lambda d: d)
    assert document is not None and (document["logged"], document["wal_lsn"]) == ([0, 1, 2], 3)
    assert records == []
    storage.commit([{"n": 3}], _document_at([0, 1, 2, 3]), {})
    document, records = FileTokenStorage(ctx).load(lambda d: d)
    assert records == [{"n": 3}]
    for name in before:  # retired again: the log holds record 4 only
        (wal / name).unlink()
    path = tmp_path / "token_usage.json"
    sealed = path.read_bytes()
    body = json.loads(sealed)
    body.pop("crc32"), body.pop("format")
    body["wal_lsn"] = 2  # the document is older than the log's first record but one
    path.write_bytes(seal_document(json.dumps(body, separators=(",", ":")).encode()))
    with pytest.raises(CorruptDataError, match="records 3-3 are missing"):
        FileTokenStorage(ctx).load(lambda d: d)
