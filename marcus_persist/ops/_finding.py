"""What ``doctor`` reports: one finding per thing it noticed."""

from __future__ import annotations

from typing import Literal

import msgspec

__all__ = ("Finding",)


class Finding(msgspec.Struct, frozen=True):
    """One thing doctor noticed."""

    path: str
    problem: str
    #: ``error`` stops the runtime from starting; ``warning`` needs a look; ``info`` is a fact
    severity: Literal["error", "warning", "info"]
    repaired: str | None = None
