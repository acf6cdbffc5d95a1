"""Suite 4b: targeted kills. ``strace`` fault injection SIGKILLs the child at
exactly the N-th fsync, rename or write; the parent reopens and checks the oracle."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from marcus_persist import open_runtime

from ._load_child import op
from .oracle import ASSIGNMENTS, CLOCK, COUNTS, State

OPS = 8
ROOT = Path(__file__).resolve().parents[2]
TARGETS = [("fsync", n) for n in (1, 2, 3, 6, 9)] + [
    (name, n) for name in ("rename", "write") for n in (1, 2, 4, 7)
]


async def _observe(data: Path) -> State:
    async with open_runtime(data, clock=CLOCK) as rt:
        return await ASSIGNMENTS.observe(rt)


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")
@pytest.mark.parametrize(("syscall", "n"), TARGETS)
def test_kill_at_the_nth_syscall(tmp_path: Path, syscall: str, n: int) -> None:
    data = tmp_path / "data"
    anyio.run(_observe, data)  # the layout exists: the counted calls are the commits'
    command = [
        "strace", "-f", "-qq", "-o", "/dev/null", "-e", f"trace={syscall}",
        "-e", f"inject={syscall}:signal=SIGKILL:when={n}",
        sys.executable, "-m", "tests.reliability._load_child", str(data), str(OPS),
    ]  # fmt: skip
    child = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert child.returncode != 0, f"the child was never killed: {child.stdout}"
    pairs = [line.split() for line in child.stdout.splitlines()]
    submitted = max((int(i) for k, i in pairs if k == "S"), default=-1)
    acked = max((int(i) for k, i in pairs if k == "A"), default=-1)
    print(f"{syscall} #{n}: submitted {submitted}, acked {acked}")
    assert "Traceback" not in child.stderr, child.stderr
    states, state = [], ASSIGNMENTS.initial()
    for i in range(submitted + 1):
        state = ASSIGNMENTS.apply(state, op(i))
        states.append(state)
    legal = states[acked:] if acked >= 0 else [ASSIGNMENTS.initial(), *states]
    got = anyio.run(_observe, data)
    assert got in legal, f"killed at {syscall} #{n}: acked {acked}, recovered {got!r}"
    temps = [name for _d, _s, names in os.walk(data) for name in names if ".tmp-" in name]
    assert not temps
    COUNTS["targeted kills (strace)"] += 1
