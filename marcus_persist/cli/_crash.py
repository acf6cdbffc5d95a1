"""``demo --crash``: kill a writer with SIGKILL mid-load, reopen, count what survived.

The parent starts a child process (``python -m marcus_persist.cli._crash_child``)
whose agents write to the assignments, state and audit stores and print one
line per write *after* it was acknowledged. Once the parent has read
``kill_after`` such lines it kills the child with SIGKILL, reads the lines the
child had printed before it died, reopens the directory (recovery) and looks
for every acknowledged write, records the result there (a write after the
crash, as a restarted Marcus makes); then it runs ``doctor``. The demo passes only
when nothing acknowledged is missing and doctor finds the directory clean.

``--drop-one`` (for the test of this check) makes the child acknowledge one
state write it never made: the parent must then report it lost.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import msgspec

from marcus_persist._runtime import open_runtime
from marcus_persist.ops.doctor import diagnose

__all__ = ("CrashReport", "crash_demo")

#: what the child writes; the tool name marks its audit events
COLLECTION = "crash_demo"
TOOL = "crash_demo"


class CrashReport(msgspec.Struct, frozen=True):
    """Acknowledged writes per store against what the reopened directory holds."""

    acknowledged: dict[str, int]
    found: dict[str, int]
    lost: list[str]  #: the acknowledged writes not found (first 20)
    lost_count: int
    doctor_problems: list[str]
    killed_after: int  #: acknowledgements read before the SIGKILL

    @property
    def ok(self) -> bool:
        return self.lost_count == 0 and not self.doctor_problems


def crash_demo(
    data_dir: Path,
    *,
    agents: int = 50,
    kill_after: int = 2000,
    backend: str = "file",
    loop: str = "asyncio",
    drop_one: bool = False,
) -> CrashReport:
    """Run the crash check on *data_dir* (blocking). See the module docstring.

    :raises RuntimeError: if the child ended on its own before the kill (its stderr)
    """
    run = time.strftime("%Y%m%dT%H%M%S")
    child_module = "marcus_persist.cli._crash_child"
    command = [sys.executable, "-m", child_module, str(data_dir), run, str(agents), backend, loop]
    acked: list[str] = []
    with subprocess.Popen(
        [*command, *(["--drop-one"] if drop_one else [])],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as child:
        assert child.stdout is not None and child.stderr is not None
        for line in child.stdout:
            if not line.endswith("\n"):
                break  # cut by the kill: never acknowledged in full
            acked.append(line.rstrip("\n"))
            if len(acked) == kill_after:
                os.kill(child.pid, signal.SIGKILL)
        code = child.wait()
        if code != -signal.SIGKILL:
            said = [line for line in child.stderr.read().splitlines() if line.strip()]
            raise RuntimeError(f"the writer ended by itself ({code}): {said[-1] if said else ''}")
    found, lost = anyio.run(_verify, data_dir, run, acked, backend, backend=loop)
    problems = [
        f"{f.severity}: {f.path}: {f.problem}"
        for f in diagnose(data_dir)
        if f.severity != "info" and f.repaired is None
    ]
    counts: dict[str, int] = {}
    for line in acked:
        counts[line.split(" ", 1)[0]] = counts.get(line.split(" ", 1)[0], 0) + 1
    return CrashReport(counts, found, lost[:20], len(lost), problems, kill_after)


async def _verify(
    data_dir: Path, run: str, acked: list[str], backend: str
) -> tuple[dict[str, int], list[str]]:
    """Reopen *data_dir*, look for every acknowledged write, then record the result
    there: the first commit after a crash also completes the recovery (a checkpoint
    the kill cut short leaves shard files no manifest names; that commit removes them)."""
    found = {"assignments": 0, "state": 0, "audit": 0}
    lost: list[str] = []
    async with open_runtime(data_dir, backend=backend) as rt:
        audited = {
            (e["client_id"], e["details"].get("seq")) async for e in rt.audit.query(tool_name=TOOL)
        }
        held = await rt.assignments.get_all_assignments()
        for line in acked:
            store, worker, seq_text = line.split(" ")
            seq = int(seq_text)
            match store:
                case "assignments":
                    # the last save of a worker wins: one at this seq or later is there
                    task = held.get(worker, {}).get("task_id", "/0")
                    there = int(task.rsplit("/", 1)[1]) >= seq
                case "state":
                    there = await rt.state.retrieve(COLLECTION, f"{worker}-{seq}") is not None
                case _:
                    there = (worker, seq) in audited
            if there:
                found[store] += 1
            else:
                lost.append(line)
        result = {"acknowledged": len(acked), "lost": len(lost)}
        await rt.state.store(COLLECTION, f"checked-{run}", result)
    return found, lost
