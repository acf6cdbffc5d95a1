"""A writer killed mid-run: ``python -m tests.runtime._replicate_child DATA URL START SYNC_AT``.

Upserts ``w<i>: t<i>`` one at a time from ``START`` on, with ``archive_url``
replication every 50 ms, printing ``ack <i>`` after each acknowledgement; after
``SYNC_AT`` it waits until everything is shipped and prints ``synced <i>``, then
goes on writing until it is killed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import anyio

from marcus_persist import open_runtime


async def main(data: Path, url: str, start: int, sync_at: int) -> None:
    async with open_runtime(data, archive_url=url, replicate_interval_seconds=0.05) as rt:
        assert rt.replicator is not None
        i = start
        while True:
            await rt.assignments.save_assignment(f"w{i}", f"t{i}", {"i": i})
            print(f"ack {i}", flush=True)
            if i == sync_at:
                await rt.replicator.sync()
                print(f"synced {i}", flush=True)
            i += 1


if __name__ == "__main__":
    data, url, start, sync_at = sys.argv[1:5]
    anyio.run(main, Path(data), url, int(start), int(sync_at))
