"""sqlite3's errors mapped to fabula's, in one place."""

from __future__ import annotations

import sqlite3

from fabula.exceptions import FabulaError, StoreError, StoreUnavailableError

__all__ = ["connect", "is_busy", "storage_failure", "translate", "translate_any"]


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


# The result codes of a database that cannot do its work just now, whatever
# the SQL asked: locked, out of memory, read-only, an I/O error, full, not
# openable. Any other error (no such table, a constraint) is the SQL's own.
_RESOURCE_CODES = frozenset(
    {
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_NOMEM,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_PROTOCOL,
    }
)


def storage_failure(exc: BaseException, path: str) -> FabulaError | None:
    """The store's error behind `exc`, if a statement in it failed for want of resources.

    For a projection handler's exception: a full disk met by the handler's
    own INSERT is the store's failure (to wait out), not the handler's (to
    stop at). Follows the chain of causes, as far as a handler may wrap them.
    """
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            break
        code = getattr(seen, "sqlite_errorcode", None)
        if isinstance(seen, sqlite3.Error) and code is not None and code & 0xFF in _RESOURCE_CODES:
            return translate(seen, path)
        seen = seen.__cause__ or seen.__context__
    return None


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
