"""A simulated file system that separates what the process sees from what is durable.

The process view is a real directory (so the runtime's reads, ``os.walk`` and
``Path.exists`` just work); every mutating call is also recorded, in order, as
an :class:`Op` naming the *inode* it touched. The durable model is strict, as in
ALICE and SQLite's crash VFS:

* file data (``write``, ``truncate``) is durable only after an ``fsync`` of that
  file that comes later in the trace;
* directory entries (``create``, ``replace``, ``unlink``, ``mkdir``) are durable
  only after an ``fsync_dir`` of their directory that comes later;
* anything else issued before the crash may or may not have reached the disk,
  in any combination; the last write may be torn or garbage;
* a failed ``fsync`` drops the file's pending data for good (the kernel marks
  the pages clean), even if a later ``fsync`` reports success.

Durability being the model's, ``fsync`` and ``fsync_dir`` are recorded and
checked (an open descriptor, an existing directory) but not passed to the
disk: real fsyncs only slowed the suites down, by half on a busy disk.

:meth:`SimFS.images` builds crash images for a crash after the first *k* calls;
:func:`materialise` writes one into a real directory for the real runtime.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from marcus_persist._core._fs import FileSystem

__all__ = ("Fault", "Image", "Op", "SimFS", "materialise")

SECTOR = 512

#: ``fault(call_number, method) -> errno | "short" | "zero" | None``; calls count from 1
Fault = Callable[[int, str], "int | str | None"]


@dataclass(frozen=True)
class Op:
    """One recorded call; ``path``/``dst`` are relative to the root."""

    kind: str
    path: str = ""
    inode: int = -1
    data: bytes = b""
    offset: int = 0
    dst: str = ""

    def describe(self) -> str:
        if self.kind == "write":
            return f"write({self.path} +{self.offset} {len(self.data)}B)"
        if self.kind in ("replace", "replace_dir"):
            return f"replace({self.path} -> {self.dst})"
        return f"{self.kind}({self.path or '.'})"


@dataclass
class Image:
    """One possible disk content after a crash: directories and file bytes."""

    kind: str
    dirs: set[str] = field(default_factory=set)
    files: dict[str, bytes] = field(default_factory=dict)

    def digest(self) -> str:
        h = hashlib.sha256()
        for d in sorted(self.dirs):
            h.update(b"D" + d.encode() + b"\0")
        for name, data in sorted(self.files.items()):
            h.update(b"F" + name.encode() + b"\0" + hashlib.sha256(data).digest())
        return h.hexdigest()


class SimFS(FileSystem):
    """A :class:`FileSystem` over a real directory that records a durable-model trace."""

    def __init__(self, root: Path, fault: Fault | None = None) -> None:
        self.root = root
        self.fault = fault
        self.calls = 0
        self.trace: list[Op] = []
        self._next_inode = 0
        self._fds: dict[int, tuple[str, int]] = {}  # fd -> (path, inode)
        self._entries: dict[str, int] = {}  # process view: path -> inode
        # the durable base: what the disk held when the simulation started
        self.base_dirs: set[str] = {""}
        self.base_entries: dict[str, int] = {}
        self.base_data: dict[int, bytes] = {}
        for dirpath, dirnames, filenames in os.walk(root):
            rel = self._rel(Path(dirpath))
            self.base_dirs.update(_join(rel, d) for d in dirnames)
            for name in filenames:
                inode = self._new_inode()
                path = _join(rel, name)
                self.base_entries[path] = self._entries[path] = inode
                self.base_data[inode] = Path(dirpath, name).read_bytes()

    # -- recording helpers ----------------------------------------------------
    def _new_inode(self) -> int:
        self._next_inode += 1
        return self._next_inode

    def _rel(self, path: Path) -> str:
        rel = os.path.relpath(path, self.root)
        return "" if rel == "." else rel

    def _check(self, method: str) -> int | str | None:
        """Count the call and raise the injected fault (fsync reports it back instead)."""
        self.calls += 1
        outcome = self.fault(self.calls, method) if self.fault is not None else None
        if isinstance(outcome, int) and method != "fsync":
            raise OSError(outcome, os.strerror(outcome))
        return outcome

    # -- FileSystem -----------------------------------------------------------
    def create(self, path: Path) -> int:
        self._check("create")
        fd = super().create(path)
        rel, inode = self._rel(path), self._new_inode()
        self._entries[rel] = inode
        self._fds[fd] = (rel, inode)
        self.trace.append(Op("create", rel, inode))
        return fd

    def open_append(self, path: Path) -> int:
        self._check("open_append")
        existed = path.exists()
        fd = super().open_append(path)
        rel = self._rel(path)
        if not existed or rel not in self._entries:
            self._entries[rel] = self._new_inode()
            self.trace.append(Op("create", rel, self._entries[rel]))
        self._fds[fd] = (rel, self._entries[rel])
        return fd

    def write(self, fd: int, data: bytes | memoryview) -> int:
        outcome = self._check("write")
        chunk = bytes(data)
        if outcome == "zero":
            return 0
        if outcome == "short":
            chunk = chunk[: max(1, len(chunk) // 2)]
        written = super().write(fd, chunk)
        offset = os.lseek(fd, 0, os.SEEK_CUR) - written  # right for O_APPEND too
        rel, inode = self._fds[fd]
        self.trace.append(Op("write", rel, inode, chunk[:written], offset))
        return written

    def fsync(self, fd: int) -> None:
        rel, inode = self._fds[fd]
        code = self._check("fsync")
        if isinstance(code, int):
            # the kernel drops the dirty pages and reports the error once
            self.trace.append(Op("fsync_failed", rel, inode))
            raise OSError(code, os.strerror(code))
        os.fstat(fd)  # a closed descriptor still fails; the real fsync is the model's job
        self.trace.append(Op("fsync", rel, inode))

    def truncate(self, fd: int, size: int) -> None:
        self._check("truncate")
        super().truncate(fd, size)
        rel, inode = self._fds[fd]
        self.trace.append(Op("truncate", rel, inode, offset=size))

    def close(self, fd: int) -> None:
        self._fds.pop(fd, None)
        super().close(fd)  # the descriptor is gone even when close reports an error
        self._check("close")

    def replace(self, src: Path, dst: Path) -> None:
        self._check("replace")
        is_dir = src.is_dir()
        super().replace(src, dst)
        rel_src, rel_dst = self._rel(src), self._rel(dst)
        if is_dir:  # the whole subtree moves with the directory's one entry
            for path in [p for p in self._entries if p.startswith(rel_src + "/")]:
                self._entries[rel_dst + path[len(rel_src) :]] = self._entries.pop(path)
            self.trace.append(Op("replace_dir", rel_src, dst=rel_dst))
            return
        inode = self._entries.pop(rel_src, -1)
        self._entries[rel_dst] = inode
        self.trace.append(Op("replace", rel_src, inode, dst=rel_dst))

    def unlink(self, path: Path) -> None:
        self._check("unlink")
        super().unlink(path)
        rel = self._rel(path)
        self.trace.append(Op("unlink", rel, self._entries.pop(rel, -1)))

    def mkdir(self, path: Path) -> None:
        self._check("mkdir")
        super().mkdir(path)
        self.trace.append(Op("mkdir", self._rel(path)))

    def fsync_dir(self, path: Path) -> None:
        self._check("fsync_dir")
        os.close(os.open(path, os.O_RDONLY | os.O_DIRECTORY))  # it must exist, as for fsync
        self.trace.append(Op("fsync_dir", self._rel(path)))

    def read_bytes(self, path: Path) -> bytes:
        self._check("read_bytes")
        return super().read_bytes(path)

    # -- crash images ---------------------------------------------------------
    def split(self, k: int) -> tuple[list[int], list[int]]:
        """Indexes of the first *k* ops that must have reached the disk, and those that may."""
        ops = self.trace[:k]
        must: list[int] = []
        may: list[int] = []
        dropped: set[int] = set()
        for i, op in enumerate(ops):
            if op.kind in ("fsync", "fsync_dir", "fsync_failed"):
                continue
            later = ops[i + 1 :]
            if op.kind in ("write", "truncate"):
                # the first later fsync of this file decides: a failed one drops the
                # pages for good (never durable), a good one makes them durable
                first = next(
                    (o for o in later if o.kind.startswith("fsync") and o.inode == op.inode), None
                )
                if first is not None and first.kind == "fsync_failed":
                    dropped.add(i)
                    continue
                synced = first is not None
            else:
                parents = {_parent(op.path)} | ({_parent(op.dst)} if op.dst else set())
                synced = all(
                    any(o.kind == "fsync_dir" and o.path == p for o in later) for p in parents
                )
            (must if synced else may).append(i)
        return must, may

    def images(self, k: int, *, subsets: int = 6, seed: int = 0) -> Iterator[Image]:
        """Every crash image the model allows (deduplicated by the caller) after *k* ops."""
        must, may = self.split(k)
        rng = random.Random(seed * 7919 + k)
        yield self.build("nothing", must)
        yield self.build("all", must + may)
        for j in range(1, len(may)):
            yield self.build(f"prefix{j}", must + may[:j])
        for j in range(len(may)):
            yield self.build(f"omit:{self.trace[may[j]].describe()}", must + may[:j] + may[j + 1 :])
        for s in range(subsets if len(may) > 2 else 0):
            chosen = [i for i in may if rng.random() < 0.5]
            yield self.build(f"subset{s}", must + chosen)
        writes = [i for i in may if self.trace[i].kind == "write"]
        if writes:
            last, size = writes[-1], len(self.trace[writes[-1]].data)
            for cut in range(0, size, SECTOR):
                yield self.build(
                    f"torn@{cut}:{self.trace[last].describe()}", must + may, (last, cut)
                )
            yield self.build(f"garbage:{self.trace[last].describe()}", must + may, (last, -1))

    def build(self, kind: str, chosen: list[int], tear: tuple[int, int] | None = None) -> Image:
        """Apply the *chosen* ops, in trace order, to the durable base."""
        dirs = set(self.base_dirs)
        entries = dict(self.base_entries)
        data = {inode: bytearray(b) for inode, b in self.base_data.items()}
        for i in sorted(chosen):
            op = self.trace[i]
            match op.kind:
                case "mkdir":
                    dirs.add(op.path)
                case "create":
                    data.setdefault(op.inode, bytearray())
                    entries[op.path] = op.inode
                case "write":
                    payload = op.data
                    if tear is not None and tear[0] == i:
                        cut = tear[1]
                        payload = (
                            payload[:cut] if cut >= 0 else random.Random(i).randbytes(len(payload))
                        )
                    buf = data.setdefault(op.inode, bytearray())
                    if len(buf) < op.offset:
                        buf.extend(bytes(op.offset - len(buf)))
                    buf[op.offset : op.offset + len(payload)] = payload
                case "truncate":
                    buf = data.setdefault(op.inode, bytearray())
                    del buf[op.offset :]
                    buf.extend(bytes(max(0, op.offset - len(buf))))
                case "replace":
                    if entries.get(op.path) == op.inode:
                        del entries[op.path]
                    entries[op.dst] = op.inode
                case "replace_dir":
                    moved = {d for d in dirs if d == op.path or d.startswith(op.path + "/")}
                    dirs -= moved
                    dirs |= {op.dst + d[len(op.path) :] for d in moved}
                    for path in [p for p in entries if p.startswith(op.path + "/")]:
                        entries[op.dst + path[len(op.path) :]] = entries.pop(path)
                case "unlink":
                    if entries.get(op.path) == op.inode:
                        del entries[op.path]
        files = {
            path: bytes(data.get(inode, b""))
            for path, inode in entries.items()
            if _reachable(path, dirs)
        }
        return Image(kind, {d for d in dirs if _reachable(d, dirs)}, files)


def materialise(image: Image, root: Path) -> None:
    """Write *image* under the (empty or missing) directory *root*."""
    root.mkdir(parents=True, exist_ok=True)
    for d in sorted(image.dirs):
        if d:
            (root / d).mkdir(exist_ok=True)
    for name, data in image.files.items():
        (root / name).write_bytes(data)


def _join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


def _parent(path: str) -> str:
    return path.rpartition("/")[0]


def _reachable(path: str, dirs: set[str]) -> bool:
    """An entry survives only if every directory above it does."""
    parent = _parent(path)
    while parent:
        if parent not in dirs:
            return False
        parent = _parent(parent)
    return True
