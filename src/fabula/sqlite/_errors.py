"""sqlite3's errors mapped to fabula's, in one place."""

from __future__ import annotations

import sqlite3

from fabula.exceptions import FabulaError, StoreError, StoreUnavailableError

__all__ = ["connect", "is_busy", "translate", "translate_any"]


def connect(target: str) -> sqlite3.Connection:
    """Open a connection in autocommit mode, usable from the writer's threads."""
    try:
        return sqlite3.connect(target, isolation_level=None, check_same_thread=False, timeout=0)
    except sqlite3.Error as exc:
        raise StoreUnavailableError(f"cannot open SQLite database {target!r}: {exc}") from exc


def is_busy(exc: sqlite3.OperationalError) -> bool:
    """Whether `exc` says another connection holds the lock."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)


def translate_any(exc: BaseException, path: str) -> FabulaError:
    """`translate` for anything a write may raise: other errors abandon the write."""
    if isinstance(exc, sqlite3.Error):
        return translate(exc, path)
    return StoreError(f"the write to {path!r} was abandoned: {exc!r}")


def translate(exc: sqlite3.Error, path: str) -> FabulaError:
    """The fabula error for a sqlite3 error on the database at `path`, most specific first."""
    if isinstance(exc, sqlite3.OperationalError) and is_busy(exc):
        return StoreUnavailableError(f"{path!r} is locked by another process: {exc}")
    if isinstance(exc, sqlite3.OperationalError) and "unable to open" in str(exc):
        return StoreUnavailableError(f"cannot open SQLite database {path!r}: {exc}")
    if isinstance(exc, sqlite3.DatabaseError) and "not a database" in str(exc):
        return StoreError(f"{path!r} is not an SQLite database: {exc}")
    return StoreError(f"SQLite error on {path!r}: {exc}")
