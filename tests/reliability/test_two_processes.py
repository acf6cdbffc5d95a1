"""Suite 7: two processes race to open one data directory: exactly one wins,
the other gets ``DataDirLocked``; after ``kill -9`` of the winner the lock is free."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import anyio

from marcus_persist import DataDirLocked, open_runtime
from marcus_persist._core._dirlock import DirLock

from .oracle import COUNTS

ROUNDS = 100


def _contender(data: Path, go: int, out: int, release: int, backend: str) -> None:
    async def main() -> None:
        try:
            async with open_runtime(data) as rt:
                await rt.assignments.assign(f"w{os.getpid()}", f"t{os.getpid()}")
                os.write(out, b"W\n")
                await anyio.to_thread.run_sync(os.read, release, 1)  # hold until killed
        except DataDirLocked as exc:
            os.write(out, f"L {exc.pid}\n".encode())

    os.read(go, 1)  # both start together
    anyio.run(main, backend=backend)


def _fork(data: Path, go: int, release: int, backend: str) -> tuple[int, int]:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            os.close(read_end)
            _contender(data, go, write_end, release, backend)
        except BaseException as exc:
            os.write(write_end, f"E {exc!r}\n".encode())
            code = 1
        finally:
            os._exit(code)
    os.close(write_end)
    return pid, read_end


def _line(fd: int) -> str:
    chunks = b""
    while not chunks.endswith(b"\n"):
        chunk = os.read(fd, 256)
        if not chunk:
            break
        chunks += chunk
    return chunks.decode().strip()


def test_two_processes_race_for_one_directory(tmp_path: Path) -> None:
    data = tmp_path / "data"
    named = 0
    for rnd in range(ROUNDS):
        go_r, go_w = os.pipe()
        rel_r, rel_w = os.pipe()
        backends = ("asyncio", "trio") if rnd % 2 else ("trio", "asyncio")
        children = [_fork(data, go_r, rel_r, backend) for backend in backends]
        os.write(go_w, b"gg")
        results = {pid: _line(fd) for pid, fd in children}
        winners = [pid for pid, line in results.items() if line == "W"]
        losers = [line for line in results.values() if line.startswith("L ")]
        assert len(winners) == 1 and len(losers) == 1, f"round {rnd}: {results}"
        holder = losers[0].split()[1]
        assert holder in (str(winners[0]), "None"), f"round {rnd}: named {holder}"
        named += holder == str(winners[0])
        os.kill(winners[0], signal.SIGKILL)
        for pid, fd in children:
            os.waitpid(pid, 0)
            os.close(fd)
        lock = DirLock(data)
        lock.acquire()  # free right after kill -9: the kernel dropped the flock
        lock.release()
        for fd in (go_r, go_w, rel_r, rel_w):
            os.close(fd)
        COUNTS["two-process races"] += 1
    assert named > ROUNDS // 2, "the loser should usually name the holder's pid"
