"""Ways to damage a file, and a directory's bytes to prove a refused start changed nothing.

Shared by the bad-files suites (suite 6): every truncation, one bit flipped at
every byte (bit ``i % 8`` at offset ``i``), the snapshot of a directory (files
with their bytes, directories as ``None``), and :class:`Case`, one damaged file
in a fresh copy of a template directory with the checks every outcome shares.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from marcus_persist._errors import CorruptDataError
from marcus_persist.backends._files import FileContext

from .oracle import COUNTS

T = TypeVar("T")

__all__ = ("Case", "Damage", "damages", "snapshot")

#: ``(name, damaged bytes, offset of the first changed or lost byte)``
Damage = tuple[str, bytes, int]


def damages(good: bytes) -> list[Damage]:
    """*good* truncated at every offset, and with one bit flipped at every byte."""
    cases = [(f"truncated at {i}", good[:i], i) for i in range(len(good))]
    cases += [
        (f"bit {i % 8} flipped at {i}", good[:i] + bytes([good[i] ^ 1 << i % 8]) + good[i + 1 :], i)
        for i in range(len(good))
    ]
    return cases


def snapshot(root: Path, *, skip: frozenset[str] = frozenset({".lock"})) -> dict[str, bytes | None]:
    """Every file (its bytes) and directory (``None``) under *root*, by relative path."""
    found: dict[str, bytes | None] = {}
    for d, dirs, names in os.walk(root):
        found.update({os.path.relpath(Path(d, n), root): None for n in dirs})
        found.update(
            {
                os.path.relpath(Path(d, n), root): Path(d, n).read_bytes()
                for n in names
                if n not in skip
            }
        )
    return found


class Case:
    """*target* (relative to *template*) replaced by *content* (``None``: a directory)
    in a fresh copy of *template* at *work*."""

    def __init__(
        self, template: Path, work: Path, target: str, content: bytes | None, *, also: str = ""
    ) -> None:
        if work.exists():
            shutil.rmtree(work)
        shutil.copytree(template, work)
        self.work, self.path, self.content = work, work / target, content
        if content is None:
            self.path.unlink()
            self.path.mkdir()
            (self.path / "inside").write_bytes(b"kept")
        else:
            self.path.write_bytes(content)
        self.before = snapshot(work)
        #: a refusal with this reason may name another file than the damaged one
        self.also = also

    def load(self, policy: str, read: Callable[[], T]) -> T | None:
        """``read()``; ``None`` when it raised ``CorruptDataError`` under the default policy
        naming the file, with the directory's bytes unchanged (checked)."""
        try:
            return read()
        except CorruptDataError as exc:
            assert policy == "error", f"quarantine policy raised {exc!r}"
            assert exc.reason and (exc.path == str(self.path) or exc.reason == self.also), exc
            assert snapshot(self.work) == self.before, "a refused start changed the directory"
            COUNTS["bad files refused"] += 1
            return None

    def moved_aside(self, ctx: FileContext) -> None:
        """The damaged file was quarantined byte-identical and reported."""
        moved = {q.path: Path(q.moved_to) for q in ctx.quarantined}
        assert str(self.path) in moved, f"not quarantined: {ctx.quarantined}"
        aside = moved[str(self.path)]
        assert aside.parent == self.path.parent and aside.name.startswith(self.path.name)
        if self.content is None:
            assert (aside / "inside").read_bytes() == b"kept"
        else:
            assert aside.read_bytes() == self.content, "quarantine changed the bytes"
        COUNTS["bad files quarantined"] += 1
