"""The operations on a data directory whose store on the shard log holds batches only in
its write-ahead log: doctor, stats, wal, checkpoint, backup + restore, migrate. The same
checks run for each such store (state, learned patterns)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import anyio
import msgspec
import pytest
from click.testing import CliRunner

from marcus_persist import Runtime, open_runtime
from marcus_persist._core._wal import open_log
from marcus_persist.cli._main import cli
from marcus_persist.ops.doctor import diagnose
from marcus_persist.ops.migrate import PROGRESS_NAME, migrate
from marcus_persist.stores.patterns._records import key_of
from tests.backends.file import test_patterns_wal, test_state_wal
from tests.ops.test_migrate import end, files


@dataclass(frozen=True)
class LogStore:
    """One store on the shard log, and what its crashed directory holds."""

    table: str  # the name ``stats`` and ``wal`` report it under
    checkpoint_name: str  # the name ``checkpoint`` reports
    crashed_with_a_log: Callable[[Path], Awaitable[Path]]
    wal_dir: Callable[[Path], Path]
    in_shards: Callable[[Path], object]  # what the shards alone hold, read without the log
    checkpointed: object  # ``in_shards`` once the log is checkpointed
    contents: Callable[[Runtime], Awaitable[object]]  # what a runtime reads
    expected: object  # ``contents`` of the crashed directory
    records_in_log: int
    not_a_batch: str  # doctor's problem for a record that is no batch
    add_to_log: Callable[[Runtime], Awaitable[object]]  # one more change, only in the log
    expected_with_added: object


def pattern_examples(root: Path) -> dict[str, object]:
    return {k: p["examples"] for k, p in test_patterns_wal.shards_alone(root).items()}


async def patterns_found(rt: Runtime) -> dict[str, int]:
    return {f"{p['type']}/{p['pattern']}": p["examples"] for p in await rt.patterns.find()}


def state_keys(root: Path) -> dict[str, list[str]]:
    return {c: sorted(r) for c, r in test_state_wal.shards_alone(root).items()}


async def state_found(rt: Runtime) -> dict[str, list[str]]:
    return {c: sorted([k async for k, _ in rt.state.iter(c)]) for c in await rt.state.collections()}


STATE = LogStore(
    table="marcus_state",
    checkpoint_name="state",
    crashed_with_a_log=test_state_wal.crashed_with_a_log,
    wal_dir=test_state_wal.wal_dir,
    in_shards=state_keys,
    checkpointed={"agents": ["a1"], "tasks": ["t1", "t3"]},
    contents=state_found,
    expected={"agents": ["a1"], "tasks": ["t1", "t3"]},
    records_in_log=3,
    not_a_batch="record 5: expected [changes, meta]",
    add_to_log=lambda rt: rt.state.store("tasks", "t4", {"n": 4}),
    expected_with_added={"agents": ["a1"], "tasks": ["t1", "t3", "t4"]},
)
PATTERNS = LogStore(
    table="learned_patterns",
    checkpoint_name="patterns",
    crashed_with_a_log=test_patterns_wal.crashed_with_a_log,
    wal_dir=test_patterns_wal.wal_dir,
    in_shards=pattern_examples,
    checkpointed={key_of("flow", "a"): 4, key_of("risk", "b"): 1},
    contents=patterns_found,
    expected={"flow/a": 4, "risk/b": 1},
    records_in_log=2,
    not_a_batch="expected [changes, meta]",
    add_to_log=lambda rt: rt.patterns.observe("risk", "c", 0.5),
    expected_with_added={"flow/a": 4, "risk/b": 1, "risk/c": 1},
)


@pytest.fixture(params=[STATE, PATTERNS], ids=["state", "patterns"])
def store(request: pytest.FixtureRequest) -> LogStore:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def crashed(store: LogStore, tmp_path: Path) -> Path:
    """The store's shards checkpointed, then a log that no checkpoint wrote."""
    return anyio.run(store.crashed_with_a_log, tmp_path)


def read(store: LogStore, data: Path, backend: str = "file") -> object:
    """What a runtime on *data* reads from *store*."""

    async def contents() -> object:
        async with open_runtime(data, backend=backend) as rt:
            return await store.contents(rt)

    return anyio.run(contents)


def test_doctor_reads_the_log_and_repair_checkpoints_it(store: LogStore, crashed: Path) -> None:
    assert [f for f in diagnose(crashed) if f.severity == "error"] == []
    result = CliRunner().invoke(cli, ["doctor", str(crashed), "--repair"])
    assert result.exit_code == 0, result.output
    assert store.in_shards(crashed) == store.checkpointed
    assert [p.stat().st_size for p in store.wal_dir(crashed).glob("*.log")] == [0]


def test_doctor_finds_a_record_that_is_no_batch(store: LogStore, crashed: Path) -> None:
    log, _payloads, _torn = open_log(store.wal_dir(crashed))
    log.append(b'{"not": "a batch"}')  # sound (sealed, CRC right), but no batch
    log.close()
    before = {p: p.read_bytes() for p in store.wal_dir(crashed).iterdir()}
    problems = [f.problem for f in diagnose(crashed) if f.severity == "error"]
    assert any(store.not_a_batch in p for p in problems), problems
    assert {p: p.read_bytes() for p in store.wal_dir(crashed).iterdir()} == before  # unchanged


@pytest.mark.parametrize("store", [STATE], ids=["state"], indirect=True)
def test_doctor_finds_a_torn_tail_and_corruption(store: LogStore, crashed: Path) -> None:
    segment = max(store.wal_dir(crashed).glob("*.log"))
    sound = segment.read_bytes()
    segment.write_bytes(sound + b"MPW1\x05torn")
    found = {(f.path, f.severity) for f in diagnose(crashed)}
    assert (str(segment), "warning") in found  # an unfinished append
    data = bytearray(sound)
    data[22] ^= 0xFF  # inside the first record, sound ones follow: corruption
    segment.write_bytes(bytes(data))
    errors = [f for f in diagnose(crashed) if f.severity == "error"]
    assert any("followed by a sound record" in f.problem for f in errors), errors


def test_stats_counts_the_records_in_the_log(store: LogStore, crashed: Path) -> None:
    result = CliRunner().invoke(cli, ["stats", str(crashed), "--json"])
    assert result.exit_code == 0, result.output
    by_name = {t["name"]: t for t in json.loads(result.output)["types"]}
    assert by_name[store.table]["records"] == store.records_in_log


def test_wal_lists_the_log_and_checkpoint_writes_it(store: LogStore, crashed: Path) -> None:
    result = CliRunner().invoke(cli, ["wal", str(crashed), "--json"])
    assert result.exit_code == 0, result.output
    reports = {r["store"]: r for r in msgspec.json.decode(result.output)}
    segments = reports[store.table]["segments"]
    assert sum(len(s["records"]) for s in segments) == store.records_in_log
    result = CliRunner().invoke(cli, ["checkpoint", str(crashed)])
    assert result.exit_code == 0, result.output
    assert store.checkpoint_name in result.output
    assert store.in_shards(crashed) == store.checkpointed


def test_backup_copies_the_log_and_restore_reads_it(
    store: LogStore, crashed: Path, tmp_path: Path
) -> None:
    async def backup() -> Path:
        async with open_runtime(crashed) as rt:
            await store.add_to_log(rt)
            return await rt.backup(tmp_path / "bk")

    path = anyio.run(backup)
    assert any(f"{store.table}/wal/" in str(p) for p in path.rglob("*.log"))
    target = tmp_path / "restored"
    result = CliRunner().invoke(cli, ["restore", str(path), str(target)])
    assert result.exit_code == 0, result.output
    assert read(store, target) == store.expected_with_added


def test_migrate_reads_the_log_and_never_checkpoints_the_source(
    store: LogStore, crashed: Path, tmp_path: Path
) -> None:
    before = files(crashed)
    report = migrate(end(crashed), end(tmp_path / "b", "sqlite"), tmp_path / "b" / PROGRESS_NAME)
    assert report.ok
    assert files(crashed) == before  # the log stays, the shards were not rewritten
    assert read(store, tmp_path / "b", "sqlite") == store.expected
    back = tmp_path / "c"
    report = migrate(end(tmp_path / "b", "sqlite"), end(back), back / PROGRESS_NAME)
    assert report.ok
    shutil.rmtree(tmp_path / "b")
    assert read(store, back) == store.expected
