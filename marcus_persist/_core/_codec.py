"""JSON encoding made once, and the check that user payloads really are JSON."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any, NamedTuple

import msgspec

from marcus_persist._config import Config
from marcus_persist._errors import ValidationError, shown

__all__ = (
    "DEFAULT_LIMITS",
    "MAX_COUNT",
    "Limits",
    "decode",
    "encode",
    "encode_checked",
    "json_copy",
)

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()


def encode(obj: Any) -> bytes:
    """Compact JSON; what every stored file is written with."""
    return _encoder.encode(obj)


def decode(data: bytes) -> Any:
    """Parse JSON into plain Python values; raises ``msgspec.DecodeError``."""
    return _decoder.decode(data)


class Limits(NamedTuple):
    """What one record may be (options ``max_depth`` and ``max_record_bytes``)."""

    #: containers (objects, arrays) nested in one payload, at most
    max_depth: int = 64
    #: the payload encoded as JSON, in bytes, at most
    max_record_bytes: int = 4 << 20

    @classmethod
    def of(cls, config: Config) -> Limits:
        """The limits a runtime's configuration sets."""
        return cls(config.max_depth, config.max_record_bytes)


DEFAULT_LIMITS = Limits()
#: the largest count a store accepts in a typed field (tokens, examples): every JSON
#: reader (JavaScript's too) keeps it exactly, and sums of them stay far below 64 bits
MAX_COUNT = (1 << 53) - 1
#: integers every store gives back as they were stored: 64 bits
INT_RANGE = (-(1 << 63), (1 << 64) - 1)
#: floats keep their value in every store below 2**53 in magnitude (PostgreSQL's jsonb
#: turns ``1e23`` into the integer ``100000000000000000000000``, which is not that float)
FLOAT_LIMIT = float(1 << 53)


def json_copy(value: Any, field: str, limits: Limits = DEFAULT_LIMITS) -> Any:
    """Return a private deep copy of *value* after checking it is plain JSON.

    Plain JSON means dicts with string keys, lists (tuples become lists),
    strings, 64-bit ints, finite floats below 2**53 in magnitude, bools and
    None; no string (nor key) holds U+0000 or a lone surrogate, the nesting is
    at most ``limits.max_depth`` deep and the encoded JSON at most
    ``limits.max_record_bytes``. Anything else would not load back as it was
    stored on every backend, so it is refused with a ``ValidationError``
    naming the offending path; nothing is written.
    """
    data, copy = _checked(value, field, limits)
    return copy if copy is not _NOT_COPIED else _decoder.decode(data)


def encode_checked(value: Any, field: str, limits: Limits = DEFAULT_LIMITS) -> bytes:
    """*value* encoded once as JSON, after the value rule of :func:`json_copy` (no copy)."""
    return _checked(value, field, limits)[0]


_NOT_COPIED: Any = object()
#: a run of 19 digits: maybe an integer outside 64 bits (every one inside has fewer
#: digits or is positive), so the walk decides
_LONG_NUMBER = re.compile(rb"\d{19}")


def _refuse_big_float(text: str) -> float:
    number = float(text)
    if abs(number) >= FLOAT_LIMIT:
        raise ValueError("a float of 2**53 or more")
    return number


#: decodes a payload back, refusing the floats the walk would refuse
_checking_decoder = msgspec.json.Decoder(float_hook=_refuse_big_float)


def _checked(value: Any, field: str, limits: Limits) -> tuple[bytes, Any]:
    """The value rule, and the payload's bytes and (fast path) its private copy.

    Fast path, all in msgspec's C, for a payload with fewer brackets than
    ``max_depth`` (so it cannot nest deeper) and no run of 19 digits (so every
    integer fits 64 bits): decode the bytes back (floats past the limit
    refused) and compare. A copy equal to the original and of its type proves
    plain JSON (a NaN, a key that is not a string, a tuple or a set would not
    come back equal). Anything else takes the walk, which accepts tuples and
    names what cannot be stored.
    """
    try:
        data: bytes | None = _encoder.encode(value)
    except Exception:  # not encodable, a lone surrogate: the walk says which
        data = None
    copy = _NOT_COPIED
    if (
        data is not None
        and data.count(b"[") + data.count(b"{") <= limits.max_depth
        and _LONG_NUMBER.search(data) is None
    ):
        try:
            copy = _checking_decoder.decode(data)
        except Exception:  # a float too large: the walk names it
            copy = _NOT_COPIED
        if copy is not _NOT_COPIED and (type(copy) is not type(value) or copy != value):
            copy = _NOT_COPIED
    if copy is _NOT_COPIED:
        data = _walked(value, field, limits, data)
    assert data is not None
    if len(data) > limits.max_record_bytes:
        raise ValidationError(
            f"{field}: {len(data)} bytes as JSON is larger than max_record_bytes "
            f"({limits.max_record_bytes})"
        )
    if b"\\u0000" in data:  # maybe U+0000, maybe a backslash before "u0000": look
        _find_text(value, field, lambda text: "\x00" in text)
    return data, copy


def _walked(value: Any, field: str, limits: Limits, data: bytes | None) -> bytes:
    """The value rule by a walk in Python (it names the offending path), then the
    bytes (*data*, when the value was already encoded)."""
    try:
        _check(value, field, limits.max_depth)
    except RecursionError:
        raise ValidationError(f"{field}: nested too deeply to store") from None
    if data is not None:
        return data
    try:
        return _encoder.encode(value)
    except UnicodeEncodeError:
        _find_text(value, field, _surrogate)
        raise ValidationError(f"{field}: not valid Unicode") from None  # pragma: no cover


def _check(value: Any, path: str, depth: int) -> None:
    if value is None or isinstance(value, str | bool):
        return
    if isinstance(value, int):
        if not INT_RANGE[0] <= value <= INT_RANGE[1]:
            raise ValidationError(f"{path}: integer out of the 64-bit range every store keeps")
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValidationError(f"{path}: {value!r} is not a JSON number")
        if abs(value) >= FLOAT_LIMIT:
            raise ValidationError(
                f"{path}: {value!r} is 2**53 or more; such floats do not keep their "
                "value in every store (use an int, or a string)"
            )
        return
    if isinstance(value, dict | list | tuple) and depth < 1:
        raise ValidationError(f"{path}: nested deeper than max_depth allows")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValidationError(f"{path}: key {shown(key)} is not a string")
            _check(item, f"{path}.{key}", depth - 1)
        return
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check(item, f"{path}[{index}]", depth - 1)
        return
    raise ValidationError(f"{path}: {type(value).__name__} is not JSON-encodable")


def _surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _find_text(value: Any, path: str, bad: Callable[[str], bool]) -> None:
    """Raise ``ValidationError`` naming the first string or key of *value* that is *bad*
    (a lone surrogate, or U+0000: text no store keeps); return if there is none."""
    if isinstance(value, str):
        if bad(value):
            what = "U+0000" if "\x00" in value else "a lone surrogate"
            raise ValidationError(f"{path}: text holds {what}, which no store keeps")
    elif isinstance(value, dict):
        for key, item in value.items():
            _find_text(key, f"{path} key {key!a}", bad)
            _find_text(item, f"{path}.{ascii(key)[1:-1]}", bad)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _find_text(item, f"{path}[{index}]", bad)
