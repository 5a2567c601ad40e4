"""The small checks and values every part of the kernel shares.

A library checks its arguments at run time for untyped callers: `True` is
an `int` to Python, never a count or a version to fabula.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final, TypeGuard

import attrs

__all__ = ["MAX_INT", "is_int", "positive_int", "positive_number", "utcnow"]

MAX_INT: Final = 2**63 - 1
"""The largest integer every store's columns hold (64-bit signed)."""


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


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)
