"""The one name rule: what every id, key, collection and project id must be.

Every backend stores the same names, so the rule is the strictest of them:

* a non-empty ``str`` of at most :data:`MAX_NAME_BYTES` bytes in UTF-8
  (PostgreSQL indexes keys in a B-tree whose entries must stay well below 2.7 KB);
* strict UTF-8 (no lone surrogate such as ``"\\ud800"``, which no file,
  SQLite or PostgreSQL text can hold) and no control character (``U+0000``
  is refused by PostgreSQL; the others only hide what a name really is);
* a name that becomes a file or directory name (a collection, a project id)
  is also 1-128 letters, digits, ``.``, ``_`` or ``-``, starting with a
  letter or digit, and never looks like a file the runtime itself makes
  (``NAME.tmp-<hex>``, ``.corrupt-<stamp>``, ``.torn``, ``.imported``):
  those are swept, skipped or quarantined by name.

A name that breaks the rule raises :class:`ValidationError` naming the field,
in the caller's task, before anything is sent: it fails alone.
"""

from __future__ import annotations

import re
from typing import Any

from marcus_persist._errors import ValidationError, shown

__all__ = (
    "MAX_FILE_NAME_CHARS",
    "MAX_NAME_BYTES",
    "check_collection_name",
    "check_file_name",
    "check_name",
    "is_collection_name",
    "is_file_name",
)

#: the longest id or key, in UTF-8 bytes
MAX_NAME_BYTES = 1024
#: the longest collection name or project id (a directory name, with a prefix and a temp suffix)
MAX_FILE_NAME_CHARS = 128

_FILE_NAME = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_FILE_NAME_CHARS - 1}}}")
#: what the runtime's own files look like (temp, quarantined, torn, imported originals)
_RESERVED = re.compile(r"\.tmp-|\.corrupt-|\.torn|\.imported")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_name(field: str, value: Any) -> str:
    """Return *value* if it is a valid id or key, else raise ``ValidationError`` naming *field*."""
    if not isinstance(value, str) or not value:
        raise ValidationError(f"{field}: expected a non-empty string, got {shown(value)}")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise ValidationError(
            f"{field}: {shown(value)} is not valid Unicode "
            f"(a lone surrogate at position {exc.start})"
        ) from None
    if size > MAX_NAME_BYTES:
        raise ValidationError(
            f"{field}: {size} bytes in UTF-8 is longer than the {MAX_NAME_BYTES} allowed"
        )
    control = _CONTROL.search(value)
    if control is not None:
        raise ValidationError(
            f"{field}: {shown(value)} holds the control character "
            f"U+{ord(control.group()):04X} at position {control.start()}"
        )
    return value


def is_file_name(name: Any) -> bool:
    """Whether *name* may become a file or directory name on every backend."""
    return (
        isinstance(name, str)
        and _FILE_NAME.fullmatch(name) is not None
        and _RESERVED.search(name) is None
    )


def check_file_name(field: str, value: Any) -> str:
    """:func:`check_name`, for a name that becomes a file or directory name."""
    if not is_file_name(value):
        raise ValidationError(
            f"{field}: {shown(value)} must be 1-{MAX_FILE_NAME_CHARS} letters, digits, "
            "'.', '_' or '-', starting with a letter or digit, and must not contain "
            "'.tmp-', '.corrupt-', '.torn' or '.imported' (names of the runtime's own files)"
        )
    return str(value)


def is_collection_name(name: Any) -> bool:
    """Whether *name* may name a collection on every backend (the file backend makes
    it a directory name)."""
    return is_file_name(name)


def check_collection_name(name: Any) -> str:
    """A collection name is a file-name-safe string; raises ``ValidationError`` otherwise."""
    return check_file_name("collection", name)
