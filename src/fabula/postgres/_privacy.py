"""The PostgreSQL store's I/O for personal data and stream deletion.

A mixin of `PostgresEventStore`: the decisions are `fabula._personal_store`'s
and `fabula._deletion`'s; the statements run through the store's pool and
its `Appender` (which keeps a forget or a deletion in one transaction).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from fabula._deletion import TOMBSTONE
from fabula._personal import like_pattern
from fabula._store import AppendResult, RecordedEvent
from fabula._stored import PendingAppend
from fabula.postgres import _schema as sql
from fabula.postgres._append import Appender
from fabula.postgres._connections import Connections

__all__ = ["PostgresDataSide"]


class PostgresDataSide:
    """Subject keys, `forget`, `export`'s scan and stream deletion, on PostgreSQL."""

    _appender: Appender
    _db: Connections
    _sql: sql.Statements

    if TYPE_CHECKING:  # the store's own

        async def _ready(self) -> None: ...
        async def _decode_rows(self, rows: Sequence[Sequence[Any]]) -> list[RecordedEvent]: ...

    async def _load_keys(self, subjects: Collection[str]) -> dict[str, bytes | None]:
        await self._ready()
        return await self._appender.load_keys(subjects)

    async def _add_keys(self, keys: Mapping[str, bytes]) -> dict[str, bytes | None]:
        return await self._appender.add_keys(keys)

    async def _events_holding(self, text: str) -> list[RecordedEvent]:
        await self._ready()
        rows = await self._db.query(self._sql.events_holding, (like_pattern(text),))
        return await self._decode_rows(rows)

    async def _forget_subject(self, subject: str, part: PendingAppend) -> bool:
        await self._ready()
        return await self._appender.forget(subject, part)

    async def _delete(self, part: PendingAppend) -> AppendResult:
        await self._ready()
        return await self._appender.delete(part)

    async def _purge(self, stream_id: str) -> int:
        await self._ready()
        return await self._appender.purge(stream_id, TOMBSTONE)
