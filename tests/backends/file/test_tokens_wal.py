"""Token usage on the file backend's write-ahead log: one sync per batch, bytes that
follow the batch, recovery of every logged step (records, budgets, the daily move
of old days to their archive, late usage moved to its archive), checkpoints."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import anyio
import pytest

from marcus_persist import Runtime, open_runtime
from marcus_persist._core._fs import FileSystem
from marcus_persist.backends._files import FileContext
from marcus_persist.backends.file._logged import CheckpointPolicy
from marcus_persist.backends.file._tokens import FileTokenStorage

from ...conftest import crash_copy
from ...stores.audit_helpers import FakeClock
from .test_assignments_wal import CountingFS, backend, one_sync_per_batch

pytestmark = pytest.mark.anyio

NOW = datetime(2026, 6, 15, 12, tzinfo=UTC)
#: a record's arguments before its request id
RECORD = ("anthropic", 1, 1, 0.01, "m", "p", None)


async def totals(rt: Runtime) -> tuple[object, ...]:
    return (
        await rt.tokens.by_project(),
        await rt.tokens.daily(date.min, date.max),
        await rt.tokens.budgets(),
        sorted(rt.tokens._h.seen),
    )


class TestCommitPath:
    async def test_exactly_one_sync_per_batch(self, tmp_path: Path) -> None:
        fs = CountingFS()
        async with open_runtime(tmp_path, fs=fs) as rt:
            for n in range(20):
                with one_sync_per_batch(fs, rt, "tokens"):
                    async with anyio.create_task_group() as tg:
                        for k in range(n % 4 + 1):  # batches of one to four records
                            tg.start_soon(rt.tokens.record, *RECORD, f"r{n}.{k}")
        async with open_runtime(tmp_path) as rt:
            assert (await rt.tokens.project("p"))["requests"] == 50  # type: ignore[index]

    async def test_bytes_per_commit_follow_the_batch_not_the_data(self, tmp_path: Path) -> None:
        fs = CountingFS()
        written: list[int] = []
        async with open_runtime(tmp_path, fs=fs) as rt:
            for size in (10, 2000):  # request ids the document holds grow with traffic
                async with anyio.create_task_group() as tg:
                    for n in range(len(written) * 10, size):
                        tg.start_soon(
                            rt.tokens.record, "anthropic", 1, 1, 0.01, None, "p", None, f"r{n}"
                        )
                before = fs.written
                await rt.tokens.record("anthropic", 1, 1, 0.01, request_id=f"probe{size:05d}")
                written.append(fs.written - before)
        assert written[0] == written[1] < 400  # one record, whatever the store holds
        assert len(written) == 2


class TestRecovery:
    async def test_a_crash_loses_no_acknowledged_batch_and_counts_each_once(
        self, tmp_path: Path
    ) -> None:
        live = tmp_path / "live"
        async with open_runtime(live) as rt:
            for n in range(5):
                await rt.tokens.record("anthropic", n, 1, 0.5, "m", "p", request_id=f"a{n}")
            assert await rt.checkpoint() == ["tokens"]  # the document holds these five
            await rt.tokens.set_budget("p", 1.0)
            for n in range(3):
                await rt.tokens.record("openai", n, 2, 0.25, "m2", "q", request_id=f"b{n}")
            await crash_copy(live, tmp_path / "crashed")
            expected = await totals(rt)
        for _ in range(2):  # recovered, and again after the close that checkpoints it
            async with open_runtime(tmp_path / "crashed") as rt:
                assert await totals(rt) == expected
                assert not await rt.tokens.record("anthropic", 9, 9, 9.0, request_id="a1")
        document = json.loads((tmp_path / "crashed" / "token_usage.json").read_bytes())
        assert document["wal_lsn"] >= 9
        assert any("b2" in ids for ids in document["request_ids"].values())

    async def test_old_days_moved_to_their_archive_are_replayed(self, tmp_path: Path) -> None:
        """The first batch of a day moves old days to their month's archive (written
        first), then logs the move: a crash after it replays the move, never counting
        a day twice nor losing one."""
        clock, live = FakeClock(NOW), tmp_path / "live"
        async with open_runtime(live, clock=clock, token_keep_days=30) as rt:
            await rt.tokens.record("anthropic", 10, 0, 0.5, request_id="old")
            clock.moment = NOW + timedelta(days=45)  # the day of NOW is past keep_days now
            await rt.tokens.record("anthropic", 20, 0, 0.25, request_id="new")
            assert NOW.date().isoformat() not in rt.tokens._h.doc["daily_usage"]
            await crash_copy(live, tmp_path / "crashed")
            expected = await totals(rt)
        assert (tmp_path / "crashed" / "token_usage_archive" / "2026-06.json").exists()
        assert not (tmp_path / "crashed" / "token_usage.json").exists()  # never checkpointed
        async with open_runtime(tmp_path / "crashed", clock=clock, token_keep_days=30) as rt:
            assert await totals(rt) == expected
            assert NOW.date().isoformat() not in rt.tokens._h.doc["daily_usage"]
            usage = (await rt.tokens.by_provider())["anthropic"]
            assert (usage["requests"], usage["input_tokens"]) == (2, 30)

    async def test_late_usage_moved_to_its_archive_is_replayed(self, tmp_path: Path) -> None:
        clock, live = FakeClock(NOW), tmp_path / "live"
        late = NOW - timedelta(days=97)
        async with open_runtime(live, clock=clock, token_keep_days=30) as rt:
            await rt.tokens.record("anthropic", 1, 1, 0.01)
            assert await rt.tokens.record("anthropic", 5, 5, 1.0, "m", "p", at=late, request_id="r")
            assert rt.tokens._h.doc["late"] == {}  # moved: in its archive now
            await crash_copy(live, tmp_path / "crashed")
            expected = await totals(rt)
        async with open_runtime(tmp_path / "crashed", clock=clock, token_keep_days=30) as rt:
            assert await totals(rt) == expected
            assert rt.tokens._h.doc["late"] == {}
            assert not await rt.tokens.record("anthropic", 5, 5, 1.0, at=late, request_id="r")
            day = (await rt.tokens.daily(late.date(), late.date()))[late.date().isoformat()]
            assert day["anthropic"]["requests"] == 1


class TestCheckpoints:
    async def test_size_limit_keeps_the_log_small(self, tmp_path: Path) -> None:
        files = backend(tmp_path, FileSystem(), CheckpointPolicy(max_bytes=4096))
        async with open_runtime(tmp_path, backend=files) as rt:
            for n in range(300):
                await rt.tokens.record("anthropic", n, 1, 0.01, request_id=f"r{n}")
            logged = files.tokens().logged
            await anyio.to_thread.run_sync(logged.wait)
            assert len(logged.segments()) <= 2
            assert logged.size() < 2 * 4096 + 1024
            on_disk = json.loads((tmp_path / "token_usage.json").read_bytes())
            assert on_disk["wal_lsn"] > 1  # the checkpoints wrote the document meanwhile
        assert [p.stat().st_size for p in (tmp_path / "tokens" / "wal").iterdir()] == [0]
        async with open_runtime(tmp_path) as rt:
            assert (await rt.tokens.by_provider())["anthropic"]["requests"] == 300


def test_an_old_log_is_checkpointed_off_the_request_path(tmp_path: Path) -> None:
    """The age limit, on the log's clock: a commit younger than it starts nothing;
    once it is older, :meth:`checkpoint_if_aged` (the runtime's timer) checkpoints
    with no commit after it, and then has nothing left to do."""
    now = [100.0]
    ctx = FileContext(tmp_path, FileSystem(), True, "error")
    storage = FileTokenStorage(ctx, CheckpointPolicy(max_seconds=10))
    storage.logged._clock = lambda: now[0]
    storage.load(lambda d: d)
    storage.loaded(lambda seen=None: {"upto": 0}, {})
    assert not storage.logged.checkpoint_if_aged()  # nothing logged yet
    storage.commit([{"n": 1}], lambda seen=None: {"upto": 1}, {})
    now[0] += 9.5
    assert not storage.logged.checkpoint_if_aged()
    assert not (tmp_path / "token_usage.json").exists()
    now[0] += 0.5
    assert storage.logged.checkpoint_if_aged()
    storage.logged.wait()
    document = json.loads((tmp_path / "token_usage.json").read_bytes())
    assert (document["upto"], document["wal_lsn"]) == (1, 1)
    assert storage.logged.segments() == [2]  # the segment it holds is retired
    now[0] += 60
    assert not storage.logged.checkpoint_if_aged()  # nothing since
    storage.close()
