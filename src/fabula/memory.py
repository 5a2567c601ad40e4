"""InMemoryEventStore: the event store for tests, prototypes and examples.

It keeps events encoded, exactly as the durable stores do, so what works here
(serialization, upcasting, concurrency checks) works there too. Nothing
survives the process.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar
from uuid import UUID

import attrs

from fabula._deletion import TOMBSTONE, StreamDeletion, refuse_deleted
from fabula._events import DomainEvent
from fabula._idempotency import IdempotencyRecord
from fabula._personal import Keyring, KeyWrapper, OpenKeys
from fabula._personal_store import PersonalSide
from fabula._projection import Projection
from fabula._projection_store import SkippedEvent, require_checkpoint
from fabula._reaction_store import (
    ParkedEvent,
    ParkRequest,
    Timer,
    checkpoint_name,
    skips_name,
)
from fabula._serialization import EventSerializer, SerializedEvent
from fabula._snapshots import Snapshot
from fabula._store import (
    AppendResult,
    Expected,
    RecordedEvent,
    StreamAppend,
    check_concurrency,
    validate_read_stream,
)
from fabula._store_base import StoreBase, Wakeup
from fabula._stored import (
    PendingAppend,
    StoredEvent,
    match_retry,
    prepare_append_off_loop,
    prepare_appends_off_loop,
)
from fabula._telemetry import traced_append
from fabula.exceptions import (
    IdempotencyKeyTakenError,
    StoreClosedError,
    StoreError,
    StreamNotDeletedError,
)

__all__ = ["InMemoryEventStore"]


def _due(timer: Timer) -> tuple[datetime, str]:
    return timer.due_at, timer.name


@attrs.frozen
class _Row:
    position: int
    stream_id: str
    version: int
    record: SerializedEvent


@attrs.frozen
class _Planned:
    """One stream's part of an append, checked and encoded, not yet stored."""

    stream_id: str
    records: tuple[SerializedEvent, ...]
    first_version: int
    replayed: AppendResult | None


class _MemoryDataSide:
    """Subject keys, `forget`, `export`'s scan and stream deletion, in memory."""

    _log: list[_Row]
    _streams: dict[str, list[_Row]]
    _by_id: dict[UUID, _Row]
    _snapshots: dict[str, Snapshot]
    _subject_keys: dict[str, bytes | None]
    _purged: set[int]

    if TYPE_CHECKING:  # the store's own

        def _check_open(self) -> None: ...
        def _commit(self, parts: list[PendingAppend]) -> list[AppendResult]: ...
        async def _decode_all(self, rows: Sequence[_Row]) -> list[RecordedEvent]: ...

    async def _load_keys(self, subjects: Collection[str]) -> dict[str, bytes | None]:
        return {s: self._subject_keys[s] for s in subjects if s in self._subject_keys}

    async def _events_holding(self, text: str) -> list[RecordedEvent]:
        self._check_open()
        return await self._decode_all([row for row in self._log if text in row.record.data])

    async def _add_keys(self, keys: Mapping[str, bytes]) -> dict[str, bytes | None]:
        for subject, wrapped in keys.items():
            self._subject_keys.setdefault(subject, wrapped)
        return {s: self._subject_keys[s] for s in keys}

    async def _forget_subject(self, subject: str, part: PendingAppend) -> bool:
        self._check_open()
        if subject in self._subject_keys and self._subject_keys[subject] is None:
            return False
        self._commit([part])
        self._subject_keys[subject] = None
        return True

    async def _delete(self, part: PendingAppend) -> AppendResult:
        return self._commit([part])[0]

    async def _purge(self, stream_id: str) -> int:
        self._check_open()
        rows = self._streams.get(stream_id, [])
        if not rows or rows[-1].record.type_name != TOMBSTONE:
            raise StreamNotDeletedError(stream_id)
        gone = [row for row in rows[:-1] if row.position not in self._purged]
        for row in gone:  # emptied, so that not even memory keeps the data
            emptied = attrs.evolve(row, record=row.record._replace(data="{}", metadata="{}"))
            self._log[row.position - 1] = rows[row.version - 1] = emptied
            self._purged.add(row.position)
            self._by_id.pop(row.record.event_id, None)
        self._snapshots.pop(stream_id, None)
        return len(gone)


@attrs.define(repr=False)
class InMemoryEventStore(_MemoryDataSide, PersonalSide, StreamDeletion, StoreBase):
    """An `EventStore` that keeps everything in memory.

    Every operation completes without yielding to the event loop between its
    checks and its writes, so it is atomic with respect to other asyncio
    tasks. It is not thread-safe: use it from one event loop.

    Args:
        serializer: Encodes and decodes events; one over `default_registry`
            if omitted.
        key_encryption_key: Wraps the keys that seal personal data
            (`fabula.KeyEncryptionKey`); needed to store or read events
            with personal fields.
    """

    serializer: EventSerializer = attrs.field(factory=EventSerializer)
    key_encryption_key: KeyWrapper | None = attrs.field(default=None, kw_only=True)
    transactional: ClassVar[bool] = False
    """Projection work is not undone when it fails: read models here are Python objects."""
    _log: list[_Row] = attrs.field(init=False, factory=list)
    _streams: dict[str, list[_Row]] = attrs.field(init=False, factory=dict)
    _by_id: dict[UUID, _Row] = attrs.field(init=False, factory=dict)
    _snapshots: dict[str, Snapshot] = attrs.field(init=False, factory=dict)
    _records: dict[str, IdempotencyRecord] = attrs.field(init=False, factory=dict)
    _checkpoints: dict[str, int] = attrs.field(init=False, factory=dict)
    _skips: dict[str, list[SkippedEvent]] = attrs.field(init=False, factory=dict)
    _parked: dict[tuple[str, int], ParkedEvent] = attrs.field(init=False, factory=dict)
    _timers: dict[str, Timer] = attrs.field(init=False, factory=dict)
    _timers_done: dict[str, int | None] = attrs.field(init=False, factory=dict)
    _wakeup: Wakeup = attrs.field(init=False, factory=Wakeup)
    _closed: bool = attrs.field(init=False, default=False)
    _subject_keys: dict[str, bytes | None] = attrs.field(init=False, factory=dict)
    _purged: set[int] = attrs.field(init=False, factory=set)
    _keyring: Keyring | None = attrs.field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        self._keyring = self._make_keyring(self.key_encryption_key)

    def __repr__(self) -> str:
        return f"<InMemoryEventStore: {len(self._log)} events in {len(self._streams)} streams>"

    async def close(self) -> None:
        """Close the store: later calls raise `StoreClosedError`, subscriptions end."""
        self._closed = True
        self._wakeup.notify()

    @traced_append("memory")
    async def append(
        self, stream_id: str, events: Sequence[DomainEvent[Any]], *, expected_version: Expected
    ) -> AppendResult:
        """Append events to one stream atomically (see `EventStore.append`)."""
        events, keys = await self._sealing(events)
        parts = await prepare_append_off_loop(
            stream_id, events, expected_version, self.serializer, keys
        )
        return self._commit(parts)[0]

    @traced_append("memory")
    async def append_many(self, appends: Sequence[StreamAppend]) -> list[AppendResult]:
        """Append to several streams atomically (see `EventStore.append_many`)."""
        keys = await self._keys_to_many(appends)
        return self._commit(await prepare_appends_off_loop(appends, self.serializer, keys=keys))

    async def read_stream(
        self, stream_id: str, *, from_version: int = 1, limit: int | None = None
    ) -> list[RecordedEvent]:
        """Read one stream from `from_version` (see `EventStore.read_stream`)."""
        self._check_open()
        validate_read_stream(stream_id, from_version, limit)
        rows = self._streams.get(stream_id, ())
        end = None if limit is None else from_version - 1 + limit
        selected = rows[from_version - 1 : end]
        refuse_deleted(stream_id, selected[-1].record.type_name if selected else None)
        return await self._decode_all(selected)

    @traced_append("memory")
    async def append_with_record(
        self, appends: Sequence[StreamAppend], record: IdempotencyRecord
    ) -> list[AppendResult]:
        """Append events and keep an idempotency record, atomically (see `IdempotencyStore`)."""
        keys = await self._keys_to_many(appends)
        parts = await prepare_appends_off_loop(
            appends, self.serializer, allow_empty=True, keys=keys
        )
        self._check_open()
        existing = self._records.get(record.key)
        if existing is not None and not existing.expired(record.created_at):
            raise IdempotencyKeyTakenError(existing)
        results = self._commit(parts) if parts else []
        self._records[record.key] = record
        return results

    async def load_record(self, key: str) -> IdempotencyRecord | None:
        """Return the idempotency record of `key`, or None (see `IdempotencyStore`)."""
        self._check_open()
        return self._records.get(key)

    async def head_position(self) -> int:
        """Return the position of the last event (0 when empty)."""
        self._check_open()
        return len(self._log)

    async def load_checkpoint(self, name: str) -> int:
        """Return the checkpoint of projection `name` (0 if it has none)."""
        self._check_open()
        return self._checkpoints.get(name, 0)

    async def commit_projection(
        self, name: str, *, expected: int, position: int, work: Callable[[None], None]
    ) -> None:
        """Run `work`, move checkpoint `name` from `expected` to `position` (`ProjectionStore`)."""
        self._check_open()
        stored = self._checkpoints.get(name, 0)
        require_checkpoint(name, stored, expected=expected, moving_to=position)
        work(None)
        self._checkpoints[name] = position

    async def skip_event(self, name: str, *, position: int, event_class: str, reason: str) -> None:
        """Move checkpoint `name` past `position` and record the skip (see `ProjectionStore`)."""
        self._check_open()
        stored = self._checkpoints.get(name, 0)
        require_checkpoint(name, stored, expected=position - 1, moving_to=position)
        self._checkpoints[name] = position
        skipped = SkippedEvent(position, event_class, reason, datetime.now(UTC))
        self._skips.setdefault(name, []).append(skipped)

    async def load_skips(self, name: str) -> list[SkippedEvent]:
        """Return the events skipped in projection `name` (see `ProjectionStore`)."""
        self._check_open()
        return list(self._skips.get(name, ()))

    async def commit_reaction(
        self, reaction: str, *, expected: int, position: int, parked: Sequence[ParkedEvent]
    ) -> None:
        """Move `reaction`'s checkpoint and keep `parked`, atomically (see `ReactionStore`)."""
        self._check_open()
        name = checkpoint_name(reaction)
        stored = self._checkpoints.get(name, 0)
        require_checkpoint(name, stored, expected=expected, moving_to=position)
        for event in parked:
            self._parked[event.reaction, event.position] = event
        self._checkpoints[name] = position

    async def commit_projection_parked(
        self,
        name: str,
        *,
        expected: int,
        position: int,
        work: Callable[[None], None],
        park: Sequence[ParkedEvent] = (),
        release: Sequence[tuple[str, int]] = (),
    ) -> None:
        """`commit_projection` with parked events kept and released (see `ReactionStore`)."""
        self._check_open()
        stored = self._checkpoints.get(name, 0)
        require_checkpoint(name, stored, expected=expected, moving_to=position)
        work(None)
        for event in park:
            self._parked[event.reaction, event.position] = event
        for key in release:
            self._parked.pop(key, None)
        self._checkpoints[name] = position

    async def load_parked(self, reaction: str | None = None) -> list[ParkedEvent]:
        """Return parked events, by reaction and position (see `ReactionStore`)."""
        self._check_open()
        found = (p for key, p in self._parked.items() if reaction in (None, key[0]))
        return sorted(found, key=lambda p: (p.reaction, p.position))

    async def request_parked(
        self, reaction: str, position: int, request: ParkRequest, reason: str | None
    ) -> bool:
        """Record an operator's request on a parked event (see `ReactionStore`)."""
        self._check_open()
        parked = self._parked.get((reaction, position))
        if parked is None:
            return False
        self._parked[reaction, position] = attrs.evolve(parked, request=request, reason=reason)
        return True

    async def repark(self, reaction: str, position: int, *, error: str, attempts: int) -> None:
        """Record that a parked event failed again (see `ReactionStore`)."""
        self._check_open()
        parked = self._parked.get((reaction, position))
        if parked is not None:
            self._parked[reaction, position] = attrs.evolve(
                parked, error=error, attempts=attempts, request=None, reason=None
            )

    async def release_parked(
        self, reaction: str, position: int, *, skipped: tuple[str, str] | None = None
    ) -> None:
        """Remove a parked event, recording a skip (see `ReactionStore`)."""
        self._check_open()
        self._parked.pop((reaction, position), None)
        if skipped is not None:
            event_class, reason = skipped
            record = SkippedEvent(position, event_class, reason, datetime.now(UTC))
            self._skips.setdefault(skips_name(reaction), []).append(record)

    async def schedule_timer(self, timer: Timer) -> None:
        """Keep `timer`, unless an event no older had its name (see `TimerStore`)."""
        self._check_open()
        stored = self._timer_sequence(timer.name)
        if timer.sequence is not None and stored is not None and timer.sequence <= stored:
            return
        self._timers[timer.name] = timer
        self._timers_done.pop(timer.name, None)

    async def cancel_timer(self, name: str, *, sequence: int | None = None) -> bool:
        """Cancel timer `name`, as of `sequence` (see `TimerStore`)."""
        self._check_open()
        stored = self._timer_sequence(name)
        if sequence is not None and stored is not None and sequence < stored:
            return False
        pending = self._timers.pop(name, None)
        if pending is not None or sequence is not None:
            self._timers_done[name] = sequence if sequence is not None else stored
        return pending is not None

    def _timer_sequence(self, name: str) -> int | None:
        pending = self._timers.get(name)
        return pending.sequence if pending is not None else self._timers_done.get(name)

    async def claim_timers(self, now: datetime, *, until: datetime, limit: int) -> list[Timer]:
        """Claim due timers until `until` (see `TimerStore`)."""
        self._check_open()
        due = sorted((t for t in self._timers.values() if t.claimable(now)), key=_due)[:limit]
        claimed = [attrs.evolve(timer, claimed_until=until) for timer in due]
        for timer in claimed:
            self._timers[timer.name] = timer
        return claimed

    async def finish_timer(self, name: str, generation: UUID) -> None:
        """Mark timer `name` fired if it is still `generation` (see `TimerStore`)."""
        self._check_open()
        timer = self._timers.get(name)
        if timer is not None and timer.generation == generation:
            del self._timers[name]
            self._timers_done[name] = timer.sequence

    async def retry_timer(
        self, name: str, generation: UUID, *, due_at: datetime, error: str
    ) -> None:
        """Record a failed firing (see `TimerStore`)."""
        self._check_open()
        timer = self._timers.get(name)
        if timer is not None and timer.generation == generation:
            self._timers[name] = attrs.evolve(
                timer,
                due_at=due_at,
                attempts=timer.attempts + 1,
                last_error=error,
                claimed_until=None,
            )

    async def load_timers(self) -> list[Timer]:
        """Return the pending timers, soonest first (see `TimerStore`)."""
        self._check_open()
        return sorted(self._timers.values(), key=_due)

    async def rebuild_projection(
        self,
        projection: Projection[None],
        *,
        batch_size: int,
        progress: Callable[[int, int], None] | None,
    ) -> int:
        """Not supported: in-memory read models are Python objects the store cannot swap.

        Build a new projection object and a new `Projector` instead.

        Raises:
            StoreError: Always.
        """
        del batch_size, progress
        msg = (
            f"the in-memory store cannot rebuild {projection.name!r} side by side; "
            f"project into a new object with a new Projector instead"
        )
        raise StoreError(msg)

    async def _save_snapshot(self, snapshot: Snapshot) -> None:
        """Keep `snapshot` unless one of a later version is stored (see `SnapshotStore`)."""
        self._check_open()
        stored = self._snapshots.get(snapshot.stream_id)
        if stored is None or snapshot.version > stored.version:
            self._snapshots[snapshot.stream_id] = snapshot

    async def _load_snapshot(self, stream_id: str) -> Snapshot | None:
        """Return the latest snapshot of `stream_id`, or None (see `SnapshotStore`)."""
        self._check_open()
        return self._snapshots.get(stream_id)

    def _commit(self, parts: list[PendingAppend]) -> list[AppendResult]:
        self._check_open()
        planned: list[_Planned] = []
        versions: dict[str, int] = {}
        for part in parts:
            stream = self._streams.get(part.stream_id, [])
            actual = versions.get(part.stream_id, len(stream))
            replayed = match_retry(part, self._stored_under(part.records))
            if replayed is None:
                refuse_deleted(part.stream_id, stream[-1].record.type_name if stream else None)
                check_concurrency(part.stream_id, part.events, part.expected, actual)
                versions[part.stream_id] = actual + len(part.records)
            planned.append(_Planned(part.stream_id, part.records, actual + 1, replayed))
        return [self._store(plan) for plan in planned]

    def _stored_under(self, records: tuple[SerializedEvent, ...]) -> dict[UUID, StoredEvent]:
        """The stored events that have any of these records' ids."""
        found = {}
        for record in records:
            row = self._by_id.get(record.event_id)
            if row is not None:
                found[record.event_id] = StoredEvent(
                    row.position, row.stream_id, row.version, *row.record
                )
        return found

    def _store(self, plan: _Planned) -> AppendResult:
        if plan.replayed is not None:
            return plan.replayed
        stream = self._streams.setdefault(plan.stream_id, [])
        row = None
        for offset, record in enumerate(plan.records):
            row = _Row(len(self._log) + 1, plan.stream_id, plan.first_version + offset, record)
            self._log.append(row)
            stream.append(row)
            self._by_id[record.event_id] = row
        assert row is not None  # noqa: S101 - validate_append refuses empty batches
        self._wakeup.notify()
        return AppendResult(stream_id=plan.stream_id, version=row.version, position=row.position)

    async def _scan(
        self, after: int, limit: int, names: frozenset[str] | None
    ) -> tuple[list[RecordedEvent], int]:
        """Return up to `limit` matching events after `after`, and the last position scanned."""
        if names is None:
            rows = self._log[after : after + limit]
            return await self._decode_all(rows), rows[-1].position if rows else after
        found: list[_Row] = []
        scanned = after
        for row in self._log[after:]:
            scanned = row.position
            if row.record.type_name in names:
                found.append(row)
                if len(found) == limit:
                    break
        return await self._decode_all(found), scanned

    async def _count(self, after: int, names: frozenset[str] | None) -> int:
        rows = self._log[after:]
        if self._purged:
            rows = [row for row in rows if row.position not in self._purged]
        if names is None:
            return len(rows)
        return sum(row.record.type_name in names for row in rows)

    async def _decode_all(self, rows: Sequence[_Row]) -> list[RecordedEvent]:
        if self._purged:
            rows = [row for row in rows if row.position not in self._purged]
        keys = await self._keys_to_open(row.record.data for row in rows)
        return [self._decode(row, keys) for row in rows]

    def _decode(self, row: _Row, keys: OpenKeys | None) -> RecordedEvent:
        event = self.serializer.decode(
            row.record, stream_id=row.stream_id, version=row.version, position=row.position,
            keys=keys,
        )  # fmt: skip
        return RecordedEvent(event=event, position=row.position, stream_id=row.stream_id)

    def _check_open(self) -> None:
        if self._closed:
            msg = "the InMemoryEventStore is closed"
            raise StoreClosedError(msg)
