"""The SQLite store's writes inside the writer's transaction: events, retries, subject keys."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from fabula._converter import encode_json
from fabula._idempotency import IdempotencyRecord
from fabula._serialization import SerializedEvent
from fabula._store import AppendResult, check_concurrency
from fabula._stored import (
    PendingAppend,
    StoredEvent,
    explain_duplicate,
    match_retry,
    reads_stored_first,
)
from fabula.exceptions import ConcurrencyError, StreamDeletedError
from fabula.sqlite import _schema as sql
from fabula.sqlite._schema import utc_text
from fabula.sqlite._writer import ExplainedAfterUndoError

__all__ = ["add_keys", "append_parts", "forget_subject", "record_of"]


class _DuplicateIdsError(ExplainedAfterUndoError):
    """An insert hit the event-id unique index; explained after the savepoint rolls back."""

    def __init__(self, part: PendingAppend) -> None:
        self.part = part

    def explain(self, conn: sqlite3.Connection) -> BaseException:
        """Say where the ids are stored, now that the failed insert is undone."""
        return explain_duplicate([self.part], _streams_of(conn, self.part.records))


def append_parts(conn: sqlite3.Connection, parts: list[PendingAppend]) -> list[AppendResult]:
    """Store each part, or recognise it as a retry; the writer's transaction is open."""
    results = []
    for part in parts:
        looked = reads_stored_first(part)
        if looked:
            replayed = match_retry(part, _stored_under(conn, part.records))
            if replayed is not None:
                results.append(replayed)
                continue
        actual, deleted = conn.execute(sql.STREAM_STATE, (part.stream_id,)).fetchone()
        if deleted:
            replayed = None if looked else match_retry(part, _stored_under(conn, part.records))
            if replayed is None:
                raise StreamDeletedError(part.stream_id)
            results.append(replayed)
            continue
        try:
            check_concurrency(part.stream_id, part.events, part.expected, actual)
        except ConcurrencyError:
            # A retry fails the check too; if it was looked for already, it is not one.
            replayed = None if looked else match_retry(part, _stored_under(conn, part.records))
            if replayed is None:
                raise
            results.append(replayed)
            continue
        results.append(_insert(conn, part, actual))
    return results


def _insert(conn: sqlite3.Connection, part: PendingAppend, actual: int) -> AppendResult:
    rows = [
        (
            part.stream_id,
            actual + offset,
            record.event_id.bytes,
            record.type_name,
            record.schema_version,
            record.timestamp.isoformat(),
            record.data,
            record.metadata,
        )
        for offset, record in enumerate(part.records, start=1)
    ]
    try:
        if len(rows) == 1:
            position = conn.execute(sql.INSERT_EVENT, rows[0]).lastrowid
        else:
            conn.executemany(sql.INSERT_EVENT, rows)
            position = conn.execute(sql.LAST_POSITION).fetchone()[0]
    except sqlite3.IntegrityError as exc:
        raise _DuplicateIdsError(part) from exc
    assert position is not None  # noqa: S101 - an INSERT always sets it
    return AppendResult(stream_id=part.stream_id, version=actual + len(rows), position=position)


def _find(conn: sqlite3.Connection, record: SerializedEvent) -> StoredEvent | None:
    row = conn.execute(sql.FIND_EVENT, (record.event_id.bytes,)).fetchone()
    if row is None:
        return None
    position, stream_id, version, type_name, schema, stamp, data, meta = row
    moment = datetime.fromisoformat(stamp)
    return StoredEvent(
        position, stream_id, version, record.event_id, type_name, schema, moment, data, meta
    )


def _stored_under(
    conn: sqlite3.Connection, records: tuple[SerializedEvent, ...]
) -> dict[UUID, StoredEvent]:
    """The stored events with these records' ids; none if the first is not stored.

    Looking up only the first id keeps an ANY append to one lookup; a
    batch whose first id is new but a later one is stored then fails on
    the unique index, and `explain_duplicate` says why.
    """
    first = _find(conn, records[0])
    if first is None:
        return {}
    found = {records[0].event_id: first}
    for record in records[1:]:
        stored = _find(conn, record)
        if stored is not None:
            found[record.event_id] = stored
    return found


def _streams_of(conn: sqlite3.Connection, records: tuple[SerializedEvent, ...]) -> dict[UUID, str]:
    found = {}
    for record in records:
        stored = _find(conn, record)
        if stored is not None:
            found[record.event_id] = stored.stream_id
    return found


def record_of(row: tuple[Any, ...] | None) -> IdempotencyRecord | None:
    if row is None:
        return None
    key, fingerprint, result, created_at, expires_at = row
    return IdempotencyRecord(
        key=key,
        fingerprint=fingerprint,
        result=result,
        created_at=datetime.fromisoformat(created_at),
        expires_at=None if expires_at is None else datetime.fromisoformat(expires_at),
    )


def add_keys(conn: sqlite3.Connection, keys: Mapping[str, bytes]) -> dict[str, bytes | None]:
    """Store each wrapped key unless its subject has one (or is forgotten); return those stored."""
    now = utc_text(datetime.now(UTC))
    conn.executemany(sql.ADD_KEY, [(subject, wrapped, now) for subject, wrapped in keys.items()])
    return dict(conn.execute(sql.LOAD_KEYS, (encode_json(sorted(keys)),)).fetchall())


def forget_subject(conn: sqlite3.Connection, subject: str, part: PendingAppend) -> bool:
    """Destroy `subject`'s key and store `part`; False (nothing done) if forgotten already."""
    conn.execute(sql.FORGET_SUBJECT, (subject, utc_text(datetime.now(UTC))))
    if conn.execute("SELECT changes()").fetchone()[0] == 0:
        return False
    append_parts(conn, [part])
    return True
