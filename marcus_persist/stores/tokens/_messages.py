"""The tokens actor's messages: frozen, tagged, validated by the store before they are sent."""

from __future__ import annotations

from datetime import date, datetime

import msgspec

__all__ = (
    "Archive",
    "ArchivedDays",
    "LateMoved",
    "LoggedMessage",
    "MergeLate",
    "Message",
    "Record",
    "SetBudget",
)


class Record(msgspec.Struct, frozen=True, tag=True):
    provider: str
    model: str | None
    input_tokens: int
    output_tokens: int
    cost_micros: int
    project_id: str | None
    task_id: str | None
    at: datetime
    request_id: str | None
    #: the key of a late record (``_late.py``), logged so a replay keeps it
    late_key: str | None = None


class SetBudget(msgspec.Struct, frozen=True, tag=True):
    project_id: str
    micros: int | None


class Archive(msgspec.Struct, frozen=True, tag=True):
    today: date


class MergeLate(msgspec.Struct, frozen=True, tag=True):
    """Move the pending late entries whose archives are on the disk now (the tiering
    pass, once it brought a tiered month's archive back: ``_late.py``); logs nothing."""


class ArchivedDays(msgspec.Struct, frozen=True, tag=True):
    """Logged: the days and hours before *cutoff* left the live document (their
    month's archive holds them, durably, before this is logged); request ids of
    days before *forget* are no longer remembered."""

    today: date
    cutoff: str
    forget: str


class LateMoved(msgspec.Struct, frozen=True, tag=True):
    """Logged: these pending late entries are in their archives now (step 2 of ``_late.py``)."""

    keys: list[str]


Message = Record | SetBudget | Archive | MergeLate
#: what a batch logs, in order; a replay applies exactly these
LoggedMessage = Record | SetBudget | ArchivedDays | LateMoved
