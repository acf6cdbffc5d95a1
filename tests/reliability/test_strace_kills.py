"""Suite 4b: targeted kills. ``strace`` fault injection SIGKILLs the child at
exactly the N-th fsync, rename or write: in assignment commits, audit appends and
a rotation to weekly gzips, state commits (log appends) and checkpoints (shards, bases)
and token batches. The parent reopens and checks the store's oracle."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest

from marcus_persist import open_runtime
from marcus_persist._core._atomic import is_temp_name

from ._load_child import MODES, ROTATION_OPTIONS, legal_states, rotation_days
from .audit_oracle import AUDIT, MovingClock
from .oracle import CLOCK, COUNTS
from .test_audit_crash_points import ROTATION_DAYS, ROTATION_TODAY

pytestmark = pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")

ROOT = Path(__file__).resolve().parents[2]
#: (mode, syscall, n): the N-th call of the child, startup included
TARGETS = [
    # a commit is a log append and its fdatasync; fsyncs and renames are startup's and
    # the checkpoint's at close (the global file, then the project's)
    *[("assignments", "fdatasync", n) for n in (1, 2, 3, 6, 8)],
    *[("assignments", "fsync", n) for n in (1, 2, 3, 6)],
    *[("assignments", "rename", n) for n in (1, 2)],
    *[("assignments", "write", n) for n in (1, 2, 4, 7)],
    # an append is a write and an fsync (each print of the child is two writes too)
    *[("audit", "fsync", n) for n in (1, 2, 4, 7)],
    *[("audit", "write", n) for n in (3, 8, 18)],
    # a state commit is a log append and its fdatasync; the checkpoint at close
    # writes the shards (fsyncs 1-16), the base (17, renamed), empties the log (19)
    *[("state", "fdatasync", n) for n in (1, 2, 5, 8)],
    *[("state", "fsync", n) for n in (1, 5, 11, 17, 19)],
    *[("state", "write", n) for n in (3, 10, 24)],
    ("state", "rename", 1),
    # a checkpoint thread after every commit (and a 1-byte manifest floor): shards,
    # bases and retirements beside the next commits' appends
    ("state-rebase", "rename", 1),
    *[("state-rebase", "fsync", n) for n in (2, 5, 8, 10)],  # counted per thread
    *[("state-rebase", "fdatasync", n) for n in (2, 4)],
    # a patterns batch is a log append and its fdatasync; the checkpoint at close
    # writes the shard and the manifest base (renamed), then empties the log
    *[("patterns", "fdatasync", n) for n in (1, 4, 8)],
    *[("patterns", "fsync", n) for n in (1, 3)],
    ("patterns", "rename", 1),
    # a token batch is a log append and its fdatasync; fsyncs and renames are the
    # checkpoint's at close (token_usage.json)
    *[("tokens", "fdatasync", n) for n in (1, 2, 3, 6, 8)],
    *[("tokens", "fsync", n) for n in (1, 2)],
    *[("tokens", "write", n) for n in (3, 8, 18)],
    ("tokens", "rename", 1),
    # with a 1-byte limit a batch starts a checkpoint (beside the next commits) once
    # the log outgrows token_usage.json
    *[("tokens-checkpoint", "fsync", n) for n in (1, 2, 3)],
    ("tokens-checkpoint", "rename", 1),
]
#: the rotation of three days into weekly gzips (renamed into place, then into the archive)
ROTATION_TARGETS = [
    *[("fsync", n) for n in (1, 2, 4, 7, 10, 13)],
    *[("rename", n) for n in (1, 3, 4, 6)],
    *[("write", n) for n in (3, 20, 31)],  # a rotation makes 37 writes on asyncio, 48 on trio
]
STEPS = 8


def strace_child(data: Path, syscall: str, n: int, mode: str) -> tuple[int, int]:
    """Run the load child on *data* until strace kills it at the *n*-th *syscall*
    (on trio for odd *n*, else asyncio); the last step it submitted and the last
    one acknowledged."""
    backend = "trio" if n % 2 else "asyncio"
    command = [
        "strace", "-f", "-qq", "-o", "/dev/null", "-e", f"trace={syscall}",
        "-e", f"inject={syscall}:signal=SIGKILL:when={n}",
        sys.executable, "-m", "tests.reliability._load_child", str(data), str(STEPS), mode,
        backend,
    ]  # fmt: skip
    child = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert child.returncode != 0, f"the child was never killed: {child.stdout}"
    assert "Traceback" not in child.stderr, child.stderr
    pairs = [line.split() for line in child.stdout.splitlines()]
    submitted = max((int(i) for k, i in pairs if k == "S"), default=-1)
    acked = max((int(i) for k, i in pairs if k == "A"), default=-1)
    print(f"{mode} on {backend}: {syscall} #{n}: submitted {submitted}, acked {acked}")
    COUNTS[f"targeted kills (strace), {mode}"] += 1
    return submitted, acked


async def _observe(data: Path, mode: str, **options: Any) -> Any:
    async with open_runtime(data, clock=CLOCK, **options) as rt:
        return await MODES[mode][0].observe(rt)


def assert_no_temps(data: Path) -> None:
    temps = [name for _d, _s, names in os.walk(data) for name in names if is_temp_name(name)]
    assert not temps, temps


@pytest.mark.parametrize(("mode", "syscall", "n"), TARGETS)
def test_kill_at_the_nth_syscall(tmp_path: Path, mode: str, syscall: str, n: int) -> None:
    data = tmp_path / "data"
    anyio.run(_observe, data, mode)  # the layout exists: the counted calls are the commits'
    submitted, acked = strace_child(data, syscall, n, mode)
    legal = legal_states(mode, submitted, acked)
    got = anyio.run(_observe, data, mode, backend="asyncio" if n % 2 else "trio")
    assert got in legal, f"killed at {syscall} #{n}: acked {acked}, recovered {got!r}"
    assert_no_temps(data)


async def _rotate_again(data: Path) -> list[int]:
    async with open_runtime(data, clock=MovingClock(ROTATION_TODAY), **ROTATION_OPTIONS) as rt:
        await rt.audit.rotate()
        events: list[int] = await AUDIT.observe(rt)
    assert list(data.glob("audit_logs/audit_*.jsonl")) == [], "day files left after rotation"
    return events


@pytest.mark.parametrize(("syscall", "n"), ROTATION_TARGETS)
def test_kill_during_a_rotation(tmp_path: Path, syscall: str, n: int) -> None:
    # the days' files go into weekly gzips and the archive: every event exactly once
    data = tmp_path / "data"
    anyio.run(rotation_days, data)
    submitted, acked = strace_child(data, syscall, n, "audit-rotate")
    assert submitted == 0 and acked == -1, "the kill did not land in the rotation"
    bad_lines = AUDIT.bad_lines
    backend = "asyncio" if n % 2 else "trio"  # the child ran on the other one
    got = anyio.run(partial(_observe, data, "audit", **ROTATION_OPTIONS), backend=backend)
    # what the kill left, the next rotation finishes
    again = anyio.run(_rotate_again, data, backend=backend)
    everything = list(range(1, len(ROTATION_DAYS) + 1))
    assert sorted(got) == everything and sorted(again) == everything, (got, again)
    assert AUDIT.bad_lines == bad_lines  # no line garbled either
    assert_no_temps(data)
