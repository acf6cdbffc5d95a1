"""Suite 1: simulated power loss at every syscall of small workloads, checked by the oracle."""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import pytest

from .oracle import (
    ASSIGNMENTS,
    History,
    Op,
    State,
    StoreAdapter,
    enumerate_crashes,
    open_fds,
    recover,
    run_steps,
)
from .simfs import Fault, SimFS, materialise

pytestmark = pytest.mark.anyio

THREE_COMMITS: list[list[Op]] = [
    [("assign", None, "w1", "t1")],
    [("assign", None, "w2", "t2")],
    [("progress", None, "w1", 50), ("remove", None, "w2")],
]
TWO_SCOPES: list[list[Op]] = [
    [("assign", None, "w1", "t1")],
    [("assign", None, "w2", "t2"), ("assign", "p1", "w3", "t3")],
]
PER_PROJECT: list[list[Op]] = [
    [("assign", "p1", "w1", "t1")],
    [("assign", "p1", "w2", "t2")],
    [("remove", "p1", "w1")],
]


def fail_nth(method: str, n: int, code: int = errno.EIO, *, after: int = 0) -> Fault:
    """Fail the *n*-th call of *method* that comes after its first *after* calls, once."""
    seen = {"count": 0}

    def fault(_call: int, name: str) -> int | None:
        if name != method:
            return None
        seen["count"] += 1
        return code if seen["count"] == after + n else None

    return fault


async def startup_calls(tmp: Path, method: str) -> int:
    """How many calls of *method* opening an empty directory makes (it grows with the
    stores), so a fault can aim at a commit whatever startup does first."""
    root = tmp / "probe"
    root.mkdir()
    fs = SimFS(root)
    await run_steps(History(ASSIGNMENTS), fs, root / "data", [])
    return sum(op.kind == method for op in fs.trace)


async def crash_run(
    name: str, steps: list[list[Op]], tmp: Path, fault: Fault | None = None
) -> tuple[list[str], SimFS]:
    """Run *steps* from an empty directory under a SimFS, then check every crash image."""
    root = tmp / "sim"
    root.mkdir()
    fs = SimFS(root, fault)
    history = History(ASSIGNMENTS)
    fds = open_fds()
    await run_steps(history, fs, root / "data", steps)
    report = await enumerate_crashes(name, fs, history, tmp)
    assert open_fds() == fds, "leaked file descriptors"
    assert report.images > report.crash_points >= len(fs.trace)
    return report.violations, fs


async def crash_sessions(
    name: str, sessions: list[list[list[Op]]], tmp: Path, fault: Fault | None = None
) -> list[str]:
    """:func:`crash_run` over several runtime sessions on one directory in turn: each
    close checkpoints, so later sessions checkpoint over files and retire logs."""
    root = tmp / "sim"
    root.mkdir()
    fs = SimFS(root, fault)
    history = History(ASSIGNMENTS)
    for steps in sessions:
        await run_steps(history, fs, root / "data", steps)
    report = await enumerate_crashes(name, fs, history, tmp)
    return report.violations


class TestCrashPoints:
    async def test_first_start(self, tmp_path: Path) -> None:
        violations, fs = await crash_run("first start", [], tmp_path)
        assert violations == []
        assert any(op.kind == "mkdir" for op in fs.trace)

    async def test_three_commits(self, tmp_path: Path) -> None:
        violations, _fs = await crash_run("three commits", THREE_COMMITS, tmp_path)
        assert violations == []

    async def test_per_project_file(self, tmp_path: Path) -> None:
        violations, fs = await crash_run("per-project file", PER_PROJECT, tmp_path)
        assert violations == []
        assert any("project_p1" in op.path for op in fs.trace)

    @pytest.mark.parametrize(
        ("method", "n"),
        # the file fsyncs and the directory fsyncs of commits 1-3 (counted after startup)
        [("fsync", 1), ("fsync", 2), ("fsync", 3), ("fsync_dir", 1), ("fsync_dir", 2)],
    )
    async def test_failed_fsync_is_never_acknowledged(
        self, tmp_path: Path, method: str, n: int
    ) -> None:
        # one commit's fsync fails (its data is dropped): that batch fails, the rest commit
        after = await startup_calls(tmp_path, method)
        violations, fs = await crash_run(
            f"failed {method} #{n}", THREE_COMMITS, tmp_path, fail_nth(method, n, after=after)
        )
        assert violations == []
        assert any(op.kind == "fsync_failed" for op in fs.trace) or method == "fsync_dir"

    async def test_checkpoints_over_existing_files(self, tmp_path: Path) -> None:
        # the second and third closes checkpoint over files and retire their logs
        sessions = [THREE_COMMITS[:2], [*THREE_COMMITS[2:], *TWO_SCOPES], PER_PROJECT]
        assert await crash_sessions("three sessions", sessions, tmp_path) == []

    async def test_two_scope_commit_is_all_or_nothing(self, tmp_path: Path) -> None:
        # before the journal (issue 8), a crash between the two renames kept half a batch;
        # now the batch is one log record: one write, one sync
        violations, fs = await crash_run("two-scope commit", TWO_SCOPES, tmp_path)
        assert violations == []
        logged = [op for op in fs.trace if op.kind == "write" and "/wal/" in op.path]
        assert len(logged) == len(TWO_SCOPES)
        assert not [op for op in fs.trace if op.path.endswith("batch.json")]

    @pytest.mark.parametrize(
        ("method", "n"),
        # after startup: write 2 and fsync 2 are the two-scope batch's record and its
        # sync; then the checkpoint at close: replace and directory fsync 1 the global
        # file, directory fsync 2 the new project directory, replace 2 and directory
        # fsync 3 the project file; truncate 1 and fsync 6 empty the log
        [
            *[("write", 2), ("fsync", 2), ("replace", 1), ("replace", 2), ("truncate", 1)],
            *[("fsync", 6), ("fsync_dir", 1), ("fsync_dir", 2), ("fsync_dir", 3)],
        ],
    )
    async def test_failed_two_scope_commit_is_undone(
        self, tmp_path: Path, method: str, n: int
    ) -> None:
        steps = [*TWO_SCOPES, [("assign", "p1", "w4", "t4")]]
        fault = fail_nth(method, n, after=await startup_calls(tmp_path, method))
        violations, _fs = await crash_run(
            f"two-scope commit, failed {method} #{n}", steps, tmp_path, fault
        )
        assert violations == []

    async def test_crash_while_rolling_a_journal_forward(self, tmp_path: Path) -> None:
        # the previous format: the two-scope batch's journal is durable, the project
        # file not yet written
        first = ASSIGNMENTS.apply({}, TWO_SCOPES[0][0])
        full = ASSIGNMENTS.apply(ASSIGNMENTS.apply(first, TWO_SCOPES[1][0]), TWO_SCOPES[1][1])
        base = tmp_path / "base"
        folder = base / "data" / "assignments"
        folder.mkdir(parents=True)
        (folder / "assignments.json").write_bytes(json.dumps(first[None]).encode())
        journal = [[None, full[None]], ["p1", full["p1"]]]
        (folder / "batch.json").write_bytes(json.dumps(journal).encode())
        rfs = SimFS(base)
        await run_steps(History(ASSIGNMENTS), rfs, base / "data", [])
        assert any(op.kind == "unlink" and op.path.endswith("batch.json") for op in rfs.trace)
        report = await enumerate_crashes("rolling forward", rfs, _Fixed(full), tmp_path / "r")
        assert report.violations == []

    async def test_two_scope_commit_each_file_is_whole(self, tmp_path: Path) -> None:
        """Per file, the weaker promise holds: each file is at a batch boundary."""
        root = tmp_path / "sim"
        root.mkdir()
        fs = SimFS(root)
        history = History(ASSIGNMENTS)
        await run_steps(history, fs, root / "data", TWO_SCOPES)
        per_file = _PerFile(history)
        report = await enumerate_crashes("two-scope, per file", fs, per_file, tmp_path)
        assert report.violations == []

    async def test_crash_during_recovery(self, tmp_path: Path) -> None:
        # a crash mid-commit leaves a stale temp; some layout directories are gone too
        first = tmp_path / "first"
        first.mkdir()
        violations, fs = await crash_run("setup", THREE_COMMITS, first)
        assert violations == []
        k = max(i for i, op in enumerate(fs.trace) if op.kind == "write") + 1
        image = fs.build("mid-commit", fs.split(k)[0] + fs.split(k)[1])
        base = tmp_path / "base"
        expected, problem = await recover(image, base, ASSIGNMENTS)
        assert problem is None
        # rebuild the crashed directory (recover() already cleaned the copy it opened)
        shutil.rmtree(base)
        image.dirs -= {"data/backups", "data/audit_logs", "data/audit_logs/weekly"}
        image.dirs -= {"data/audit_logs/archive"}
        materialise(image, base)
        assert any(".tmp-" in name for name in image.files)
        rfs = SimFS(base)
        recovery = _Fixed(expected)
        await run_steps(History(ASSIGNMENTS), rfs, base / "data", [])
        assert any(op.kind == "unlink" for op in rfs.trace)
        report = await enumerate_crashes("crash during recovery", rfs, recovery, tmp_path / "r")
        assert report.violations == []


class _Fixed:
    """Recovery must keep exactly the state the crashed directory held."""

    adapter: StoreAdapter = ASSIGNMENTS

    def __init__(self, state: State) -> None:
        self.state = state

    def legal(self, k: int) -> list[State]:
        return [self.state]


class _PerFile:
    """The oracle applied to each scope's file on its own."""

    adapter: StoreAdapter = ASSIGNMENTS

    def __init__(self, history: History) -> None:
        self.history = history

    def legal(self, k: int) -> list[State]:
        per_scope: dict[object, list[object]] = {}
        for state in self.history.legal(k):
            for scope in (None, *ASSIGNMENTS.projects):
                per_scope.setdefault(scope, []).append(state.get(scope))
        return _Combos(per_scope)


class _Combos(list[State]):
    """Membership means: every scope is at one of its own legal states."""

    def __init__(self, per_scope: dict[object, list[object]]) -> None:
        super().__init__()
        self.per_scope = per_scope

    def __contains__(self, state: object) -> bool:
        assert isinstance(state, dict)
        return all(state.get(s) in options for s, options in self.per_scope.items())
