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
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar, Self
from uuid import UUID

try:
    import psycopg_pool
except ImportError as exc:  # pragma: no cover - depends on the installation
    msg = "fabula.postgres needs psycopg and psycopg-pool: pip install 'fabula[postgres]'"
    raise ImportError(msg) from exc

from fabula._deletion import StreamDeletion, refuse_read
from fabula._events import DomainEvent
from fabula._idempotency import IdempotencyRecord
from fabula._metrics import Horizon
from fabula._personal import KeyWrapper
from fabula._personal_store import PersonalSide
from fabula._projection import Projection
from fabula._projection_store import SkippedEvent
from fabula._reaction_sql import ReactionsForwarded, SqlReactionSide
from fabula._serialization import EventSerializer
from fabula._snapshots import Snapshot
from fabula._sql import ReadModel
from fabula._store import (
    AppendResult,
    Expected,
    RecordedEvent,
    StreamAppend,
    validate_read_stream,
)
from fabula._store_base import StoreBase, Wakeup
from fabula._stored import (
    decode_rows,
    prepare_append_off_loop,
    prepare_appends_off_loop,
)
from fabula._telemetry import traced_append
from fabula.exceptions import SchemaVersionError, StoreClosedError
from fabula.postgres import _schema as sql
from fabula.postgres._append import Appender, load_record
from fabula.postgres._connections import Connections
from fabula.postgres._notify import Announcer, listen
from fabula.postgres._privacy import PostgresDataSide
from fabula.postgres._projections import ProjectionSide, Tx
from fabula.postgres._read_model import PostgresReadModel

__all__ = ["PostgresEventStore", "Tx"]

_HELD_BACK_RECHECK = 0.005  # seconds: look again soon when an open transaction holds readers


class PostgresEventStore(
    ReactionsForwarded, PostgresDataSide, PersonalSide, StreamDeletion, StoreBase
):
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
        key_encryption_key: Wraps the keys that seal personal data
            (`fabula.KeyEncryptionKey`); needed to store or read events
            with personal fields.

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
        key_encryption_key: KeyWrapper | None = None,
    ) -> None:
        sql.check_schema_name(schema)
        self.serializer = EventSerializer() if serializer is None else serializer
        self._keyring = self._make_keyring(key_encryption_key)
        self.schema = schema
        self._sql = sql.Statements.for_schema(schema)
        self._poll_interval = poll_interval
        self._db = Connections.to(
            conninfo, application_name=f"fabula:{schema}", min_size=min_size, max_size=max_size,
            connect_timeout=connect_timeout,
        )  # fmt: skip
        self._wakeup = Wakeup()
        self._closed = False
        self._opened = False
        self._opening: asyncio.Lock | None = None
        self._listener: asyncio.Task[None] | None = None
        self._announcer = Announcer(self._db, self._sql.announce)
        self._appender = Appender(self._db, self._sql, self._commit_made)
        self._projections = ProjectionSide(
            schema=schema,
            statements=self._sql,
            connections=self._db,
            log=self,
            ready=self._ready,
            poll_interval=poll_interval,
            max_size=max_size,
        )
        projections = self._projections
        self._reaction_side = SqlReactionSide(
            statements=sql.reaction_statements(schema),
            write=projections.in_transaction,
            read=projections.in_transaction,
            lock_checkpoint=projections.lock_checkpoint,
            save_checkpoint=projections.save_checkpoint,
            to_db=_same_time,
            from_db=_utc,
        )

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
            await self._db.open()
            await self._create_schema()
            if self._db.conninfo is not None:
                self._listener = asyncio.create_task(
                    listen(self._db.conninfo, self._sql.channel, self._wakeup),
                    name="fabula-postgres-listen",
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
        await self._announcer.stop()
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        await self._db.close()
        await self._projections.close()

    async def _create_schema(self) -> None:
        """Create the schema, or migrate it to this fabula's version, in one transaction."""
        async with self._db.transaction() as conn:
            # Serialises concurrent creators: CREATE ... IF NOT EXISTS alone
            # can still fail when two sessions race.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self._sql.lock_key,))
            for statement in self._sql.bootstrap:
                await conn.execute(statement)
            row = await (await conn.execute(self._sql.schema_version)).fetchone()
            found = int(row[0]) if row else 0
            if found > sql.SCHEMA_VERSION:
                raise SchemaVersionError(self.schema, found, sql.SCHEMA_VERSION)
            for version in range(1, found + 1):  # applied before they were recorded
                await conn.execute(self._sql.record_migration, (version, None))
            for version in range(found + 1, sql.SCHEMA_VERSION + 1):
                for statement in self._sql.migrations[version]:
                    await conn.execute(statement)
                await conn.execute(self._sql.record_migration, (version, datetime.now(UTC)))
            if found < sql.SCHEMA_VERSION:
                await conn.execute(self._sql.set_schema_version, (str(sql.SCHEMA_VERSION),))

    async def _ready(self) -> None:
        self._check_open()
        if not self._opened:
            await self.open()

    def _check_open(self) -> None:
        if self._closed:
            msg = f"the PostgresEventStore (schema {self.schema!r}) is closed"
            raise StoreClosedError(msg)

    # -- appending ---------------------------------------------------------------

    @traced_append("postgresql")
    async def append(
        self, stream_id: str, events: Sequence[DomainEvent[Any]], *, expected_version: Expected
    ) -> AppendResult:
        """Append events to one stream atomically (see `EventStore.append`)."""
        events, keys = await self._sealing(events)
        parts = await prepare_append_off_loop(
            stream_id, events, expected_version, self.serializer, keys
        )
        await self._ready()
        return (await self._appender.append(parts, None))[0]

    @traced_append("postgresql")
    async def append_many(self, appends: Sequence[StreamAppend]) -> list[AppendResult]:
        """Append to several streams atomically (see `EventStore.append_many`)."""
        keys = await self._keys_to_many(appends)
        parts = await prepare_appends_off_loop(appends, self.serializer, keys=keys)
        await self._ready()
        return await self._appender.append(parts, None)

    @traced_append("postgresql")
    async def append_with_record(
        self, appends: Sequence[StreamAppend], record: IdempotencyRecord
    ) -> list[AppendResult]:
        """Append events and keep an idempotency record in one transaction (`IdempotencyStore`).

        Raises:
            IdempotencyKeyTakenError: An unexpired record holds the key
                (a concurrent duplicate waits for the first to commit).
        """
        keys = await self._keys_to_many(appends)
        parts = await prepare_appends_off_loop(
            appends, self.serializer, allow_empty=True, keys=keys
        )
        await self._ready()
        return await self._appender.append(parts, record)

    def _commit_made(self) -> None:
        """Wake this process's subscribers, and have the other processes' woken."""
        self._wakeup.notify()
        self._announcer.commit_made()

    # -- reading -----------------------------------------------------------------

    async def read_stream(
        self, stream_id: str, *, from_version: int = 1, limit: int | None = None
    ) -> list[RecordedEvent]:
        """Read one stream from `from_version` (see `EventStore.read_stream`)."""
        await self._ready()
        validate_read_stream(stream_id, from_version, limit)
        rows = await self._db.query(self._sql.read_stream, (stream_id, from_version, limit))
        refuse_read(stream_id, rows)
        return await self._decode_rows(rows)

    async def _scan(
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
        rows = await self._db.query(statement, params)
        horizon, head = rows[0][0], rows[0][1]
        events = await self._decode_rows([row[2:] for row in rows if row[2] is not None])
        if len(events) == limit:
            return events, events[-1].position
        reached = sql.read_up_to(after, horizon, head)
        if head > reached and not events:
            # A transaction that began before the newest commits is still
            # open: those commits become readable when it ends. Look again
            # soon; its commit may not notify (it may not be ours).
            asyncio.get_running_loop().call_later(_HELD_BACK_RECHECK, self._wakeup.notify)
        return events, reached

    async def head_position(self) -> int:
        """Return the highest committed position (0 when empty).

        Events up to it may not be readable yet, while an older transaction
        is still open; `Projector.wait_for(head)` waits for them.
        """
        await self._ready()
        rows = await self._db.query(self._sql.head)
        return int(rows[0][0]) if rows else 0

    async def horizon(self) -> Horizon | None:
        """The cluster's oldest open write transaction (other than this call's), or None.

        While it is open, no reader of the log sees events committed after
        it began (they wait, never skip): `fabula.Monitor` reports its age
        and warns when it grows old. Other users' sessions show their pid
        and state only to a role allowed to see them (`pg_read_all_stats`).
        """
        await self._ready()
        rows = await self._db.query(_HORIZON)
        if not rows:
            return None
        pid, application, state, age = rows[0]
        return Horizon(int(pid), application or "", state or "", float(age))

    async def _count(self, after: int, names: frozenset[str] | None) -> int:
        await self._ready()
        if names is None:
            rows = await self._db.query(self._sql.count_after, (after,))
        else:
            rows = await self._db.query(self._sql.count_after_of_types, (after, sorted(names)))
        return int(rows[0][0])

    async def wait_for_commit(self, after: int, max_wait: float) -> None:
        """Return once events after `after` may be readable, or after `max_wait` seconds."""
        await self._ready()
        waiter = self._wakeup.waiter()
        rows = await self._db.query(self._sql.readable_head)
        if (rows and rows[0][0] > after) or self._closed:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max_wait):
                await waiter.wait()

    async def _decode_rows(self, rows: Sequence[Sequence[Any]]) -> list[RecordedEvent]:
        keys = await self._keys_to_open(row[7] for row in rows)
        return decode_rows(self.serializer, rows, event_id=_checked_uuid, timestamp=_utc, keys=keys)

    # -- idempotency records and snapshots ----------------------------------------

    async def load_record(self, key: str) -> IdempotencyRecord | None:
        """Return the idempotency record of `key`, or None (see `IdempotencyStore`)."""
        await self._ready()
        async with self._db.single() as conn:
            return await load_record(conn, self._sql, key)

    async def _save_snapshot(self, snapshot: Snapshot) -> None:
        """Keep `snapshot` unless one of a later version is stored (see `SnapshotStore`)."""
        await self._ready()
        row = (
            snapshot.stream_id,
            snapshot.aggregate_type,
            snapshot.version,
            snapshot.schema_version,
            snapshot.state,
        )
        await self._db.query(self._sql.save_snapshot, row)

    async def _load_snapshot(self, stream_id: str) -> Snapshot | None:
        """Return the latest snapshot of `stream_id`, or None (see `SnapshotStore`)."""
        await self._ready()
        rows = await self._db.query(self._sql.load_snapshot, (stream_id,))
        if not rows:
            return None
        stream, aggregate_type, version, schema_version, state = rows[0]
        return Snapshot(stream, aggregate_type, version, schema_version, state)

    # -- projections (forwarded to the ProjectionSide) ----------------------------

    def read_model(self) -> ReadModel:
        """The SQL read model in this store's schema, for queries (see `fabula.SqlProjection`).

        Its statements run on the projections' pool, with the store's schema
        first on the `search_path`, each `transaction` in a worker thread.
        """
        return PostgresReadModel(self.schema, self._projections.in_transaction)

    def projection_lease(self, name: str) -> contextlib.AbstractAsyncContextManager[asyncio.Event]:
        """Hold the right to run projection `name` among every process using this schema.

        See `ProjectionLeases`: a session-level advisory lock, on a connection
        of its own; the event is set if that connection (and so the lock) is lost.
        """
        return self._projections.projection_lease(name)

    async def load_checkpoint(self, name: str) -> int:
        """Return the checkpoint of projection `name` (0 if it has none)."""
        return await self._projections.load_checkpoint(name)

    async def commit_projection(
        self, name: str, *, expected: int, position: int, work: Callable[[Tx], None]
    ) -> None:
        """Run `work` and move checkpoint `name` from `expected` to `position`, in one transaction.

        Raises:
            CheckpointError: The checkpoint is not at `expected`.
        """
        await self._projections.commit_projection(
            name, expected=expected, position=position, work=work
        )

    async def skip_event(self, name: str, *, position: int, event_class: str, reason: str) -> None:
        """Move checkpoint `name` from `position - 1` past `position`, recording the skip.

        Raises:
            CheckpointError: The checkpoint is not at `position - 1`.
        """
        await self._projections.skip_event(
            name, position=position, event_class=event_class, reason=reason
        )

    async def load_skips(self, name: str) -> list[SkippedEvent]:
        """Return the events skipped in projection `name`, oldest first."""
        return await self._projections.load_skips(name)

    async def rebuild_projection(
        self,
        projection: Projection[Tx],
        *,
        batch_size: int,
        progress: Callable[[int, int], None] | None,
    ) -> int:
        """Build `projection` afresh in a side schema, then move its tables in (one transaction).

        Raises:
            StoreError: The projection does not list its `tables`.
            ProjectionError: A handler failed; the live read model is untouched.
        """
        return await self._projections.rebuild_projection(
            projection, batch_size=batch_size, progress=progress
        )


_HORIZON = (
    "SELECT pid, application_name, state, extract(epoch FROM clock_timestamp() - xact_start) "
    "FROM pg_stat_activity WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid() "
    "ORDER BY xact_start LIMIT 1"
)


def _checked_uuid(value: object) -> UUID:
    if not isinstance(value, UUID):
        raise TypeError(f"{value!r} is not a UUID")
    return value


def _same_time(value: datetime) -> datetime:
    return value


def _utc(value: object) -> datetime:
    if not isinstance(value, datetime):
        raise TypeError(f"{value!r} is not a timestamp")
    return value if value.tzinfo is UTC else value.astimezone(UTC)
