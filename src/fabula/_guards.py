"""The small checks and values every part of the kernel shares.

A library checks its arguments at run time for untyped callers: `True` is
an `int` to Python, never a count or a version to fabula.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final, TypeGuard

import attrs

__all__ = [
    "MAX_ID_LENGTH",
    "MAX_INT",
    "is_int",
    "positive_int",
    "positive_number",
    "text_problem",
    "utcnow",
]

MAX_INT: Final = 2**63 - 1
"""The largest integer every store's columns hold (64-bit signed)."""

MAX_ID_LENGTH: Final = 256
"""The longest stream id or idempotency key, in characters (at most 1 KiB of UTF-8)."""


def is_int(value: object) -> TypeGuard[int]:
    """Whether `value` is an int and not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def positive_number(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    """An attrs validator: an int or float above zero (not a bool).

    Raises:
        ValueError: It is not.
    """
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        msg = f"{attribute.name} must be a positive number, not {value!r}"
        raise ValueError(msg)


def positive_int(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    """An attrs validator: an int above zero (not a bool), at most `MAX_INT`.

    Raises:
        ValueError: It is not.
    """
    if not is_int(value) or not 0 < value <= MAX_INT:
        msg = f"{attribute.name} must be a positive int, not {value!r}"
        raise ValueError(msg)


def text_problem(value: object, *, limit: int = MAX_ID_LENGTH) -> str | None:
    """What keeps `value` from being stored as an id or key, in words; None if nothing.

    An id must be a non-empty str of at most `limit` characters that every
    store can hold: PostgreSQL's text refuses NUL, and no database takes a
    lone surrogate (it is not UTF-8).
    """
    if not isinstance(value, str):
        return f"must be a str, not {type(value).__name__}"
    if not value:
        return "must not be empty"
    if len(value) > limit:
        return f"must be at most {limit} characters long, not {len(value)}"
    if "\x00" in value:
        return "must not contain a NUL character"
    try:
        value.encode()
    except UnicodeEncodeError:
        return "must be valid UTF-8 (it holds a lone surrogate)"
    return None


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)
