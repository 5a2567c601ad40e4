"""The PostgreSQL store's schema and statements.

Every name is qualified with the store's PostgreSQL schema, so the
statements are built per store by `Statements(schema)`.

Positions encode the writing transaction: `position = xid << TX_SHIFT |
ordinal`, where `xid` is the transaction's 64-bit id and `ordinal` the
event's place (from 1) in that transaction. Readers see only positions below
`pg_snapshot_xmin(pg_current_snapshot()) << TX_SHIFT`: every transaction with
a smaller id has ended, so nothing can ever commit below that horizon
(see docs/postgres.md).
"""

from __future__ import annotations

from typing import Final

SCHEMA_VERSION: Final = 1
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


class Statements:
    """The SQL of one store, its names qualified with `schema`."""

    def __init__(self, schema: str) -> None:
        s = quote_identifier(schema)
        self.schema = s
        self.lock_key = f"fabula-schema:{schema}"
        self.channel = f"fabula_{schema}"[:63]
        self.create: tuple[str, ...] = (
            f"CREATE SCHEMA IF NOT EXISTS {s}",
            f"""CREATE TABLE IF NOT EXISTS {s}.fabula_meta (
                key   text PRIMARY KEY,
                value text NOT NULL
            )""",
            f"""CREATE TABLE IF NOT EXISTS {s}.fabula_streams (
                stream_id text   PRIMARY KEY,
                version   bigint NOT NULL
            )""",
            f"""CREATE TABLE IF NOT EXISTS {s}.fabula_events (
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
            (
                f"CREATE INDEX IF NOT EXISTS fabula_events_by_type "
                f"ON {s}.fabula_events (type, position)"
            ),
            f"""CREATE TABLE IF NOT EXISTS {s}.fabula_snapshots (
                stream_id      text        PRIMARY KEY,
                aggregate_type text        NOT NULL,
                version        bigint      NOT NULL,
                schema_version integer     NOT NULL,
                state          text        NOT NULL,
                created_at     timestamptz NOT NULL
            )""",
            f"""CREATE TABLE IF NOT EXISTS {s}.fabula_checkpoints (
                name       text        PRIMARY KEY,
                position   bigint      NOT NULL,
                updated_at timestamptz NOT NULL
            )""",
            f"""CREATE TABLE IF NOT EXISTS {s}.fabula_skips (
                name       text        NOT NULL,
                position   bigint      NOT NULL,
                event_type text        NOT NULL,
                reason     text        NOT NULL,
                skipped_at timestamptz NOT NULL,
                PRIMARY KEY (name, position)
            )""",
            f"""CREATE TABLE IF NOT EXISTS {s}.fabula_idempotency (
                key         text        PRIMARY KEY,
                fingerprint text        NOT NULL,
                result      text        NOT NULL,
                created_at  timestamptz NOT NULL,
                expires_at  timestamptz
            )""",
        )
        self.schema_version = f"SELECT value FROM {s}.fabula_meta WHERE key = 'schema_version'"
        self.set_schema_version = (
            f"INSERT INTO {s}.fabula_meta VALUES ('schema_version', %s) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
        )

        # Claiming a stream: the optimistic-concurrency check and the row lock
        # in one statement. No row back means the stream is not where the
        # writer expected it; nothing has been written.
        claimed = f"RETURNING version, {_XID} AS xid"
        self.claim_exact = (
            f"UPDATE {s}.fabula_streams SET version = version + %(n)s "
            f"WHERE stream_id = %(stream)s AND version = %(expected)s {claimed}"
        )
        self.claim_new = (
            f"INSERT INTO {s}.fabula_streams VALUES (%(stream)s, %(n)s) "
            f"ON CONFLICT (stream_id) DO NOTHING {claimed}"
        )
        self.claim_any = (
            f"INSERT INTO {s}.fabula_streams AS st VALUES (%(stream)s, %(n)s) "
            f"ON CONFLICT (stream_id) DO UPDATE SET version = st.version + excluded.version "
            f"{claimed}"
        )
        self.claim_existing = (
            f"UPDATE {s}.fabula_streams SET version = version + %(n)s "
            f"WHERE stream_id = %(stream)s {claimed}"
        )
        self.stream_version = f"SELECT version FROM {s}.fabula_streams WHERE stream_id = %s"
        # Event rows travel as one JSON document (json_to_recordset): psycopg
        # builds text arrays in Python, element by element, which cost three
        # times as much as orjson and the server's JSON parser together.
        self.insert_events = f"""
            INSERT INTO {s}.fabula_events ({_COLUMNS})
            SELECT ({_XID} << {TX_SHIFT}) + u.ordinal, u.stream_id, u.version, u.event_id,
                   u.type, u.schema_version, u.timestamp, u.data, u.metadata
            FROM json_to_recordset(%s::json) AS u(stream_id text, version bigint, {_ROW})
        """
        # A whole single-stream append in one statement, so in one round trip
        # and its own transaction: the claim (the concurrency check and the
        # row lock), then the events, numbered from the claimed version. No
        # row back: the claim failed and nothing is written.
        single = f"""
            WITH claim AS ({{claim}}),
            inserted AS (
                INSERT INTO {s}.fabula_events ({_COLUMNS})
                SELECT (claim.xid << {TX_SHIFT}) + u.ordinal, %(stream)s::text,
                       claim.version - %(n)s + u.ordinal, u.event_id, u.type,
                       u.schema_version, u.timestamp, u.data, u.metadata
                FROM claim, json_to_recordset(%(rows)s::json) AS u({_ROW})
            )
            SELECT claim.version, claim.xid FROM claim
        """
        self.append_exact = single.format(claim=self.claim_exact)
        self.append_new = single.format(claim=self.claim_new)
        self.append_any = single.format(claim=self.claim_any)
        self.append_existing = single.format(claim=self.claim_existing)
        # Appends do not notify: a transaction that notifies takes a
        # database-wide lock at commit and holds it until the commit is on
        # disk, which would put every writer's commit in one queue. Each
        # process announces its commits afterwards, coalesced, in a
        # transaction of its own that does not wait for the disk
        # (notifications are not durable anyway).
        channel = "'" + self.channel.replace("'", "''") + "'"
        self.announce = (
            f"SELECT set_config('synchronous_commit', 'off', true), pg_notify({channel}, '')"
        )
        self.find_events = (
            f"SELECT event_id, position, stream_id, version, type, schema_version, timestamp, "
            f"data, metadata FROM {s}.fabula_events WHERE event_id = ANY(%s)"
        )

        self.count_events = f"SELECT count(*) FROM {s}.fabula_events WHERE event_id = ANY(%s)"
        self.find_record = (
            f"SELECT 1 FROM {s}.fabula_idempotency WHERE key = %s AND created_at = %s"
        )
        self.backend_alive = "SELECT 1 FROM pg_stat_activity WHERE pid = %s"

        self.read_stream = (
            f"SELECT {_COLUMNS} FROM {s}.fabula_events "
            "WHERE stream_id = %s AND version >= %s ORDER BY version LIMIT %s"
        )
        # One statement, so the horizon and the rows come from one snapshot.
        scan = f"""
            WITH h AS (
                SELECT {_HORIZON} AS horizon,
                       (SELECT coalesce(max(position), 0) FROM {s}.fabula_events) AS head
            )
            SELECT h.horizon, h.head, e.*
            FROM h LEFT JOIN LATERAL (
                SELECT {_COLUMNS} FROM {s}.fabula_events
                WHERE position > %(after)s AND position < h.horizon {{types}}
                ORDER BY position LIMIT %(limit)s
            ) e ON true
        """
        self.scan = scan.format(types="")
        self.scan_types = scan.format(types="AND type = ANY(%(types)s)")
        self.head = f"SELECT coalesce(max(position), 0) FROM {s}.fabula_events"
        self.readable_head = (
            f"SELECT coalesce(max(position), 0) FROM {s}.fabula_events WHERE position < {_HORIZON}"
        )

        self.ensure_checkpoint = (
            f"INSERT INTO {s}.fabula_checkpoints VALUES (%s, 0, now()) "
            "ON CONFLICT (name) DO NOTHING"
        )
        self.lock_checkpoint = (
            f"SELECT position FROM {s}.fabula_checkpoints WHERE name = %s FOR UPDATE"
        )
        self.load_checkpoint = f"SELECT position FROM {s}.fabula_checkpoints WHERE name = %s"
        self.save_checkpoint = (
            f"UPDATE {s}.fabula_checkpoints SET position = %s, updated_at = now() WHERE name = %s"
        )
        self.record_skip = f"INSERT INTO {s}.fabula_skips VALUES (%s, %s, %s, %s, now())"
        self.load_skips = (
            f"SELECT position, event_type, reason, skipped_at FROM {s}.fabula_skips "
            "WHERE name = %s ORDER BY position"
        )

        self.save_snapshot = f"""
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
        """
        self.load_snapshot = (
            f"SELECT stream_id, aggregate_type, version, schema_version, state "
            f"FROM {s}.fabula_snapshots WHERE stream_id = %s"
        )

        # Claims an idempotency key: a new key, or an expired one. No row back
        # means an unexpired record holds it (a concurrent claim waits here
        # for the first transaction, then sees its record).
        self.claim_record = f"""
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
        """
        self.load_record = (
            f"SELECT key, fingerprint, result, created_at, expires_at "
            f"FROM {s}.fabula_idempotency WHERE key = %s"
        )
        self.purge_records = (
            f"DELETE FROM {s}.fabula_idempotency WHERE expires_at IS NOT NULL AND expires_at <= %s"
        )
