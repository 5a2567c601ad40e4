"""The SQLite store's writer: one connection, one task, group commit, WAL checkpoints.

Appends that arrive while a commit is in flight are committed together
(group commit), each undoable on its own (a savepoint where it writes more
than one statement), so every caller gets its own result or its own error,
and one caller's failure never rolls back another's events. With
`synchronous="FULL"` a group's commit, which waits for the disk, runs in a
worker thread, so the event loop goes on while the appends wait; an append
that is alone after one turn of the loop commits on the loop, where the
sync costs less than waking the thread and then the loop again (unless the
disk is slow: see `Writer._try_inline`). At `"NORMAL"` (or in memory) a
commit does not wait for the disk, and a write made while no other is
queued runs at once.

Between two groups the writer task runs the WAL checkpoints that are due
(`fabula.sqlite._checkpoints`).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import attrs

from fabula._stored import LARGE_APPEND
from fabula.exceptions import FabulaError, StoreUnavailableError
from fabula.sqlite._checkpoints import Checkpoints
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


_SLOW_SYNC = 0.001  # seconds: past this average, FULL commits wait in the writer's thread


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
        self._checkpoints = Checkpoints(
            conn, path=path, wal_limit=wal_limit, reuse=not commit_inline
        )
        self._owned = False  # the writer task holds the connection (a group, a checkpoint)
        self._sync_time = 0.0  # a moving average of a FULL commit's seconds, wherever it ran

    @property
    def connection(self) -> sqlite3.Connection:
        """The writer connection (the reader too, for an in-memory database)."""
        return self._writer

    async def finish(self) -> None:
        """Commit what is queued and wait for a running WAL checkpoint; accept no more."""
        self._finishing = True
        if self._queue and (self._writer_task is None or self._writer_task.done()):
            self._start_task()  # an append was giving the loop its turn (_alone_after_a_turn)
        if self._queue_ready is not None:
            self._queue_ready.set()
        if self._writer_task is not None:
            # Its own end, whatever it was (a cancelled writer ends cancelled):
            # not an error of this caller's.
            await _ended(self._writer_task)
        await self._checkpoints.finish()

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
        if events <= LARGE_APPEND and not self._queue and self._idle():
            if self._commit_inline:
                done, result = self._try_inline(work, events)
                if done:
                    return result
            elif self._sync_time < _SLOW_SYNC:
                job = self._job(work, events, one_statement=one_statement)
                if await self._alone_after_a_turn(job):
                    done, result = self._try_inline(work, events)
                    if done:
                        return result
                    self._queue.append(job)  # another process holds the file: wait in line
                queued: T = await self._queued(job)
                return queued
        job = self._job(work, events, one_statement=one_statement)
        self._queue.append(job)
        grouped: T = await self._queued(job)
        return grouped

    def _idle(self) -> bool:
        """Whether nothing holds the connection and no checkpoint is due before the next write."""
        return not (
            self._owned or self._finishing or self._writer.in_transaction or self._checkpoints.due
        )

    def _job(
        self, work: Callable[[sqlite3.Connection], Any], events: int, *, one_statement: bool
    ) -> _Job:
        return _Job(work, asyncio.get_running_loop().create_future(), events, one_statement)

    async def _queued(self, job: _Job) -> Any:  # noqa: ANN401 - the job's own result
        """Have the writer task run `job` (queued already), in a group, and return its result."""
        if not job.future.done():
            if self._writer_task is None or self._writer_task.done():
                self._start_task()
            assert self._queue_ready is not None  # noqa: S101 - set together with the task
            self._queue_ready.set()
        return await job.future

    def _start_task(self) -> None:
        self._queue_ready = asyncio.Event()
        self._writer_task = asyncio.get_running_loop().create_task(
            self._write_loop(), name="fabula-sqlite-writer"
        )

    async def _alone_after_a_turn(self, job: _Job) -> bool:
        """Queue `job`, let every task that is ready run once, and say whether it is still alone.

        At FULL a commit waits for the disk. Made right here, on the event
        loop, it saves the two thread wake-ups of the writer's commit (about
        190 us here, more than the sync itself), but it shares that sync
        with nobody: so it is made here only if, after one turn of the loop,
        no other append has joined the queue; otherwise the writer task
        commits them all together in its thread. Returns True with `job`
        taken back out of the queue; False with it left for the writer task.
        """
        self._queue.append(job)  # finish() commits it, should the store close meanwhile
        try:
            await asyncio.sleep(0)
        except asyncio.CancelledError:
            # Still queued: never written. (Taken by the writer task meanwhile, it
            # may commit, as for a caller cancelled while awaiting its future.)
            self._queue = [queued for queued in self._queue if queued is not job]
            raise
        if len(self._queue) == 1 and self._queue[0] is job and self._idle():
            self._queue.clear()
            return True
        return False

    def _try_inline(self, work: Callable[[sqlite3.Connection], T], events: int) -> tuple[bool, T]:
        """Run one write right here, on the event loop, when nothing else is queued.

        Without a disk sync in the commit (NORMAL, or in memory) the whole
        transaction takes microseconds, so handing it to the writer task
        would only add two trips through the event loop; at FULL see
        `_alone_after_a_turn`. FULL commits are timed wherever they run:
        while they take more than `_SLOW_SYNC` on average, none is made on
        the loop (a slow disk must not stall every other task).
        Returns (False, _) when the file is locked by another process: the
        queued path then waits for the lock without blocking the loop.
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
            if self._commit_inline:
                conn.execute("COMMIT")
            else:
                self._timed_commit()
        except Exception as exc:
            error = self._undo_job(conn, exc, _Undo.TRANSACTION)
            if error is exc:
                raise
            raise error from exc
        self._committed()
        self._after_commit(events)
        return True, result

    async def _write_loop(self) -> None:
        ready = self._queue_ready
        assert ready is not None  # noqa: S101 - created before this task
        try:
            while True:
                if not self._queue:
                    if self._finishing:
                        return
                    ready.clear()
                    await ready.wait()
                    continue
                self._owned = True
                try:
                    if self._checkpoints.due:
                        await self._checkpoints.run_due(self._in_worker)
                    group, self._queue = self._queue, []
                    await self._write_group(group)
                finally:
                    self._owned = False
        except asyncio.CancelledError:
            # The writer itself was cancelled (the loop is ending, say): what is
            # still queued was never written; its callers must not wait forever.
            queued, self._queue = self._queue, []
            for job in queued:
                job.future.cancel()
            raise

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
        self._after_commit(sum(job.events for job, _, error in outcomes if error is None))

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
            done = self._worker().submit(self._timed_commit)
            try:
                await asyncio.wrap_future(done)
            except asyncio.CancelledError:
                # The commit is running on our connection: let it finish, report
                # its outcome, and deliver the cancellation at the next await
                # (even when the commit failed).
                task = asyncio.current_task()
                try:
                    done.result()
                finally:
                    if task is not None:
                        task.cancel()
        except sqlite3.Error as exc:
            raise translate(exc, self.path) from exc

    def _timed_commit(self) -> None:
        """COMMIT at FULL, timed (see `_try_inline`): on the loop, or in the writer's thread."""
        started = time.monotonic()
        self._writer.execute("COMMIT")
        self._timed(time.monotonic() - started)

    def _timed(self, seconds: float) -> None:
        self._sync_time += (seconds - self._sync_time) / 8

    def _after_commit(self, events: int) -> None:
        if not self._in_memory:
            self._checkpoints.committed(events)


async def _ended(task: asyncio.Task[None]) -> None:
    """Wait for `task` to end, however it ends, and retrieve its error (logged by nobody)."""
    await asyncio.wait({task})
    if not task.cancelled():
        task.exception()


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
