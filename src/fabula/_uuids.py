"""UUIDs made and read on the hot paths: time-ordered event ids, and fast construction.

`uuid.UUID(bytes=...)` checks its arguments on every call (about 1 µs);
the SQLite store reads an event id of 16 bytes for every event, so it
builds the UUID the way `UUID.__init__` ends: by setting its two slots.

New event ids are UUIDs of version 7 (RFC 9562, section 5.7): the first 48
bits are Unix milliseconds, so ids made one after another sort together.
A store's unique index on event ids then grows at its end, one page per
commit, rather than at a random page for every event: on SQLite a batch
of 100 events writes less than half the write-ahead log it did (see
docs/performance.md).
"""

from __future__ import annotations

import os
import time
from typing import Final
from uuid import UUID, SafeUUID

__all__ = ["new_event_id", "uuid_from_bytes", "uuid_from_hex"]

_new = object.__new__
_set = object.__setattr__
_UNKNOWN: Final = SafeUUID.unknown
_from_bytes = int.from_bytes
_time_ns = time.time_ns
_urandom = os.urandom

_VERSION_7: Final = 0x7 << 76
_VARIANT: Final = 0b10 << 62
_NS_PER_MS: Final = 1_000_000


def _made(value: int) -> UUID:
    made = _new(UUID)
    _set(made, "int", value)
    _set(made, "is_safe", _UNKNOWN)
    return made


def new_event_id() -> UUID:
    """A new UUID of version 7: Unix milliseconds, a finer fraction of them, 62 random bits.

    The 12 bits after the version hold the fraction of the millisecond (in
    steps of about 0.24 µs), so ids made in one process sort in the order
    they were made, except two made within one step (their random bits
    decide) or across a clock set back. The order of event ids
    means nothing to fabula (positions and versions order events); it only
    keeps index writes together.
    """
    milliseconds, rest = divmod(_time_ns(), _NS_PER_MS)
    fraction = rest * 4096 // _NS_PER_MS
    random_bits = _from_bytes(_urandom(8)) >> 2
    return _made(
        (milliseconds & 0xFFFF_FFFF_FFFF) << 80
        | _VERSION_7
        | fraction << 64
        | _VARIANT
        | random_bits
    )


def uuid_from_bytes(raw: bytes) -> UUID:
    """`UUID(bytes=raw)`, three times faster.

    Raises:
        ValueError: `raw` is not 16 bytes.
        TypeError: `raw` is not bytes.
    """
    if raw.__class__ is not bytes or len(raw) != 16:  # noqa: PLR2004 - a UUID's size
        return UUID(bytes=raw)  # raises the usual error
    return _made(_from_bytes(raw))


def uuid_from_hex(digits: str) -> UUID:
    """`UUID(digits)` for text that is 32 hex digits once its dashes are gone (no range check).

    The generated decoders call it after checking that the text is 36
    characters with four dashes: `int(digits, 16)` of 32 digits is always
    a 128-bit value, and the same one `UUID(text)` computes.

    Raises:
        ValueError: `digits` is not hexadecimal.
    """
    return _made(int(digits, 16))
