"""JSON encoding made once, and the check that user payloads really are JSON."""

from __future__ import annotations

import math
from typing import Any

import msgspec

from marcus_persist._errors import ValidationError

__all__ = ("check_json", "decode", "encode", "json_copy")

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()


def encode(obj: Any) -> bytes:
    """Compact JSON; what every stored file is written with."""
    return _encoder.encode(obj)


def decode(data: bytes) -> Any:
    """Parse JSON into plain Python values; raises ``msgspec.DecodeError``."""
    return _decoder.decode(data)


def json_copy(value: Any, field: str) -> Any:
    """Return a private deep copy of *value* after checking it is plain JSON.

    Plain JSON means dicts with string keys, lists (tuples become lists),
    strings, ints, finite floats, bools and None. Anything else would not load
    back as it was stored, so it is refused with a ``ValidationError`` naming
    the offending path; nothing is written.

    One round trip through msgspec (C) does the copy; the copy equal to the
    original is the check (it is not equal when a float was not finite, a key
    not a string, a tuple became a list, or a value changed type on the way).
    Only then is the value walked in Python, to accept tuples or name what
    cannot be stored.
    """
    copy = _round_trip(value)
    if _same(copy, value):
        return copy
    _walk(value, field)  # raises, unless tuples were all that differed
    return _decoder.decode(_encoder.encode(value))


def check_json(value: Any, field: str) -> None:
    """Check that *value* is plain JSON (see :func:`json_copy`) without keeping a copy."""
    if not _same(_round_trip(value), value):
        _walk(value, field)


_REFUSED: Any = object()


def _round_trip(value: Any) -> Any:
    try:
        return _decoder.decode(_encoder.encode(value))
    except Exception:  # not encodable, or nested too deeply: the walk says which
        return _REFUSED


def _same(copy: Any, value: Any) -> bool:
    return copy is not _REFUSED and type(copy) is type(value) and bool(copy == value)


def _walk(value: Any, field: str) -> None:
    try:
        _check(value, field)
    except RecursionError:
        raise ValidationError(f"{field}: nested too deeply to store") from None


def _check(value: Any, path: str) -> None:
    if value is None or isinstance(value, str | bool | int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValidationError(f"{path}: {value!r} is not a JSON number")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValidationError(f"{path}: key {key!r} is not a string")
            _check(item, f"{path}.{key}")
        return
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check(item, f"{path}[{index}]")
        return
    raise ValidationError(f"{path}: {type(value).__name__} is not JSON-encodable")
