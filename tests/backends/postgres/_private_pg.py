"""A PostgreSQL server of a test's own (initdb + pg_ctl on a free port), which the test
may crash and restart without disturbing anyone else's server."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests._services import unavailable
from tests.backends.conftest import free_port

__all__ = ("PrivatePostgres",)


class PrivatePostgres:
    """initdb + pg_ctl on a free port (as the ``postgres`` user when we are root)."""

    def __init__(self) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl")) or [
            p for p in [shutil.which("pg_ctl")] if p
        ]
        if not found:
            unavailable("pg_ctl/initdb are not installed")
        self.bin = Path(found[-1]).parent
        self.root = Path(tempfile.mkdtemp(prefix="marcus-pg-"))
        self.port = free_port()
        self.dsn = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._as: list[str] = []
        if os.geteuid() == 0:
            self._as = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.root, "postgres")
        self._run(
            "initdb", "-D", str(self.root / "data"), "-A", "trust", "-U", "postgres", "--no-sync"
        )
        self.start()

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run(
            [*self._as, str(self.bin / tool), *args],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
        )

    def _ctl(self, *args: str) -> None:
        self._run("pg_ctl", "-D", str(self.root / "data"), "-w", *args)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        self._ctl("-l", str(self.root / "log"), "-o", options, "start")

    def crash_and_restart(self) -> None:
        """Stop without a checkpoint (like a crash: recovery replays the WAL), start again."""
        self._ctl("-m", "immediate", "stop")
        self.start()

    def remove(self) -> None:
        try:
            self._ctl("-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
