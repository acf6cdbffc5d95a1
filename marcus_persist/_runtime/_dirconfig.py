"""The data directory's own config file, ``marcus_persist.json``: which engine holds
each store that ``migrate`` moved in place, so the next ``open_runtime`` uses it.

``{"format": 1, "backends": {"state": "sqlite"}, "retire": [["marcus_state",
"marcus_state.migrated-to-sqlite-20260101T000000"]]}``

Writing this file (atomically, durably) is the commit point of an in-place
migration: before it the directory opens on the old engine, after it on the
new one, never a mix. ``retire`` lists the renames that turn the old engine's
files into a named backup; they are done after the commit point, by
``migrate`` or, if it was interrupted, by the next ``open_runtime`` under the
directory lock, before any store loads (a file left under its live name could
otherwise be read as Marcus's own and imported).
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from marcus_persist._config import STORE_NAMES, Config
from marcus_persist._core._atomic import write_atomic
from marcus_persist._core._fs import OS_FS, FileSystem
from marcus_persist._core._safeopen import read_file
from marcus_persist._errors import ConfigError, CorruptDataError, PersistenceError

__all__ = (
    "RECORD_NAME",
    "DirRecord",
    "finish_retire",
    "read_record",
    "uses_record",
    "with_record",
    "write_record",
)

RECORD_NAME = "marcus_persist.json"
#: the engines whose stores live in the data directory (the others are elsewhere)
DIR_ENGINES = ("file", "sqlite")


class DirRecord(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What the data directory says about itself."""

    format: int = 1
    #: store -> engine, for the stores migrated in place
    backends: dict[str, str] = {}
    #: renames still to do: ``[live name, backup name]``, relative to the directory
    retire: list[tuple[str, str]] = []


def read_record(data_dir: Path) -> DirRecord | None:
    """The directory's record, ``None`` if it has none (blocking).

    :raises CorruptDataError: if the file is not a valid record
    """
    path = data_dir / RECORD_NAME
    try:
        raw = read_file(path)  # never through a link, never a FIFO
    except FileNotFoundError:
        return None
    try:
        record = msgspec.json.decode(raw, type=DirRecord)
    except msgspec.DecodeError as exc:
        raise CorruptDataError(str(path), f"not a data directory record: {exc}") from None
    for store, engine in record.backends.items():
        if store not in STORE_NAMES or engine not in DIR_ENGINES:
            raise CorruptDataError(str(path), f"backends: {store!r} -> {engine!r} is not valid")
    for names in record.retire:
        if any(Path(n).is_absolute() or ".." in Path(n).parts for n in names):
            raise CorruptDataError(str(path), f"retire: {names!r} leaves the data directory")
    return record


def write_record(data_dir: Path, record: DirRecord, *, fs: FileSystem = OS_FS) -> None:
    """Replace the record atomically and durably (blocking)."""
    write_atomic(data_dir / RECORD_NAME, msgspec.json.encode(record), fs=fs, sync=True)


def uses_record(config: Config) -> bool:
    """Whether *config* keeps any store in its data directory (then the record counts)."""
    return any(engine in DIR_ENGINES for engine in config.engines.values())


def with_record(config: Config, record: DirRecord | None) -> Config:
    """*config* with the stores the record names on their recorded engines.

    The record wins over ``backend`` (the directory knows where its data is);
    a ``backends`` entry that names another engine for a recorded store is refused.

    :raises ConfigError: for such a conflict
    """
    if record is None or not record.backends or not uses_record(config):
        return config
    for store, engine in record.backends.items():
        asked = config.backends.get(store)
        if asked is not None and asked != engine:
            raise ConfigError(
                f"backends.{store}: {asked!r}, but {config.path / RECORD_NAME} says the "
                f"{store} store was migrated to {engine!r}; migrate it back with "
                f"`marcus-persist migrate {config.path} --store {store} --to {asked}`"
            )
    return config.replace(backends={**config.backends, **record.backends})


def finish_retire(data_dir: Path, record: DirRecord, *, fs: FileSystem = OS_FS) -> DirRecord:
    """Do the record's pending renames (each once; the directory lock is held) and
    write the record without them (blocking). Returns the record as written."""
    if not record.retire:
        return record
    for live, backup in record.retire:
        source, target = data_dir / live, data_dir / backup
        if source.exists() and not target.exists():
            fs.replace(source, target)
        elif source.is_dir() and not any(source.iterdir()):
            source.rmdir()  # renamed already; the layout made it again, empty
        elif source.exists():
            raise PersistenceError(f"cannot retire {source}: {target} exists already")
    fs.fsync_dir(data_dir)
    done = msgspec.structs.replace(record, retire=[])
    write_record(data_dir, done, fs=fs)
    return done
