"""What the write-ahead logs of a data directory hold (read-only), for people
debugging a crash: ``marcus-persist wal DATA_DIR``."""

from __future__ import annotations

from pathlib import Path

import msgspec

from marcus_persist._core._fs import OS_FS
from marcus_persist._core._wal import scan_log
from marcus_persist._errors import CorruptDataError

__all__ = ("LogRecord", "LogReport", "SegmentReport", "describe_logs")

#: a store's log lives in ``<data>/<store>/wal/``
WAL_DIR = "wal"


class LogRecord(msgspec.Struct, frozen=True):
    lsn: int
    bytes: int
    #: the start of the payload (JSON), for a reader
    preview: str


class SegmentReport(msgspec.Struct, frozen=True):
    name: str
    bytes: int
    records: list[LogRecord]
    #: unreadable bytes at the end (an unfinished append, cut into ``.torn`` at the next start)
    torn_bytes: int


class LogReport(msgspec.Struct, frozen=True):
    store: str
    path: str
    segments: list[SegmentReport]
    #: ``.torn`` files kept from earlier starts
    torn_files: list[str]
    #: why the log would be refused at startup, if it would
    corrupt: str | None = None


def describe_logs(data_dir: Path, *, preview: int = 120) -> list[LogReport]:
    """Every store log under *data_dir*, segment by segment, record by record.

    Changes nothing and takes no lock: safe beside a running runtime (a record
    being appended may show as torn).
    """
    reports: list[LogReport] = []
    for directory in sorted(data_dir.glob(f"*/{WAL_DIR}")):
        if not directory.is_dir():
            continue
        torn = sorted(p.name for p in directory.glob("*.torn*"))
        try:
            segments = scan_log(directory, fs=OS_FS)
        except CorruptDataError as exc:
            reports.append(LogReport(directory.parent.name, str(directory), [], torn, exc.reason))
            continue
        described = [
            SegmentReport(
                s.path.name,
                s.size,
                [
                    LogRecord(lsn, len(p), p[:preview].decode("utf-8", "replace"))
                    for lsn, p in s.records
                ],
                s.size - s.end,
            )
            for s in segments
        ]
        reports.append(LogReport(directory.parent.name, str(directory), described, torn))
    return reports
