"""Repository: load aggregates from their streams and save their new events."""

from __future__ import annotations

from typing import TypeVar

import attrs

from fabula._aggregate import Aggregate
from fabula._events import AggregateId
from fabula._store import AppendResult, EventStore, StreamAppend
from fabula.exceptions import AggregateNotFoundError, EventTypeError

__all__ = ["Repository"]

A = TypeVar("A", bound=Aggregate)


@attrs.define
class Repository:
    """Loads aggregates by replaying their streams and saves their pending events.

    Args:
        store: The event store the aggregates live in.

    Example:
        >>> repo = fabula.Repository(fabula.memory.InMemoryEventStore())
    """

    store: EventStore

    async def get(self, aggregate_type: type[A], aggregate_id: AggregateId) -> A:
        """Load the aggregate with `aggregate_id` by replaying its stream.

        Raises:
            AggregateNotFoundError: No events are stored for `aggregate_id`.
            EventTypeError: `aggregate_type` is not an Aggregate subclass.
        """
        if not (isinstance(aggregate_type, type) and issubclass(aggregate_type, Aggregate)):
            msg = f"{aggregate_type!r} is not a subclass of fabula.Aggregate"
            raise EventTypeError(msg)
        recorded = await self.store.read_stream(str(aggregate_id))
        if not recorded:
            raise AggregateNotFoundError(aggregate_type, aggregate_id)
        return aggregate_type.from_events(aggregate_id, (r.event for r in recorded))

    async def save(self, *aggregates: Aggregate) -> list[AppendResult]:
        """Append the pending events of one or several aggregates, atomically.

        Each aggregate's events are appended with the version it was loaded
        at as the expected version, so a concurrent change to any of them
        fails the whole save with `ConcurrencyError` and stores nothing.
        Pending events are cleared only once the append has succeeded.

        Returns:
            One result per aggregate that had pending events, in order.

        Raises:
            ConcurrencyError: An aggregate's stream moved on since it was loaded.
            EventTypeError: Something other than an Aggregate was passed.
        """
        for aggregate in aggregates:
            if not isinstance(aggregate, Aggregate):
                msg = f"{aggregate!r} is not a fabula.Aggregate"
                raise EventTypeError(msg)
        unique = list({id(a): a for a in aggregates}.values())
        changed = [(a, a.pending_events) for a in unique if a.pending_events]
        if not changed:
            return []
        appends = [
            StreamAppend(str(a.id), events, expected_version=a.version - len(events))
            for a, events in changed
        ]
        if len(appends) == 1:
            only = appends[0]
            results = [
                await self.store.append(
                    only.stream_id, only.events, expected_version=only.expected_version
                )
            ]
        else:
            results = await self.store.append_many(appends)
        for aggregate, events in changed:
            aggregate.mark_saved(events)
        return results
