"""Repository: load aggregates from their streams (and snapshots) and save their new events."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, TypeVar

import attrs

from fabula import _telemetry as telemetry
from fabula._aggregate import Aggregate
from fabula._events import AggregateId
from fabula._guards import is_int
from fabula._idempotency import current_unit_of_work
from fabula._snapshots import SnapshotCodec, SnapshotStore, warn_ignored
from fabula._store import AppendResult, EventStore, StreamAppend
from fabula.exceptions import AggregateNotFoundError, EventTypeError, FabulaError

__all__ = ["Repository"]

A = TypeVar("A", bound=Aggregate[Any])

logger = logging.getLogger("fabula.repository")


def _check_intervals(value: object) -> None:
    intervals = list(value.values()) if isinstance(value, Mapping) else [value]
    for interval in intervals:
        if interval is not None and not is_int(interval):
            msg = f"snapshot_every must be a positive int, not {interval!r}"
            raise TypeError(msg)
        if interval is not None and interval < 1:
            msg = f"snapshot_every must be a positive int, not {interval!r}"
            raise ValueError(msg)
    if isinstance(value, Mapping):
        for cls in value:
            if not (
                isinstance(cls, type)
                and issubclass(cls, Aggregate)
                and "__attrs_attrs__" in cls.__dict__
            ):
                msg = f"snapshots need attrs subclasses of fabula.Aggregate, not {cls!r}"
                raise TypeError(msg)


@attrs.define
class Repository:
    """Loads aggregates by replaying their streams and saves their pending events.

    Args:
        store: The event store the aggregates live in.
        snapshot_every: Take a snapshot of an aggregate every this many
            events: one interval for every type, or one per aggregate type.
            Loading then starts from the latest snapshot and replays only
            newer events. Needs a store that is also a `SnapshotStore`;
            without one (or with None, the default) nothing is snapshotted.
        snapshots: Encodes aggregate state for snapshots.

    Example:
        >>> repo = fabula.Repository(store, snapshot_every={Order: 100})
    """

    store: EventStore
    snapshot_every: int | Mapping[type[Aggregate[Any]], int] | None = attrs.field(
        default=None, kw_only=True
    )
    snapshots: SnapshotCodec = attrs.field(factory=SnapshotCodec, kw_only=True)

    _snapshot_store: SnapshotStore | None = attrs.field(init=False, default=None, repr=False)

    def __attrs_post_init__(self) -> None:
        _check_intervals(self.snapshot_every)
        # A runtime Protocol check is slow: make it once, not per get and save.
        if isinstance(self.store, SnapshotStore):
            self._snapshot_store = self.store

    async def get(self, aggregate_type: type[A], aggregate_id: AggregateId) -> A:
        """Load the aggregate with `aggregate_id` from its latest snapshot and newer events.

        The id may be given as the aggregate declares it or as its text: the
        aggregate comes back with its declared id type either way.

        Raises:
            AggregateNotFoundError: No events are stored for `aggregate_id`.
            EventTypeError: `aggregate_type` is not an Aggregate subclass.
            InvalidAggregateIdError: `aggregate_id` cannot be an id of that class.
        """
        if not (isinstance(aggregate_type, type) and issubclass(aggregate_type, Aggregate)):
            msg = f"{aggregate_type!r} is not a subclass of fabula.Aggregate"
            raise EventTypeError(msg)
        aggregate_id = aggregate_type.coerce_id(aggregate_id)
        if not telemetry.enabled():
            return await self._load(aggregate_type, aggregate_id)
        attributes = {
            "fabula.aggregate": aggregate_type.__qualname__,
            "fabula.stream": str(aggregate_id),
        }
        with telemetry.span("fabula.load", attributes) as current:
            aggregate = await self._load(aggregate_type, aggregate_id)
            if current is not None:
                current.set_attribute("fabula.version", aggregate.version)
            return aggregate

    async def _load(self, aggregate_type: type[A], aggregate_id: Any) -> A:  # noqa: ANN401 - coerced
        stream_id = str(aggregate_id)
        aggregate = await self._from_snapshot(aggregate_type, aggregate_id)
        if aggregate is not None:
            # Read from the snapshot's own version: that event must exist, or the
            # snapshot describes a stream that is not this one.
            recorded = await self.store.read_stream(stream_id, from_version=aggregate.version)
            if recorded and recorded[0].event.version == aggregate.version:
                aggregate.replay(r.event for r in recorded[1:])
                return aggregate
            reason = "its stream has no event of that version"
            warn_ignored(aggregate_type, aggregate_id, aggregate.version, reason)
        recorded = await self.store.read_stream(stream_id)
        if not recorded:
            raise AggregateNotFoundError(aggregate_type, aggregate_id)
        return aggregate_type.from_events(aggregate_id, (r.event for r in recorded))

    async def save(self, *aggregates: Aggregate[Any]) -> list[AppendResult]:
        """Append the pending events of one or several aggregates, atomically.

        Each aggregate's events are appended with the version it was loaded
        at as the expected version, so a concurrent change to any of them
        fails the whole save with `ConcurrencyError` and stores nothing.
        Pending events are cleared only once the append has succeeded. Then
        aggregates that passed a snapshot interval are snapshotted; a failed
        snapshot is logged, never raised, since the events are safely stored.

        Inside a command run by the `Idempotency` middleware the events are
        not appended here but with the command's idempotency record when its
        handler returns (one transaction); `save` then returns an empty list.

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
        unit = current_unit_of_work()
        if unit is not None:
            # Inside an idempotent command: the events are appended with its
            # idempotency record when the handler returns.
            for aggregate in unique:
                unit.add(aggregate)
            return []
        changed = [(a, append) for a in unique if (append := a.pending_append()) is not None]
        if not changed:
            return []
        results = await self._append([append for _, append in changed])
        for aggregate, append in changed:
            aggregate.mark_saved(append.events)
        for aggregate, append in changed:
            await self._snapshot_if_due(aggregate, saved=len(append.events))
        return results

    async def _append(self, appends: list[StreamAppend]) -> list[AppendResult]:
        """One aggregate's events through `append`, several through one `append_many`."""
        if len(appends) > 1:
            return await self.store.append_many(appends)
        (only,) = appends
        return [
            await self.store.append(
                only.stream_id, only.events, expected_version=only.expected_version
            )
        ]

    async def _snapshot_if_due(self, aggregate: Aggregate[Any], *, saved: int) -> None:
        """Snapshot `aggregate` if the `saved` events just stored passed its interval."""
        interval = self._interval(type(aggregate))
        before = aggregate.version - saved
        if interval and aggregate.version // interval > before // interval:
            await self._snapshot(aggregate)

    def _interval(self, cls: type[Aggregate[Any]]) -> int | None:
        if self._snapshot_store is None:
            return None
        if isinstance(self.snapshot_every, Mapping):
            return self.snapshot_every.get(cls)
        return self.snapshot_every

    async def _from_snapshot(self, cls: type[A], aggregate_id: AggregateId) -> A | None:
        if not self._interval(cls):
            return None
        assert self._snapshot_store is not None  # noqa: S101 - checked by _interval
        snapshot = await self._snapshot_store.load_snapshot(str(aggregate_id))
        if snapshot is None:
            return None
        return self.snapshots.decode(snapshot, cls, aggregate_id)

    async def _snapshot(self, aggregate: Aggregate[Any]) -> None:
        assert self._snapshot_store is not None  # noqa: S101 - checked by _interval
        try:
            await self._snapshot_store.save_snapshot(self.snapshots.encode(aggregate))
        except (FabulaError, TypeError, ValueError):
            logger.warning(
                "could not snapshot %s %s at version %d",
                type(aggregate).__qualname__,
                aggregate.id,
                aggregate.version,
                exc_info=True,
            )
