"""Suite 1 for learned patterns and token usage: simulated power loss at every syscall.

Patterns: batches of observations (one splitting its shard with big ``data``),
each one record in ``learned_patterns/wal/``; the shards are written by the
checkpoint at close, or, one session per batch, by each close over the shards the
last one wrote.
Tokens: batches appended to the write-ahead log ``tokens/wal/`` (one a retried
request id), checkpointed into ``token_usage.json`` at close (and, with a 1-byte
limit, beside the commits). The single-actor traces are deterministic, so the
garbage image of the last append reproduces the bug this suite found in the
previous format (a torn append read as corruption, the store refused to open).
Oracle: :class:`.learned_oracle.Snapshots`.

Two actors interleaved: patterns with tokens, tokens with state, patterns with
assignments, a batch of each per round (their commits interleave in one trace);
patterns and tokens use the count models of :mod:`.count_oracle`, and on every
crash image each store's oracle holds on its own.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from marcus_persist.backends.file._tokens import FileTokenStorage

from .count_oracle import PATTERN_COUNTS, TOKEN_COUNTS
from .learned_oracle import PATTERNS, TOKENS, Snapshots, run_snapshots
from .oracle import ASSIGNMENTS, COUNTS, History, Op, StoreAdapter, enumerate_crashes
from .simfs import Fault, SimFS
from .state_oracle import STATE, Both, LockedSimFS, checkpoint_often, count, run_interleaved
from .test_state_crash_points import ROUNDS as STATE_ROUNDS
from .test_state_crash_points import state_crash_run

pytestmark = pytest.mark.anyio

PATTERN_STEPS: list[list[Op]] = [
    [("observe", "flow", "a", 0.5, 1)],
    [("observe", "flow", "a", 0.9, 2), ("observe", "risk", "b", 0.25, 1)],
    [("observe", "risk", "b", 0.75, 3)],
    # ~1.2 KB of data each: one batch past the 32 KB shard limit, so its shard splits
    [("observe", "big", f"p{i:02}", 0.5, 1) for i in range(30)],
]

#: the count model's ops; the third batch's ~1.2 KB of data each splits the root shard
PATTERN_SESSIONS: list[list[Op]] = [
    [("observe", "flow", "a", 1, 0)],
    [("observe", "flow", "a", 2, 1), ("observe", "risk", "b", 1, 2)],
    [("observe", "big", f"p{i:02}", 1, 3 + i, "x" * 1200) for i in range(30)],
    [("observe", "risk", "b", 3, 40)],
]


def _pattern_ops(fs: SimFS, kind: str, fragment: str) -> list[str]:
    return [op.path for op in fs.trace if op.kind == kind and fragment in op.path]


def _shards_created(fs: SimFS) -> set[str]:
    return {
        Path(path).name.split(".")[0] for path in _pattern_ops(fs, "create", "_shards/patterns/")
    }


TOKEN_STEPS: list[list[Op]] = [
    [("record", "anthropic", 100, 20, 0.5, "m1", "p1", "r1")],
    [
        ("record", "anthropic", 10, 2, 0.25, "m1", "p1", "r2"),
        ("record", "openai", 7, 3, 0.125, "m2", "p2", "r3"),
    ],
    [("record", "openai", 5, 5, 1.0, "m2", "p2", "r3")],  # a retry: counted once
]
#: single-record batches: with a 1-byte checkpoint floor the log outgrows the document
TOKEN_CHECKPOINTS: list[list[Op]] = [
    [("record", "anthropic", i, i, 0.5, "m1", "p1", f"r{i}")] for i in range(1, 7)
]


async def snapshot_run(
    name: str, snapshots: Snapshots, steps: list[list[Op]], tmp: Path, fault: Fault | None = None
) -> tuple[list[str], SimFS]:
    root = tmp / "sim"
    root.mkdir(parents=True)
    fs = SimFS(root, fault)
    await run_snapshots(snapshots, fs, root / "data", steps)
    assert len({repr(v) for v in snapshots.views}) > 1  # the workload changed something
    report = await enumerate_crashes(name, fs, snapshots, tmp)
    count(report)
    assert report.images > report.crash_points >= len(fs.trace)
    return report.violations, fs


class TestLearnedCrashPoints:
    async def test_pattern_batches(self, tmp_path: Path) -> None:
        violations, fs = await snapshot_run(
            "patterns", Snapshots(PATTERNS), PATTERN_STEPS, tmp_path
        )
        assert violations == []
        assert len(_pattern_ops(fs, "write", "learned_patterns/wal/")) == len(PATTERN_STEPS)
        # the close's checkpoint writes them past the shard limit: split at once
        assert len(_shards_created(fs)) >= 2, _shards_created(fs)

    async def test_pattern_checkpoints_split_a_written_shard(self, tmp_path: Path) -> None:
        # one session per batch: each close checkpoints over the shards the last one
        # wrote, so crashes fall in commits, in checkpoints and in segment retirement
        violations, fs = await state_crash_run(
            "patterns, a session per batch", PATTERN_SESSIONS, tmp_path, adapter=PATTERN_COUNTS
        )
        assert violations == []
        assert len(_shards_created(fs)) >= 3, _shards_created(fs)  # the root and its children
        assert _pattern_ops(fs, "unlink", "_shards/patterns/0-0.")  # the root, superseded
        assert _pattern_ops(fs, "truncate", "learned_patterns/wal/")  # each close empties it

    async def test_token_batches(self, tmp_path: Path) -> None:
        violations, fs = await snapshot_run("tokens", Snapshots(TOKENS), TOKEN_STEPS, tmp_path)
        assert violations == []
        assert any("tokens/wal/" in op.path for op in fs.trace if op.kind == "write")

    async def test_token_log_outgrows_its_checkpoint(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        checkpoint_often(monkeypatch, FileTokenStorage)
        violations, fs = await snapshot_run(
            "tokens checkpoint", Snapshots(TOKENS), TOKEN_CHECKPOINTS, tmp_path
        )
        assert violations == []
        checkpoints = [
            i
            for i, op in enumerate(fs.trace)
            if op.kind == "replace" and op.dst.endswith("token_usage.json")
        ]
        appends = [
            i for i, op in enumerate(fs.trace) if op.kind == "write" and "tokens/wal/" in op.path
        ]
        retired = [i for i, op in enumerate(fs.trace) if op.kind == "unlink" and "wal/" in op.path]
        # checkpoints beside the commits (more than the one at close), each retiring segments
        assert len(checkpoints) >= 2 and appends and retired and checkpoints[0] < appends[-1]


#: batches for the count models of .count_oracle; a store's steps are zipped with
#: another's into rounds (a batch of each per round)
PATTERN_ROUNDS: list[list[Op]] = [
    [("observe", "flow", "a", 1, 0)],
    [("observe", "flow", "a", 2, 1), ("observe", "risk", "b", 1, 2)],
    [("observe", "risk", "b", 3, 3)],
    [("observe", "flow", "c", 1, 4)],
]
TOKEN_ROUNDS: list[list[Op]] = [
    [("record", "p1", "p1:1", 100, 20)],
    [("record", "p1", "p1:2", 10, 2), ("record", "p2", "p2:1", 7, 3)],
    [("record", "p2", "p2:1", 5, 5)],  # a retried request id: counted once
    [("record", "p1", "p1:3", 1, 1)],
]
OTHERS: dict[str, tuple[StoreAdapter, list[list[Op]], str]] = {
    "patterns": (PATTERN_COUNTS, PATTERN_ROUNDS, "learned_patterns"),
    "tokens": (TOKEN_COUNTS, TOKEN_ROUNDS, "token_usage"),
    "state": (STATE, [state for _a, state in STATE_ROUNDS], "marcus_state"),
    "assignments": (ASSIGNMENTS, [assign for assign, _s in STATE_ROUNDS], "assignments"),
}


class TestInterleaved:
    @pytest.mark.parametrize(
        ("first", "second"),
        [("patterns", "tokens"), ("tokens", "state"), ("patterns", "assignments")],
    )
    async def test_two_actors(self, tmp_path: Path, first: str, second: str) -> None:
        root = tmp_path / "sim"
        root.mkdir()
        fs = LockedSimFS(root)
        (one, one_steps, one_dir), (two, two_steps, two_dir) = OTHERS[first], OTHERS[second]
        histories = History(one), History(two)
        rounds = list(zip(one_steps, two_steps, strict=False))
        await run_interleaved(*histories, fs, root / "data", rounds)
        assert all(None not in h.acked_at for h in histories)
        name = f"{first}+{second}"
        report = await enumerate_crashes(name, fs, Both(*histories), tmp_path)
        count(report)
        COUNTS["interleaved patterns/tokens crash images checked"] += report.images
        assert report.violations == []
        # both actors committed in the one trace
        written = {op.path for op in fs.trace if op.kind in ("write", "create")}
        assert any(one_dir in p for p in written) and any(two_dir in p for p in written), written
