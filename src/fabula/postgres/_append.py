"""Appends to PostgreSQL: claims, inserts, idempotency records, and lost answers.

Each part of an append claims its stream's row (the optimistic-concurrency
check and the row lock are one statement), then every new event of the
call is inserted in one statement. A single-stream append whose checks can
all be made before sending is one statement in all (claim and insert).
What is a retry, a conflict or a duplicate is decided in `fabula._stored`;
this module only asks the server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple
from uuid import UUID

import psycopg
from psycopg import errors as pg_errors

from fabula._converter import encode_json
from fabula._idempotency import IdempotencyRecord
from fabula._serialization import SerializedEvent
from fabula._store import AppendResult, ExpectedVersion, check_concurrency
from fabula._stored import (
    PendingAppend,
    StoredEvent,
    explain_duplicate,
    match_retry,
    reads_stored_first,
)
from fabula.exceptions import (
    ConcurrencyError,
    DuplicateEventIdError,
    FabulaError,
    IdempotencyKeyTakenError,
    InvalidAppendError,
    StoreError,
    StoreUnavailableError,
    StreamDeletedError,
    StreamNotDeletedError,
)
from fabula.postgres import _schema as sql
from fabula.postgres._connections import ConnectionLostError, Connections, unknown_outcome

__all__ = ["Appender"]

_PURGE_EVERY = 1000

_Conn = psycopg.AsyncConnection[Any]


class _Claimed(NamedTuple):
    """A stream claimed for an append: its version after it, and the transaction's id."""

    version: int
    xid: int


class _Planned(NamedTuple):
    """A part to insert: the version of its first event, and the transaction's id."""

    first_version: int
    xid: int


class Appender:
    """Appends parts (and idempotency records) through `connections`.

    Args:
        connections: The store's pool.
        statements: The schema's statements.
        committed: Called after each append that stored something new.
    """

    def __init__(
        self, connections: Connections, statements: sql.Statements, committed: Callable[[], None]
    ) -> None:
        self._db = connections
        self._sql = statements
        self._committed = committed
        self._records_written = 0

    async def append(
        self, parts: list[PendingAppend], record: IdempotencyRecord | None
    ) -> list[AppendResult]:
        """Store `parts` (and `record`) atomically; retried once on a dead connection.

        Raises:
            InvalidAppendError: The call holds more events than one transaction can number.
            ConcurrencyError: A stream is not where its part expected it.
            DuplicateEventIdError: A stored id is reused, not in a retry.
            IdempotencyKeyTakenError: An unexpired record holds the key.
            StoreUnavailableError: The server could not be reached, or the
                outcome could not be told.
        """
        total = sum(len(part.records) for part in parts)
        if total > sql.MAX_EVENTS_PER_TRANSACTION:
            stream = parts[0].stream_id if parts else "<append_many>"
            reason = f"{total} events; one append holds at most {sql.MAX_EVENTS_PER_TRANSACTION}"
            raise InvalidAppendError(stream, reason)
        try:
            return await self._append_choosing_statement(parts, record)
        except ConnectionLostError:
            # Nothing is stored (it failed before COMMIT was sent, or the
            # server said so), on a connection whose server process had ended
            # (a restart, a kill): a fresh connection may work. Once.
            await self._db.discard_dead()
            return await self._append_choosing_statement(parts, record)

    async def load_keys(self, subjects: Collection[str]) -> dict[str, bytes | None]:
        """The stored wrapped keys of `subjects` (None: forgotten; absent: none yet)."""
        rows = await self._db.query(self._sql.load_keys, (list(subjects),))
        return {subject: None if wrapped is None else bytes(wrapped) for subject, wrapped in rows}

    async def add_keys(self, keys: Mapping[str, bytes]) -> dict[str, bytes | None]:
        """Store each wrapped key unless its subject has one (or is forgotten); return them."""
        await self._db.query(self._sql.add_keys, (list(keys), list(keys.values())))
        return await self.load_keys(keys)

    async def delete(self, part: PendingAppend) -> AppendResult:
        """Append the tombstone `part` and mark its stream deleted, in one transaction."""
        async with self._db.transaction() as conn:
            (result,), _ = await self._write(conn, [part])
            await conn.execute(self._sql.mark_deleted, (part.stream_id,))
        self._committed()
        return result

    async def purge(self, stream_id: str, tombstone: str) -> int:
        """Remove a deleted stream's events but its tombstone, and its snapshot; return how many.

        Raises:
            StreamNotDeletedError: The stream is not deleted.
        """
        async with self._db.transaction() as conn:
            row = await (await conn.execute(self._sql.lock_stream, (stream_id,))).fetchone()
            if row is None or row[0] >= 0:
                raise StreamNotDeletedError(stream_id)
            await conn.execute(self._sql.drop_snapshot, (stream_id,))
            purged = await conn.execute(self._sql.purge_stream, (stream_id, tombstone))
            return purged.rowcount

    async def forget(self, subject: str, part: PendingAppend) -> bool:
        """Destroy `subject`'s key and store `part`, in one transaction.

        Returns False, storing nothing, if the subject was forgotten already:
        so a call whose commit went unanswered can simply be made again.
        """
        params = {"subject": subject, "now": datetime.now(UTC)}
        async with self._db.transaction() as conn:
            marked = await (await conn.execute(self._sql.forget_subject, params)).fetchone()
            if marked is None:
                return False
            await self._write(conn, [part])
        self._committed()
        return True

    async def _append_choosing_statement(
        self, parts: list[PendingAppend], record: IdempotencyRecord | None
    ) -> list[AppendResult]:
        """One statement where one part's checks can all be made first, else a transaction."""
        if record is None and len(parts) == 1:
            statement = self._one_statement_for(parts[0])
            if statement is not None:
                results = [await self._append_in_one_statement(parts[0], statement)]
                self._committed()
                return results
        results = await self._append_in_transaction(parts, record)
        self._committed()
        return results

    def _one_statement_for(self, part: PendingAppend) -> str | None:
        """The one-statement append for `part`, or None if it needs a transaction.

        One statement commits as soon as the claim succeeds, so it is used
        only where every check can be made before it is sent: events
        already numbered (by an aggregate) must follow on from the expected
        version, which only an exact expected version (or NO_STREAM) tells.
        """
        first, expected = part.first_version, part.expected
        if expected is ExpectedVersion.NO_STREAM or expected == 0:
            return self._sql.append_new if first in (0, 1) else None
        if expected is ExpectedVersion.ANY:
            return self._sql.append_any if first == 0 else None
        if expected is ExpectedVersion.STREAM_EXISTS:
            return self._sql.append_existing if first == 0 else None
        return self._sql.append_exact if first in (0, expected + 1) else None

    async def _append_in_one_statement(self, part: PendingAppend, statement: str) -> AppendResult:
        """Append one stream's events in one statement, its own transaction."""
        records = part.records
        params: dict[str, object] = {
            "stream": part.stream_id,
            "n": len(records),
            "rows": encode_json([_row(r, n) for n, r in enumerate(records, start=1)]),
        }
        if isinstance(part.expected, int):
            params["expected"] = part.expected
        row = await self._run_recognising_retries(part, statement, params)
        if isinstance(row, AppendResult):
            return row
        if row is not None:
            version, xid = int(row[0]), int(row[1])
            position = (xid << sql.TX_SHIFT) + len(records)
            return AppendResult(stream_id=part.stream_id, version=version, position=position)
        # The stream is not where the writer expected: a retry, or a conflict.
        stored = await self._retry_result(part)
        if stored is not None:
            return stored
        rows = await self._db.query(self._sql.stream_version, (part.stream_id,))
        raise _conflict(part, rows[0][0] if rows else 0)

    async def _run_recognising_retries(
        self, part: PendingAppend, statement: str, params: dict[str, object]
    ) -> tuple[Any, ...] | AppendResult | None:
        """Run an append statement: its row, or the original result when it was a retry."""
        pid = 0
        try:
            async with self._db.single() as conn:
                pid = conn.info.backend_pid
                return await (await conn.execute(statement, params)).fetchone()
        except ConnectionLostError as exc:
            if pid == 0:
                raise  # nothing was sent: nothing is stored
            # The connection died with the statement, its own transaction:
            # it may have committed.
            ids = [record.event_id for record in part.records]
            if not await self._outcome_of_lost_commit(exc, pid, ids, None):
                raise  # not stored, and its server process has ended: retried once
            stored = await self._retry_result(part)
            if stored is None:  # pragma: no cover - the server just said it is stored
                raise
            return stored
        except StoreError as exc:
            if not isinstance(exc.__cause__, pg_errors.UniqueViolation):
                raise
            # An event id is stored already (with ANY or STREAM_EXISTS the
            # claim succeeds for a retry too): a retry, or a duplicate.
            stored = await self._retry_result(part)
            if stored is None:
                raise await self._duplicate_error([part]) from exc
            return stored

    async def _retry_result(self, part: PendingAppend) -> AppendResult | None:
        """`match_retry` outside a transaction: stored events never change, so it can wait."""
        async with self._db.single() as conn:
            return match_retry(part, await self._stored_under(conn, part.records))

    async def _append_in_transaction(
        self, parts: list[PendingAppend], record: IdempotencyRecord | None
    ) -> list[AppendResult]:
        pid, new_ids, committing = 0, list[UUID](), False
        results: list[AppendResult] = []
        try:
            # Not in pipeline mode: with it, the connection-loss test saw
            # appends reported failed that had committed.
            async with self._db.transaction() as conn:
                pid = conn.info.backend_pid
                if record is not None:
                    await self._claim_record(conn, record)
                if parts:
                    results, new_ids = await self._write(conn, parts)
                committing = True  # leaving the block sends COMMIT
        except ConnectionLostError as exc:
            if not committing:
                raise  # no COMMIT was sent: nothing is stored
            if not await self._outcome_of_lost_commit(exc, pid, new_ids, record):
                msg = f"the append was not stored: {exc}"
                raise StoreUnavailableError(msg) from exc
        except StoreError as exc:
            if isinstance(exc.__cause__, pg_errors.UniqueViolation):
                raise await self._duplicate_error(parts) from exc
            raise
        return results

    async def _outcome_of_lost_commit(
        self,
        error: StoreUnavailableError,
        pid: int,
        new_ids: list[UUID],
        record: IdempotencyRecord | None,
    ) -> bool:
        """Tell whether a transaction whose COMMIT got no answer committed.

        Waits until its server process has ended (ending it after a grace
        period: a transaction can then no longer commit), then looks for
        what it wrote. Raises `StoreUnavailableError` if that cannot be told.
        """
        loop = asyncio.get_running_loop()
        timeout = self._db.connect_timeout
        deadline = loop.time() + timeout
        try:
            while loop.time() <= deadline:
                terminate = loop.time() > deadline - timeout / 2
                outcome = await self._probe(pid, new_ids, record, terminate=terminate)
                if outcome is not None:
                    return outcome
                await asyncio.sleep(0.02)
        except StoreError as exc:
            raise unknown_outcome(str(exc)) from error
        raise unknown_outcome(f"server process {pid} did not end") from error

    async def _probe(
        self,
        pid: int,
        new_ids: list[UUID],
        record: IdempotencyRecord | None,
        *,
        terminate: bool,
    ) -> bool | None:
        """Once server process `pid` has ended, whether its writes are stored; else None."""
        async with self._db.single() as conn:
            alive = await (await conn.execute(self._sql.backend_alive, (pid,))).fetchone()
            # Our own server process is not busy with the append: it is asking.
            if alive is not None and pid != conn.info.backend_pid:
                if terminate:
                    await conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
                return None
            if new_ids:
                row = await (await conn.execute(self._sql.count_events, (new_ids,))).fetchone()
                return row is not None and row[0] == len(new_ids)
            if record is not None:
                found = await conn.execute(self._sql.find_record, (record.key, record.created_at))
                return await found.fetchone() is not None
            return True  # it wrote nothing: its results stand

    async def _claim_record(self, conn: _Conn, record: IdempotencyRecord) -> None:
        row = (
            record.key,
            record.fingerprint,
            record.result,
            record.created_at,
            record.expires_at,
        )
        claimed = await (await conn.execute(self._sql.claim_record, row)).fetchone()
        if claimed is None:
            existing = await load_record(conn, self._sql, record.key)
            if existing is None:  # pragma: no cover - the claim saw it
                msg = f"the idempotency record {record.key!r} vanished while claimed"
                raise StoreError(msg)
            raise IdempotencyKeyTakenError(existing)
        self._records_written += 1
        if self._records_written % _PURGE_EVERY == 0:
            await conn.execute(self._sql.purge_records, (record.created_at,))

    async def _write(
        self, conn: _Conn, parts: list[PendingAppend]
    ) -> tuple[list[AppendResult], list[UUID]]:
        """Claim every stream, then insert every new event in one statement.

        Returns the results, and the ids of the events inserted (not retried).
        """
        claims = await self._claim_all(conn, parts)
        results: list[AppendResult] = []
        rows: list[dict[str, object]] = []
        new_ids: list[UUID] = []
        for part, claim in zip(parts, claims, strict=True):
            if isinstance(claim, AppendResult):  # a retry of an earlier append
                results.append(claim)
                continue
            first, xid = claim.first_version, claim.xid
            for offset, record in enumerate(part.records):
                ordinal = len(rows) + 1
                rows.append(_row(record, ordinal, stream_id=part.stream_id, version=first + offset))
                new_ids.append(record.event_id)
            position = (xid << sql.TX_SHIFT) + len(rows)
            version = first + len(part.records) - 1
            results.append(
                AppendResult(stream_id=part.stream_id, version=version, position=position)
            )
        if rows:
            await conn.execute(self._sql.insert_events, (encode_json(rows),))
        return results, new_ids

    async def _claim_all(
        self, conn: _Conn, parts: list[PendingAppend]
    ) -> list[AppendResult | _Planned]:
        """Per part: its original result if it is a retry, else (first version, xid)."""
        claims: list[AppendResult | _Planned | None] = [None] * len(parts)
        # Lock streams in one order, so that two multi-stream appends cannot deadlock.
        for index in sorted(range(len(parts)), key=lambda i: parts[i].stream_id):
            part = parts[index]
            if reads_stored_first(part):
                claims[index] = match_retry(part, await self._stored_under(conn, part.records))
                if claims[index] is not None:
                    continue
            claimed = await self._claim(conn, part)
            if claimed is None:
                claims[index] = match_retry(part, await self._stored_under(conn, part.records))
                if claims[index] is not None:
                    continue
                row = await (
                    await conn.execute(self._sql.stream_version, (part.stream_id,))
                ).fetchone()
                raise _conflict(part, row[0] if row else 0)
            actual = claimed.version - len(part.records)
            check_concurrency(part.stream_id, part.events, part.expected, actual)
            claims[index] = _Planned(actual + 1, claimed.xid)
        return [claim for claim in claims if claim is not None]

    async def _claim(self, conn: _Conn, part: PendingAppend) -> _Claimed | None:
        """Check the stream's version and lock its row; None if it is not as expected."""
        expected = part.expected
        params: dict[str, object] = {"stream": part.stream_id, "n": len(part.records)}
        if isinstance(expected, int):
            params["expected"] = expected
        if expected is ExpectedVersion.ANY:
            statement = self._sql.claim_any
        elif expected is ExpectedVersion.STREAM_EXISTS:
            statement = self._sql.claim_existing
        elif expected is ExpectedVersion.NO_STREAM or expected == 0:
            statement = self._sql.claim_new
        else:
            statement = self._sql.claim_exact
        row = await (await conn.execute(statement, params)).fetchone()
        return None if row is None else _Claimed(int(row[0]), int(row[1]))

    async def _stored_under(
        self, conn: _Conn, records: Sequence[SerializedEvent]
    ) -> dict[UUID, StoredEvent]:
        ids = [record.event_id for record in records]
        rows = await (await conn.execute(self._sql.find_events, (ids,))).fetchall()
        return {row[0]: _stored_event(row) for row in rows}

    async def _duplicate_error(self, parts: list[PendingAppend]) -> DuplicateEventIdError:
        ids = [record.event_id for part in parts for record in part.records]
        rows = await self._db.query(self._sql.find_events, (ids,))
        return explain_duplicate(parts, {row[0]: row[2] for row in rows})


async def load_record(
    conn: _Conn, statements: sql.Statements, key: str
) -> IdempotencyRecord | None:
    """Read the idempotency record of `key` on `conn`, or None."""
    row = await (await conn.execute(statements.load_record, (key,))).fetchone()
    if row is None:
        return None
    key, fingerprint, result, created_at, expires_at = row
    return IdempotencyRecord(
        key=key,
        fingerprint=fingerprint,
        result=result,
        created_at=created_at,
        expires_at=expires_at,
    )


def _stored_event(row: Sequence[Any]) -> StoredEvent:
    """A row of `find_events` (the event id first) as a `StoredEvent`."""
    event_id, position, stream_id, version, type_name, schema, stamp, data, meta = row
    return StoredEvent(position, stream_id, version, event_id, type_name, schema, stamp, data, meta)


def _row(record: SerializedEvent, ordinal: int, **more: object) -> dict[str, object]:
    """One event as a JSON object for `json_to_recordset` (orjson writes UUIDs and datetimes)."""
    return {
        "ordinal": ordinal,
        "event_id": record.event_id,
        "type": record.type_name,
        "schema_version": record.schema_version,
        # In UTC: orjson writes offsets to the minute, and zones such as
        # 1900's Amsterdam (+00:19:32) have seconds; the instant is what is stored.
        "timestamp": record.timestamp.astimezone(UTC),
        "data": record.data,
        "metadata": record.metadata,
        **more,
    }


def _conflict(part: PendingAppend, actual: int) -> FabulaError:
    """Why a claim failed: the stream is deleted (its version is negative), or elsewhere."""
    if actual < 0:
        return StreamDeletedError(part.stream_id)
    return ConcurrencyError(part.stream_id, part.expected, actual)
