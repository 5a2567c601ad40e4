"""The SQLite store's writer: one connection, one task, group commit, WAL checkpoints.

Appends that arrive while a commit is in flight are committed together
(group commit), each undoable on its own (a savepoint where it writes more
than one statement), so every caller gets its own result or its own error,
and one caller's failure never rolls back another's events. With
`synchronous="FULL"` the commit, which waits for the disk, runs in a worker
thread, so the event loop is never blocked by a disk sync. At `"NORMAL"`
(or in memory) a commit does not wait for the disk, and a write made while
no other is queued runs at once.

Every few hundred commits the writer checkpoints the WAL itself, between
two commits, so that SQLite writes the log from its start again: a commit
that writes over pages the file already has costs the disk sync much less
than one that grows the file (see `Writer._reuse`).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import attrs

from fabula._stored import LARGE_APPEND
from fabula.exceptions import FabulaError, StoreUnavailableError
from fabula.sqlite._errors import is_busy, translate, translate_any

__all__ = ["ExplainedAfterUndoError", "Writer"]

T = TypeVar("T")


class _Undo(enum.Enum):
    """What holds a failed job's writes, and so how to undo them alone."""

    SAVEPOINT = "savepoint"
    """Its own savepoint, in a group."""
    STATEMENT = "statement"
    """Nothing: a one-statement job; SQLite undid the failed statement itself."""
    TRANSACTION = "transaction"
    """The whole transaction: an inline write."""


_CHECKPOINT_EVERY = 5000  # events between two side checkpoints (PASSIVE, beside the writer)
_REUSE_COMMITS = 256  # commits between two of the writer's own checkpoints (see _reuse)
_REUSE_EVENTS = 2048  # or events, whichever comes first
_RESTART_WAIT = 0.1  # seconds a restart waits for readers of older frames to finish


class ExplainedAfterUndoError(Exception):
    """A job's failure whose explanation needs the database as it is once the job is undone."""

    def explain(self, conn: sqlite3.Connection) -> BaseException:
        """Return the error the job's caller should see (the writer's transaction is open)."""
        raise NotImplementedError


@attrs.define
class _Job:
    work: Callable[[sqlite3.Connection], Any]
    future: asyncio.Future[Any]
    events: int
    # A job that writes at most one statement, after any check that can fail,
    # needs no savepoint in a group: SQLite undoes a failed statement itself.
    one_statement: bool


class Writer:
    """Runs a store's writes on its one writer connection.

    Args:
        conn: The writer connection (configured, its schema created).
        path: The database (for messages and checkpoint connections).
        busy_timeout: Seconds to wait for another process's write lock.
        commit_inline: Commits do not wait for the disk (NORMAL, or in memory).
        committed: Called after each commit that stored something.
        wal_limit: The size in bytes past which the WAL is restarted (see `_restart`).
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        *,
        path: str,
        busy_timeout: float,
        commit_inline: bool,
        committed: Callable[[], None],
        wal_limit: int,
    ) -> None:
        self._writer = conn
        self.path = path
        self._busy_timeout = busy_timeout
        self._commit_inline = commit_inline
        self._in_memory = path == ":memory:"
        self._committed = committed
        self._queue: list[_Job] = []
        self._queue_ready: asyncio.Event | None = None
        self._writer_task: asyncio.Task[None] | None = None
        self._finishing = False
        # One thread commits (waits for the disk) at synchronous=FULL.
        self._committer: ThreadPoolExecutor | None = None
        self._since_checkpoint = 0
        self._checkpointing: asyncio.Task[None] | None = None
        self._wal = f"{path}-wal"
        self._wal_limit = wal_limit
        self._restart_at = wal_limit  # the WAL size that makes the next restart due
        self._restart_due = False  # the WAL passed its limit: restart it before the next write
        self._restarting = False
        self._since_reuse = (0, 0)  # commits and events since the writer last checkpointed
        self._reuse_due = False

    @property
    def connection(self) -> sqlite3.Connection:
        """The writer connection (the reader too, for an in-memory database)."""
        return self._writer

    async def finish(self) -> None:
        """Commit what is queued and wait for a running WAL checkpoint; accept no more."""
        self._finishing = True
        if self._queue_ready is not None:
            self._queue_ready.set()
        if self._writer_task is not None:
            with contextlib.suppress(Exception):
                await self._writer_task
        if self._checkpointing is not None:
            with contextlib.suppress(Exception):
                await self._checkpointing

    async def close(self) -> None:
        """Close the connection (after `finish`)."""
        # Closing the last connection checkpoints the WAL: a disk sync.
        await asyncio.to_thread(self._writer.close)
        if self._committer is not None:
            self._committer.shutdown(wait=True)

    async def submit(
        self, work: Callable[[sqlite3.Connection], T], events: int, *, one_statement: bool
    ) -> T:
        """Run `work` in a write transaction (alone, or grouped with others) and return its result.

        Args:
            work: Writes on the connection it is given; raising undoes its writes only.
            events: How many events it appends (for WAL checkpoints).
            one_statement: It writes at most one statement, after any check
                that can fail: it needs no savepoint in a group.
        """
        if (
            self._commit_inline
            and events <= LARGE_APPEND
            and not self._queue
            and not self._writer.in_transaction
            and not (self._restart_due or self._restarting or self._reuse_due)
        ):
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
            if isinstance(exc, sqlite3.OperationalError) and is_busy(exc):
                return False, None  # type: ignore[return-value]
            raise translate(exc, self.path) from exc
        try:
            result = work(conn)
            conn.execute("COMMIT")
        except Exception as exc:
            error = self._undo_job(conn, exc, _Undo.TRANSACTION)
            if error is exc:
                raise
            raise error from exc
        self._committed()
        self._maybe_checkpoint(events)
        return True, result

    async def _write_loop(self) -> None:
        ready = self._queue_ready
        assert ready is not None  # noqa: S101 - created before this task
        while True:
            if not self._queue:
                if self._finishing:
                    return
                ready.clear()
                await ready.wait()
                continue
            if self._restart_due:
                await self._restart()
            elif self._reuse_due:
                await self._reuse()
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
            if sum(job.events for job in group) > LARGE_APPEND:
                # Seconds of inserts: in the writer's thread, while the loop goes on.
                outcomes = await self._in_worker(lambda: self._run_jobs(group))
            else:
                outcomes = self._run_jobs(group)
            await self._commit()
        except BaseException as exc:
            if self._writer.in_transaction:
                _rollback(self._writer)
            failure = exc if isinstance(exc, FabulaError) else translate_any(exc, self.path)
            own_errors = {id(job): error for job, _, error in outcomes if error is not None}
            for job in group:
                _settle(job.future, error=own_errors.get(id(job), failure))
            if not isinstance(exc, Exception):
                raise
            return
        self._committed()
        for job, result, error in outcomes:
            _settle(job.future, result=result, error=error)
        self._maybe_checkpoint(sum(job.events for job, _, error in outcomes if error is None))

    def _run_jobs(self, group: list[_Job]) -> list[tuple[_Job, Any, BaseException | None]]:
        """Run each job, undoing a failed one alone (in a savepoint where it needs one).

        Raises:
            StoreError: A job's failure ended the whole transaction (disk
                full, I/O error): no job of the group can be committed.
        """
        conn = self._writer
        outcomes: list[tuple[_Job, Any, BaseException | None]] = []
        for job in group:
            undo = _Undo.STATEMENT if job.one_statement else _Undo.SAVEPOINT
            try:
                if undo is _Undo.SAVEPOINT:
                    conn.execute("SAVEPOINT fabula_job")
                result = job.work(conn)
                if undo is _Undo.SAVEPOINT:
                    conn.execute("RELEASE fabula_job")
            except Exception as exc:
                if not conn.in_transaction:
                    lost = exc if isinstance(exc, FabulaError) else translate_any(exc, self.path)
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
            if conn.in_transaction and undo is _Undo.SAVEPOINT:
                conn.execute("ROLLBACK TO fabula_job")
                conn.execute("RELEASE fabula_job")
            elif conn.in_transaction and undo is _Undo.TRANSACTION:
                conn.execute("ROLLBACK")
            if isinstance(exc, ExplainedAfterUndoError):
                return exc.explain(conn)
        except sqlite3.Error as undo_error:
            return translate(undo_error, self.path)
        if isinstance(exc, sqlite3.Error):
            return translate(exc, self.path)
        return exc

    def _worker(self) -> ThreadPoolExecutor:
        """The one thread that commits (at FULL) and runs large groups of writes."""
        if self._committer is None:
            self._committer = ThreadPoolExecutor(1, thread_name_prefix="fabula-sqlite-writer")
        return self._committer

    async def _in_worker(self, work: Callable[[], T]) -> T:
        """Run `work` on the writer connection in the worker thread; return its result.

        A cancellation waits for `work` to end (it holds the connection), then
        is raised: the caller undoes the transaction only once it is done.
        """
        done = asyncio.wrap_future(self._worker().submit(work))
        cancelled = False
        while not done.done():
            try:
                await asyncio.shield(done)
            except asyncio.CancelledError:
                cancelled = True
            except Exception:  # noqa: BLE001 - raised by done.result() below
                break
        if cancelled:
            raise asyncio.CancelledError
        return done.result()

    async def _begin(self) -> None:
        deadline = time.monotonic() + self._busy_timeout
        delay = 0.001
        while True:
            try:
                self._writer.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                if not (isinstance(exc, sqlite3.OperationalError) and is_busy(exc)):
                    raise translate(exc, self.path) from exc
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
            done = self._worker().submit(self._writer.execute, "COMMIT")
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
            raise translate(exc, self.path) from exc

    def _maybe_checkpoint(self, events: int) -> None:
        if self._in_memory:
            return
        self._since_checkpoint += events
        commits, since = self._since_reuse
        commits, since = commits + 1, since + events
        self._since_reuse = (commits, since)
        if commits >= _REUSE_COMMITS or since >= _REUSE_EVENTS:
            self._reuse_due = True
        if not self._restart_due and _size(self._wal) > self._restart_at:
            self._restart_due = True  # the next write restarts the WAL first
        if self._since_checkpoint < _CHECKPOINT_EVERY:
            return
        if self._checkpointing is not None and not self._checkpointing.done():
            return
        self._since_checkpoint = 0
        self._checkpointing = asyncio.get_running_loop().create_task(
            asyncio.to_thread(self._checkpoint)
        )

    async def _reuse(self) -> None:
        """Checkpoint the WAL between two commits, so the next commit may write it from its start.

        Writing over the log's first pages again costs the disk sync far
        less than growing the file does (no change of its size to sync);
        SQLite starts the log over at the next commit once a checkpoint has
        copied every frame into the database and no reader holds a frame.
        A PASSIVE checkpoint never waits for readers: if one holds old
        frames, the log goes on growing, and `_restart` bounds it.
        """
        self._reuse_due, self._since_reuse = False, (0, 0)
        if self._checkpointing is not None and not self._checkpointing.done():
            return  # a side checkpoint is copying: try again later
        await asyncio.get_running_loop().run_in_executor(self._worker(), self._passive)

    def _passive(self) -> None:
        with contextlib.suppress(sqlite3.Error):  # an I/O error: a later checkpoint tries again
            self._writer.execute("PRAGMA wal_checkpoint(PASSIVE)")

    async def _restart(self) -> None:
        """Checkpoint the whole WAL between two commits, so that the next commit starts it over.

        Side checkpoints run beside the writer, so under sustained writes
        they never catch up with it, and SQLite writes the WAL from its start
        again only after a checkpoint that left no frame behind: without
        this, the WAL grows for as long as the writes go on. Here the writer
        itself checkpoints, so no frame can arrive meanwhile; it waits up to
        `_RESTART_WAIT` for readers of older frames. The next commit then
        writes the WAL from its start, and cuts the file back to the limit
        (`journal_size_limit`). If readers still hold older frames, it tries
        again once the WAL has grown by another half of the limit.
        """
        self._restart_due, self._restarting = False, True
        try:
            if self._checkpointing is not None and not self._checkpointing.done():
                await asyncio.wait({self._checkpointing})  # one checkpointer at a time
            done = await asyncio.get_running_loop().run_in_executor(
                self._worker(), self._restart_now
            )
        finally:
            self._restarting = False
        self._since_checkpoint = 0
        self._restart_at = self._wal_limit if done else _size(self._wal) + self._wal_limit // 2

    def _restart_now(self) -> bool:
        """Checkpoint everything and wait for readers; return whether the WAL may start over.

        SQLite's own wait (the busy handler) keeps retrying one lock and
        misses a reader that starts its next transaction at once; trying the
        whole checkpoint again sees that reader on the newest snapshot,
        which no longer holds the WAL back.
        """
        conn = self._writer
        deadline = time.monotonic() + _RESTART_WAIT
        while True:
            try:
                busy, _, _ = conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
            except sqlite3.Error:
                return False  # an I/O error: a later checkpoint or restart tries again
            if not busy:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.002)

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


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size  # noqa: PTH116 - one call per commit: no Path object
    except OSError:
        return 0


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
