"""The simulator the crash suites rest on: its durable model is the strict one."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from .simfs import SECTOR, SimFS, materialise


def _write(fs: SimFS, path: Path, data: bytes, *, fsync: bool = True) -> None:
    fd = fs.create(path)
    fs.write_all(fd, data)
    if fsync:
        fs.fsync(fd)
    fs.close(fd)


class TestDurableModel:
    def test_unsynced_data_and_entries_may_vanish(self, tmp_path: Path) -> None:
        fs = SimFS(tmp_path)
        _write(fs, tmp_path / "a", b"hello", fsync=False)
        must, may = fs.split(len(fs.trace))
        assert must == [] and len(may) == 2  # the create and the write
        kinds = {image.kind: image for image in fs.images(len(fs.trace))}
        assert kinds["nothing"].files == {}
        assert kinds["all"].files == {"a": b"hello"}
        assert kinds["omit:write(a +0 5B)"].files == {"a": b""}

    def test_fsync_then_dir_fsync_makes_everything_durable(self, tmp_path: Path) -> None:
        fs = SimFS(tmp_path)
        _write(fs, tmp_path / "a", b"hello")
        fs.fsync_dir(tmp_path)
        assert fs.split(len(fs.trace))[1] == []
        assert {i.digest() for i in fs.images(len(fs.trace))} == {
            fs.build("all", fs.split(len(fs.trace))[0]).digest()
        }

    def test_a_rename_is_durable_only_after_the_directory_fsync(self, tmp_path: Path) -> None:
        (tmp_path / "live").write_bytes(b"old")
        fs = SimFS(tmp_path)
        _write(fs, tmp_path / "live.tmp", b"new")
        fs.replace(tmp_path / "live.tmp", tmp_path / "live")
        states = {i.files.get("live") for i in fs.images(len(fs.trace))}
        assert states == {b"old", b"new"}  # either, never a mix or empty
        fs.fsync_dir(tmp_path)
        assert {i.files.get("live") for i in fs.images(len(fs.trace))} == {b"new"}

    def test_a_failed_fsync_drops_the_data_for_good(self, tmp_path: Path) -> None:
        fails = {"left": 1}

        def fault(_call: int, method: str) -> int | None:
            if method == "fsync" and fails["left"]:
                fails["left"] -= 1
                return errno.EIO
            return None

        fs = SimFS(tmp_path, fault)
        fd = fs.create(tmp_path / "a")
        fs.write_all(fd, b"lost")
        with pytest.raises(OSError):
            fs.fsync(fd)
        fs.fsync(fd)  # reports success: the kernel forgot the dirty pages
        fs.close(fd)
        fs.fsync_dir(tmp_path)
        assert {i.files["a"] for i in fs.images(len(fs.trace))} == {b""}

    def test_the_last_write_is_torn_at_sectors_or_garbage(self, tmp_path: Path) -> None:
        fs = SimFS(tmp_path)
        data = bytes(range(256)) * 5
        _write(fs, tmp_path / "a", data, fsync=False)
        torn = [i for i in fs.images(len(fs.trace)) if i.kind.startswith("torn@")]
        assert sorted(len(i.files["a"]) for i in torn) == list(range(0, len(data), SECTOR))
        garbage = [i for i in fs.images(len(fs.trace)) if i.kind.startswith("garbage")]
        assert len(garbage) == 1 and garbage[0].files["a"] != data

    def test_entries_under_a_lost_directory_are_lost(self, tmp_path: Path) -> None:
        fs = SimFS(tmp_path)
        fs.mkdir(tmp_path / "d")
        _write(fs, tmp_path / "d" / "a", b"x")
        fs.fsync_dir(tmp_path / "d")  # the file's entry is durable, the directory's is not
        nothing = fs.build("nothing", fs.split(len(fs.trace))[0])
        assert nothing.files == {} and "d" not in nothing.dirs
        where = tmp_path / "image"
        materialise(fs.build("all", list(range(len(fs.trace)))), where)
        assert (where / "d" / "a").read_bytes() == b"x"

    def test_appends_land_at_the_end(self, tmp_path: Path) -> None:
        (tmp_path / "log").write_bytes(b"line1\n")
        fs = SimFS(tmp_path)
        fd = fs.open_append(tmp_path / "log")
        fs.write_all(fd, b"line2\n")
        fs.fsync(fd)
        fs.write_all(fd, b"line3\n")  # not synced: may be lost or torn, never misplaced
        fs.close(fd)
        logs = {i.files["log"] for i in fs.images(len(fs.trace))}
        assert logs == {b"line1\nline2\n", b"line1\nline2\nline3\n"} | {
            i.files["log"] for i in fs.images(len(fs.trace)) if i.kind.startswith("garbage")
        }
