"""SQLiteEventStore: the durable, embedded default store (stdlib `sqlite3` only).

One file holds events, snapshots, projection checkpoints and idempotency
records, in WAL mode. Global positions are rowids: SQLite has one writer at a
time, so position order is commit order and a reader that checkpoints the last
position it saw never misses an event.

Writes go through one writer task per store (`fabula.sqlite._writer`):
appends that arrive while a commit is in flight are committed together,
each with its own result or error.

Durability (`synchronous`):

- `"FULL"` (the default): an append returns only after its events are synced
  to disk. They survive a process kill, an OS crash and a power loss.
- `"NORMAL"`: the WAL is synced only at checkpoints. Acknowledged events
  survive a process kill; an OS crash or power loss may lose the most recent
  commits (never corrupt the file, never half a batch).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar, Final, Literal, TypeAlias, TypeVar

from fabula._converter import encode_json
from fabula._deletion import StreamDeletion, refuse_read
from fabula._events import DomainEvent
from fabula._guards import is_int
from fabula._idempotency import IdempotencyRecord
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
from fabula._uuids import uuid_from_bytes
from fabula.exceptions import (
    IdempotencyKeyTakenError,
    StoreClosedError,
)
from fabula.sqlite import _schema as sql
from fabula.sqlite._append import append_parts, record_of
from fabula.sqlite._errors import connect, translate
from fabula.sqlite._privacy import SQLiteDataSide
from fabula.sqlite._projections import ProjectionSide, checkpoint_of, save_checkpoint
from fabula.sqlite._read_model import SQLiteReadModel
from fabula.sqlite._schema import utc_text
from fabula.sqlite._writer import Writer

__all__ = ["SQLiteEventStore", "Synchronous"]

logger = logging.getLogger("fabula.sqlite")

Synchronous: TypeAlias = Literal["FULL", "NORMAL"]
"""The durability level of an `SQLiteEventStore` (see the module documentation)."""

T = TypeVar("T")


_MEMORY = ":memory:"
_PURGE_EVERY = 500


DEFAULT_WAL_LIMIT: Final = 64 * 1024 * 1024
"""The default `wal_limit`: 64 MiB."""

MIN_WAL_LIMIT: Final = 64 * 1024
"""The smallest `wal_limit` accepted: 64 KiB (16 pages of 4 KiB)."""


def _check_options(synchronous: object, wal_limit: object) -> None:
    if synchronous not in ("FULL", "NORMAL"):
        msg = f"synchronous must be 'FULL' or 'NORMAL', not {synchronous!r}"
        raise ValueError(msg)
    if not is_int(wal_limit) or wal_limit < MIN_WAL_LIMIT:
        msg = f"wal_limit must be an int of at least {MIN_WAL_LIMIT} bytes, not {wal_limit!r}"
        raise ValueError(msg)


class SQLiteEventStore(ReactionsForwarded, SQLiteDataSide, PersonalSide, StreamDeletion, StoreBase):
    """An `EventStore` in one SQLite file (or in memory), with snapshots.

    Args:
        path: The database file (created if missing), or `":memory:"`.
        synchronous: `"FULL"` (default) or `"NORMAL"`; see the module docs
            for what each survives.
        busy_timeout: Seconds to wait for another process's write lock
            before an append fails with `StoreUnavailableError`.
        poll_interval: Seconds between checks for events appended by other
            processes while a subscription is idle (appends through this
            store wake subscribers at once).
        serializer: Encodes and decodes events; one over `default_registry`
            if omitted.
        wal_limit: The most the write-ahead log (`PATH-wal`) may grow to, in
            bytes, while readers do not hold old snapshots. Past it, the
            writer checkpoints the whole log between two commits (waiting up
            to 0.1 s for readers), and the next commit writes it from its
            start and cuts the file back to this size. Default 64 MiB.
        key_encryption_key: Wraps the keys that seal personal data
            (`fabula.KeyEncryptionKey`); needed to store or read events
            with personal fields.

    Raises:
        StoreUnavailableError: The file cannot be opened or stays locked.
        SchemaVersionError: The file was written by a newer fabula.
        StoreError: The file is not a fabula SQLite database.
    """

    transactional: ClassVar[bool] = True
    """Projection work that fails is rolled back with its checkpoint."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: Synchronous = "FULL",
        busy_timeout: float = 5.0,
        poll_interval: float = 0.5,
        serializer: EventSerializer | None = None,
        wal_limit: int = DEFAULT_WAL_LIMIT,
        key_encryption_key: KeyWrapper | None = None,
    ) -> None:
        _check_options(synchronous, wal_limit)
        self.serializer = EventSerializer() if serializer is None else serializer
        self._keyring = self._make_keyring(key_encryption_key)
        self._busy_timeout = busy_timeout
        self.path = str(path)
        self.synchronous: Synchronous = synchronous
        self._poll_interval: float | None = poll_interval
        self._wakeup = Wakeup()
        self._closed = False
        self._closing: asyncio.Future[None] | None = None
        self._records_written = 0
        in_memory = self.path == _MEMORY
        writer = connect(self.path)
        try:
            sql.open_writer(
                writer, path=self.path, synchronous=synchronous, busy_timeout=busy_timeout,
                wal_limit=wal_limit,
            )  # fmt: skip
            self._reader = writer if in_memory else connect(self.path)
            self._reader.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        except BaseException:
            writer.close()
            raise
        self._writer = Writer(
            writer,
            path=self.path,
            busy_timeout=busy_timeout,
            commit_inline=in_memory or synchronous == "NORMAL",
            committed=self._wakeup.notify,
            wal_limit=wal_limit,
        )
        self._projections = ProjectionSide(
            path=self.path, write=self._transaction, query=self._query, log=self
        )
        self._read_model = SQLiteReadModel(self.path, self._transaction, busy_timeout)
        self._reaction_side = SqlReactionSide(
            sql.REACTIONS, self._transaction, self._read, checkpoint_of, save_checkpoint, utc_text,
            datetime.fromisoformat,
        )  # fmt: skip

    def __repr__(self) -> str:
        return f"<SQLiteEventStore {self.path!r} synchronous={self.synchronous}>"

    def read_model(self) -> ReadModel:
        """The SQL read model in this store's file: what queries read (see `fabula.SqlProjection`).

        Its writes run on the store's writer, its reads on a read-only
        connection of their own, off the event loop.
        """
        self._check_open()
        return self._read_model

    async def close(self) -> None:
        """Finish queued appends, end subscriptions and close the database.

        Cancelling `close()` does not stop the shutdown: queued appends are
        still committed and the file is closed; a second `close()` waits for
        the first to finish.
        """
        if self._closing is None:
            self._closed = True
            self._closing = asyncio.ensure_future(self._shut_down())
        await asyncio.shield(self._closing)

    async def _shut_down(self) -> None:
        await self._writer.finish()
        self._wakeup.notify()
        self._read_model.close()
        if self._reader is not self._writer.connection:
            self._reader.close()
        await self._writer.close()

    async def _transaction(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work` in a write transaction on the writer (projections, the read model)."""
        return await self._submit(work, 0, one_statement=False)

    async def _submit(
        self, work: Callable[[sqlite3.Connection], T], events: int, *, one_statement: bool
    ) -> T:
        self._check_open()
        return await self._writer.submit(work, events, one_statement=one_statement)

    # -- appending ---------------------------------------------------------------

    @traced_append("sqlite")
    async def append(
        self, stream_id: str, events: Sequence[DomainEvent[Any]], *, expected_version: Expected
    ) -> AppendResult:
        """Append events to one stream atomically (see `EventStore.append`)."""
        events, keys = await self._sealing(events)
        parts = await prepare_append_off_loop(
            stream_id, events, expected_version, self.serializer, keys
        )
        count = len(parts[0].records)
        results: list[AppendResult] = await self._submit(
            lambda conn: append_parts(conn, parts), count, one_statement=count == 1
        )
        return results[0]

    @traced_append("sqlite")
    async def append_many(self, appends: Sequence[StreamAppend]) -> list[AppendResult]:
        """Append to several streams atomically (see `EventStore.append_many`)."""
        keys = await self._keys_to_many(appends)
        parts = await prepare_appends_off_loop(appends, self.serializer, keys=keys)
        count = sum(len(part.records) for part in parts)
        results: list[AppendResult] = await self._submit(
            lambda conn: append_parts(conn, parts), count, one_statement=count == 1
        )
        return results

    # -- reading -----------------------------------------------------------------

    async def read_stream(
        self, stream_id: str, *, from_version: int = 1, limit: int | None = None
    ) -> list[RecordedEvent]:
        """Read one stream from `from_version` (see `EventStore.read_stream`)."""
        self._check_open()
        validate_read_stream(stream_id, from_version, limit)
        rows = self._query(
            sql.READ_STREAM, (stream_id, from_version, -1 if limit is None else limit)
        )
        refuse_read(stream_id, rows)
        return await self._decode_rows(rows)

    async def _scan(
        self, after: int, limit: int, names: frozenset[str] | None
    ) -> tuple[list[RecordedEvent], int]:
        """Return up to `limit` matching events after `after`, and the position read up to."""
        if names is None:
            rows = self._query(sql.READ_ALL, (after, limit))
            return await self._decode_rows(rows), rows[-1][0] if rows else after
        type_list = encode_json(sorted(names))
        reader = self._reader
        try:
            # One read transaction: the head and the rows come from one snapshot,
            # so advancing to the head cannot skip an event that commits between.
            reader.execute("BEGIN")
            try:
                head = reader.execute(sql.HEAD_POSITION).fetchone()[0]
                rows = reader.execute(sql.READ_ALL_OF_TYPES, (after, type_list, limit)).fetchall()
            finally:
                reader.execute("COMMIT")
        except sqlite3.Error as exc:
            raise translate(exc, self.path) from exc
        reached = rows[-1][0] if len(rows) == limit else max(head, after)
        return await self._decode_rows(rows), reached

    async def _count(self, after: int, names: frozenset[str] | None) -> int:
        if names is None:
            return int(self._query(sql.COUNT_AFTER, (after,))[0][0])
        type_list = encode_json(sorted(names))
        return int(self._query(sql.COUNT_AFTER_OF_TYPES, (after, type_list))[0][0])

    async def _read(self, job: Callable[[sqlite3.Connection], T]) -> T:
        """Run `job` on the read connection (parked events, timers)."""
        self._check_open()
        try:
            return job(self._reader)
        except sqlite3.Error as exc:
            raise translate(exc, self.path) from exc

    def _query(self, statement: str, parameters: tuple[object, ...]) -> list[Any]:
        try:
            return self._reader.execute(statement, parameters).fetchall()
        except sqlite3.Error as exc:
            raise translate(exc, self.path) from exc

    async def _decode_rows(self, rows: list[Any]) -> list[RecordedEvent]:
        keys = await self._keys_to_open(row[7] for row in rows)
        return decode_rows(
            self.serializer, rows, event_id=uuid_from_bytes, timestamp=datetime.fromisoformat,
            keys=keys,
        )  # fmt: skip

    # -- projections (forwarded to the ProjectionSide) ----------------------------

    async def load_checkpoint(self, name: str) -> int:
        """Return the checkpoint of projection `name` (0 if it has none)."""
        self._check_open()
        return self._projections.load_checkpoint(name)

    async def commit_projection(
        self,
        name: str,
        *,
        expected: int,
        position: int,
        work: Callable[[sqlite3.Connection], None],
    ) -> None:
        """Run `work` on the connection and move checkpoint `name`, in one transaction.

        The checkpoint moves from `expected` to `position` only if it is still
        at `expected` (another projector may have moved it); `work` writes the
        projection's read-model rows, in this database, on the connection it
        is given. If `work` raises, nothing of it is kept.

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

    async def rebuild_projection(
        self,
        projection: Projection[sqlite3.Connection],
        *,
        batch_size: int,
        progress: Callable[[int, int], None] | None,
    ) -> int:
        """Build `projection` afresh in a side file, then swap its tables in, in one transaction.

        Readers of the live tables see the old read model until the swap
        commits, then the new one, never a half-built one. Returns the
        position the new read model is built up to (its new checkpoint).

        Raises:
            StoreError: The projection does not list its `tables`.
            ProjectionError: A handler failed; the live read model is untouched.
        """
        self._check_open()
        return await self._projections.rebuild_projection(
            projection, batch_size=batch_size, progress=progress
        )

    async def load_skips(self, name: str) -> list[SkippedEvent]:
        """Return the events skipped in projection `name`, oldest first."""
        self._check_open()
        return self._projections.load_skips(name)

    async def head_position(self) -> int:
        """Return the position of the last committed event (0 when empty)."""
        self._check_open()
        return int(self._query(sql.HEAD_POSITION, ())[0][0])

    # -- idempotency records -----------------------------------------------------

    @traced_append("sqlite")
    async def append_with_record(
        self, appends: Sequence[StreamAppend], record: IdempotencyRecord
    ) -> list[AppendResult]:
        """Append events and keep an idempotency record in one transaction.

        See `IdempotencyStore`. Expired records are purged now and then.
        """
        keys = await self._keys_to_many(appends)
        parts = await prepare_appends_off_loop(
            appends, self.serializer, allow_empty=True, keys=keys
        )
        row = (
            record.key,
            record.fingerprint,
            record.result,
            utc_text(record.created_at),
            None if record.expires_at is None else utc_text(record.expires_at),
        )

        def work(conn: sqlite3.Connection) -> list[AppendResult]:
            existing = record_of(conn.execute(sql.LOAD_RECORD, (record.key,)).fetchone())
            if existing is not None and not existing.expired(record.created_at):
                raise IdempotencyKeyTakenError(existing)
            results = append_parts(conn, parts) if parts else []
            conn.execute(sql.SAVE_RECORD, row)
            self._records_written += 1
            if self._records_written % _PURGE_EVERY == 0:
                conn.execute(sql.PURGE_RECORDS, (row[3],))
            return results

        events = sum(len(part.records) for part in parts)
        return await self._submit(work, events, one_statement=False)

    async def load_record(self, key: str) -> IdempotencyRecord | None:
        """Return the idempotency record of `key`, or None (see `IdempotencyStore`)."""
        self._check_open()
        rows = self._query(sql.LOAD_RECORD, (key,))
        return record_of(rows[0]) if rows else None

    # -- snapshots ---------------------------------------------------------------

    async def _save_snapshot(self, snapshot: Snapshot) -> None:
        """Keep `snapshot` unless one of a later version is stored (see `SnapshotStore`)."""
        row = (
            snapshot.stream_id,
            snapshot.aggregate_type,
            snapshot.version,
            snapshot.schema_version,
            snapshot.state,
            datetime.now(UTC).isoformat(),
        )
        await self._submit(lambda conn: conn.execute(sql.SAVE_SNAPSHOT, row), 0, one_statement=True)

    async def _load_snapshot(self, stream_id: str) -> Snapshot | None:
        """Return the latest snapshot of `stream_id`, or None (see `SnapshotStore`)."""
        self._check_open()
        rows = self._query(sql.LOAD_SNAPSHOT, (stream_id,))
        if not rows:
            return None
        stream, aggregate_type, version, schema_version, state = rows[0]
        return Snapshot(stream, aggregate_type, version, schema_version, state)

    # -- helpers -----------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            msg = f"the SQLiteEventStore {self.path!r} is closed"
            raise StoreClosedError(msg)
