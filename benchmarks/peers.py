"""The strongest peers: what an expert would write instead of marcus_persist.

Built by us from the description in issue 16, for comparison only. Every
peer is one :class:`Writer`: a dedicated thread that blocks for one request,
then takes every request already waiting, applies the whole batch as **one
durable transaction**, and answers the batch with one call onto the event
loop. Callers hand requests over a thread-safe queue and park on the
cheapest wake-up their loop offers (:mod:`marcus_persist._core._wakeup`), so
a peer runs on asyncio and on trio alike. Because the writer goes back to the
queue as soon as its commit returns, the callers woken by batch *k* queue up
while batch *k+1* commits: the overlap our actor does not have.

The engines behind the writer:

* :class:`SQLiteExpert` -- stdlib sqlite3, WAL, ``synchronous=FULL`` (durable
  on power loss), 64 MB page cache, one ``WITHOUT ROWID`` table per data type
  keyed by its primary key (one B-tree per row), ``executemany`` upserts and
  deletes, one ``BEGIN``/``COMMIT`` per batch.
* :class:`LMDBEngine` -- py-lmdb, ``sync=True`` (fsync per write transaction),
  one sub-database per data type, ``putmulti`` per batch.
* :class:`FloorEngine` -- the floor: the batch's records appended to one log
  file and one ``fdatasync``; no index, nothing to read back but the log.
* naive SQLite -- :class:`SQLiteExpert` behind a writer with ``max_batch=1``:
  one commit (one WAL fsync) per operation, for reference.

The writer keeps each table's key set in memory (the expert's index): it
answers a delete ("was it there?") and an insert-if-new from it, and coalesces
a batch to the last write per key before the engine sees it.
"""

from __future__ import annotations

import os
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal, Protocol

import anyio
import anyio.to_thread
import msgspec

from marcus_persist._core._wakeup import Wakeup, loop_caller, wakeup_factory

__all__ = (
    "PEERS",
    "Changes",
    "Engine",
    "FloorEngine",
    "LMDBEngine",
    "SQLiteExpert",
    "Writer",
    "open_peer",
)

#: peer name -> (engine class, max batch: None for unbounded)
PEERS: dict[str, tuple[str, int | None]] = {
    "sqlite_expert": ("sqlite", None),
    "lmdb": ("lmdb", None),
    "floor": ("floor", None),
    "sqlite_naive": ("sqlite", 1),
}
TABLES = ("assignments", "state", "audit", "tokens")

Kind = Literal["put", "delete", "insert", "append"]


class Changes(msgspec.Struct):
    """One table's part of a batch, coalesced: the last write per key wins."""

    puts: dict[str, bytes] = {}
    deletes: set[str] = set()
    appends: list[bytes] = []


class Engine(Protocol):
    """Storage behind a :class:`Writer`; every method runs on the writer thread."""

    def commit(self, batch: dict[str, Changes]) -> None:
        """Make *batch* durable as one transaction; raise and change nothing on failure."""
        ...

    def keys(self, table: str) -> set[str]:
        """The keys stored in *table* (read back from storage)."""
        ...

    def count(self, table: str) -> int:
        """Rows (or appended records) in *table*, read back from storage."""
        ...

    def close(self) -> None: ...


class SQLiteExpert:
    """sqlite3 as an expert tunes it for durable group commit."""

    def __init__(self, directory: Path) -> None:
        self._db = sqlite3.connect(
            directory / "peer.sqlite3", isolation_level=None, check_same_thread=False
        )  # made on the loop, then used by the writer thread alone
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # NORMAL can lose commits in WAL mode
        self._db.execute("PRAGMA cache_size=-65536")  # 64 MB
        for table in TABLES:
            key = "k INTEGER" if table == "audit" else "k TEXT"
            self._db.execute(
                f"CREATE TABLE IF NOT EXISTS {table} ({key} PRIMARY KEY, v BLOB NOT NULL)"
                " WITHOUT ROWID"
            )
        self._next_seq = (self._db.execute("SELECT max(k) FROM audit").fetchone()[0] or 0) + 1

    def commit(self, batch: dict[str, Changes]) -> None:
        db = self._db
        db.execute("BEGIN")
        try:
            seq = self._next_seq
            for table, changes in batch.items():
                if changes.puts:
                    db.executemany(
                        f"INSERT INTO {table} (k, v) VALUES (?, ?)"
                        " ON CONFLICT(k) DO UPDATE SET v = excluded.v",
                        changes.puts.items(),
                    )
                if changes.deletes:
                    db.executemany(
                        f"DELETE FROM {table} WHERE k = ?", ((k,) for k in changes.deletes)
                    )
                if changes.appends:
                    rows = [(seq + i, v) for i, v in enumerate(changes.appends)]
                    db.executemany(f"INSERT INTO {table} (k, v) VALUES (?, ?)", rows)
                    seq += len(rows)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._next_seq = seq

    def keys(self, table: str) -> set[str]:
        return {str(k) for (k,) in self._db.execute(f"SELECT k FROM {table}")}

    def count(self, table: str) -> int:
        found: int = self._db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        return found

    def close(self) -> None:
        self._db.close()


class LMDBEngine:
    """py-lmdb with ``sync=True``: every write transaction is fsynced before it returns."""

    def __init__(self, directory: Path) -> None:
        import lmdb

        self._env = lmdb.open(
            str(directory / "peer.lmdb"), map_size=8 << 30, max_dbs=len(TABLES), sync=True
        )
        self._dbs = {t: self._env.open_db(t.encode()) for t in TABLES}
        with self._env.begin(db=self._dbs["audit"]) as txn:
            self._next_seq = txn.stat(self._dbs["audit"])["entries"] + 1

    def commit(self, batch: dict[str, Changes]) -> None:
        seq = self._next_seq
        with self._env.begin(write=True) as txn:  # aborted if this raises
            for table, changes in batch.items():
                db = self._dbs[table]
                if changes.puts:
                    txn.cursor(db).putmulti([(k.encode(), v) for k, v in changes.puts.items()])
                for key in changes.deletes:
                    txn.delete(key.encode(), db=db)
                if changes.appends:
                    rows = [
                        ((seq + i).to_bytes(8, "big"), v) for i, v in enumerate(changes.appends)
                    ]
                    txn.cursor(db).putmulti(rows, append=True)
                    seq += len(rows)
        self._next_seq = seq

    def keys(self, table: str) -> set[str]:
        with self._env.begin(db=self._dbs[table]) as txn:
            return {bytes(k).decode() for k in txn.cursor().iternext(values=False)}

    def count(self, table: str) -> int:
        with self._env.begin() as txn:
            entries: int = txn.stat(self._dbs[table])["entries"]
            return entries

    def close(self) -> None:
        self._env.close()


class FloorEngine:
    """Append the batch to one log and ``fdatasync`` it: the least a durable write costs.

    Each record is one line ``table TAB kind TAB key TAB value`` (JSON values hold
    no raw tab or newline); :meth:`count` replays the log from disk.
    """

    def __init__(self, directory: Path) -> None:
        self._path = directory / "peer.log"
        self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def commit(self, batch: dict[str, Changes]) -> None:
        lines: list[bytes] = []
        for table, changes in batch.items():
            name = table.encode()
            lines += [b"%s\tput\t%s\t%s\n" % (name, k.encode(), v) for k, v in changes.puts.items()]
            lines += [b"%s\tdel\t%s\t\n" % (name, k.encode()) for k in changes.deletes]
            lines += [b"%s\tadd\t\t%s\n" % (name, v) for v in changes.appends]
        data = memoryview(b"".join(lines))
        while data:
            data = data[os.write(self._fd, data) :]
        os.fdatasync(self._fd)

    def _replay(self, table: str) -> tuple[set[str], int]:
        keys: set[str] = set()
        appended = 0
        with self._path.open("rb") as log:
            for line in log:
                name, kind, key, _ = line.split(b"\t", 3)
                if name.decode() != table:
                    continue
                if kind == b"put":
                    keys.add(key.decode())
                elif kind == b"del":
                    keys.discard(key.decode())
                else:
                    appended += 1
        return keys, appended

    def keys(self, table: str) -> set[str]:
        return self._replay(table)[0]

    def count(self, table: str) -> int:
        keys, appended = self._replay(table)
        return len(keys) + appended

    def close(self) -> None:
        os.close(self._fd)


ENGINES: dict[str, Callable[[Path], Engine]] = {
    "sqlite": SQLiteExpert,
    "lmdb": LMDBEngine,
    "floor": FloorEngine,
}


class _Request:
    __slots__ = ("answer", "error", "key", "kind", "table", "value", "wakeup")

    def __init__(self, kind: Kind, table: str, key: str, value: bytes, wakeup: Wakeup) -> None:
        self.kind, self.table, self.key, self.value = kind, table, key, value
        self.wakeup = wakeup
        self.answer: Any = None
        self.error: BaseException | None = None


_STOP = object()


class Writer:
    """One writer thread over an :class:`Engine`; enter with ``async with`` on the loop.

    ``put`` (upsert), ``delete`` (-> whether the key was there), ``insert``
    (-> ``False`` if the key existed: nothing written) and ``append`` return once
    their batch is durable. A failed commit fails every caller of its batch.
    """

    def __init__(self, engine: Engine, *, max_batch: int | None = None) -> None:
        self.engine = engine
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._keys = {t: engine.keys(t) for t in TABLES if t != "audit"}
        self._thread = threading.Thread(target=self._run, name="peer-writer", daemon=True)
        self.batches = 0
        self.items = 0
        self._make: Callable[[], Wakeup] | None = None
        self._call: Callable[[Callable[..., object]], None] | None = None

    async def __aenter__(self) -> Writer:
        self._make = wakeup_factory()
        self._call = loop_caller()
        self._thread.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._queue.put(_STOP)
        # the queue is drained and answered before the thread ends; the loop stays free
        # to run those answers meanwhile
        await anyio.to_thread.run_sync(self._thread.join)

    @property
    def mean_batch(self) -> float:
        return self.items / self.batches if self.batches else 0.0

    async def _request(self, kind: Kind, table: str, key: str, value: bytes) -> Any:
        assert self._make is not None, "enter the writer with async with"
        request = _Request(kind, table, key, value, self._make())
        self._queue.put(request)
        await request.wakeup.wait()
        if request.error is not None:
            raise request.error
        return request.answer

    async def put(self, table: str, key: str, value: bytes) -> None:
        await self._request("put", table, key, value)

    async def delete(self, table: str, key: str) -> bool:
        found: bool = await self._request("delete", table, key, b"")
        return found

    async def insert(self, table: str, key: str, value: bytes) -> bool:
        new: bool = await self._request("insert", table, key, value)
        return new

    async def append(self, table: str, value: bytes) -> None:
        await self._request("append", table, "", value)

    def load(self, table: str, items: Iterable[tuple[str, bytes]]) -> None:
        """Set-up before the writer starts: store *items* in one transaction."""
        puts = dict(items)
        self.engine.commit({table: Changes(puts=puts)})
        self._keys[table].update(puts)

    # -- the writer thread -------------------------------------------------

    def _run(self) -> None:
        take = self._queue.get
        while True:
            first = take()
            batch: list[_Request] = []
            stop = first is _STOP
            if not stop:
                batch.append(first)
            while not stop and (self._max_batch is None or len(batch) < self._max_batch):
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                else:
                    batch.append(item)
            if batch:
                self._commit(batch)
            if stop:
                return

    def _commit(self, batch: list[_Request]) -> None:
        keys = self._keys
        changes: dict[str, Changes] = {}
        answers: list[Any] = []
        added: dict[str, set[str]] = {}
        removed: dict[str, set[str]] = {}
        for r in batch:
            part = changes.get(r.table)
            if part is None:
                part = changes[r.table] = Changes(puts={}, deletes=set(), appends=[])
            if r.kind == "append":
                part.appends.append(r.value)
                answers.append(None)
                continue
            had = (r.key in keys[r.table] or r.key in added.get(r.table, ())) and (
                r.key not in removed.get(r.table, ())
            )
            if r.kind == "delete":
                part.puts.pop(r.key, None)
                part.deletes.add(r.key)
                removed.setdefault(r.table, set()).add(r.key)
                added.get(r.table, set()).discard(r.key)
                answers.append(had)
                continue
            if r.kind == "insert" and had:
                answers.append(False)
                continue
            part.deletes.discard(r.key)
            part.puts[r.key] = r.value
            added.setdefault(r.table, set()).add(r.key)
            removed.get(r.table, set()).discard(r.key)
            answers.append(True if r.kind == "insert" else None)
        try:
            self.engine.commit(changes)
        except Exception as exc:
            for r in batch:
                r.error = exc
        else:
            for table, gone in removed.items():
                keys[table] -= gone
            for table, new in added.items():
                keys[table] |= new
            for r, answer in zip(batch, answers, strict=True):
                r.answer = answer
        self.batches += 1
        self.items += len(batch)
        assert self._call is not None
        self._call(lambda: _wake(batch))


def _wake(batch: list[_Request]) -> None:
    for r in batch:
        r.wakeup.set()


def open_peer(name: str, directory: Path) -> Writer:
    """The writer of peer *name* (see :data:`PEERS`) over a fresh engine in *directory*."""
    engine, max_batch = PEERS[name]
    directory.mkdir(parents=True, exist_ok=True)
    return Writer(ENGINES[engine](directory), max_batch=max_batch)
