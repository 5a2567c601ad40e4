"""Read-only views of a store's tables, for the `fabula` command.

An inspector reads the rows as they are stored, payloads as JSON text, so
it needs none of the application's event classes. It opens SQLite files
read-only, and reads PostgreSQL's global log below the same horizon as
the store's readers, so `log` and `tail` never skip an event that
commits late.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Any
from uuid import UUID

import attrs

from fabula._stored import StoredEvent

__all__ = [
    "Checkpoint",
    "Inspector",
    "LeaseHolder",
    "StoreInfo",
    "StoredEvent",
    "StreamSummary",
    "open_inspector",
]


@attrs.frozen
class StoreInfo:
    """What `fabula info` shows."""

    kind: str
    location: str
    schema_version: int
    events: int
    streams: int
    head: int
    size_bytes: int


@attrs.frozen
class StreamSummary:
    """A stream: its id, how many events it has, when it last changed and what kind it is.

    Attributes:
        stream_id: The stream's id.
        events: How many events it holds.
        last_at: Its last event's timestamp.
        first_type: Its first event's stored type: what kind of stream it is
            (`orders.OrderCreated` starts an order).
    """

    stream_id: str
    events: int
    last_at: datetime
    first_type: str = ""


@attrs.frozen
class Checkpoint:
    """A projection's stored checkpoint: the last position it applied, and when it last moved."""

    name: str
    position: int
    moved_at: datetime


@attrs.frozen
class LeaseHolder:
    """The process that holds a projection's lease (PostgreSQL), so runs it now.

    Attributes:
        pid: The server process id of the lease's connection.
        client: The client's address, if the server shows it to this user.
        since: When that connection was opened, if shown.
    """

    pid: int
    client: str | None
    since: datetime | None


class Inspector(abc.ABC):
    """Reads one store's tables; every method is one or two queries."""

    kind: str
    location: str

    @abc.abstractmethod
    def info(self) -> StoreInfo:
        """The store's kind, schema version, counts, head position and size."""

    @abc.abstractmethod
    def streams(self, prefix: str, limit: int) -> list[StreamSummary]:
        """Streams whose id starts with `prefix`, by id."""

    @abc.abstractmethod
    def largest_streams(self, limit: int) -> list[StreamSummary]:
        """The streams with the most events."""

    @abc.abstractmethod
    def events(self, stream_id: str, from_version: int, limit: int | None) -> list[StoredEvent]:
        """A stream's events from `from_version` (none if the stream does not exist)."""

    @abc.abstractmethod
    def log(
        self, after: int, limit: int, types: Sequence[str] | None
    ) -> tuple[list[StoredEvent], int]:
        """Up to `limit` events of the global log after `after`, and the position read up to."""

    @abc.abstractmethod
    def readable_head(self) -> int:
        """The last position a reader of the global log can see now (where `tail` starts).

        On PostgreSQL it can be below the head, while a transaction that
        began earlier than the newest commits is still open.
        """

    @abc.abstractmethod
    def count_after(
        self, position: int, types: Sequence[str] | None, *, upto: int | None = None
    ) -> int:
        """How many events (of `types`) come after `position` (and at or before `upto`)."""

    @abc.abstractmethod
    def by_type(self) -> list[tuple[str, int]]:
        """Events per stored type name, most first."""

    @abc.abstractmethod
    def by_day(self) -> list[tuple[date, int]]:
        """Events per day (UTC), oldest first."""

    @abc.abstractmethod
    def checkpoints(self) -> dict[str, Checkpoint]:
        """Every stored projection checkpoint, by projection name."""

    def lease_holders(self, names: Sequence[str]) -> dict[str, LeaseHolder]:
        """Who runs each of the projections `names` now, where the store can tell.

        Only PostgreSQL stores lease their projections (one process runs
        each); on others this is empty.
        """
        del names
        return {}

    @abc.abstractmethod
    def close(self) -> None:
        """Close the connection."""


def open_inspector(store: str, *, schema: str = "public") -> Inspector:
    """Open an inspector on a SQLite path or a `postgresql://` URL.

    Raises:
        StoreError: There is no fabula store there.
        StoreUnavailableError: The server cannot be reached.
        ValueError: `schema` is not a plain identifier.
    """
    if store.startswith(("postgresql://", "postgres://")):
        from fabula.postgres._inspect import PostgresInspector  # noqa: PLC0415 - optional driver

        return PostgresInspector(store, schema=schema)
    from fabula.sqlite._inspect import SQLiteInspector  # noqa: PLC0415 - imports this module

    return SQLiteInspector(store)


def _summaries(rows: list[tuple[Any, ...]]) -> list[StreamSummary]:
    """(stream id, event count, last timestamp, first type) rows as summaries."""
    return [
        StreamSummary(str(stream), int(n), _moment(last), str(first or ""))
        for stream, n, last, first in rows
    ]


def _moment(value: object) -> datetime:
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment.astimezone(UTC)


def _stored(row: Sequence[Any]) -> StoredEvent:
    position, stream_id, version, event_id, type_name, schema, stamp, data, meta = row
    return StoredEvent(
        position=int(position),
        stream_id=str(stream_id),
        version=int(version),
        event_id=event_id if isinstance(event_id, UUID) else UUID(bytes=bytes(event_id)),
        type_name=str(type_name),
        schema_version=int(schema),
        timestamp=_moment(stamp),
        data=str(data),
        metadata=str(meta),
    )
