"""The SQLite store's read model: portable read-model SQL on the store's own file.

Writes run on the store's writer, in its transactions, as projections'
do; reads run on a read-only connection of their own, in a worker thread,
one at a time, each in one snapshot.
"""

from __future__ import annotations

import asyncio
import sqlite3
import urllib.parse
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from fabula._sql import SQLITE, ReadModel, Sql
from fabula.sqlite._errors import translate

__all__ = ["SQLiteReadModel"]

R = TypeVar("R")

_MEMORY = ":memory:"


class SQLiteReadModel(ReadModel):
    """A SQL read model in the SQLite store's file (`SQLiteEventStore.read_model()`).

    Args:
        path: The database file (or `":memory:"`, where reads go through the writer).
        write: Runs a job in a write transaction on the store's writer.
        busy_timeout: Seconds a read waits for a lock.
    """

    dialect = SQLITE

    def __init__(
        self,
        path: str,
        write: Callable[[Callable[[sqlite3.Connection], Any]], Awaitable[Any]],
        busy_timeout: float,
    ) -> None:
        self._path = path
        self._write = write
        self._busy_timeout = busy_timeout
        self._reader: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"<SQLiteReadModel {self._path!r}>"

    async def transaction(self, work: Callable[[Sql], R], *, write: bool = False) -> R:
        """Run `work` in one transaction, off the event loop (see `ReadModel.transaction`)."""
        if write or self._path == _MEMORY:
            result: R = await self._write(lambda conn: work(Sql(conn, SQLITE)))
            return result
        async with self._lock:
            reader = self._open_reader()
            return await asyncio.to_thread(self._read, reader, work)

    def _open_reader(self) -> sqlite3.Connection:
        if self._reader is None:
            target = f"file:{urllib.parse.quote(str(Path(self._path).resolve()))}?mode=ro"
            try:
                reader = sqlite3.connect(
                    target, uri=True, isolation_level=None, check_same_thread=False
                )
                reader.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
            except sqlite3.Error as exc:
                raise translate(exc, self._path) from exc
            self._reader = reader
        return self._reader

    def _read(self, reader: sqlite3.Connection, work: Callable[[Sql], R]) -> R:
        try:
            reader.execute("BEGIN")  # one snapshot for every statement of `work`
            try:
                return work(Sql(reader, SQLITE))
            finally:
                reader.execute("COMMIT")
        except sqlite3.Error as exc:
            raise translate(exc, self._path) from exc

    def close(self) -> None:
        """Close the read connection, if one was opened."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None
