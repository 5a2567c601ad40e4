"""The SQLite store's schema and statements, as named constants."""

from __future__ import annotations

from typing import Final

SCHEMA_VERSION: Final = 2
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
}
"""Statements that bring schema version N to N + 1; each is idempotent."""

STREAM_VERSION: Final = "SELECT max(version) FROM fabula_events WHERE stream_id = ?"

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
