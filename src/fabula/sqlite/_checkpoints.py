"""The SQLite writer's WAL checkpoints: which one is due after a commit, and running it.

Three kinds, each for its own reason:

- A side checkpoint every 5,000 events (PASSIVE, on a connection of its own,
  in a thread beside the writer) copies the log into the database while
  appends go on, so that its disk syncs are not inside a commit.
- At synchronous=FULL, the writer's own checkpoint every 256 commits or
  2,048 events (PASSIVE, between two commits: `reuse`) lets SQLite write
  the log from its start again at the next commit. A commit that writes
  over pages the file already has costs the disk sync much less than one
  that grows the file (~180-200 us against ~360 us here; see
  docs/performance.md). At NORMAL a commit does not sync, so there is
  nothing to gain, and the checkpoint would stop the writer meanwhile: one
  caller's commands ran ~15% slower with it (`benchmarks/probes.py reuse`).
- A restart when the log passes `wal_limit` (RESTART, between two commits,
  waiting up to 0.1 s for readers of older frames) bounds the log when
  readers kept the other two from letting SQLite start it over.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

InWorker = Callable[[Callable[[], T]], Awaitable[T]]
"""Runs a function on the writer connection in the writer's thread; a cancellation
waits for it to end before it is raised (`Writer._in_worker`)."""

__all__ = ["Checkpoints", "truncate"]

_CHECKPOINT_EVERY = 5000  # events between two side checkpoints (PASSIVE, beside the writer)
_REUSE_COMMITS = 256  # commits between two of the writer's own checkpoints (see reuse)
_REUSE_EVENTS = 2048  # or events, whichever comes first
_RESTART_WAIT = 0.1  # seconds a restart waits for readers of older frames to finish


class Checkpoints:
    """Decides which checkpoint of a writer's WAL is due, and runs it.

    Args:
        conn: The writer connection (the writer's own checkpoints run on it,
            between two of its transactions, in its worker thread).
        path: The database file.
        wal_limit: The size in bytes past which the WAL is restarted.
        reuse: Checkpoint every few hundred commits so that the WAL is
            written over (at synchronous=FULL).
    """

    def __init__(self, conn: sqlite3.Connection, *, path: str, wal_limit: int, reuse: bool) -> None:
        self._conn = conn
        self._reuse_on = reuse
        self._path = path
        self._wal = f"{path}-wal"
        self._wal_limit = wal_limit
        self._restart_at = wal_limit  # the WAL size that makes the next restart due
        self._restart_due = False  # the WAL passed its limit: restart it before the next write
        self._reuse_due = False
        self._since_side = 0  # events since the last side checkpoint
        self._since_reuse = (0, 0)  # commits and events since the writer last checkpointed
        self._side: asyncio.Task[None] | None = None

    @property
    def due(self) -> bool:
        """Whether the writer must run `run_due` before its next transaction."""
        return self._restart_due or self._reuse_due

    def committed(self, events: int) -> None:
        """Note a commit of `events` events: make checkpoints due, start a side one."""
        commits, since = self._since_reuse
        commits, since = commits + 1, since + events
        self._since_reuse = (commits, since)
        if self._reuse_on and (commits >= _REUSE_COMMITS or since >= _REUSE_EVENTS):
            self._reuse_due = True
        if not self._restart_due and _size(self._wal) > self._restart_at:
            self._restart_due = True  # the next write restarts the WAL first
        self._since_side += events
        if self._since_side < _CHECKPOINT_EVERY or self._side_running():
            return
        self._since_side = 0
        self._side = asyncio.get_running_loop().create_task(asyncio.to_thread(self._checkpoint))

    async def run_due(self, in_worker: InWorker[bool]) -> None:
        """Run the checkpoint that is due on the writer connection, through `in_worker`."""
        if self._restart_due:
            await self._restart(in_worker)
        elif self._reuse_due:
            await self._reuse(in_worker)

    async def finish(self) -> None:
        """Wait for a running side checkpoint."""
        if self._side is not None:
            await asyncio.wait({self._side})
            if not self._side.cancelled():
                self._side.exception()  # retrieved: a failed side checkpoint is not an error

    def _side_running(self) -> bool:
        return self._side is not None and not self._side.done()

    async def _reuse(self, in_worker: InWorker[bool]) -> None:
        """Checkpoint between two commits, so that the next commit may write the WAL from its start.

        SQLite starts the log over at the next commit once a checkpoint has
        copied every frame into the database and no reader holds a frame.
        A PASSIVE checkpoint never waits for readers: if one holds old
        frames, the log goes on growing, and `_restart` bounds it.
        """
        self._reuse_due, self._since_reuse = False, (0, 0)
        if self._side_running():
            return  # a side checkpoint is copying: try again later
        await in_worker(self._passive)

    def _passive(self) -> bool:
        try:
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error:
            return False  # an I/O error: a later checkpoint tries again
        return True

    async def _restart(self, in_worker: InWorker[bool]) -> None:
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
        self._restart_due = False
        self._reuse_due, self._since_reuse = False, (0, 0)  # a restart copies everything
        if self._side is not None and not self._side.done():
            await asyncio.wait({self._side})  # one checkpointer at a time
        done = await in_worker(self._restart_now)
        self._since_side = 0
        self._restart_at = self._wal_limit if done else _size(self._wal) + self._wal_limit // 2

    def _restart_now(self) -> bool:
        """Checkpoint everything and wait for readers; return whether the WAL may start over.

        SQLite's own wait (the busy handler) keeps retrying one lock and
        misses a reader that starts its next transaction at once; trying the
        whole checkpoint again sees that reader on the newest snapshot,
        which no longer holds the WAL back.
        """
        deadline = time.monotonic() + _RESTART_WAIT
        while True:
            try:
                busy, _, _ = self._conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
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
        conn = sqlite3.connect(self._path, isolation_level=None)
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


def truncate(path: str, timeout: float) -> bool:
    """Checkpoint the whole WAL into the database and cut the WAL file to nothing.

    On a connection of its own (run it in a thread), waiting up to `timeout`
    seconds for the writer's transaction and for readers of older frames.
    Returns False if they kept it from finishing.
    """
    conn = sqlite3.connect(path, isolation_level=None, timeout=timeout)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            except sqlite3.OperationalError:
                busy = 1  # another checkpointer at work
            if not busy:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)
    finally:
        conn.close()
