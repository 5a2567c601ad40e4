"""SQLiteEventStore: the durable, embedded default store (stdlib `sqlite3` only).

One file holds events, snapshots, projection checkpoints and idempotency
records, in WAL mode. Global positions are rowids: SQLite has one writer at a
time, so position order is commit order and a reader that checkpoints the last
position it saw never misses an event.

Writes go through one writer task per store. Appends that arrive while a
commit is in flight are committed together (group commit), each undoable on
its own (a savepoint where it writes more than one statement), so every
caller gets its own result or its own error, and one caller's failure never
rolls back another's events. With `synchronous="FULL"` the commit, which
waits for the disk, runs in a worker thread, so the event loop is never
blocked by a disk sync. At `"NORMAL"` (or in memory) a commit does not wait
for the disk, and an append made while no other write is queued runs at once.

Durability (`synchronous`):

- `"FULL"` (the default): an append returns only after its events are synced
  to disk. They survive a process kill, an OS crash and a power loss.
- `"NORMAL"`: the WAL is synced only at checkpoints. Acknowledged events
  survive a process kill; an OS crash or power loss may lose the most recent
  commits (never corrupt the file, never half a batch).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeAlias, TypeVar
from uuid import UUID, uuid4

import attrs

from fabula import _sqlite_schema as sql
from fabula._events import DomainEvent
from fabula._idempotency import IdempotencyRecord
from fabula._plumbing import StoreBase, Wakeup, check_appends
from fabula._projections import Projection, SkippedEvent
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
    CheckpointError,
    ConcurrencyError,
    DuplicateEventIdError,
    FabulaError,
    IdempotencyKeyTakenError,
    ProjectionError,
    SchemaVersionError,
    SerializationError,
    StoreClosedError,
    StoreError,
    StoreUnavailableError,
)

__all__ = ["SQLiteEventStore", "Synchronous"]

Synchronous: TypeAlias = Literal["FULL", "NORMAL"]
"""The durability level of an `SQLiteEventStore` (see the module documentation)."""

T = TypeVar("T")
_Encoded: TypeAlias = tuple[str, tuple[DomainEvent, ...], Expected, tuple[SerializedEvent, ...]]

_Undo: TypeAlias = Literal["savepoint", "statement", "transaction"]

_MEMORY = ":memory:"
_CHECKPOINT_EVERY = 5000
_PURGE_EVERY = 500


class _DuplicateIdsError(Exception):
    """An insert hit the event-id unique index; explained after the savepoint rolls back."""

    def __init__(self, stream_id: str, records: tuple[SerializedEvent, ...]) -> None:
        self.stream_id = stream_id
        self.records = records


@attrs.define
class _Job:
    work: Callable[[sqlite3.Connection], Any]
    future: asyncio.Future[Any]
    events: int
    # A job that writes at most one statement, after any check that can fail,
    # needs no savepoint in a group: SQLite undoes a failed statement itself.
    one_statement: bool


def _connect(target: str) -> sqlite3.Connection:
    try:
        return sqlite3.connect(target, isolation_level=None, check_same_thread=False, timeout=0)
    except sqlite3.Error as exc:
        raise StoreUnavailableError(f"cannot open SQLite database {target!r}: {exc}") from exc


class SQLiteEventStore(StoreBase):
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
    ) -> None:
        if synchronous not in ("FULL", "NORMAL"):
            msg = f"synchronous must be 'FULL' or 'NORMAL', not {synchronous!r}"
            raise ValueError(msg)
        self.serializer = EventSerializer() if serializer is None else serializer
        self.path = str(path)
        self.synchronous: Synchronous = synchronous
        self._busy_timeout = busy_timeout
        self._poll_interval: float | None = poll_interval
        self._in_memory = self.path == _MEMORY
        self._commit_inline = self._in_memory or synchronous == "NORMAL"
        self._queue: list[_Job] = []
        self._queue_ready: asyncio.Event | None = None
        self._writer_task: asyncio.Task[None] | None = None
        self._wakeup = Wakeup()
        self._closed = False
        self._closing: asyncio.Future[None] | None = None
        # One thread commits (waits for the disk) at synchronous=FULL.
        self._committer: ThreadPoolExecutor | None = None
        self._since_checkpoint = 0
        self._records_written = 0
        self._checkpointing: asyncio.Task[None] | None = None
        self._writer = _connect(self.path)
        try:
            self._configure_writer()
            self._create_schema()
            self._reader = self._writer if self._in_memory else _connect(self.path)
            self._reader.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        except BaseException:
            self._writer.close()
            raise

    def __repr__(self) -> str:
        return f"<SQLiteEventStore {self.path!r} synchronous={self.synchronous}>"

    # -- opening -----------------------------------------------------------------

    def _configure_writer(self) -> None:
        try:
            if not self._in_memory:
                self._writer.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
                mode = self._writer.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if mode != "wal":
                    msg = f"cannot switch {self.path!r} to WAL mode (it is in {mode!r} mode)"
                    raise StoreUnavailableError(msg)
            self._writer.execute(f"PRAGMA synchronous = {self.synchronous}")
            # Checkpoints run in a worker thread (see _maybe_checkpoint), never
            # inside a commit on the event loop.
            self._writer.execute("PRAGMA wal_autocheckpoint = 0")
        except sqlite3.Error as exc:
            raise _translate(exc, self.path) from exc

    def _create_schema(self) -> None:
        conn = self._writer
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS fabula_meta "
                    "(key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID"
                )
                row = conn.execute(
                    "SELECT value FROM fabula_meta WHERE key = 'schema_version'"
                ).fetchone()
                found = _schema_version(row, self.path)
                if found > sql.SCHEMA_VERSION:
                    raise SchemaVersionError(self.path, found, sql.SCHEMA_VERSION)  # noqa: TRY301
                if found < sql.SCHEMA_VERSION:
                    if found == 0:
                        for statement in sql.CREATE_SCHEMA:
                            conn.execute(statement)
                    for version in range(max(found, 1), sql.SCHEMA_VERSION):
                        for statement in sql.MIGRATIONS[version]:
                            conn.execute(statement)
                    conn.execute(
                        "INSERT OR REPLACE INTO fabula_meta VALUES ('schema_version', ?)",
                        (str(sql.SCHEMA_VERSION),),
                    )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            # From now on the writer never sleeps in SQLite's busy handler: it
            # retries without blocking the event loop (see _begin).
            conn.execute("PRAGMA busy_timeout = 0")
        except sqlite3.Error as exc:
            raise _translate(exc, self.path) from exc

    # -- closing -----------------------------------------------------------------

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
        if self._queue_ready is not None:
            self._queue_ready.set()
        if self._writer_task is not None:
            with contextlib.suppress(Exception):
                await self._writer_task
        if self._checkpointing is not None:
            with contextlib.suppress(Exception):
                await self._checkpointing
        self._wakeup.notify()
        if self._reader is not self._writer:
            self._reader.close()
        # Closing the last connection checkpoints the WAL: a disk sync.
        await asyncio.to_thread(self._writer.close)
        if self._committer is not None:
            self._committer.shutdown(wait=True)

    # -- appending ---------------------------------------------------------------

    async def append(
        self, stream_id: str, events: Sequence[DomainEvent], *, expected_version: Expected
    ) -> AppendResult:
        """Append events to one stream atomically (see `EventStore.append`)."""
        batch = validate_append(stream_id, events, expected_version)
        checked = [(stream_id, batch, expected_version, self._encode(batch))]
        results: list[AppendResult] = await self._submit(
            lambda conn: self._append_rows(conn, checked),
            len(batch),
            one_statement=len(batch) == 1,
        )
        return results[0]

    async def append_many(self, appends: Sequence[StreamAppend]) -> list[AppendResult]:
        """Append to several streams atomically (see `EventStore.append_many`)."""
        checked = [(*part, self._encode(part[1])) for part in check_appends(appends)]
        count = sum(len(c[1]) for c in checked)
        results: list[AppendResult] = await self._submit(
            lambda conn: self._append_rows(conn, checked), count, one_statement=count == 1
        )
        return results

    def _encode(self, batch: tuple[DomainEvent, ...]) -> tuple[SerializedEvent, ...]:
        encode = self.serializer.encode
        return tuple(encode(event) for event in batch)

    def _append_rows(self, conn: sqlite3.Connection, checked: list[_Encoded]) -> list[AppendResult]:
        results = []
        for stream_id, batch, expected, records in checked:
            actual = conn.execute(sql.STREAM_VERSION, (stream_id,)).fetchone()[0] or 0
            try:
                check_concurrency(stream_id, batch, expected, actual)
            except ConcurrencyError:
                replayed = _replayed(conn, stream_id, records, expected)
                if replayed is None:
                    raise
                results.append(replayed)
                continue
            if expected in (ExpectedVersion.ANY, ExpectedVersion.STREAM_EXISTS):
                replayed = _replayed(conn, stream_id, records, expected)
                if replayed is not None:
                    results.append(replayed)
                    continue
            results.append(_insert(conn, stream_id, actual, records))
        return results

    # -- the writer --------------------------------------------------------------

    async def _submit(
        self, work: Callable[[sqlite3.Connection], T], events: int, *, one_statement: bool
    ) -> T:
        self._check_open()
        if self._commit_inline and not self._queue and not self._writer.in_transaction:
            done, inline_result = self._try_inline(work, events)
            if done:
                return inline_result
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append(_Job(work, future, events, one_statement))
        if self._writer_task is None or self._writer_task.done():
            self._queue_ready = asyncio.Event()
            self._writer_task = loop.create_task(self._write_loop(), name="fabula-sqlite-writer")
        assert self._queue_ready is not None  # noqa: S101 - set together with the task
        self._queue_ready.set()
        result: T = await future
        return result

    def _try_inline(self, work: Callable[[sqlite3.Connection], T], events: int) -> tuple[bool, T]:
        """Run one write right here when nothing is queued and no commit waits for the disk.

        Without a disk sync in the commit (NORMAL, or in memory) the whole
        transaction takes microseconds, so handing it to the writer task
        would only add two trips through the event loop. Returns (False, _)
        when the file is locked by another process: the queued path then
        waits for the lock without blocking the loop.
        """
        conn = self._writer
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            if isinstance(exc, sqlite3.OperationalError) and _is_busy(exc):
                return False, None  # type: ignore[return-value]
            raise _translate(exc, self.path) from exc
        try:
            result = work(conn)
            conn.execute("COMMIT")
        except Exception as exc:
            error = self._undo_job(conn, exc, "transaction")
            if error is exc:
                raise
            raise error from exc
        self._since_checkpoint += events
        self._wakeup.notify()
        self._maybe_checkpoint()
        return True, result

    async def _write_loop(self) -> None:
        ready = self._queue_ready
        assert ready is not None  # noqa: S101 - created before this task
        while True:
            if not self._queue:
                if self._closed:
                    return
                ready.clear()
                await ready.wait()
                continue
            group, self._queue = self._queue, []
            await self._write_group(group)

    async def _write_group(self, group: list[_Job]) -> None:
        """Run a group of jobs in one transaction and settle every job's future.

        Whatever happens (a failed job, a lost transaction, a failed commit,
        cancellation), each future is settled exactly once and the
        connection is left outside any transaction.
        """
        outcomes: list[tuple[_Job, Any, BaseException | None]] = []
        try:
            await self._begin()
            outcomes = self._run_jobs(group)
            await self._commit()
        except BaseException as exc:
            if self._writer.in_transaction:
                _rollback(self._writer)
            failure = exc if isinstance(exc, FabulaError) else _translate_any(exc, self.path)
            own_errors = {id(job): error for job, _, error in outcomes if error is not None}
            for job in group:
                _settle(job.future, error=own_errors.get(id(job), failure))
            if not isinstance(exc, Exception):
                raise
            return
        self._since_checkpoint += sum(job.events for job, _, error in outcomes if error is None)
        self._wakeup.notify()
        for job, result, error in outcomes:
            _settle(job.future, result=result, error=error)
        self._maybe_checkpoint()

    def _run_jobs(self, group: list[_Job]) -> list[tuple[_Job, Any, BaseException | None]]:
        """Run each job, undoing a failed one alone (in a savepoint where it needs one).

        Raises:
            StoreError: A job's failure ended the whole transaction (disk
                full, I/O error): no job of the group can be committed.
        """
        conn = self._writer
        outcomes: list[tuple[_Job, Any, BaseException | None]] = []
        for job in group:
            undo: _Undo = "statement" if job.one_statement else "savepoint"
            try:
                if undo == "savepoint":
                    conn.execute("SAVEPOINT fabula_job")
                result = job.work(conn)
                if undo == "savepoint":
                    conn.execute("RELEASE fabula_job")
            except Exception as exc:
                if not conn.in_transaction:
                    lost = exc if isinstance(exc, FabulaError) else _translate_any(exc, self.path)
                    raise lost from exc
                outcomes.append((job, None, self._undo_job(conn, exc, undo)))
            else:
                outcomes.append((job, result, None))
        return outcomes

    def _undo_job(self, conn: sqlite3.Connection, exc: Exception, undo: _Undo) -> BaseException:
        """Undo a failed job's writes and return the error its caller should see.

        `undo` says what holds the job's writes: its own savepoint, nothing
        (a one-statement job: SQLite undid the failed statement), or the
        whole transaction (an inline write).
        """
        try:
            if conn.in_transaction and undo == "savepoint":
                conn.execute("ROLLBACK TO fabula_job")
                conn.execute("RELEASE fabula_job")
            elif conn.in_transaction and undo == "transaction":
                conn.execute("ROLLBACK")
            if isinstance(exc, _DuplicateIdsError):
                return _duplicate_error(conn, exc.stream_id, exc.records)
        except sqlite3.Error as undo_error:
            return _translate(undo_error, self.path)
        if isinstance(exc, sqlite3.Error):
            return _translate(exc, self.path)
        return exc

    async def _begin(self) -> None:
        deadline = time.monotonic() + self._busy_timeout
        delay = 0.001
        while True:
            try:
                self._writer.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                if not (isinstance(exc, sqlite3.OperationalError) and _is_busy(exc)):
                    raise _translate(exc, self.path) from exc
                if time.monotonic() >= deadline:
                    msg = (
                        f"{self.path!r} stayed locked by another writer for "
                        f"{self._busy_timeout}s; nothing was written"
                    )
                    raise StoreUnavailableError(msg) from exc
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.05)
            else:
                return

    async def _commit(self) -> None:
        try:
            if self._commit_inline:
                self._writer.execute("COMMIT")
                return
            if self._committer is None:
                self._committer = ThreadPoolExecutor(1, thread_name_prefix="fabula-sqlite-commit")
            done = self._committer.submit(self._writer.execute, "COMMIT")
            try:
                await asyncio.wrap_future(done)
            except asyncio.CancelledError:
                # The commit is running on our connection: let it finish, report
                # its outcome, and deliver the cancellation at the next await.
                done.result()
                task = asyncio.current_task()
                if task is not None:
                    task.cancel()
        except sqlite3.Error as exc:
            raise _translate(exc, self.path) from exc

    def _maybe_checkpoint(self) -> None:
        if self._in_memory or self._since_checkpoint < _CHECKPOINT_EVERY:
            return
        if self._checkpointing is not None and not self._checkpointing.done():
            return
        self._since_checkpoint = 0
        self._checkpointing = asyncio.get_running_loop().create_task(
            asyncio.to_thread(self._checkpoint)
        )

    def _checkpoint(self) -> None:
        # A separate connection, so the checkpoint's disk syncs happen beside
        # the writer rather than inside one of its commits.
        conn = sqlite3.connect(self.path, isolation_level=None)
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error:
            pass  # busy readers: the next checkpoint catches up
        finally:
            conn.close()

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
        return self._decode_rows(rows)

    def _scan(
        self, after: int, limit: int, names: frozenset[str] | None
    ) -> tuple[list[RecordedEvent], int]:
        """Return up to `limit` matching events after `after`, and the position read up to."""
        if names is None:
            rows = self._query(sql.READ_ALL, (after, limit))
            return self._decode_rows(rows), rows[-1][0] if rows else after
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
            raise _translate(exc, self.path) from exc
        reached = rows[-1][0] if len(rows) == limit else max(head, after)
        return self._decode_rows(rows), reached

    def _query(self, statement: str, parameters: tuple[object, ...]) -> list[Any]:
        try:
            return self._reader.execute(statement, parameters).fetchall()
        except sqlite3.Error as exc:
            raise _translate(exc, self.path) from exc

    def _decode_rows(self, rows: list[Any]) -> list[RecordedEvent]:
        decode = self.serializer.decode_fields
        parse_time = datetime.fromisoformat
        out = []
        for position, stream_id, version, event_id, kind, schema, stamp, data, meta in rows:
            try:
                uuid, moment = UUID(bytes=event_id), parse_time(stamp)
            except (TypeError, ValueError) as exc:
                msg = f"the stored event id or timestamp is corrupt: {exc}"
                raise SerializationError(
                    msg, type_name=kind, stream_id=stream_id, position=position
                ) from exc
            event = decode(
                type_name=kind,
                schema_version=schema,
                event_id=uuid,
                timestamp=moment,
                data=data,
                metadata=meta,
                stream_id=stream_id,
                version=version,
                position=position,
            )
            out.append(RecordedEvent(event=event, position=position, stream_id=stream_id))
        return out

    # -- projection checkpoints ---------------------------------------------------

    async def load_checkpoint(self, name: str) -> int:
        """Return the checkpoint of projection `name` (0 if it has none)."""
        self._check_open()
        rows = self._query(sql.LOAD_CHECKPOINT, (name,))
        return int(rows[0][0]) if rows else 0

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
        now = datetime.now(UTC).isoformat()

        def job(conn: sqlite3.Connection) -> None:
            row = conn.execute(sql.LOAD_CHECKPOINT, (name,)).fetchone()
            stored = 0 if row is None else int(row[0])
            if stored != expected:
                raise CheckpointError(name, stored, position)
            work(conn)
            conn.execute(sql.SAVE_CHECKPOINT, (name, position, now))

        await self._submit(job, 0, one_statement=False)

    async def skip_event(self, name: str, *, position: int, event_type: str, reason: str) -> None:
        """Move checkpoint `name` from `position - 1` past `position`, recording the skip.

        Raises:
            CheckpointError: The checkpoint is not at `position - 1`.
        """
        now = datetime.now(UTC).isoformat()

        def job(conn: sqlite3.Connection) -> None:
            row = conn.execute(sql.LOAD_CHECKPOINT, (name,)).fetchone()
            stored = 0 if row is None else int(row[0])
            if stored != position - 1:
                raise CheckpointError(name, stored, position)
            conn.execute(sql.RECORD_SKIP, (name, position, event_type, reason, now))
            conn.execute(sql.SAVE_CHECKPOINT, (name, position, now))

        await self._submit(job, 0, one_statement=False)

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
        """
        self._check_open()
        name = projection.name
        if not projection.tables:
            msg = f"projection {name!r} must list its read-model tables in `tables` to be rebuilt"
            raise StoreError(msg)
        # A side file of its own: two rebuilds of one projection never share one.
        side_path = "" if self._in_memory else f"{self.path}.rebuild-{name}-{uuid4().hex}"
        side = sqlite3.connect(side_path, isolation_level=None, check_same_thread=False)
        try:
            side.execute("PRAGMA synchronous = OFF")  # a crash just means: rebuild again
            side.execute("BEGIN")
            for table in projection.tables:
                side.execute(f"DROP TABLE IF EXISTS {_quote(table)}")
            projection.setup(side)
            side.execute("COMMIT")
            position = await self._build_side(projection, side, batch_size, progress)
            await self._submit(
                lambda conn: self._swap_in(conn, projection, side, position), 0, one_statement=False
            )
        finally:
            side.close()
            if side_path:
                await asyncio.to_thread(Path(side_path).unlink, missing_ok=True)
        return position

    async def _build_side(
        self,
        projection: Projection[sqlite3.Connection],
        side: sqlite3.Connection,
        batch_size: int,
        progress: Callable[[int, int], None] | None,
    ) -> int:
        types = tuple(projection.handlers())
        position = 0
        while True:
            head = await self.head_position()
            page = await self.read_log(after=position, limit=batch_size, event_types=types)
            if page.position <= position:
                return position
            side.execute("BEGIN")
            for recorded in page.events:
                try:
                    projection.handle(recorded, side)
                except Exception as exc:
                    kind = type(recorded.event).__qualname__
                    raise ProjectionError(projection.name, recorded.position, kind, exc) from exc
            side.execute("COMMIT")
            position = page.position
            if progress is not None:
                progress(position, max(head, position))
            await asyncio.sleep(0)  # let the live side of the application run

    def _swap_in(
        self,
        conn: sqlite3.Connection,
        projection: Projection[sqlite3.Connection],
        side: sqlite3.Connection,
        position: int,
    ) -> None:
        for table in projection.tables:
            conn.execute(f"DROP TABLE IF EXISTS {_quote(table)}")
        projection.setup(conn)
        for table in projection.tables:
            rows = side.execute(f"SELECT * FROM {_quote(table)}")  # noqa: S608 - our own names
            marks = ", ".join("?" * len(rows.description))
            insert = f"INSERT INTO {_quote(table)} VALUES ({marks})"  # noqa: S608
            while chunk := rows.fetchmany(1000):
                conn.executemany(insert, chunk)
        now = datetime.now(UTC).isoformat()
        conn.execute(sql.SAVE_CHECKPOINT, (projection.name, position, now))

    async def load_skips(self, name: str) -> list[SkippedEvent]:
        """Return the events skipped in projection `name`, oldest first."""
        self._check_open()
        return [
            SkippedEvent(position, event_type, reason, datetime.fromisoformat(skipped_at))
            for position, event_type, reason, skipped_at in self._query(sql.LOAD_SKIPS, (name,))
        ]

    async def head_position(self) -> int:
        """Return the position of the last committed event (0 when empty)."""
        self._check_open()
        return int(self._query(sql.HEAD_POSITION, ())[0][0])

    # -- idempotency records -----------------------------------------------------

    async def append_with_record(
        self, appends: Sequence[StreamAppend], record: IdempotencyRecord
    ) -> list[AppendResult]:
        """Append events and keep an idempotency record in one transaction.

        See `IdempotencyStore`. Expired records are purged now and then.
        """
        encoded = [(*p, self._encode(p[1])) for p in check_appends(appends)] if appends else []
        row = (
            record.key,
            record.fingerprint,
            record.result,
            _utc_text(record.created_at),
            None if record.expires_at is None else _utc_text(record.expires_at),
        )

        def work(conn: sqlite3.Connection) -> list[AppendResult]:
            existing = _record(conn.execute(sql.LOAD_RECORD, (record.key,)).fetchone())
            if existing is not None and not existing.expired(record.created_at):
                raise IdempotencyKeyTakenError(existing)
            results = self._append_rows(conn, encoded) if encoded else []
            conn.execute(sql.SAVE_RECORD, row)
            self._records_written += 1
            if self._records_written % _PURGE_EVERY == 0:
                conn.execute(sql.PURGE_RECORDS, (row[3],))
            return results

        events = sum(len(e[1]) for e in encoded)
        return await self._submit(work, events, one_statement=False)

    async def load_record(self, key: str) -> IdempotencyRecord | None:
        """Return the idempotency record of `key`, or None (see `IdempotencyStore`)."""
        self._check_open()
        rows = self._query(sql.LOAD_RECORD, (key,))
        return _record(rows[0]) if rows else None

    # -- snapshots ---------------------------------------------------------------

    async def save_snapshot(self, snapshot: Snapshot) -> None:
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

    async def load_snapshot(self, stream_id: str) -> Snapshot | None:
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


def _insert(
    conn: sqlite3.Connection, stream_id: str, actual: int, records: tuple[SerializedEvent, ...]
) -> AppendResult:
    rows = [
        (
            stream_id,
            actual + offset,
            record.event_id.bytes,
            record.type,
            record.schema_version,
            record.timestamp.isoformat(),
            record.data,
            record.metadata,
        )
        for offset, record in enumerate(records, start=1)
    ]
    try:
        if len(rows) == 1:
            position = conn.execute(sql.INSERT_EVENT, rows[0]).lastrowid
        else:
            conn.executemany(sql.INSERT_EVENT, rows)
            position = conn.execute(sql.LAST_POSITION).fetchone()[0]
    except sqlite3.IntegrityError as exc:
        raise _DuplicateIdsError(stream_id, records) from exc
    assert position is not None  # noqa: S101 - an INSERT always sets it
    return AppendResult(stream_id=stream_id, version=actual + len(rows), position=position)


def _find(conn: sqlite3.Connection, record: SerializedEvent) -> tuple[Any, ...] | None:
    row: tuple[Any, ...] | None = conn.execute(sql.FIND_EVENT, (record.event_id.bytes,)).fetchone()
    return row


def _replayed(
    conn: sqlite3.Connection,
    stream_id: str,
    records: tuple[SerializedEvent, ...],
    expected: Expected,
) -> AppendResult | None:
    """Return the original result if `records` were appended before, else None."""
    first = _find(conn, records[0])
    if first is None:
        return None
    check_retry(stream_id, expected, first[2])
    found = [first, *(_find(conn, record) for record in records[1:])]
    last = first
    for offset, (row, record) in enumerate(zip(found, records, strict=True)):
        if row is None:
            raise DuplicateEventIdError(
                stream_id,
                records[0].event_id,
                "but other events of this batch are new; a retry must repeat the whole append",
            )
        _, stored_stream, version, kind, schema, stamp, data, meta = row
        if stored_stream != stream_id:
            raise DuplicateEventIdError(stream_id, record.event_id, f"in stream {stored_stream!r}")
        same = (kind, schema, stamp, data, meta) == (
            record.type,
            record.schema_version,
            record.timestamp.isoformat(),
            record.data,
            record.metadata,
        )
        if version != first[2] + offset or not same:
            raise DuplicateEventIdError(
                stream_id,
                record.event_id,
                "with other content or in another order; a retry must repeat the append",
            )
        last = row
    return AppendResult(stream_id=stream_id, version=last[2], position=last[0])


def _duplicate_error(
    conn: sqlite3.Connection, stream_id: str, records: tuple[SerializedEvent, ...]
) -> DuplicateEventIdError:
    for record in records:
        row = _find(conn, record)
        if row is not None:
            where = f"in stream {row[1]!r}" if row[1] != stream_id else "in this stream"
            detail = f"{where}, and this batch is not a retry of the append that stored it"
            return DuplicateEventIdError(stream_id, record.event_id, detail)
    return DuplicateEventIdError(stream_id, records[0].event_id, "earlier in the same append_many")


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _schema_version(row: tuple[Any, ...] | None, path: str) -> int:
    if row is None:
        return 0
    try:
        return int(row[0])
    except (TypeError, ValueError):
        msg = f"{path!r} has an unreadable fabula schema version {row[0]!r}"
        raise StoreError(msg) from None


def _utc_text(moment: datetime) -> str:
    # One offset for every stored time, so the purge can compare them as text.
    return moment.astimezone(UTC).isoformat()


def _record(row: tuple[Any, ...] | None) -> IdempotencyRecord | None:
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


def _settle(
    future: asyncio.Future[Any], *, result: object = None, error: BaseException | None = None
) -> None:
    if future.done():  # the caller was cancelled; its work may still have committed
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _rollback(conn: sqlite3.Connection) -> None:
    with contextlib.suppress(sqlite3.Error):  # no transaction left to roll back
        conn.execute("ROLLBACK")


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)


def _translate_any(exc: BaseException, path: str) -> FabulaError:
    if isinstance(exc, sqlite3.Error):
        return _translate(exc, path)
    return StoreError(f"the write to {path!r} was abandoned: {exc!r}")


def _translate(exc: sqlite3.Error, path: str) -> FabulaError:
    if isinstance(exc, sqlite3.OperationalError) and _is_busy(exc):
        return StoreUnavailableError(f"{path!r} is locked by another process: {exc}")
    if isinstance(exc, sqlite3.OperationalError) and "unable to open" in str(exc):
        return StoreUnavailableError(f"cannot open SQLite database {path!r}: {exc}")
    if isinstance(exc, sqlite3.DatabaseError) and "not a database" in str(exc):
        return StoreError(f"{path!r} is not an SQLite database: {exc}")
    return StoreError(f"SQLite error on {path!r}: {exc}")
