"""The SQLite store's schema, its migrations, and every statement as a named constant.

`open_writer` configures the writer connection and creates or migrates the
schema, in one `BEGIN IMMEDIATE` transaction, so that two processes opening
one new file at once create it once.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from typing import Any, Final

from fabula._reaction_sql import ReactionStatements
from fabula.exceptions import SchemaVersionError, StoreError, StoreUnavailableError
from fabula.sqlite._errors import translate

SCHEMA_VERSION: Final = 4
"""The schema version this fabula writes (kept in the `fabula_meta` table)."""

CREATE_SCHEMA: Final = (
    """
    CREATE TABLE IF NOT EXISTS fabula_events (
        position       INTEGER PRIMARY KEY,
        stream_id      TEXT    NOT NULL,
        version        INTEGER NOT NULL,
        event_id       BLOB    NOT NULL UNIQUE,
        type           TEXT    NOT NULL,
        schema_version INTEGER NOT NULL,
        timestamp      TEXT    NOT NULL,
        data           TEXT    NOT NULL,
        metadata       TEXT    NOT NULL,
        UNIQUE (stream_id, version)
    )
    """,
    "CREATE INDEX IF NOT EXISTS fabula_events_by_type ON fabula_events (type, position)",
    """
    CREATE TABLE IF NOT EXISTS fabula_snapshots (
        stream_id      TEXT    PRIMARY KEY,
        aggregate_type TEXT    NOT NULL,
        version        INTEGER NOT NULL,
        schema_version INTEGER NOT NULL,
        state          TEXT    NOT NULL,
        created_at     TEXT    NOT NULL
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE IF NOT EXISTS fabula_checkpoints (
        name       TEXT    PRIMARY KEY,
        position   INTEGER NOT NULL,
        updated_at TEXT    NOT NULL
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE IF NOT EXISTS fabula_idempotency (
        key         TEXT PRIMARY KEY,
        fingerprint TEXT NOT NULL,
        result      TEXT NOT NULL,
        created_at  TEXT NOT NULL,
        expires_at  TEXT
    ) WITHOUT ROWID
    """,
)
"""Statements that create schema version 1; each is idempotent."""

MIGRATIONS: Final[dict[int, tuple[str, ...]]] = {
    1: (
        """
        CREATE TABLE IF NOT EXISTS fabula_skips (
            name       TEXT    NOT NULL,
            position   INTEGER NOT NULL,
            event_type TEXT    NOT NULL,
            reason     TEXT    NOT NULL,
            skipped_at TEXT    NOT NULL,
            PRIMARY KEY (name, position)
        ) WITHOUT ROWID
        """,
    ),
    2: (
        """
        CREATE TABLE IF NOT EXISTS fabula_parked (
            reaction   TEXT    NOT NULL,
            position   INTEGER NOT NULL,
            stream_id  TEXT    NOT NULL,
            version    INTEGER NOT NULL,
            event_type TEXT    NOT NULL,
            error      TEXT,
            attempts   INTEGER NOT NULL,
            parked_at  TEXT    NOT NULL,
            request    TEXT,
            reason     TEXT,
            PRIMARY KEY (reaction, position)
        ) WITHOUT ROWID
        """,
        """
        CREATE TABLE IF NOT EXISTS fabula_timers (
            name          TEXT    PRIMARY KEY,
            due_at        TEXT    NOT NULL,
            command_type  TEXT    NOT NULL,
            command       TEXT    NOT NULL,
            generation    TEXT    NOT NULL,
            attempts      INTEGER NOT NULL DEFAULT 0,
            last_error    TEXT,
            claimed_until TEXT,
            sequence      INTEGER,
            done          TEXT
        ) WITHOUT ROWID
        """,
        (
            "CREATE INDEX IF NOT EXISTS fabula_timers_by_due ON fabula_timers (due_at) "
            "WHERE done IS NULL"
        ),
    ),
    3: (
        # Deleted streams' tombstones: an append finds whether its stream is
        # deleted in this small index, beside the covering one for its version.
        (
            "CREATE INDEX IF NOT EXISTS fabula_tombstones ON fabula_events (stream_id) "
            "WHERE type = 'fabula.StreamDeleted'"
        ),
        """
        CREATE TABLE IF NOT EXISTS fabula_subject_keys (
            subject      TEXT PRIMARY KEY,
            wrapped      BLOB,
            created_at   TEXT NOT NULL,
            forgotten_at TEXT
        ) WITHOUT ROWID
        """,
    ),
}
"""Statements that bring schema version N to N + 1; each is idempotent."""

LOAD_KEYS: Final = (
    "SELECT subject, wrapped FROM fabula_subject_keys "
    "WHERE subject IN (SELECT value FROM json_each(?))"
)
ADD_KEY: Final = (
    "INSERT INTO fabula_subject_keys (subject, wrapped, created_at) VALUES (?, ?, ?) "
    "ON CONFLICT (subject) DO NOTHING"
)
FORGET_SUBJECT: Final = (
    "INSERT INTO fabula_subject_keys (subject, wrapped, created_at, forgotten_at) "
    "VALUES (?1, NULL, ?2, ?2) ON CONFLICT (subject) DO UPDATE "
    "SET wrapped = NULL, forgotten_at = excluded.forgotten_at WHERE forgotten_at IS NULL"
)

STREAM_STATE: Final = (
    "SELECT coalesce(max(version), 0), EXISTS (SELECT 1 FROM fabula_events "
    "WHERE stream_id = ?1 AND type = 'fabula.StreamDeleted') "
    "FROM fabula_events WHERE stream_id = ?1"
)
"""A stream's version (0: none) and whether it is deleted (two index lookups, no row read)."""
PURGE_STREAM: Final = "DELETE FROM fabula_events WHERE stream_id = ? AND type <> ?"

INSERT_EVENT: Final = """
    INSERT INTO fabula_events
        (stream_id, version, event_id, type, schema_version, timestamp, data, metadata)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?)
"""

LAST_POSITION: Final = "SELECT last_insert_rowid()"

FIND_EVENT: Final = """
    SELECT position, stream_id, version, type, schema_version, timestamp, data, metadata
    FROM fabula_events WHERE event_id = ?
"""

_COLUMNS: Final = (
    "position, stream_id, version, event_id, type, schema_version, timestamp, data, metadata"
)

READ_STREAM: Final = f"""
    SELECT {_COLUMNS} FROM fabula_events
    WHERE stream_id = ? AND version >= ?
    ORDER BY version
    LIMIT ?
"""  # noqa: S608 - a constant column list, no user input

EVENTS_HOLDING: Final = f"""
    SELECT {_COLUMNS} FROM fabula_events
    WHERE data LIKE ? ESCAPE '\\'
    ORDER BY position
"""  # noqa: S608 - a constant column list, no user input

READ_ALL: Final = f"""
    SELECT {_COLUMNS} FROM fabula_events
    WHERE position > ?
    ORDER BY position
    LIMIT ?
"""  # noqa: S608

READ_ALL_OF_TYPES: Final = f"""
    SELECT {_COLUMNS} FROM fabula_events
    WHERE position > ? AND type IN (SELECT value FROM json_each(?))
    ORDER BY position
    LIMIT ?
"""  # noqa: S608

HEAD_POSITION: Final = "SELECT coalesce(max(position), 0) FROM fabula_events"

COUNT_AFTER: Final = "SELECT count(*) FROM fabula_events WHERE position > ?"

COUNT_AFTER_OF_TYPES: Final = """
    SELECT count(*) FROM fabula_events
    WHERE position > ? AND type IN (SELECT value FROM json_each(?))
"""

SAVE_SNAPSHOT: Final = """
    INSERT INTO fabula_snapshots
        (stream_id, aggregate_type, version, schema_version, state, created_at)
    VALUES (?, ?, ?, ?, ?, ?)
    ON CONFLICT (stream_id) DO UPDATE SET
        aggregate_type = excluded.aggregate_type,
        version = excluded.version,
        schema_version = excluded.schema_version,
        state = excluded.state,
        created_at = excluded.created_at
    WHERE excluded.version > fabula_snapshots.version
"""

LOAD_SNAPSHOT: Final = """
    SELECT stream_id, aggregate_type, version, schema_version, state
    FROM fabula_snapshots WHERE stream_id = ?
"""

LOAD_RECORD: Final = """
    SELECT key, fingerprint, result, created_at, expires_at
    FROM fabula_idempotency WHERE key = ?
"""

SAVE_RECORD: Final = """
    INSERT OR REPLACE INTO fabula_idempotency (key, fingerprint, result, created_at, expires_at)
    VALUES (?, ?, ?, ?, ?)
"""

PURGE_RECORDS: Final = """
    DELETE FROM fabula_idempotency WHERE expires_at IS NOT NULL AND expires_at <= ?
"""

LOAD_CHECKPOINT: Final = "SELECT position FROM fabula_checkpoints WHERE name = ?"

SAVE_CHECKPOINT: Final = """
    INSERT INTO fabula_checkpoints (name, position, updated_at) VALUES (?, ?, ?)
    ON CONFLICT (name) DO UPDATE SET
        position = excluded.position,
        updated_at = excluded.updated_at
"""

RECORD_SKIP: Final = """
    INSERT INTO fabula_skips (name, position, event_type, reason, skipped_at)
    VALUES (?, ?, ?, ?, ?)
"""

LOAD_SKIPS: Final = """
    SELECT position, event_type, reason, skipped_at FROM fabula_skips
    WHERE name = ? ORDER BY position
"""

_PARKED_COLUMNS: Final = (
    "reaction, position, stream_id, version, event_type, error, attempts, parked_at, "
    "request, reason"
)
_TIMER_COLUMNS: Final = (
    "name, due_at, command_type, command, generation, attempts, last_error, claimed_until, sequence"
)

# Times are ISO text in UTC with microseconds, so that text order is time order.
REACTIONS: Final = ReactionStatements(
    insert_parked=f"INSERT INTO fabula_parked ({_PARKED_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608, E501
    load_parked=f"SELECT {_PARKED_COLUMNS} FROM fabula_parked ORDER BY reaction, position",  # noqa: S608
    load_parked_of=(
        f"SELECT {_PARKED_COLUMNS} FROM fabula_parked WHERE reaction = ? ORDER BY position"  # noqa: S608
    ),
    request_parked=(
        "UPDATE fabula_parked SET request = ?, reason = ? WHERE reaction = ? AND position = ? "
        "RETURNING position"
    ),
    repark=(
        "UPDATE fabula_parked SET error = ?, attempts = ?, request = NULL, reason = NULL "
        "WHERE reaction = ? AND position = ?"
    ),
    release_parked="DELETE FROM fabula_parked WHERE reaction = ? AND position = ?",
    record_skip=RECORD_SKIP,
    schedule_timer=f"""
        INSERT INTO fabula_timers ({_TIMER_COLUMNS}, done)
        VALUES (?, ?, ?, ?, ?, 0, NULL, NULL, ?, NULL)
        ON CONFLICT (name) DO UPDATE SET
            due_at = excluded.due_at,
            command_type = excluded.command_type,
            command = excluded.command,
            generation = excluded.generation,
            attempts = 0,
            last_error = NULL,
            claimed_until = NULL,
            sequence = excluded.sequence,
            done = NULL
        WHERE excluded.sequence IS NULL OR fabula_timers.sequence IS NULL
            OR excluded.sequence > fabula_timers.sequence
    """,  # noqa: S608
    timer_state="SELECT done, sequence FROM fabula_timers WHERE name = ?",
    cancel_timer=(
        "UPDATE fabula_timers SET done = 'cancelled', claimed_until = NULL, "
        "sequence = coalesce(?, sequence) WHERE name = ?"
    ),
    bury_timer=(
        "INSERT INTO fabula_timers (name, due_at, command_type, command, generation, sequence, "
        "done) VALUES (?, ?, '', '', '', ?, 'cancelled')"
    ),
    claim_timers=f"""
        UPDATE fabula_timers SET claimed_until = ?
        WHERE name IN (
            SELECT name FROM fabula_timers
            WHERE done IS NULL AND due_at <= ? AND (claimed_until IS NULL OR claimed_until <= ?)
            ORDER BY due_at, name LIMIT ?
        )
        RETURNING {_TIMER_COLUMNS}
    """,  # noqa: S608
    finish_timer=(
        "UPDATE fabula_timers SET done = 'fired', claimed_until = NULL "
        "WHERE name = ? AND generation = ? AND done IS NULL"
    ),
    retry_timer=(
        "UPDATE fabula_timers SET due_at = ?, last_error = ?, attempts = attempts + 1, "
        "claimed_until = NULL WHERE name = ? AND generation = ? AND done IS NULL"
    ),
    load_timers=(
        f"SELECT {_TIMER_COLUMNS} FROM fabula_timers WHERE done IS NULL ORDER BY due_at, name"  # noqa: S608
    ),
)
"""Parked events and timers (see `fabula._reaction_sql`)."""


def utc_text(moment: datetime) -> str:
    """How the store keeps a time: ISO text in UTC, with microseconds (text order is time order)."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def open_writer(
    conn: sqlite3.Connection, *, path: str, synchronous: str, busy_timeout: float, wal_limit: int
) -> None:
    """Configure the writer connection, then create or migrate the schema.

    Raises:
        StoreUnavailableError: The file cannot be switched to WAL mode or stays locked.
        SchemaVersionError: The file was written by a newer fabula.
        StoreError: The file is not a fabula SQLite database.
    """
    try:
        if path != ":memory:":
            conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal":
                msg = f"cannot switch {path!r} to WAL mode (it is in {mode!r} mode)"
                raise StoreUnavailableError(msg)
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        # What is deleted (a forgotten subject's key, a read model's purged
        # rows) is overwritten, not left in free pages.
        conn.execute("PRAGMA secure_delete = ON")
        # Checkpoints run in a worker thread (see Writer._maybe_checkpoint),
        # never inside a commit on the event loop.
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        # When the writer starts the WAL over (see Writer._restart), the file
        # is cut back to this size.
        conn.execute(f"PRAGMA journal_size_limit = {int(wal_limit)}")
        _create_or_migrate(conn, path)
        # From now on the writer never sleeps in SQLite's busy handler: it
        # retries without blocking the event loop (see Writer._begin).
        conn.execute("PRAGMA busy_timeout = 0")
    except sqlite3.Error as exc:
        raise translate(exc, path) from exc


def _create_or_migrate(conn: sqlite3.Connection, path: str) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS fabula_meta "
            "(key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID"
        )
        row = conn.execute("SELECT value FROM fabula_meta WHERE key = 'schema_version'").fetchone()
        found = _schema_version(row, path)
        if found > SCHEMA_VERSION:
            raise SchemaVersionError(path, found, SCHEMA_VERSION)  # noqa: TRY301 - rolled back below
        if found < SCHEMA_VERSION:
            if found == 0:
                for statement in CREATE_SCHEMA:
                    conn.execute(statement)
            for version in range(max(found, 1), SCHEMA_VERSION):
                for statement in MIGRATIONS[version]:
                    conn.execute(statement)
            conn.execute(
                "INSERT OR REPLACE INTO fabula_meta VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _schema_version(row: tuple[Any, ...] | None, path: str) -> int:
    if row is None:
        return 0
    try:
        return int(row[0])
    except (TypeError, ValueError):
        msg = f"{path!r} has an unreadable fabula schema version {row[0]!r}"
        raise StoreError(msg) from None
