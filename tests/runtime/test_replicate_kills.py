"""kill -9 with replication on: the archive holds every write shipped before the kill,
and what it holds is exactly a prefix of the acknowledged writes."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from marcus_persist._core._objstore import open_object_store
from marcus_persist.ops.remote import restore_from_store
from tests.runtime.test_replicate import stored_tasks

ROOT = Path(__file__).resolve().parents[2]
ROUNDS = 3
#: acknowledgements the child makes after its sync, before it is killed
AFTER_SYNC = 25


def _run_until_killed(data: Path, url: str, start: int, sync_at: int) -> int:
    """Run the child, kill -9 it once it synced and acknowledged AFTER_SYNC more;
    the last write it acknowledged."""
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.runtime._replicate_child", str(data), url, str(start),
         str(sync_at)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert child.stdout is not None
    last, synced = start - 1, False
    try:
        for line in child.stdout:
            word, number = line.split()
            if word == "synced":
                synced = True
            else:
                last = int(number)
            if synced and last >= sync_at + AFTER_SYNC:
                break
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
    assert synced, f"the child stopped before it synced (exit {child.returncode})"
    return last


def test_restore_after_each_kill_holds_what_was_shipped_and_a_prefix_only(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    url = f"file://{tmp_path}/archive"
    store = open_object_store(url)
    start = 0
    for n in range(ROUNDS):
        sync_at = start + 10
        last = _run_until_killed(data, url, start, sync_at)
        restored = stored_tasks(_restore(store, tmp_path / f"restored-{n}"))
        count = len(restored)
        # a prefix of the writes (a write after the last ack may be in: it was
        # durable, just not answered), holding at least everything synced
        assert restored == {f"w{i}": f"t{i}" for i in range(count)}
        assert sync_at + 1 <= count <= last + 2
        start = last + 1  # the next run goes on after the last acknowledged write


def _restore(store: object, target: Path) -> Path:
    restore_from_store(store, target)  # type: ignore[arg-type]
    return target
