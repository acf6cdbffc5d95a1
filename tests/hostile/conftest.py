"""What every hostile-file test needs: a sentinel directory outside the data
directory whose every byte, name and mode is hashed before and after, and a
data directory filled through every store."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from marcus_persist import Runtime, open_runtime

SECRET = b"the operator's private key: never copied, never changed\n"


class Outside:
    """A directory beside the data directory, with a private (0600) file in it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(mode=0o700)
        self.secret = root / "secret.txt"
        self.secret.write_bytes(SECRET)
        self.secret.chmod(0o600)
        (root / "sub").mkdir()
        (root / "sub" / "notes.jsonl").write_bytes(b'{"keep": 1}\n{"partial": ')
        self.before = self.digest()

    def digest(self) -> str:
        """SHA-256 over every entry: path, kind, mode, size and bytes."""
        sha = hashlib.sha256()
        for dirpath, dirs, files in os.walk(self.root):
            dirs.sort()
            for name in sorted(dirs + files):
                path = Path(dirpath, name)
                info = path.lstat()
                sha.update(
                    f"{path.relative_to(self.root)}|{info.st_mode:o}|{info.st_size}|".encode()
                )
                if stat.S_ISREG(info.st_mode):
                    sha.update(path.read_bytes())
        return sha.hexdigest()

    def assert_unchanged(self) -> None:
        assert self.digest() == self.before, f"something outside the data dir changed: {self.root}"


@pytest.fixture
def outside(tmp_path: Path) -> Iterator[Outside]:
    sentinel = Outside(tmp_path / "outside")
    yield sentinel
    sentinel.assert_unchanged()  # every test, also the ones that forget to ask


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return tmp_path / "data"


async def fill(rt: Runtime) -> None:
    """One write to every store (files in every directory of the layout)."""
    await rt.assignments.assign("agent-1", "task-1", {"name": "x"})
    await rt.assignments.for_project("p1").assign("agent-2", "task-2", {"name": "y"})
    await rt.state.store("events", "e1", {"event_type": "started"})
    await rt.audit.log_event("tool_call", "agent-1", "agent", "ping", {"n": 1})
    await rt.patterns.observe("dependency", "frontend_needs_api", 0.9)
    await rt.tokens.record("anthropic", 100, 50, 0.01, request_id="req-1")


def snapshot(root: Path) -> dict[str, bytes | str]:
    """Every entry under *root*: bytes of files, the kind of everything else."""
    found: dict[str, bytes | str] = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(dirpath, name)
            rel = str(path.relative_to(root))
            if path.is_symlink():
                found[rel] = f"-> {os.readlink(path)}"
            elif path.is_file():
                found[rel] = path.read_bytes()
            else:
                found[rel] = "dir" if path.is_dir() else "special"
    return found


class Cli:
    """``marcus-persist`` run in this process, in a worker thread."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
        self._monkeypatch = monkeypatch
        self._capsys = capsys

    async def __call__(self, *args: str) -> tuple[int, str]:
        """The exit code and everything printed (stdout, then stderr)."""
        from marcus_persist.cli._main import main

        def run() -> int:
            try:
                return main()
            except SystemExit as exit_:  # commands like doctor choose their own code
                return int(exit_.code or 0)

        self._monkeypatch.setattr("sys.argv", ["marcus-persist", *args])
        code = await anyio.to_thread.run_sync(run)
        captured = self._capsys.readouterr()
        return code, captured.out + captured.err


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(monkeypatch, capsys)


async def filled(data: Path) -> None:
    """A data directory written by every store, then closed."""
    async with open_runtime(data) as rt:
        await fill(rt)
