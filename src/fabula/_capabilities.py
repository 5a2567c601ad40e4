"""Types that name a whole fabula store, for an application's signatures.

`Store` is what fabula's three stores all are: an event store that also
keeps projections, snapshots, idempotency records, reactions' parked
events and durable timers, and seals personal data per subject. `SqlStore` adds a
SQL read model (`read_model()`): the SQLite and PostgreSQL stores. Both
are protocols, so a function typed with one takes any of those stores
(and a store of one's own that offers the same), with no casts.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from fabula._deletion import StreamDeletionStore
from fabula._idempotency import IdempotencyStore
from fabula._personal_store import PersonalDataStore
from fabula._projection_store import ProjectionStore
from fabula._reaction_store import ReactionStore, TimerStore
from fabula._snapshots import SnapshotStore
from fabula._sql import ReadModel
from fabula._store import EventStore

__all__ = ["SqlStore", "Store"]


@runtime_checkable
class Store(
    EventStore,
    ProjectionStore[object],
    SnapshotStore,
    IdempotencyStore,
    ReactionStore,
    TimerStore,
    PersonalDataStore,
    StreamDeletionStore,
    Protocol,
):
    """Any of fabula's stores: events, projections, snapshots, idempotency records, reactions.

    And personal data: each keeps it sealed per subject, and can `forget` one;
    and each can delete a stream, then purge its events.
    """


@runtime_checkable
class SqlStore(Store, Protocol):
    """A store with a SQL read model beside its events: `SQLiteEventStore`, `PostgresEventStore`."""

    def read_model(self) -> ReadModel:
        """The SQL read model in the store's database (see `fabula.SqlProjection`)."""
        ...
