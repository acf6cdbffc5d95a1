"""A child process for the kill tests of the in-place migration: moves every store of
DATA to sqlite, printing one line per progress tick and step (flushed), so the
parent can kill it after any of them. ``python -m tests.ops._migrate_child DATA``."""

from __future__ import annotations

import sys
from pathlib import Path

from marcus_persist.ops.migrate._inplace import migrate_in_place
from marcus_persist.ops.migrate._run import STORES


def main(data: Path) -> int:
    def tick(store: str, done: int, total: int | None) -> None:
        print(f"tick {store} {done}/{total}", flush=True)

    def step(store: str, what: str) -> None:
        print(f"step {store} {what}", flush=True)

    report = migrate_in_place(data, STORES, "sqlite", on_progress=tick, on_step=step)
    print("done" if report.ok else "mismatch", flush=True)
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main(Path(sys.argv[1])))
