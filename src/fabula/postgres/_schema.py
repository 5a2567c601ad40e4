"""The PostgreSQL store's schema and statements.

Every statement is a template whose names are qualified with `{s}`, the
store's PostgreSQL schema; `Statements.for_schema(schema)` fills them in
once per store. `MIGRATIONS` lists what each schema version adds;
`fabula_migrations` records when each was applied.

Positions encode the writing transaction: `position = xid << TX_SHIFT |
ordinal`, where `xid` is the transaction's 64-bit id and `ordinal` the
event's place (from 1) in that transaction. Readers see only positions below
`pg_snapshot_xmin(pg_current_snapshot()) << TX_SHIFT`: every transaction with
a smaller id has ended, so nothing can ever commit below that horizon
(see docs/postgres.md).
"""

from __future__ import annotations

import re
from typing import Final

import attrs

from fabula._reaction_sql import ReactionStatements

SCHEMA_VERSION: Final = 3
"""The schema version this fabula writes (kept in the `fabula_meta` table)."""

TX_SHIFT: Final = 20
"""Bits of a position that number the events of one transaction."""

MAX_EVENTS_PER_TRANSACTION: Final = (1 << TX_SHIFT) - 1
"""The most events one append (one transaction) may hold."""

_XID: Final = "pg_current_xact_id()::text::bigint"
_HORIZON: Final = f"(pg_snapshot_xmin(pg_current_snapshot())::text::bigint << {TX_SHIFT})"

_ROW: Final = (
    "ordinal integer, event_id uuid, type text, schema_version integer, timestamp timestamptz, "
    "data text, metadata text"
)
"""The columns of an event row as the append statements receive them (JSON objects)."""

_COLUMNS: Final = (
    "position, stream_id, version, event_id, type, schema_version, timestamp, data, metadata"
)


def read_up_to(after: int, horizon: int, head: int) -> int:
    """Where a scan that was not full has read the log up to.

    Everything below the horizon has been seen, so the reader resumes from
    the last position before it (or the head, if lower), never from the
    horizon itself: that moves with every transaction.
    """
    return max(after, min(horizon - 1, head))


def quote_identifier(name: str) -> str:
    """Quote a PostgreSQL identifier."""
    return '"' + name.replace('"', '""') + '"'


# -- the schema, version by version -------------------------------------------

BOOTSTRAP: Final = (
    "CREATE SCHEMA IF NOT EXISTS {s}",
    """CREATE TABLE IF NOT EXISTS {s}.fabula_meta (
        key   text PRIMARY KEY,
        value text NOT NULL
    )""",
    # applied_at is NULL for versions applied before fabula kept this record.
    """CREATE TABLE IF NOT EXISTS {s}.fabula_migrations (
        version    integer PRIMARY KEY,
        applied_at timestamptz
    )""",
)
"""Templates that create the bookkeeping tables; each is idempotent."""

MIGRATIONS: Final[dict[int, tuple[str, ...]]] = {
    1: (
        """CREATE TABLE IF NOT EXISTS {s}.fabula_streams (
            stream_id text   PRIMARY KEY,
            version   bigint NOT NULL
        )""",
        """CREATE TABLE IF NOT EXISTS {s}.fabula_events (
            position       bigint      PRIMARY KEY,
            stream_id      text        NOT NULL,
            version        bigint      NOT NULL,
            event_id       uuid        NOT NULL UNIQUE,
            type           text        NOT NULL,
            schema_version integer     NOT NULL,
            timestamp      timestamptz NOT NULL,
            data           text        NOT NULL,
            metadata       text        NOT NULL,
            UNIQUE (stream_id, version)
        )""",
        ("CREATE INDEX IF NOT EXISTS fabula_events_by_type ON {s}.fabula_events (type, position)"),
        """CREATE TABLE IF NOT EXISTS {s}.fabula_snapshots (
            stream_id      text        PRIMARY KEY,
            aggregate_type text        NOT NULL,
            version        bigint      NOT NULL,
            schema_version integer     NOT NULL,
            state          text        NOT NULL,
            created_at     timestamptz NOT NULL
        )""",
        """CREATE TABLE IF NOT EXISTS {s}.fabula_checkpoints (
            name       text        PRIMARY KEY,
            position   bigint      NOT NULL,
            updated_at timestamptz NOT NULL
        )""",
        """CREATE TABLE IF NOT EXISTS {s}.fabula_skips (
            name       text        NOT NULL,
            position   bigint      NOT NULL,
            event_type text        NOT NULL,
            reason     text        NOT NULL,
            skipped_at timestamptz NOT NULL,
            PRIMARY KEY (name, position)
        )""",
        """CREATE TABLE IF NOT EXISTS {s}.fabula_idempotency (
            key         text        PRIMARY KEY,
            fingerprint text        NOT NULL,
            result      text        NOT NULL,
            created_at  timestamptz NOT NULL,
            expires_at  timestamptz
        )""",
    ),
    2: (
        """CREATE TABLE IF NOT EXISTS {s}.fabula_parked (
            reaction   text        NOT NULL,
            position   bigint      NOT NULL,
            stream_id  text        NOT NULL,
            version    bigint      NOT NULL,
            event_type text        NOT NULL,
            error      text,
            attempts   integer     NOT NULL,
            parked_at  timestamptz NOT NULL,
            request    text,
            reason     text,
            PRIMARY KEY (reaction, position)
        )""",
        """CREATE TABLE IF NOT EXISTS {s}.fabula_timers (
            name          text        PRIMARY KEY,
            due_at        timestamptz NOT NULL,
            command_type  text        NOT NULL,
            command       text        NOT NULL,
            generation    text        NOT NULL,
            attempts      integer     NOT NULL DEFAULT 0,
            last_error    text,
            claimed_until timestamptz,
            sequence      bigint,
            done          text
        )""",
        (
            "CREATE INDEX IF NOT EXISTS fabula_timers_by_due ON {s}.fabula_timers (due_at) "
            "WHERE done IS NULL"
        ),
    ),
    3: (
        """CREATE TABLE IF NOT EXISTS {s}.fabula_subject_keys (
            subject      text        PRIMARY KEY,
            wrapped      bytea,
            created_at   timestamptz NOT NULL,
            forgotten_at timestamptz
        )""",
    ),
}
"""Templates that take the schema from the version before to each version."""

# -- claiming a stream and appending -----------------------------------------------

# The optimistic-concurrency check and the row lock in one statement. No row
# back means the stream is not where the writer expected it; nothing has
# been written.
_CLAIMED: Final = f"RETURNING version, {_XID} AS xid"
_CLAIM_EXACT: Final = (
    "UPDATE {s}.fabula_streams SET version = version + %(n)s "
    f"WHERE stream_id = %(stream)s AND version = %(expected)s {_CLAIMED}"
)
_CLAIM_NEW: Final = (
    "INSERT INTO {s}.fabula_streams VALUES (%(stream)s, %(n)s) "
    f"ON CONFLICT (stream_id) DO NOTHING {_CLAIMED}"
)
# A deleted stream's version is negative (-1 - its version): every claim
# fails on it, and the writer then tells a deletion from a conflict.
_CLAIM_ANY: Final = (
    "INSERT INTO {s}.fabula_streams AS st VALUES (%(stream)s, %(n)s) "
    "ON CONFLICT (stream_id) DO UPDATE SET version = st.version + excluded.version "
    f"WHERE st.version >= 0 {_CLAIMED}"
)
_CLAIM_EXISTING: Final = (
    "UPDATE {s}.fabula_streams SET version = version + %(n)s "
    f"WHERE stream_id = %(stream)s AND version >= 0 {_CLAIMED}"
)
# A whole single-stream append in one statement, so in one round trip and
# its own transaction: the claim (the concurrency check and the row lock),
# then the events, numbered from the claimed version. No row back: the
# claim failed and nothing is written.
_APPEND_AFTER_CLAIM: Final = f"""
    WITH claim AS (<claim>),
    inserted AS (
        INSERT INTO {{s}}.fabula_events ({_COLUMNS})
        SELECT (claim.xid << {TX_SHIFT}) + u.ordinal, %(stream)s::text,
               claim.version - %(n)s + u.ordinal, u.event_id, u.type,
               u.schema_version, u.timestamp, u.data, u.metadata
        FROM claim, json_to_recordset(%(rows)s::json) AS u({_ROW})
    )
    SELECT claim.version, claim.xid FROM claim
"""
# One statement, so the horizon and the rows come from one snapshot.
_SCAN: Final = f"""
    WITH h AS (
        SELECT {_HORIZON} AS horizon,
               (SELECT coalesce(max(position), 0) FROM {{s}}.fabula_events) AS head
    )
    SELECT h.horizon, h.head, e.*
    FROM h LEFT JOIN LATERAL (
        SELECT {_COLUMNS} FROM {{s}}.fabula_events
        WHERE position > %(after)s AND position < h.horizon <types>
        ORDER BY position LIMIT %(limit)s
    ) e ON true
"""

TEMPLATES: Final[dict[str, str]] = {
    "schema_version": "SELECT value FROM {s}.fabula_meta WHERE key = 'schema_version'",
    "set_schema_version": (
        "INSERT INTO {s}.fabula_meta VALUES ('schema_version', %s) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
    ),
    "record_migration": (
        "INSERT INTO {s}.fabula_migrations VALUES (%s, %s) ON CONFLICT (version) DO NOTHING"
    ),
    "claim_exact": _CLAIM_EXACT,
    "claim_new": _CLAIM_NEW,
    "claim_any": _CLAIM_ANY,
    "claim_existing": _CLAIM_EXISTING,
    "stream_version": "SELECT version FROM {s}.fabula_streams WHERE stream_id = %s",
    # Event rows travel as one JSON document (json_to_recordset): psycopg
    # builds text arrays in Python, element by element, which cost three
    # times as much as orjson and the server's JSON parser together.
    "insert_events": f"""
        INSERT INTO {{s}}.fabula_events ({_COLUMNS})
        SELECT ({_XID} << {TX_SHIFT}) + u.ordinal, u.stream_id, u.version, u.event_id,
               u.type, u.schema_version, u.timestamp, u.data, u.metadata
        FROM json_to_recordset(%s::json) AS u(stream_id text, version bigint, {_ROW})
    """,
    "append_exact": _APPEND_AFTER_CLAIM.replace("<claim>", _CLAIM_EXACT),
    "append_new": _APPEND_AFTER_CLAIM.replace("<claim>", _CLAIM_NEW),
    "append_any": _APPEND_AFTER_CLAIM.replace("<claim>", _CLAIM_ANY),
    "append_existing": _APPEND_AFTER_CLAIM.replace("<claim>", _CLAIM_EXISTING),
    "find_events": (
        "SELECT event_id, position, stream_id, version, type, schema_version, timestamp, "
        "data, metadata FROM {s}.fabula_events WHERE event_id = ANY(%s)"
    ),
    "count_events": "SELECT count(*) FROM {s}.fabula_events WHERE event_id = ANY(%s)",
    "find_record": "SELECT 1 FROM {s}.fabula_idempotency WHERE key = %s AND created_at = %s",
    "backend_alive": "SELECT 1 FROM pg_stat_activity WHERE pid = %s",
    "read_stream": (
        f"SELECT {_COLUMNS} FROM {{s}}.fabula_events "
        "WHERE stream_id = %s AND version >= %s ORDER BY version LIMIT %s"
    ),
    "scan": _SCAN.replace("<types>", ""),
    "scan_types": _SCAN.replace("<types>", "AND type = ANY(%(types)s)"),
    "head": "SELECT coalesce(max(position), 0) FROM {s}.fabula_events",
    "count_after": "SELECT count(*) FROM {s}.fabula_events WHERE position > %s",
    "count_after_of_types": (
        "SELECT count(*) FROM {s}.fabula_events WHERE position > %s AND type = ANY(%s)"
    ),
    "readable_head": (
        f"SELECT coalesce(max(position), 0) FROM {{s}}.fabula_events WHERE position < {_HORIZON}"
    ),
    "ensure_checkpoint": (
        "INSERT INTO {s}.fabula_checkpoints VALUES (%s, 0, now()) ON CONFLICT (name) DO NOTHING"
    ),
    "lock_checkpoint": "SELECT position FROM {s}.fabula_checkpoints WHERE name = %s FOR UPDATE",
    "load_checkpoint": "SELECT position FROM {s}.fabula_checkpoints WHERE name = %s",
    "save_checkpoint": (
        "UPDATE {s}.fabula_checkpoints SET position = %s, updated_at = now() WHERE name = %s"
    ),
    "record_skip": "INSERT INTO {s}.fabula_skips VALUES (%s, %s, %s, %s, now())",
    "load_skips": (
        "SELECT position, event_type, reason, skipped_at FROM {s}.fabula_skips "
        "WHERE name = %s ORDER BY position"
    ),
    "save_snapshot": """
        INSERT INTO {s}.fabula_snapshots AS old
            (stream_id, aggregate_type, version, schema_version, state, created_at)
        VALUES (%s, %s, %s, %s, %s, now())
        ON CONFLICT (stream_id) DO UPDATE SET
            aggregate_type = excluded.aggregate_type,
            version = excluded.version,
            schema_version = excluded.schema_version,
            state = excluded.state,
            created_at = excluded.created_at
        WHERE excluded.version > old.version
    """,
    "load_snapshot": (
        "SELECT stream_id, aggregate_type, version, schema_version, state "
        "FROM {s}.fabula_snapshots WHERE stream_id = %s"
    ),
    # Claims an idempotency key: a new key, or an expired one. No row back
    # means an unexpired record holds it (a concurrent claim waits here for
    # the first transaction, then sees its record).
    "claim_record": """
        INSERT INTO {s}.fabula_idempotency AS old
            (key, fingerprint, result, created_at, expires_at)
        VALUES (%s, %s, %s, %s, %s)
        ON CONFLICT (key) DO UPDATE SET
            fingerprint = excluded.fingerprint,
            result = excluded.result,
            created_at = excluded.created_at,
            expires_at = excluded.expires_at
        WHERE old.expires_at IS NOT NULL AND old.expires_at <= excluded.created_at
        RETURNING key
    """,
    "load_record": (
        "SELECT key, fingerprint, result, created_at, expires_at "
        "FROM {s}.fabula_idempotency WHERE key = %s"
    ),
    "purge_records": (
        "DELETE FROM {s}.fabula_idempotency WHERE expires_at IS NOT NULL AND expires_at <= %s"
    ),
    "events_holding": (
        f"SELECT {_COLUMNS} FROM {{s}}.fabula_events WHERE data LIKE %s ORDER BY position"
    ),
    "mark_deleted": "UPDATE {s}.fabula_streams SET version = -1 - version WHERE stream_id = %s",
    "lock_stream": "SELECT version FROM {s}.fabula_streams WHERE stream_id = %s FOR UPDATE",
    "purge_stream": "DELETE FROM {s}.fabula_events WHERE stream_id = %s AND type <> %s",
    "drop_snapshot": "DELETE FROM {s}.fabula_snapshots WHERE stream_id = %s",
    "load_keys": "SELECT subject, wrapped FROM {s}.fabula_subject_keys WHERE subject = ANY(%s)",
    "add_keys": (
        "INSERT INTO {s}.fabula_subject_keys (subject, wrapped, created_at) "
        "SELECT subject, wrapped, now() "
        "FROM unnest(%s::text[], %s::bytea[]) AS new(subject, wrapped) "
        "ON CONFLICT (subject) DO NOTHING"
    ),
    "forget_subject": """
        INSERT INTO {s}.fabula_subject_keys AS old (subject, wrapped, created_at, forgotten_at)
        VALUES (%(subject)s, NULL, %(now)s, %(now)s)
        ON CONFLICT (subject) DO UPDATE SET wrapped = NULL, forgotten_at = excluded.forgotten_at
        WHERE old.forgotten_at IS NULL
        RETURNING subject
    """,
}
"""Every statement by its name in `Statements`, with `{s}` for the quoted schema."""


_PARKED_COLUMNS: Final = (
    "reaction, position, stream_id, version, event_type, error, attempts, parked_at, "
    "request, reason"
)
_TIMER_COLUMNS: Final = (
    "name, due_at, command_type, command, generation, attempts, last_error, claimed_until, sequence"
)

REACTION_TEMPLATES: Final[dict[str, str]] = {
    "insert_parked": (
        f"INSERT INTO {{s}}.fabula_parked ({_PARKED_COLUMNS}) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
    ),
    "load_parked": (
        f"SELECT {_PARKED_COLUMNS} FROM {{s}}.fabula_parked ORDER BY reaction, position"
    ),
    "load_parked_of": (
        f"SELECT {_PARKED_COLUMNS} FROM {{s}}.fabula_parked WHERE reaction = %s ORDER BY position"
    ),
    "request_parked": (
        "UPDATE {s}.fabula_parked SET request = %s, reason = %s "
        "WHERE reaction = %s AND position = %s RETURNING position"
    ),
    "repark": (
        "UPDATE {s}.fabula_parked SET error = %s, attempts = %s, request = NULL, reason = NULL "
        "WHERE reaction = %s AND position = %s"
    ),
    "release_parked": "DELETE FROM {s}.fabula_parked WHERE reaction = %s AND position = %s",
    "record_skip": "INSERT INTO {s}.fabula_skips VALUES (%s, %s, %s, %s, %s)",
    "schedule_timer": f"""
        INSERT INTO {{s}}.fabula_timers AS t ({_TIMER_COLUMNS}, done)
        VALUES (%s, %s, %s, %s, %s, 0, NULL, NULL, %s, NULL)
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
        WHERE excluded.sequence IS NULL OR t.sequence IS NULL OR excluded.sequence > t.sequence
    """,
    "timer_state": "SELECT done, sequence FROM {s}.fabula_timers WHERE name = %s FOR UPDATE",
    "cancel_timer": (
        "UPDATE {s}.fabula_timers SET done = 'cancelled', claimed_until = NULL, "
        "sequence = coalesce(%s, sequence) WHERE name = %s"
    ),
    "bury_timer": (
        "INSERT INTO {s}.fabula_timers (name, due_at, command_type, command, generation, "
        "sequence, done) VALUES (%s, %s, '', '', '', %s, 'cancelled') ON CONFLICT (name) DO NOTHING"
    ),
    # SKIP LOCKED: two processes claiming at once take different timers.
    "claim_timers": f"""
        UPDATE {{s}}.fabula_timers SET claimed_until = %s
        WHERE name IN (
            SELECT name FROM {{s}}.fabula_timers
            WHERE done IS NULL AND due_at <= %s
                AND (claimed_until IS NULL OR claimed_until <= %s)
            ORDER BY due_at, name LIMIT %s
            FOR UPDATE SKIP LOCKED
        )
        RETURNING {_TIMER_COLUMNS}
    """,
    "finish_timer": (
        "UPDATE {s}.fabula_timers SET done = 'fired', claimed_until = NULL "
        "WHERE name = %s AND generation = %s AND done IS NULL"
    ),
    "retry_timer": (
        "UPDATE {s}.fabula_timers SET due_at = %s, last_error = %s, attempts = attempts + 1, "
        "claimed_until = NULL WHERE name = %s AND generation = %s AND done IS NULL"
    ),
    "load_timers": (
        f"SELECT {_TIMER_COLUMNS} FROM {{s}}.fabula_timers WHERE done IS NULL ORDER BY due_at, name"
    ),
}
"""Parked events and timers (see `fabula._reaction_sql`), with `{s}` for the quoted schema."""


def reaction_statements(schema: str) -> ReactionStatements:
    """The parked-event and timer statements of a store in `schema`."""
    s = quote_identifier(schema)
    return ReactionStatements(
        **{name: template.format(s=s) for name, template in REACTION_TEMPLATES.items()}
    )


@attrs.frozen
class Statements:
    """The SQL of one store, its names qualified with its schema (see `TEMPLATES`).

    Attributes:
        schema: The schema, quoted.
        lock_key: The advisory lock that serialises schema creation.
        channel: The LISTEN/NOTIFY channel of the store's commits.
        announce: Tells the other processes of commits (see `fabula.postgres._notify`).
        bootstrap: Creates the bookkeeping tables.
        migrations: Each schema version's statements.
    """

    schema: str
    lock_key: str
    channel: str
    announce: str
    bootstrap: tuple[str, ...]
    migrations: dict[int, tuple[str, ...]]
    schema_version: str
    set_schema_version: str
    record_migration: str
    claim_exact: str
    claim_new: str
    claim_any: str
    claim_existing: str
    stream_version: str
    insert_events: str
    append_exact: str
    append_new: str
    append_any: str
    append_existing: str
    find_events: str
    count_events: str
    find_record: str
    backend_alive: str
    read_stream: str
    scan: str
    scan_types: str
    head: str
    count_after: str
    count_after_of_types: str
    readable_head: str
    ensure_checkpoint: str
    lock_checkpoint: str
    load_checkpoint: str
    save_checkpoint: str
    record_skip: str
    load_skips: str
    save_snapshot: str
    load_snapshot: str
    claim_record: str
    load_record: str
    purge_records: str
    events_holding: str
    mark_deleted: str
    lock_stream: str
    purge_stream: str
    drop_snapshot: str
    load_keys: str
    add_keys: str
    forget_subject: str

    @classmethod
    def for_schema(cls, schema: str) -> Statements:
        """Fill every template in with `schema` (a plain identifier, checked by the caller)."""
        s = quote_identifier(schema)
        channel = f"fabula_{schema}"[:63]
        # Appends do not notify: a transaction that notifies takes a
        # database-wide lock at commit and holds it until the commit is on
        # disk, which would put every writer's commit in one queue. Each
        # process announces its commits afterwards, coalesced, in a
        # transaction of its own that does not wait for the disk
        # (notifications are not durable anyway).
        literal = "'" + channel.replace("'", "''") + "'"
        announce = f"SELECT set_config('synchronous_commit', 'off', true), pg_notify({literal}, '')"
        return cls(
            schema=s,
            lock_key=f"fabula-schema:{schema}",
            channel=channel,
            announce=announce,
            bootstrap=tuple(statement.format(s=s) for statement in BOOTSTRAP),
            migrations={
                version: tuple(statement.format(s=s) for statement in statements)
                for version, statements in MIGRATIONS.items()
            },
            **{name: template.format(s=s) for name, template in TEMPLATES.items()},
        )


_SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,40}")


def check_schema_name(schema: object) -> str:
    """Check that `schema` may hold a store: a plain identifier, and not one of PostgreSQL's own.

    `information_schema` and names starting with `pg_` belong to the server
    (it reserves `pg_` for system schemas).

    Raises:
        ValueError: It may not.
    """
    if not isinstance(schema, str) or not _SCHEMA_NAME.fullmatch(schema):
        msg = f"schema must be a plain identifier (letters, digits, _), not {schema!r}"
        raise ValueError(msg)
    if schema.lower() == "information_schema" or schema.lower().startswith("pg_"):
        msg = f"schema {schema!r} belongs to PostgreSQL itself: choose another"
        raise ValueError(msg)
    return schema
