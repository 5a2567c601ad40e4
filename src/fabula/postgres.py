"""PostgresEventStore: the event store for several processes on several machines.

Install with `pip install fabula[postgres]` (psycopg 3 and psycopg-pool).

```python
async with PostgresEventStore("postgresql://localhost/app") as store:
    await store.append("order-1", [OrderPlaced(...)], expected_version=0)
```

Writers to different streams run in parallel: an append locks only its
streams' rows (the optimistic-concurrency check and the lock are one
statement), and no sequence or table lock orders the log. Instead a
position is the writing transaction's id and the event's place in it
(`xid << 20 | n`), and readers of the global log see only positions below
the oldest transaction still running. A transaction that drew its id early
and commits late is therefore never skipped by a reader that has already
moved past later positions: until it ends, nothing after it is readable.
The price is latency, not correctness: one long-running writing transaction
anywhere on the server holds back `read_all` and subscriptions until it
ends (see docs/postgres.md).

Positions are unique and increase with every append made after another
has returned, but they are not dense: use them as opaque, ordered
checkpoints, not as event counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar, Self
from uuid import UUID

try:
    import psycopg
    import psycopg_pool
    from psycopg import errors as pg_errors
except ImportError as exc:  # pragma: no cover - depends on the installation
    msg = "fabula.postgres needs psycopg and psycopg-pool: pip install 'fabula[postgres]'"
    raise ImportError(msg) from exc

from fabula import _postgres_schema as sql
from fabula._events import DomainEvent
from fabula._idempotency import IdempotencyRecord
from fabula._plumbing import Checked, StoreBase, Wakeup, check_appends
from fabula._postgres_projections import PostgresProjections, Tx
from fabula._serialization import EventSerializer, SerializedEvent, encode_json
from fabula._snapshots import Snapshot
from fabula._store import (
    AppendResult,
    Expected,
    ExpectedVersion,
    RecordedEvent,
    StreamAppend,
    check_concurrency,
    check_retry,
    validate_append,
    validate_read_stream,
)
from fabula.exceptions import (
    ConcurrencyError,
    DuplicateEventIdError,
    IdempotencyKeyTakenError,
    InvalidAppendError,
    SchemaVersionError,
    SerializationError,
    StoreClosedError,
    StoreError,
    StoreUnavailableError,
)

__all__ = ["PostgresEventStore", "Tx"]

logger = logging.getLogger("fabula.postgres")

_SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,40}")
_HELD_BACK_RECHECK = 0.005  # seconds: look again soon when an open transaction holds readers
_PURGE_EVERY = 1000
_ANNOUNCE_EVERY = 0.01  # seconds: the most often a process tells the others of its commits

_Encoded = tuple[str, tuple[DomainEvent, ...], Expected, tuple[SerializedEvent, ...]]


class PostgresEventStore(StoreBase, PostgresProjections):
    """An `EventStore` in PostgreSQL (13 or newer), with snapshots and idempotency records.

    Open it with `async with` (or `await store.open()`): that connects,
    creates the schema if needed (safely when several processes start at
    once) and starts listening for other processes' commits.

    Args:
        conninfo: A connection string (`"postgresql://user@host/db"`) or an
            `psycopg_pool.AsyncConnectionPool` of your own (then you open and
            close it; its connection string is also used to listen).
        schema: The PostgreSQL schema that holds fabula's tables.
        min_size: The pool's minimum size, when the store makes the pool.
        max_size: The pool's maximum size, when the store makes the pool.
        poll_interval: Seconds between checks for new events while a
            subscription is idle, in case a notification is lost.
        connect_timeout: Seconds to wait for a connection before
            `StoreUnavailableError`.
        serializer: Encodes and decodes events; one over `default_registry`
            if omitted.

    Raises:
        ValueError: `schema` is not a plain identifier.
    """

    transactional: ClassVar[bool] = True
    """Appends, idempotency records and checkpoints commit with PostgreSQL transactions."""

    def __init__(
        self,
        conninfo: str | psycopg_pool.AsyncConnectionPool[Any],
        *,
        schema: str = "public",
        min_size: int = 1,
        max_size: int = 10,
        poll_interval: float = 0.5,
        connect_timeout: float = 10.0,
        serializer: EventSerializer | None = None,
    ) -> None:
        if not isinstance(schema, str) or not _SCHEMA_NAME.fullmatch(schema):
            msg = f"schema must be a plain identifier (letters, digits, _), not {schema!r}"
            raise ValueError(msg)
        self.serializer = EventSerializer() if serializer is None else serializer
        self.schema = schema
        self._sql = sql.Statements(schema)
        self._connect_timeout = connect_timeout
        self._poll_interval = poll_interval
        self._conninfo: str | None
        if isinstance(conninfo, psycopg_pool.AsyncConnectionPool):
            self._pool = conninfo
            self._own_pool = False
            # A pool whose connection string is computed cannot be listened on:
            # subscriptions then poll.
            self._conninfo = conninfo.conninfo if isinstance(conninfo.conninfo, str) else None
        else:
            self._conninfo = conninfo
            self._own_pool = True
            self._pool = psycopg_pool.AsyncConnectionPool(
                conninfo,
                min_size=min_size,
                max_size=max_size,
                kwargs={"autocommit": True, "application_name": f"fabula:{schema}"[:63]},
                timeout=connect_timeout,
                open=False,
                name="fabula",
            )
        self._wakeup = Wakeup()
        self._closed = False
        self._opened = False
        self._opening: asyncio.Lock | None = None
        self._listener: asyncio.Task[None] | None = None
        self._announcer: asyncio.Task[None] | None = None
        self._announce_again = False
        self._records_written = 0
        self._projection_pool: psycopg_pool.ConnectionPool[Any] | None = None
        self._max_size = max_size

    def __repr__(self) -> str:
        return f"<PostgresEventStore schema={self.schema!r}>"

    # -- opening and closing -----------------------------------------------------

    async def open(self) -> None:
        """Connect, create the schema if it is missing, and start listening for commits.

        Raises:
            StoreUnavailableError: The server cannot be reached in time.
            SchemaVersionError: The schema was written by a newer fabula.
        """
        self._check_open()
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._opened:
                return
            if self._own_pool:
                try:
                    await self._pool.open(wait=True, timeout=self._connect_timeout)
                except (psycopg_pool.PoolTimeout, psycopg.Error) as exc:
                    await self._pool.close()
                    msg = f"cannot connect to PostgreSQL: {exc}"
                    raise StoreUnavailableError(msg) from exc
            await self._create_schema()
            if self._conninfo is not None:
                self._listener = asyncio.create_task(
                    self._listen(self._conninfo), name="fabula-postgres-listen"
                )
            self._opened = True

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def close(self) -> None:
        """Stop listening, end subscriptions and close the pool (if the store made it)."""
        if self._closed:
            return
        self._closed = True
        self._wakeup.notify()
        if self._announcer is not None:
            self._announcer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._announcer
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        if self._own_pool:
            await self._pool.close()
        if self._projection_pool is not None:
            await asyncio.to_thread(self._projection_pool.close)

    async def _create_schema(self) -> None:
        async with self._transaction() as conn:
            # Serialises concurrent creators: CREATE ... IF NOT EXISTS alone
            # can still fail when two sessions race.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self._sql.lock_key,))
            exists = await (
                await conn.execute(
                    "SELECT to_regclass(%s) IS NOT NULL", (f"{self._sql.schema}.fabula_meta",)
                )
            ).fetchone()
            found = 0
            if exists and exists[0]:
                row = await (await conn.execute(self._sql.schema_version)).fetchone()
                found = int(row[0]) if row else 0
            if found > sql.SCHEMA_VERSION:
                raise SchemaVersionError(self.schema, found, sql.SCHEMA_VERSION)
            if found < sql.SCHEMA_VERSION:
                for statement in self._sql.create:
                    await conn.execute(statement)
                await conn.execute(self._sql.set_schema_version, (str(sql.SCHEMA_VERSION),))

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A pooled connection in a transaction; database errors become fabula's."""
        async with self._connection(transaction=True) as conn:
            yield conn

    async def _query(
        self, statement: str, params: Sequence[Any] | dict[str, Any] = ()
    ) -> list[tuple[Any, ...]]:
        """Run one statement and return its rows (none for a write).

        A connection whose server process has ended fails its first
        statement; the statement is then run once more on a fresh one. Safe:
        these statements are reads, or writes that are harmless to repeat.
        """
        try:
            return await self._query_once(statement, params)
        except StoreUnavailableError as exc:
            if not _dead_connection(exc):
                raise
            await self._discard_dead_connections()
            return await self._query_once(statement, params)

    async def _discard_dead_connections(self) -> None:
        """One pooled connection was dead: check the others before trying again.

        What ends one server process (a restart, an operator) has usually
        ended them all; a retry must not land on the next dead one.
        """
        with contextlib.suppress(psycopg.Error, psycopg_pool.PoolTimeout):
            await self._pool.check()

    async def _query_once(
        self, statement: str, params: Sequence[Any] | dict[str, Any]
    ) -> list[tuple[Any, ...]]:
        async with self._reader() as conn:
            cursor = await conn.execute(statement, params)
            return await cursor.fetchall() if cursor.description is not None else []

    @contextlib.asynccontextmanager
    async def _reader(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A pooled connection for one read statement, without a transaction around it."""
        async with self._connection(transaction=False) as conn:
            yield conn

    @contextlib.asynccontextmanager
    async def _connection(
        self, *, transaction: bool
    ) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        task = asyncio.current_task()
        cancels = 0 if task is None else task.cancelling()
        used: psycopg.AsyncConnection[Any] | None = None
        try:
            async with self._pool.connection() as conn:
                used = conn
                if task is not None and task.cancelling() > cancels:
                    # The pool waits with asyncio.wait_for, which on Python 3.11
                    # can hand over a connection and drop a cancellation that
                    # came in the same tick (python/cpython#86296): deliver it.
                    raise asyncio.CancelledError
                if transaction:
                    async with conn.transaction():
                        yield conn
                else:
                    yield conn
        except psycopg_pool.PoolTimeout as exc:
            msg = f"no PostgreSQL connection within {self._connect_timeout} s: {exc}"
            raise StoreUnavailableError(msg) from exc
        except psycopg.OperationalError as exc:
            msg = f"PostgreSQL is unavailable: {exc}"
            if used is not None and used.broken:
                raise _ConnectionLostError(msg) from exc
            # The server answered (a lock or statement timeout, say) and the
            # session goes on: whatever the statement did was rolled back.
            raise StoreUnavailableError(msg) from exc
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL error: {exc}") from exc

    async def _ready(self) -> None:
        self._check_open()
        if not self._opened:
            await self.open()

    def _check_open(self) -> None:
        if self._closed:
            msg = f"the PostgresEventStore (schema {self.schema!r}) is closed"
            raise StoreClosedError(msg)

    async def _listen(self, conninfo: str) -> None:
        """Wake subscriptions on other processes' commits; reconnect when the connection drops."""
        delay = 0.1
        while not self._closed:
            try:
                conn = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
                async with conn:
                    await conn.execute(f'LISTEN "{self._sql.channel}"')
                    delay = 0.1
                    self._wakeup.notify()  # anything missed while disconnected
                    async for _ in conn.notifies():
                        self._wakeup.notify()
            except psycopg.Error as exc:
                logger.warning("listening for commits failed (%s); retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                self._wakeup.notify()

    # -- appending ---------------------------------------------------------------

    async def append(
        self, stream_id: str, events: Sequence[DomainEvent], *, expected_version: Expected
    ) -> AppendResult:
        """Append events to one stream atomically (see `EventStore.append`)."""
        batch = validate_append(stream_id, events, expected_version)
        return (await self._append([(stream_id, batch, expected_version)], None))[0]

    async def append_many(self, appends: Sequence[StreamAppend]) -> list[AppendResult]:
        """Append to several streams atomically (see `EventStore.append_many`)."""
        return await self._append(check_appends(appends), None)

    async def append_with_record(
        self, appends: Sequence[StreamAppend], record: IdempotencyRecord
    ) -> list[AppendResult]:
        """Append events and keep an idempotency record in one transaction (`IdempotencyStore`).

        Raises:
            IdempotencyKeyTakenError: An unexpired record holds the key
                (a concurrent duplicate waits for the first to commit).
        """
        checked = check_appends(appends) if appends else []
        return await self._append(checked, record)

    async def _append(
        self, checked: list[Checked], record: IdempotencyRecord | None
    ) -> list[AppendResult]:
        await self._ready()
        encode = self.serializer.encode
        encoded: list[_Encoded] = [
            (stream_id, batch, expected, tuple(encode(event) for event in batch))
            for stream_id, batch, expected in checked
        ]
        total = sum(len(part[3]) for part in encoded)
        if total > sql.MAX_EVENTS_PER_TRANSACTION:
            stream = encoded[0][0] if encoded else "<append_many>"
            reason = f"{total} events; one append holds at most {sql.MAX_EVENTS_PER_TRANSACTION}"
            raise InvalidAppendError(stream, reason)
        _check_unique_ids(encoded)
        try:
            return await self._append_once(encoded, record)
        except StoreUnavailableError as exc:
            if not _dead_connection(exc):
                raise
            # Nothing is stored (it failed before COMMIT was sent, or the
            # server said so), on a connection whose server process had ended
            # (a restart, a kill): a fresh connection may work. Once.
            await self._discard_dead_connections()
            return await self._append_once(encoded, record)

    async def _append_once(
        self, encoded: list[_Encoded], record: IdempotencyRecord | None
    ) -> list[AppendResult]:
        if record is None and len(encoded) == 1:
            statement = self._single_statement(encoded[0])
            if statement is not None:
                results = [await self._append_statement(encoded[0], statement)]
                self._committed_new()
                return results
        return await self._append_transaction(encoded, record)

    def _single_statement(self, part: _Encoded) -> str | None:
        """The one-statement append for `part`, or None if it needs a transaction.

        One statement commits as soon as the claim succeeds, so it is used
        only where every check can be made before it is sent: events
        already numbered (by an aggregate) must follow on from the expected
        version, which only an exact expected version (or NO_STREAM) tells.
        """
        _, batch, expected, _ = part
        first = batch[0].version
        if expected is ExpectedVersion.NO_STREAM or expected == 0:
            return self._sql.append_new if first in (0, 1) else None
        if expected is ExpectedVersion.ANY:
            return self._sql.append_any if first == 0 else None
        if expected is ExpectedVersion.STREAM_EXISTS:
            return self._sql.append_existing if first == 0 else None
        return self._sql.append_exact if first in (0, expected + 1) else None

    async def _append_statement(self, part: _Encoded, statement: str) -> AppendResult:
        """Append one stream's events in one statement, its own transaction."""
        stream_id, _, expected, records = part
        params: dict[str, object] = {
            "stream": stream_id,
            "n": len(records),
            "rows": _rows_json(records, ordinals=range(1, len(records) + 1)),
        }
        if isinstance(expected, int):
            params["expected"] = expected
        row = await self._run_append_statement(part, statement, params)
        if isinstance(row, AppendResult):
            return row
        if row is not None:
            version, xid = int(row[0]), int(row[1])
            position = (xid << sql.TX_SHIFT) + len(records)
            return AppendResult(stream_id=stream_id, version=version, position=position)
        # The stream is not where the writer expected: a retry, or a conflict.
        stored = await self._replayed_now(stream_id, records, expected)
        if stored is not None:
            return stored
        rows = await self._query(self._sql.stream_version, (stream_id,))
        raise ConcurrencyError(stream_id, expected, rows[0][0] if rows else 0)

    async def _run_append_statement(
        self, part: _Encoded, statement: str, params: dict[str, object]
    ) -> tuple[Any, ...] | AppendResult | None:
        """Run an append statement: its row, or the original result when it was a retry."""
        stream_id, _, expected, records = part
        pid = 0
        try:
            async with self._reader() as conn:
                pid = conn.info.backend_pid
                return await (await conn.execute(statement, params)).fetchone()
        except StoreUnavailableError as exc:
            if pid == 0 or not _dead_connection(exc):
                raise  # nothing was sent, or the server refused it: nothing is stored
            # The connection died with the statement, its own transaction:
            # it may have committed.
            ids = [record.event_id for record in records]
            if not await self._committed(exc, pid, ids, None):
                raise  # not stored, and its server process has ended: retried once
            stored = await self._replayed_now(stream_id, records, expected)
            if stored is None:  # pragma: no cover - the server just said it is stored
                raise
            return stored
        except StoreError as exc:
            if not isinstance(exc.__cause__, pg_errors.UniqueViolation):
                raise
            # An event id is stored already (with ANY or STREAM_EXISTS the
            # claim succeeds for a retry too): a retry, or a duplicate.
            stored = await self._replayed_now(stream_id, records, expected)
            if stored is None:
                raise await self._duplicate_error([part]) from exc
            return stored

    async def _replayed_now(
        self, stream_id: str, records: tuple[SerializedEvent, ...], expected: Expected
    ) -> AppendResult | None:
        """`_replayed` outside a transaction: stored events never change, so it can wait."""
        async with self._reader() as conn:
            return await self._replayed(conn, stream_id, records, expected)

    async def _append_transaction(
        self, encoded: list[_Encoded], record: IdempotencyRecord | None
    ) -> list[AppendResult]:
        pid, new_ids, committing = 0, list[UUID](), False
        results: list[AppendResult] = []
        try:
            # Not in pipeline mode: with it, the connection-loss test saw
            # appends reported failed that had committed.
            async with self._transaction() as conn:
                pid = conn.info.backend_pid
                if record is not None:
                    await self._claim_record(conn, record)
                if encoded:
                    results, new_ids = await self._write(conn, encoded)
                committing = True  # leaving the block sends COMMIT
        except StoreUnavailableError as exc:
            if not committing or not _dead_connection(exc):
                raise  # no COMMIT was sent, or the server refused it: nothing is stored
            if not await self._committed(exc, pid, new_ids, record):
                msg = f"the append was not stored: {exc}"
                raise StoreUnavailableError(msg) from exc
        except StoreError as exc:
            if isinstance(exc.__cause__, pg_errors.UniqueViolation):
                raise await self._duplicate_error(encoded) from exc
            raise
        self._committed_new()
        return results

    def _committed_new(self) -> None:
        """Wake this process's subscribers, and have the other processes' woken."""
        self._wakeup.notify()
        if self._announcer is None or self._announcer.done():
            self._announcer = asyncio.get_running_loop().create_task(
                self._announce(), name="fabula-postgres-announce"
            )
        else:
            self._announce_again = True

    async def _announce(self) -> None:
        """NOTIFY the other processes: at once, then at most every `_ANNOUNCE_EVERY` seconds.

        While one announcement is on its way, later commits only ask for
        another after it. A lost one costs latency, not events: subscribers
        also poll.
        """
        while not self._closed:
            self._announce_again = False
            try:
                await self._query(self._sql.announce)
            except StoreError as exc:
                logger.debug("could not notify other processes of commits: %s", exc)
            await asyncio.sleep(_ANNOUNCE_EVERY)
            if not self._announce_again:
                return

    async def _committed(
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
        deadline = loop.time() + self._connect_timeout
        outcome: bool | None = None
        try:
            while loop.time() <= deadline:
                terminate = loop.time() > deadline - self._connect_timeout / 2
                outcome = await self._probe(pid, new_ids, record, terminate=terminate)
                if outcome is not None:
                    return outcome
                await asyncio.sleep(0.02)
        except StoreError as exc:
            raise _unknown_outcome(str(exc)) from error
        raise _unknown_outcome(f"server process {pid} did not end") from error

    async def _probe(
        self,
        pid: int,
        new_ids: list[UUID],
        record: IdempotencyRecord | None,
        *,
        terminate: bool,
    ) -> bool | None:
        """Once server process `pid` has ended, whether its writes are stored; else None."""
        async with self._reader() as conn:
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

    async def _claim_record(
        self, conn: psycopg.AsyncConnection[Any], record: IdempotencyRecord
    ) -> None:
        row = (
            record.key,
            record.fingerprint,
            record.result,
            record.created_at,
            record.expires_at,
        )
        claimed = await (await conn.execute(self._sql.claim_record, row)).fetchone()
        if claimed is None:
            existing = await self._load_record(conn, record.key)
            if existing is None:  # pragma: no cover - the claim saw it
                msg = f"the idempotency record {record.key!r} vanished while claimed"
                raise StoreError(msg)
            raise IdempotencyKeyTakenError(existing)
        self._records_written += 1
        if self._records_written % _PURGE_EVERY == 0:
            await conn.execute(self._sql.purge_records, (record.created_at,))

    async def _write(
        self, conn: psycopg.AsyncConnection[Any], encoded: list[_Encoded]
    ) -> tuple[list[AppendResult], list[UUID]]:
        """Claim every stream, then insert every new event in one statement.

        Returns the results, and the ids of the events inserted (not retried).
        """
        claims = await self._claim_all(conn, encoded)
        results: list[AppendResult] = []
        rows: list[dict[str, object]] = []
        new_ids: list[UUID] = []
        for (stream_id, _, _, records), claim in zip(encoded, claims, strict=True):
            if isinstance(claim, AppendResult):  # a retry of an earlier append
                results.append(claim)
                continue
            first, xid = claim
            for offset, record in enumerate(records):
                rows.append(
                    _row(record, len(rows) + 1, stream_id=stream_id, version=first + offset)
                )
                new_ids.append(record.event_id)
            position = (xid << sql.TX_SHIFT) + len(rows)
            version = first + len(records) - 1
            results.append(AppendResult(stream_id=stream_id, version=version, position=position))
        if rows:
            await conn.execute(self._sql.insert_events, (encode_json(rows),))
        return results, new_ids

    async def _claim_all(
        self, conn: psycopg.AsyncConnection[Any], encoded: list[_Encoded]
    ) -> list[AppendResult | tuple[int, int]]:
        """Per part: its original result if it is a retry, else (first version, xid)."""
        claims: list[AppendResult | tuple[int, int] | None] = [None] * len(encoded)
        # Lock streams in one order, so that two multi-stream appends cannot deadlock.
        for index in sorted(range(len(encoded)), key=lambda i: encoded[i][0]):
            stream_id, batch, expected, records = encoded[index]
            if expected in (ExpectedVersion.ANY, ExpectedVersion.STREAM_EXISTS):
                claims[index] = await self._replayed(conn, stream_id, records, expected)
                if claims[index] is not None:
                    continue
            claimed = await self._claim(conn, stream_id, expected, len(records))
            if claimed is None:
                claims[index] = await self._replayed(conn, stream_id, records, expected)
                if claims[index] is not None:
                    continue
                row = await (await conn.execute(self._sql.stream_version, (stream_id,))).fetchone()
                raise ConcurrencyError(stream_id, expected, row[0] if row else 0)
            version, xid = claimed
            actual = version - len(records)
            check_concurrency(stream_id, batch, expected, actual)
            claims[index] = (actual + 1, xid)
        return [claim for claim in claims if claim is not None]

    async def _claim(
        self,
        conn: psycopg.AsyncConnection[Any],
        stream_id: str,
        expected: Expected,
        count: int,
    ) -> tuple[int, int] | None:
        """Check the stream's version and lock its row; None if it is not as expected."""
        params: dict[str, object] = {"stream": stream_id, "n": count}
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
        return None if row is None else (int(row[0]), int(row[1]))

    async def _replayed(
        self,
        conn: psycopg.AsyncConnection[Any],
        stream_id: str,
        records: tuple[SerializedEvent, ...],
        expected: Expected,
    ) -> AppendResult | None:
        """Return the original result if `records` were appended before, else None."""
        ids = [record.event_id for record in records]
        rows = await (await conn.execute(self._sql.find_events, (ids,))).fetchall()
        if not rows:
            return None
        found = {row[0]: row for row in rows}
        if len(found) != len(records):
            raise DuplicateEventIdError(
                stream_id,
                rows[0][0],
                "but other events of this batch are new; a retry must repeat the whole append",
            )
        first = found[records[0].event_id]
        check_retry(stream_id, expected, first[3])
        last = first
        for offset, record in enumerate(records):
            row = found[record.event_id]
            _, _, stored_stream, version, kind, schema, stamp, data, meta = row
            if stored_stream != stream_id:
                raise DuplicateEventIdError(
                    stream_id, record.event_id, f"in stream {stored_stream!r}"
                )
            same = (kind, schema, stamp, data, meta) == (
                record.type,
                record.schema_version,
                record.timestamp,
                record.data,
                record.metadata,
            )
            if version != first[3] + offset or not same:
                raise DuplicateEventIdError(
                    stream_id,
                    record.event_id,
                    "with other content or in another order; a retry must repeat the append",
                )
            last = row
        return AppendResult(stream_id=stream_id, version=last[3], position=last[1])

    async def _duplicate_error(self, encoded: list[_Encoded]) -> DuplicateEventIdError:
        ids = [record.event_id for part in encoded for record in part[3]]
        rows = await self._query(self._sql.find_events, (ids,))
        stored = {row[0]: row[2] for row in rows}
        for stream_id, _, _, records in encoded:
            for record in records:
                if record.event_id in stored:
                    where = stored[record.event_id]
                    place = f"in stream {where!r}" if where != stream_id else "in this stream"
                    detail = f"{place}, and this batch is not a retry of the append that stored it"
                    return DuplicateEventIdError(stream_id, record.event_id, detail)
        first = encoded[0]
        return DuplicateEventIdError(first[0], first[3][0].event_id, "stored concurrently")

    # -- reading -----------------------------------------------------------------

    async def read_stream(
        self, stream_id: str, *, from_version: int = 1, limit: int | None = None
    ) -> list[RecordedEvent]:
        """Read one stream from `from_version` (see `EventStore.read_stream`)."""
        await self._ready()
        validate_read_stream(stream_id, from_version, limit)
        rows = await self._query(self._sql.read_stream, (stream_id, from_version, limit))
        return self._decode_rows(rows)

    async def _scan_async(
        self, after: int, limit: int, names: frozenset[str] | None
    ) -> tuple[list[RecordedEvent], int]:
        """Return up to `limit` readable events after `after`, and the position read up to.

        Readable: below the horizon, where every transaction has ended. When
        the page is not full, the reader has seen every event below the
        horizon, and resumes from the last of them (skipping events of other
        types). Not from the horizon itself: that moves with every
        transaction, so a reader would never stop "advancing".
        """
        await self._ready()
        params: dict[str, Any] = {"after": after, "limit": limit}
        statement = self._sql.scan
        if names is not None:
            params["types"] = sorted(names)
            statement = self._sql.scan_types
        rows = await self._query(statement, params)
        horizon, head = rows[0][0], rows[0][1]
        events = self._decode_rows([row[2:] for row in rows if row[2] is not None])
        if len(events) == limit:
            return events, events[-1].position
        reached = sql.read_up_to(after, horizon, head)
        if head > reached and not events:
            # A transaction that began before the newest commits is still
            # open: those commits become readable when it ends. Look again
            # soon; its commit may not notify (it may not be ours).
            asyncio.get_running_loop().call_later(_HELD_BACK_RECHECK, self._wakeup.notify)
        return events, reached

    def _scan(
        self, after: int, limit: int, names: frozenset[str] | None
    ) -> tuple[list[RecordedEvent], int]:  # pragma: no cover - reads are asynchronous here
        msg = "PostgresEventStore reads through _scan_async"
        raise NotImplementedError(msg)

    async def head_position(self) -> int:
        """Return the highest committed position (0 when empty).

        Events up to it may not be readable yet, while an older transaction
        is still open; `Projector.wait_for(head)` waits for them.
        """
        await self._ready()
        rows = await self._query(self._sql.head)
        return int(rows[0][0]) if rows else 0

    async def wait_for_commit(self, after: int, max_wait: float) -> None:
        """Return once events after `after` may be readable, or after `max_wait` seconds."""
        await self._ready()
        waiter = self._wakeup.waiter()
        rows = await self._query(self._sql.readable_head)
        if (rows and rows[0][0] > after) or self._closed:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max_wait):
                await waiter.wait()

    def _decode_rows(self, rows: Sequence[Sequence[Any]]) -> list[RecordedEvent]:
        decode = self.serializer.decode_fields
        out = []
        for position, stream_id, version, event_id, kind, schema, stamp, data, meta in rows:
            if not isinstance(stamp, datetime) or not isinstance(event_id, UUID):
                msg = "the stored event id or timestamp is corrupt"
                raise SerializationError(
                    msg, type_name=kind, stream_id=stream_id, position=position
                )
            moment = stamp if stamp.tzinfo is UTC else stamp.astimezone(UTC)
            event = decode(
                type_name=kind,
                schema_version=schema,
                event_id=event_id,
                timestamp=moment,
                data=data,
                metadata=meta,
                stream_id=stream_id,
                version=version,
                position=position,
            )
            out.append(RecordedEvent(event=event, position=position, stream_id=stream_id))
        return out

    # -- idempotency records and snapshots ----------------------------------------

    async def load_record(self, key: str) -> IdempotencyRecord | None:
        """Return the idempotency record of `key`, or None (see `IdempotencyStore`)."""
        await self._ready()
        async with self._reader() as conn:
            return await self._load_record(conn, key)

    async def _load_record(
        self, conn: psycopg.AsyncConnection[Any], key: str
    ) -> IdempotencyRecord | None:
        row = await (await conn.execute(self._sql.load_record, (key,))).fetchone()
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

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        """Keep `snapshot` unless one of a later version is stored (see `SnapshotStore`)."""
        await self._ready()
        row = (
            snapshot.stream_id,
            snapshot.aggregate_type,
            snapshot.version,
            snapshot.schema_version,
            snapshot.state,
        )
        await self._query(self._sql.save_snapshot, row)

    async def load_snapshot(self, stream_id: str) -> Snapshot | None:
        """Return the latest snapshot of `stream_id`, or None (see `SnapshotStore`)."""
        await self._ready()
        rows = await self._query(self._sql.load_snapshot, (stream_id,))
        if not rows:
            return None
        stream, aggregate_type, version, schema_version, state = rows[0]
        return Snapshot(stream, aggregate_type, version, schema_version, state)


class _ConnectionLostError(StoreUnavailableError):
    """The connection broke during a call: the server's side of it is gone or going."""


def _dead_connection(error: StoreUnavailableError) -> bool:
    """Whether `error` came from a connection that broke (not a refusal, not a wait for one)."""
    return isinstance(error, _ConnectionLostError)


def _unknown_outcome(why: str) -> StoreUnavailableError:
    return StoreUnavailableError(
        f"the append's outcome is unknown: its COMMIT got no answer and the server cannot "
        f"tell ({why}); retrying it with the same events is safe, a retry is recognised "
        f"by their ids"
    )


def _row(record: SerializedEvent, ordinal: int, **more: object) -> dict[str, object]:
    """One event as a JSON object for `json_to_recordset` (orjson writes UUIDs and datetimes)."""
    return {
        "ordinal": ordinal,
        "event_id": record.event_id,
        "type": record.type,
        "schema_version": record.schema_version,
        # In UTC: orjson writes offsets to the minute, and zones such as
        # 1900's Amsterdam (+00:19:32) have seconds; the instant is what is stored.
        "timestamp": record.timestamp.astimezone(UTC),
        "data": record.data,
        "metadata": record.metadata,
        **more,
    }


def _rows_json(records: Sequence[SerializedEvent], ordinals: range) -> str:
    return encode_json([_row(r, n) for r, n in zip(records, ordinals, strict=True)])


def _check_unique_ids(encoded: list[_Encoded]) -> None:
    seen: set[UUID] = set()
    for stream_id, _, _, records in encoded:
        for record in records:
            if record.event_id in seen:
                raise DuplicateEventIdError(
                    stream_id, record.event_id, "earlier in the same append_many"
                )
            seen.add(record.event_id)
