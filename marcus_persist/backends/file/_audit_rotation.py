"""Rotation and retention of the audit trail: daily → weekly gzip → archive → deleted.

Blocking; runs in a worker thread beside the appends (it never touches a day
file the actor has open). Order is what makes it crash-safe: a weekly archive
is written to a temp file, fsynced, renamed into place and its directory
fsynced *before* any day file that went into it is unlinked. A failure while
archiving removes the temp file and keeps every source.

Writing a weekly is idempotent (see :mod:`._audit_weekly`): a day file left
behind by a crash after its weekly was committed is recognised and only deleted.
A weekly whose index is damaged refuses its own week only (its day files are
kept); the run goes on and raises the ``CorruptDataError`` at its end.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from datetime import date, datetime, timedelta
from pathlib import Path

from marcus_persist._core._fs import FileSystem
from marcus_persist._errors import CorruptDataError
from marcus_persist.backends._audit import RotationPolicy, RotationReport
from marcus_persist.backends.file._audit_weekly import write_weekly

__all__ = (
    "parse_source_name",
    "rotate_directory",
    "weekly_name",
)

log = logging.getLogger("marcus_persist")

_DAILY = re.compile(r"audit_(\d{8})\.jsonl")
_WEEKLY = re.compile(r"audit_(\d{4})-W(\d{2})\.jsonl\.gz")


def parse_source_name(name: str) -> tuple[date, date, bool] | None:
    """``(first, last, daily)`` for a trail file name, ``None`` for anything else."""
    if m := _DAILY.fullmatch(name):
        try:
            day = datetime.strptime(m[1], "%Y%m%d").date()
        except ValueError:
            return None
        return day, day, True
    if m := _WEEKLY.fullmatch(name):
        try:
            monday = date.fromisocalendar(int(m[1]), int(m[2]), 1)
        except ValueError:
            return None
        return monday, monday + timedelta(days=6), False
    return None


def weekly_name(day: date) -> str:
    year, week, _ = day.isocalendar()
    return f"audit_{year}-W{week:02d}.jsonl.gz"


def rotate_directory(
    directory: Path, today: date, policy: RotationPolicy, *, busy: set[date], fs: FileSystem
) -> RotationReport:
    """Run every rotation step once over ``directory`` (``audit_logs/``).

    :raises OSError: when archiving fails; the sources of that week are kept
    :raises CorruptDataError: once every other step is done, when a week's weekly has a
        damaged index (the first such week; each is logged); that week's day files are kept
    """
    report = RotationReport()
    weekly_dir, archive_dir = directory / "weekly", directory / "archive"
    for folder in (weekly_dir, archive_dir):
        if not folder.is_dir():
            fs.mkdir(folder)
            if policy.sync:
                fs.fsync_dir(directory)

    # 1. day files older than daily_days → their ISO week's gzip
    oldest_daily = today - timedelta(days=policy.daily_days)
    weeks: dict[str, list[Path]] = defaultdict(list)
    for path in sorted(directory.glob("audit_*.jsonl")):
        parsed = parse_source_name(path.name)
        if parsed is None or parsed[0] >= oldest_daily or parsed[0] in busy:
            continue
        weeks[weekly_name(parsed[0])].append(path)
    refused: list[CorruptDataError] = []
    for name, days in sorted(weeks.items()):
        target = archive_dir / name if (archive_dir / name).exists() else weekly_dir / name
        try:
            written = write_weekly(target, days, fs=fs, sync=policy.sync)
        except CorruptDataError as exc:
            # Invariant: a weekly whose index cannot be read refuses its own week only:
            # that week's day files stay (the weekly may not hold them), and the other
            # weeks, archiving and retention still run; the error is raised at the end
            log.error("%s: not compacted, its day files kept: %s", name, exc)
            refused.append(exc)
            continue
        if written:
            report.weeklies.append(name)
        for day in days:  # only now that the weekly holding them is durable
            fs.unlink(day)
            report.compacted.append(day.name)
        if policy.sync:
            fs.fsync_dir(directory)

    # 2. weeklies older than weekly_weeks → archive/ (one rename; destination made durable first)
    oldest_weekly = today - timedelta(weeks=policy.weekly_weeks)
    for path in sorted(weekly_dir.glob("audit_*.jsonl.gz")):
        parsed = parse_source_name(path.name)
        if parsed is None or parsed[1] >= oldest_weekly:
            continue
        if (archive_dir / path.name).exists():
            log.warning("%s: already in archive/; left where it is", path.name)
            continue
        fs.replace(path, archive_dir / path.name)
        if policy.sync:
            fs.fsync_dir(archive_dir)
            fs.fsync_dir(weekly_dir)
        report.archived.append(path.name)

    # 3. anything whose last day is older than retention_days → deleted
    if policy.retention_days is not None:
        oldest_kept = today - timedelta(days=policy.retention_days)
        for folder in (archive_dir, weekly_dir, directory):
            removed = False
            for path in sorted(folder.glob("audit_*")):
                parsed = parse_source_name(path.name)
                if parsed is None or parsed[1] >= oldest_kept or parsed[1] in busy:
                    continue
                fs.unlink(path)
                report.deleted.append(path.name)
                removed = True
            if removed and policy.sync:
                fs.fsync_dir(folder)
    if refused:
        raise refused[0]
    return report
