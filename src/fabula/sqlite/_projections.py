"""The projection side of `SQLiteEventStore`: checkpoints, skips and side-file rebuilds.

Projection handlers get the writer's connection, inside the transaction
that moves the checkpoint, so a read model in the same file is updated
exactly once. Whether a checkpoint may move and how a rebuild reads the
log are decided in `fabula._projection_store`; this module runs the SQL.
"""

from __future__ import annotations

import asyncio
import glob
import os
import re
import sqlite3
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

from fabula._projection import Projection
from fabula._projection_store import (
    LogReader,
    SkippedEvent,
    apply_events,
    build_from_log,
    require_checkpoint,
)
from fabula._store import RecordedEvent
from fabula.exceptions import StoreError
from fabula.sqlite import _schema as sql
from fabula.sqlite._errors import storage_failure

__all__ = ["ProjectionSide", "checkpoint_of", "save_checkpoint"]


class ProjectionSide:
    """Checkpoints, skips and rebuilds in one SQLite file.

    Args:
        path: The database file, or `":memory:"`.
        write: Runs a job in a write transaction (the store's writer).
        query: Runs one read statement and returns its rows.
        log: Where rebuilds read the log.
    """

    def __init__(
        self,
        *,
        path: str,
        write: Callable[[Callable[[sqlite3.Connection], Any]], Awaitable[Any]],
        query: Callable[[str, tuple[object, ...]], list[Any]],
        log: LogReader,
    ) -> None:
        self._path = path
        self._write = write
        self._query = query
        self._log = log

    def load_checkpoint(self, name: str) -> int:
        """Return the checkpoint of projection `name` (0 if it has none)."""
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
        """Run `work` and move checkpoint `name` from `expected` to `position`, in one transaction.

        Raises:
            CheckpointError: The checkpoint is not at `expected`.
            StoreError: The database failed, in `work` too (a full disk met
                by a handler's write is the store's failure, not the handler's).
        """
        now = datetime.now(UTC).isoformat()

        def job(conn: sqlite3.Connection) -> None:
            stored = checkpoint_of(conn, name)
            require_checkpoint(name, stored, expected=expected, moving_to=position)
            try:
                work(conn)
            except Exception as exc:
                failure = storage_failure(exc, self._path)
                if failure is None:
                    raise
                raise failure from exc
            conn.execute(sql.SAVE_CHECKPOINT, (name, position, now))

        await self._write(job)

    async def skip_event(self, name: str, *, position: int, event_class: str, reason: str) -> None:
        """Move checkpoint `name` from `position - 1` past `position`, recording the skip.

        Raises:
            CheckpointError: The checkpoint is not at `position - 1`.
        """
        now = datetime.now(UTC).isoformat()

        def job(conn: sqlite3.Connection) -> None:
            stored = checkpoint_of(conn, name)
            require_checkpoint(name, stored, expected=position - 1, moving_to=position)
            conn.execute(sql.RECORD_SKIP, (name, position, event_class, reason, now))
            conn.execute(sql.SAVE_CHECKPOINT, (name, position, now))

        await self._write(job)

    def load_skips(self, name: str) -> list[SkippedEvent]:
        """Return the events skipped in projection `name`, oldest first."""
        return [
            SkippedEvent(position, event_class, reason, datetime.fromisoformat(skipped_at))
            for position, event_class, reason, skipped_at in self._query(sql.LOAD_SKIPS, (name,))
        ]

    async def rebuild_projection(
        self,
        projection: Projection[sqlite3.Connection],
        *,
        batch_size: int,
        progress: Callable[[int, int], None] | None,
    ) -> int:
        """Build `projection` afresh in a side file, then swap its tables in, in one transaction.

        Raises:
            StoreError: The projection does not list its `tables`.
            ProjectionError: A handler failed; the live read model is untouched.
        """
        name = projection.name
        if not projection.tables:
            msg = f"projection {name!r} must list its read-model tables in `tables` to be rebuilt"
            raise StoreError(msg)
        # A side file of its own: two rebuilds of one projection never share one.
        in_memory = self._path == ":memory:"
        if not in_memory:
            await asyncio.to_thread(remove_stale_side_files, self._path)
        side_path = "" if in_memory else side_file(self._path, name)
        side = sqlite3.connect(side_path, isolation_level=None, check_same_thread=False)
        try:
            side.execute("PRAGMA synchronous = OFF")  # a crash just means: rebuild again
            side.execute("BEGIN")
            for table in projection.tables:
                side.execute(f"DROP TABLE IF EXISTS {_quote(table)}")
            projection.setup(side)
            side.execute("COMMIT")

            async def apply_batch(events: list[RecordedEvent]) -> None:
                side.execute("BEGIN")
                apply_events(projection, events, side)
                side.execute("COMMIT")
                await asyncio.sleep(0)  # let the live side of the application run

            position = await build_from_log(
                self._log, projection, apply_batch, batch_size=batch_size, progress=progress
            )
            await self._write(lambda conn: _swap_in(conn, projection, side, position))
        finally:
            side.close()
            if side_path:
                await asyncio.to_thread(Path(side_path).unlink, missing_ok=True)
        return position


def side_file(path: str, name: str) -> str:
    """A new side file for rebuilding projection `name` of the database at `path`.

    Its name holds this process's id, so a later rebuild can tell the side
    file of a process that was killed from one still in use.
    """
    return f"{path}.rebuild-{name}-{os.getpid()}-{uuid4().hex}"


def remove_stale_side_files(path: str) -> list[Path]:
    """Delete the side files (and their journals) that rebuilds killed mid-way left beside `path`.

    A side file is stale when the process named in it is gone. Returns the
    files removed.
    """
    database = Path(path)
    removed = []
    for candidate in database.parent.glob(f"{glob.escape(database.name)}.rebuild-*"):
        found = _SIDE_FILE.fullmatch(candidate.name[len(database.name) :])
        if found is None or _alive(int(found["pid"])):
            continue
        candidate.unlink(missing_ok=True)
        removed.append(candidate)
    return removed


_SIDE_FILE = re.compile(r"\.rebuild-.+-(?P<pid>[0-9]+)-[0-9a-f]{32}(-journal|-wal|-shm)?")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def checkpoint_of(conn: sqlite3.Connection, name: str) -> int:
    """Read checkpoint `name` inside a write transaction (0 if it has none)."""
    row = conn.execute(sql.LOAD_CHECKPOINT, (name,)).fetchone()
    return 0 if row is None else int(row[0])


def save_checkpoint(conn: sqlite3.Connection, name: str, position: int) -> None:
    """Set checkpoint `name` inside a write transaction."""
    conn.execute(sql.SAVE_CHECKPOINT, (name, position, datetime.now(UTC).isoformat()))


def _swap_in(
    conn: sqlite3.Connection,
    projection: Projection[sqlite3.Connection],
    side: sqlite3.Connection,
    position: int,
) -> None:
    """Replace the live tables with the side file's copies and set the checkpoint."""
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


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'
