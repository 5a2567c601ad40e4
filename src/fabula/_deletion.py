"""Deleting a stream: a tombstone that ends it, and, once it is ended, removing its events.

`delete_stream` appends `StreamDeleted` as the stream's last event: from then
on appends to it raise `StreamDeletedError`, and so does a read of it that
reaches the tombstone (an aggregate's load always does). The tombstone is in
the global log like any event, so projections and reactions learn of the
deletion and drop what they keep of the stream.

`purge_stream` then removes the stream's other events from the store for good
(and its snapshot), where the application decides the law or the data call for
it. The tombstone stays: the stream stays deleted, and on SQLite the highest
position in the log is never removed, so no position is ever given twice.
Readers that passed the purged positions lose nothing; readers behind them
never see the purged events.

The decisions are here; the stores do the I/O (`_delete`, `_purge`).
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any, Final, Protocol, runtime_checkable

import attrs

from fabula._events import DomainEvent, event
from fabula._serialization import EventSerializer
from fabula._store import AppendResult, Expected, ExpectedVersion, validate_read_stream
from fabula._stored import PendingAppend, prepare_append
from fabula.exceptions import StreamDeletedError

__all__ = [
    "TOMBSTONE",
    "StreamDeleted",
    "StreamDeletion",
    "StreamDeletionStore",
    "refuse_deleted",
    "refuse_read",
]

TOMBSTONE: Final = "fabula.StreamDeleted"
"""The stored name of `StreamDeleted`."""


@event(TOMBSTONE)
@attrs.frozen(kw_only=True)
class StreamDeleted(DomainEvent[str]):
    """A stream was deleted: the stream's last event (its `aggregate_id` is the stream id).

    A projection or reaction that keeps something of the stream drops it
    when it handles this event.
    """


@runtime_checkable
class StreamDeletionStore(Protocol):
    """A store whose streams can be deleted (a tombstone) and then purged."""

    async def delete_stream(
        self, stream_id: str, *, expected_version: Expected = ExpectedVersion.STREAM_EXISTS
    ) -> AppendResult:
        """End `stream_id` with a tombstone (see `StreamDeletion.delete_stream`)."""
        ...

    async def purge_stream(self, stream_id: str) -> int:
        """Remove a deleted stream's events (see `StreamDeletion.purge_stream`)."""
        ...


def refuse_deleted(stream_id: str, last_type: str | None) -> None:
    """Refuse an append to a stream whose last event is its tombstone.

    Raises:
        StreamDeletedError: It is.
    """
    if last_type == TOMBSTONE:
        raise StreamDeletedError(stream_id)


def refuse_read(stream_id: str, rows: Sequence[Sequence[Any]], type_index: int = 4) -> None:
    """Refuse a read of a stream that reached its tombstone (rows in version order).

    Raises:
        StreamDeletedError: The last row read is the tombstone.
    """
    if rows and rows[-1][type_index] == TOMBSTONE:
        raise StreamDeletedError(stream_id)


class StreamDeletion(abc.ABC):
    """The stream-deletion side of a store: `delete_stream` and `purge_stream` over its I/O."""

    serializer: EventSerializer

    @abc.abstractmethod
    async def _delete(self, part: PendingAppend) -> AppendResult:
        """Append the tombstone `part` (and mark the stream deleted, where that is kept apart)."""

    @abc.abstractmethod
    async def _purge(self, stream_id: str) -> int:
        """Remove the events of a deleted stream but its tombstone, and its snapshot.

        Raises:
            StreamNotDeletedError: The stream is not deleted.
        """

    async def delete_stream(
        self, stream_id: str, *, expected_version: Expected = ExpectedVersion.STREAM_EXISTS
    ) -> AppendResult:
        """End `stream_id` with a tombstone: `StreamDeleted`, appended as its last event.

        Afterwards appends to it raise `StreamDeletedError`, and so does a
        read that reaches the tombstone (loading its aggregate). Its events
        stay in the log until `purge_stream`.

        Args:
            stream_id: The stream.
            expected_version: As for `append`: by default the stream must exist.

        Raises:
            StreamDeletedError: It is deleted already.
            ConcurrencyError: It is not at `expected_version` (by default: it does not exist).
        """
        deleted = StreamDeleted(aggregate_id=stream_id)
        (part,) = prepare_append(stream_id, [deleted], expected_version, self.serializer)
        return await self._delete(part)

    async def purge_stream(self, stream_id: str) -> int:
        """Remove a deleted stream's events (and its snapshot) for good; return how many.

        Its tombstone stays, and so do the positions of every other event.
        On SQLite the removed rows are overwritten and the write-ahead log is
        cut (see `SQLiteEventStore.scrub`).

        Raises:
            InvalidReadError: `stream_id` is not a stream id (not text, or empty).
            StreamNotDeletedError: It is not deleted (`delete_stream` first).
        """
        validate_read_stream(stream_id, 1, None)
        return await self._purge(stream_id)
