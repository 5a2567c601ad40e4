"""The SQLite store's I/O for personal data and stream deletion, and `scrub`.

A mixin of `SQLiteEventStore`: the decisions are `fabula._personal_store`'s
and `fabula._deletion`'s; here are the statements, run on the store's
reader or in its writer's transactions.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from fabula._converter import encode_json
from fabula._deletion import TOMBSTONE
from fabula._personal import like_pattern
from fabula._store import AppendResult, RecordedEvent
from fabula._stored import PendingAppend
from fabula.exceptions import StreamNotDeletedError
from fabula.sqlite import _schema as sql
from fabula.sqlite._append import add_keys, append_parts, forget_subject
from fabula.sqlite._checkpoints import truncate

__all__ = ["SQLiteDataSide"]

logger = logging.getLogger("fabula.sqlite")

T = TypeVar("T")

_MEMORY = ":memory:"


class SQLiteDataSide:
    """Subject keys, `forget`, `export`'s scan, stream deletion and `scrub`, on SQLite."""

    path: str
    _busy_timeout: float

    if TYPE_CHECKING:  # the store's own

        def _check_open(self) -> None: ...
        def _query(self, statement: str, parameters: tuple[object, ...]) -> list[Any]: ...
        async def _decode_rows(self, rows: list[Any]) -> list[RecordedEvent]: ...
        async def _transaction(self, work: Callable[[sqlite3.Connection], T]) -> T: ...
        async def _submit(
            self, work: Callable[[sqlite3.Connection], T], events: int, *, one_statement: bool
        ) -> T: ...

    async def _load_keys(self, subjects: Collection[str]) -> dict[str, bytes | None]:
        return dict(self._query(sql.LOAD_KEYS, (encode_json(sorted(subjects)),)))

    async def _add_keys(self, keys: Mapping[str, bytes]) -> dict[str, bytes | None]:
        return await self._transaction(lambda conn: add_keys(conn, keys))

    async def _events_holding(self, text: str) -> list[RecordedEvent]:
        self._check_open()
        return await self._decode_rows(self._query(sql.EVENTS_HOLDING, (like_pattern(text),)))

    async def _forget_subject(self, subject: str, part: PendingAppend) -> bool:
        work = functools.partial(forget_subject, subject=subject, part=part)
        forgotten: bool = await self._submit(work, 1, one_statement=False)
        if forgotten and not await self.scrub():
            logger.warning("a reader kept %r's old key in the log: call scrub() again", subject)
        return forgotten

    async def _delete(self, part: PendingAppend) -> AppendResult:
        results: list[AppendResult] = await self._submit(
            lambda conn: append_parts(conn, [part]), 1, one_statement=True
        )
        return results[0]

    async def _purge(self, stream_id: str) -> int:
        def work(conn: sqlite3.Connection) -> int:
            _, deleted = conn.execute(sql.STREAM_STATE, (stream_id,)).fetchone()
            if not deleted:
                raise StreamNotDeletedError(stream_id)
            conn.execute("DELETE FROM fabula_snapshots WHERE stream_id = ?", (stream_id,))
            removed = conn.execute(sql.PURGE_STREAM, (stream_id, TOMBSTONE)).rowcount
            return int(removed)

        removed = await self._transaction(work)
        if removed and not await self.scrub():
            logger.warning(
                "a reader kept %r's old events in the log: call scrub() again", stream_id
            )
        return removed

    async def scrub(self) -> bool:
        """Copy the write-ahead log into the database file and empty it, now.

        The store deletes with SQLite's `secure_delete` on, so a deleted row
        (a forgotten subject's key, a purged stream's events, a read model's
        purged row) is overwritten in the database file; its older copies in
        the write-ahead log go when the log is copied and cut, which this
        does rather than waiting for the next checkpoint. `forget` and
        `purge_stream` call it; call it again once the projections have
        purged what they derived. Returns False if a transaction or a reader
        kept it from finishing within `busy_timeout`.
        """
        self._check_open()
        if self.path == _MEMORY:
            return True
        return await asyncio.to_thread(truncate, self.path, self._busy_timeout)
