"""Things done *to* a data directory: backup/restore, doctor, migrate, import, stats."""

from __future__ import annotations
