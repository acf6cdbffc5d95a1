"""Assignments on the file backend's write-ahead log: one sync per batch, bytes that
follow the batch, checkpoints beside commits, recovery, a corrupt log."""

from __future__ import annotations

import errno
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from marcus_persist import CorruptDataError, Runtime, open_runtime
from marcus_persist._core._fs import FileSystem
from marcus_persist._core._wal import WriteAheadLog
from marcus_persist.backends._assignments import check_records
from marcus_persist.backends._files import FileContext
from marcus_persist.backends.file import FileBackend
from marcus_persist.backends.file._logged import CheckpointPolicy
from tests.conftest import FaultyFS, crashed_with_a_log

pytestmark = pytest.mark.anyio


class CountingFS(FileSystem):
    """Counts every sync (``fdatasync`` reaches ``fsync``) and every byte written."""

    def __init__(self) -> None:
        self.syncs = 0
        self.dir_syncs = 0
        self.written = 0

    def fsync(self, fd: int) -> None:
        self.syncs += 1
        super().fsync(fd)

    def fsync_dir(self, path: Path) -> None:
        self.dir_syncs += 1
        super().fsync_dir(path)

    def write(self, fd: int, data: bytes | memoryview) -> int:
        n = super().write(fd, data)
        self.written += n
        return n


class GatedFS(FileSystem):
    """Once armed, holds every ``replace`` (a checkpoint's rename) until ``gate`` is set."""

    def __init__(self) -> None:
        self.armed = False
        self.gate = threading.Event()
        self.waiting = threading.Event()

    def replace(self, src: Path, dst: Path) -> None:
        if self.armed:
            self.waiting.set()
            self.gate.wait(60)
        super().replace(src, dst)


@contextmanager
def one_sync_per_batch(fs: CountingFS, rt: Runtime, store: str) -> Iterator[None]:
    """Check that the block's commits to *store* synced once per batch and synced no
    directory."""
    before = (fs.syncs, fs.dir_syncs, rt.statistics()[store].batches)
    yield
    batches = rt.statistics()[store].batches - before[2]
    assert (fs.syncs - before[0], fs.dir_syncs - before[1]) == (batches, 0)


def backend(root: Path, fs: FileSystem, policy: CheckpointPolicy) -> FileBackend:
    return FileBackend(FileContext(root, fs, sync=True, on_corrupt="error"), checkpoints=policy)


def wal_dir(root: Path) -> Path:
    return root / "assignments" / "wal"


class TestCommitPath:
    async def test_exactly_one_sync_per_batch(self, tmp_path: Path) -> None:
        fs = CountingFS()
        async with open_runtime(tmp_path, fs=fs) as rt:
            for n in range(20):
                with one_sync_per_batch(fs, rt, "assignments"):
                    if n % 2:  # a batch that touches the global file and two project files
                        async with anyio.create_task_group() as tg:
                            tg.start_soon(rt.assignments.assign, f"w{n}", f"t{n}", {})
                            tg.start_soon(
                                rt.assignments.for_project("a").assign, f"w{n}", f"x{n}", {}
                            )
                            tg.start_soon(
                                rt.assignments.for_project("b").assign, f"w{n}", f"y{n}", {}
                            )
                    else:
                        await rt.assignments.assign(f"w{n}", f"t{n}", {})
        async with open_runtime(tmp_path) as rt:
            assert len(await rt.assignments.get_all_assigned_task_ids()) == 20
            assert len(await rt.assignments.for_project("b").get_all_assigned_task_ids()) == 10

    async def test_bytes_per_commit_follow_the_batch_not_the_data(self, tmp_path: Path) -> None:
        fs = CountingFS()
        written: list[int] = []
        async with open_runtime(tmp_path, fs=fs) as rt:
            for size in (10, 2000):
                async with anyio.create_task_group() as tg:
                    for n in range(len(written) * 10, size):
                        tg.start_soon(rt.assignments.assign, f"w{n}", f"t{n}", {"n": n})
                before = fs.written
                await rt.assignments.assign("probe", f"p{size:05d}", {"n": 1})
                written.append(fs.written - before)
        assert written[0] == written[1] < 200  # one record, whatever the store holds
        assert len(written) == 2


class TestCheckpoints:
    async def test_commits_go_on_while_a_checkpoint_writes(self, tmp_path: Path) -> None:
        fs = GatedFS()
        files = backend(tmp_path, fs, CheckpointPolicy(max_bytes=1))  # every commit is due
        live = tmp_path / "assignments" / "assignments.json"
        try:
            async with open_runtime(tmp_path, backend=files) as rt:
                fs.armed = True
                await rt.assignments.assign("w0", "t0", {})  # starts a checkpoint...
                await anyio.to_thread.run_sync(fs.waiting.wait, 60)  # ...held at its rename
                for n in range(1, 50):
                    await rt.assignments.assign(f"w{n}", f"t{n}", {})  # not held behind it
                assert not live.exists()
                assert len(files.assignments().logged.segments()) == 2  # the new one takes them
                fs.gate.set()
        finally:
            fs.gate.set()
        async with open_runtime(tmp_path) as rt:
            assert len(await rt.assignments.get_all_assigned_task_ids()) == 50

    async def test_a_checkpoint_that_cannot_start_never_fails_a_commit(
        self, tmp_path: Path, faulty_fs: FaultyFS
    ) -> None:
        files = backend(tmp_path, faulty_fs, CheckpointPolicy(max_bytes=1))  # every commit is due
        async with open_runtime(tmp_path, backend=files) as rt:
            faulty_fs.fail["fsync_dir"] = errno.EIO  # a new segment cannot be made durable
            for n in range(10):
                await rt.assignments.assign(f"w{n}", f"t{n}", {})  # each durable, each answered
            assert files.assignments().logged.segments() == [1]
            del faulty_fs.fail["fsync_dir"]
        async with open_runtime(tmp_path) as rt:
            assert len(await rt.assignments.get_all_assigned_task_ids()) == 10

    async def test_size_limit_keeps_the_log_small(self, tmp_path: Path) -> None:
        files = backend(tmp_path, FileSystem(), CheckpointPolicy(max_bytes=4096))
        async with open_runtime(tmp_path, backend=files) as rt:
            for n in range(300):
                await rt.assignments.save_assignment(f"w{n % 7}", f"t{n}", {"pad": "x" * 100})
            logged = files.assignments().logged
            await anyio.to_thread.run_sync(logged.wait)
            assert len(logged.segments()) <= 2
            assert logged.size() < 2 * 4096 + 1024
            on_disk = json.loads((tmp_path / "assignments" / "assignments.json").read_bytes())
            assert len(on_disk) == 7  # the checkpoints wrote Marcus's file meanwhile
        assert [p.stat().st_size for p in wal_dir(tmp_path).iterdir()] == [0]  # emptied

    async def test_clean_close_leaves_marcus_files_and_an_empty_log(self, tmp_path: Path) -> None:
        async with open_runtime(tmp_path) as rt:
            await rt.assignments.assign("w1", "t1", {"name": "x"})
            await rt.assignments.for_project("p").assign("w2", "t2", {})
            assert await rt.checkpoint() == ["assignments"]
            assert await rt.checkpoint() == []  # nothing new
            await rt.assignments.remove_assignment("w1")
        assert json.loads((tmp_path / "assignments" / "assignments.json").read_bytes()) == {}
        project = tmp_path / "assignments" / "project_p" / "assignments.json"
        assert list(json.loads(project.read_bytes())) == ["w2"]
        assert [p.stat().st_size for p in wal_dir(tmp_path).iterdir()] == [0]


async def a_flipped_record_is_refused(data_dir: Path, wal: Path) -> Path:
    """Flip a byte inside the first record of *wal*'s oldest segment (sound ones follow:
    corruption): the runtime refuses *data_dir*, changing nothing. Returns the segment."""
    segment = next(iter(sorted(wal.glob("*.log"))))
    data = bytearray(segment.read_bytes())
    data[22] ^= 0xFF  # inside the first record's payload (its header is 20 bytes)
    segment.write_bytes(bytes(data))
    with pytest.raises(CorruptDataError, match="followed by a sound record"):
        async with open_runtime(data_dir):
            pass
    assert segment.read_bytes() == bytes(data)  # refused, changed nothing
    return segment


class TestRecovery:
    async def test_a_log_left_by_a_crash_is_replayed(self, tmp_path: Path) -> None:
        crashed = await crashed_with_a_log(tmp_path)
        async with open_runtime(crashed) as rt:
            assert await rt.assignments.get_all_assigned_task_ids() == {"t2"}
            assert await rt.assignments.for_project("p").get_all_assigned_task_ids() == {"t3"}

    async def test_a_corrupt_log_is_refused_or_quarantined(self, tmp_path: Path) -> None:
        crashed = await crashed_with_a_log(tmp_path)
        segment = await a_flipped_record_is_refused(crashed, wal_dir(crashed))
        async with open_runtime(crashed, on_corrupt="quarantine") as rt:
            assert await rt.assignments.get_all_assigned_task_ids() == {"t1"}  # the files
            assert [q.path for q in rt.quarantined] == [str(wal_dir(crashed))]
        moved = [p for p in wal_dir(crashed).parent.iterdir() if ".corrupt-" in p.name]
        assert [p.name for p in moved[0].iterdir()] == [segment.name]

    def test_what_the_log_leaves_is_checked_as_a_file_is(self, tmp_path: Path) -> None:
        """Replay checks the records the log leaves in each scope it touched (a record
        a later batch replaced never loads): a bad one, or a task two workers hold
        after the log's batches, is corruption naming the log."""
        good = {"task_id": "t1", "assigned_at": "2026-01-01T00:00:00+00:00", "task_data": {}}
        batches: dict[str, list[Any]] = {
            "bad record left": [[[None, {"w1": {"task_id": 5}}]]],
            "task held twice": [
                [[None, {"w1": good}]],
                [["p", {"w9": good}], [None, {"w2": good}]],
            ],
        }
        for case, changes in batches.items():
            root = tmp_path / case.replace(" ", "-")
            FileBackend(FileContext(root, FileSystem(), False, "error")).assignments().load(
                check_records
            )
            wal = WriteAheadLog(wal_dir(root), {1: 0}, 1, sync=False)
            for batch in changes:
                wal.append(json.dumps(batch).encode())
            wal.close()
            with pytest.raises(CorruptDataError, match="a sealed record") as caught:
                FileBackend(FileContext(root, FileSystem(), False, "error")).assignments().load(
                    check_records
                )
            assert caught.value.path == str(wal_dir(root))
        replaced = tmp_path / "replaced"  # the bad record never loads: a later batch replaced it
        FileBackend(FileContext(replaced, FileSystem(), False, "error")).assignments().load(
            check_records
        )
        wal = WriteAheadLog(wal_dir(replaced), {1: 0}, 1, sync=False)
        wal.append(json.dumps([[None, {"w1": {"task_id": 5}}]]).encode())
        wal.append(json.dumps([[None, {"w1": good}]]).encode())
        wal.close()
        storage = FileBackend(FileContext(replaced, FileSystem(), False, "error")).assignments()
        assert storage.load(check_records) == {None: {"w1": good}}
