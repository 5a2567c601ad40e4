"""The EventStore protocol, its value types, and the argument checks every store shares."""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Collection, Iterable, Sequence
from types import TracebackType
from typing import Any, Generic, Protocol, Self, TypeAlias, overload, runtime_checkable

import attrs
from typing_extensions import TypeVar

from fabula._events import DomainEvent, EventRegistry, IdKind, id_type, stream_id_as
from fabula._guards import MAX_INT, is_int, text_problem
from fabula._serialization import EventSerializer
from fabula.exceptions import (
    ConcurrencyError,
    DuplicateEventIdError,
    EmptyAppendError,
    EventVersionError,
    InvalidAppendError,
    InvalidReadError,
    NotAnEventError,
    StreamMismatchError,
)

__all__ = [
    "AppendResult",
    "EventStore",
    "EventTypeFilter",
    "Expected",
    "ExpectedVersion",
    "RecordedEvent",
    "StreamAppend",
]


class ExpectedVersion(enum.Enum):
    """What a writer expects of a stream, besides an exact version.

    An exact version is given as an int: `0` means the stream must not exist
    yet (like `NO_STREAM`), `n` that its last event has version `n`.
    """

    ANY = "any"
    """Append whatever the stream's version (no concurrency check)."""
    NO_STREAM = "no_stream"
    """The stream must not exist."""
    STREAM_EXISTS = "stream_exists"
    """The stream must have at least one event."""

    def __repr__(self) -> str:
        return f"ExpectedVersion.{self.name}"

    __str__ = __repr__


Expected: TypeAlias = int | ExpectedVersion
"""An expected version: an exact int (0 for a new stream) or an `ExpectedVersion`."""

EventTypeFilter: TypeAlias = Collection[type[DomainEvent[Any]] | str]
"""Event types to filter a read by: classes or their stored names."""


@attrs.frozen
class AppendResult:
    """What an append stored.

    Attributes:
        stream_id: The stream appended to.
        version: The stream's version after the append (the last event's).
        position: The global position of the last event appended.
    """

    stream_id: str
    version: int
    position: int


E = TypeVar("E", bound=DomainEvent[Any])
Ev_co = TypeVar("Ev_co", bound=DomainEvent[Any], default=DomainEvent[Any], covariant=True)


@attrs.frozen
class RecordedEvent(Generic[Ev_co]):
    """A stored event with its place in the global log.

    Generic in the event's type: `read_all(event_types=[Deposited])` returns
    `RecordedEvent[Deposited]`s, whose `event` mypy knows is a `Deposited`;
    a plain `RecordedEvent` holds any event.

    Attributes:
        event: The decoded event (`event.version` is its place in its stream).
        position: Its global position: strictly increasing in commit order.
        stream_id: The stream it is stored in.
    """

    event: Ev_co
    position: int
    stream_id: str


def _to_tuple(events: Sequence[DomainEvent[Any]]) -> tuple[DomainEvent[Any], ...]:
    return tuple(events) if not isinstance(events, DomainEvent) else (events,)


@attrs.frozen
class StreamAppend:
    """One stream's part of an atomic `append_many`.

    Attributes:
        stream_id: The stream to append to.
        events: The events to append, in order.
        expected_version: What the stream's version must be.
    """

    stream_id: str
    events: Sequence[DomainEvent[Any]] = attrs.field(converter=_to_tuple)
    expected_version: Expected = attrs.field(kw_only=True)


@runtime_checkable
class EventStore(Protocol):
    """An append-only store of event streams with one global, ordered log.

    Every store, first-party or third-party, passes the contract suite in
    `fabula.testing.EventStoreContract`.
    """

    async def append(
        self, stream_id: str, events: Sequence[DomainEvent[Any]], *, expected_version: Expected
    ) -> AppendResult:
        """Append events to one stream, atomically.

        Re-appending events whose ids are already stored in that stream, in
        the same order, is a no-op that returns the original result.

        Raises:
            ConcurrencyError: The stream is not at `expected_version`.
            InvalidAppendError: The batch is empty, holds a non-event, an
                event of another stream or a wrong version, or reuses a
                stored event id.
        """
        ...

    async def append_many(self, appends: Sequence[StreamAppend]) -> list[AppendResult]:
        """Append to several streams in one atomic unit: all or nothing.

        Returns:
            One result per `StreamAppend`, in order.
        """
        ...

    async def read_stream(
        self, stream_id: str, *, from_version: int = 1, limit: int | None = None
    ) -> list[RecordedEvent]:
        """Read one stream's events from `from_version`, in version order.

        An unknown stream reads as empty.
        """
        ...

    @overload
    async def read_all(
        self, *, after: int = 0, limit: int = 1000, event_types: Collection[type[E]]
    ) -> list[RecordedEvent[E]]: ...
    @overload
    async def read_all(
        self, *, after: int = 0, limit: int = 1000, event_types: EventTypeFilter | None = None
    ) -> list[RecordedEvent]: ...
    async def read_all(
        self, *, after: int = 0, limit: int = 1000, event_types: EventTypeFilter | None = None
    ) -> list[RecordedEvent] | list[RecordedEvent[Any]]:
        """Read the global log after position `after`, in position order.

        With `event_types` given as classes, the events are typed as those.
        """
        ...

    @overload
    def subscribe(
        self, *, after: int = 0, event_types: Collection[type[E]]
    ) -> AsyncIterator[RecordedEvent[E]]: ...
    @overload
    def subscribe(
        self, *, after: int = 0, event_types: EventTypeFilter | None = None
    ) -> AsyncIterator[RecordedEvent]: ...
    def subscribe(
        self, *, after: int = 0, event_types: EventTypeFilter | None = None
    ) -> AsyncIterator[RecordedEvent[Any]]:
        """Yield every event after `after`: first the stored ones, then new ones live.

        The iterator ends when the store is closed; cancel the consuming task
        to stop earlier.
        """
        ...

    async def close(self) -> None:
        """Release the store's resources and end its subscriptions."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


@runtime_checkable
class SerializingStore(Protocol):
    """A store that says how it encodes events: tools read its registry of stored names.

    fabula's own stores are; the `fabula` command uses it to name a
    projection's event types as the store stores them.
    """

    @property
    def serializer(self) -> EventSerializer:
        """The serializer the store encodes and decodes events with."""
        ...


def validate_append(
    stream_id: str, events: Sequence[DomainEvent[Any]], expected_version: Expected
) -> tuple[DomainEvent[Any], ...]:
    """Check an append's arguments before a store touches its storage.

    Returns:
        The events as a tuple.

    Raises:
        InvalidAppendError: For each kind of bad input, a specific subclass.
    """
    problem = text_problem(stream_id)
    if problem is not None:
        shown = stream_id if isinstance(stream_id, str) else repr(stream_id)
        raise InvalidAppendError(shown, f"a stream id {problem}")
    check_expected_version(stream_id, expected_version)
    if isinstance(events, DomainEvent | str | bytes) or not isinstance(events, Iterable):
        raise InvalidAppendError(
            stream_id, f"events must be a list of DomainEvents, not {type(events).__name__}"
        )
    batch = tuple(events)
    if not batch:
        raise EmptyAppendError(stream_id)
    seen = set()
    belongs: set[object] = {"", stream_id}  # aggregate ids already matched to the stream
    kinds: set[type] = set()  # the id types whose ids the stream id was checked to be
    for event in batch:
        if not isinstance(event, DomainEvent):
            raise NotAnEventError(stream_id, event)
        kind = id_type(type(event))
        if kind not in kinds:
            _check_stream_kind(stream_id, type(event), kind)
            kinds.add(kind)
        aggregate_id = event.aggregate_id
        if aggregate_id not in belongs:
            if str(aggregate_id) != stream_id:
                raise StreamMismatchError(stream_id, aggregate_id)
            belongs.add(aggregate_id)
        if event.event_id in seen:
            raise DuplicateEventIdError(stream_id, event.event_id, "earlier in the same batch")
        seen.add(event.event_id)
    _check_batch_versions(stream_id, batch, expected_version)
    return batch


def _check_stream_kind(stream_id: str, event_class: type, kind: IdKind) -> None:
    """Refuse a stream whose id is not an id of the type the event class declares."""
    try:
        stream_id_as(kind, stream_id)
    except ValueError:
        raise StreamMismatchError(
            stream_id,
            stream_id,
            reason=(
                f"{event_class.__qualname__}'s aggregate_id is a {kind.__name__}, and the stream "
                f"id is not the text of one (declare {event_class.__qualname__}"
                f"(fabula.DomainEvent[str]) for streams of other ids)"
            ),
        ) from None


def check_expected_version(stream_id: str, expected_version: object) -> None:
    """Check that `expected_version` is an int >= 0 or an `ExpectedVersion`.

    Raises:
        InvalidAppendError: It is neither.
    """
    if isinstance(expected_version, ExpectedVersion):
        return
    if is_int(expected_version) and expected_version >= 0:
        return
    raise InvalidAppendError(
        stream_id,
        f"expected_version={expected_version!r} is neither an int >= 0 nor an ExpectedVersion",
    )


def _check_batch_versions(
    stream_id: str, batch: tuple[DomainEvent[Any], ...], expected_version: Expected
) -> None:
    first = batch[0].version
    if first == 0:
        for event in batch:
            if event.version != 0:
                raise EventVersionError(stream_id, event.version, 0)
        return
    if isinstance(expected_version, int) and first != expected_version + 1:
        raise EventVersionError(stream_id, first, expected_version + 1)
    if expected_version is ExpectedVersion.NO_STREAM and first != 1:
        raise EventVersionError(stream_id, first, 1)
    if first < 1:
        raise EventVersionError(stream_id, first, 1)
    for offset, event in enumerate(batch):
        if event.version != first + offset:
            raise EventVersionError(stream_id, event.version, first + offset)


def check_concurrency(
    stream_id: str,
    batch: tuple[DomainEvent[Any], ...],
    expected_version: Expected,
    actual: int,
) -> None:
    """Check the stream's current version against what the writer expected.

    Events that already carry versions (recorded by an aggregate) must follow
    on from `actual` too, whatever `expected_version` says.

    Raises:
        ConcurrencyError: The stream is not where the writer expected it.
        EventVersionError: The events are numbered past the stream's end.
    """
    match expected_version:
        case ExpectedVersion.ANY:
            ok = True
        case ExpectedVersion.NO_STREAM:
            ok = actual == 0
        case ExpectedVersion.STREAM_EXISTS:
            ok = actual > 0
        case int():
            ok = actual == expected_version
    if not ok:
        raise ConcurrencyError(stream_id, expected_version, actual)
    first = batch[0].version
    if first > actual + 1:
        # Numbered past the stream's end: a stream never shrinks, so no race
        # explains it. The numbering is wrong (an aggregate built by hand?).
        raise EventVersionError(stream_id, first, actual + 1)
    if first not in (0, actual + 1):  # another writer got there first
        raise ConcurrencyError(stream_id, first - 1, actual)


def check_retry(stream_id: str, expected_version: Expected, first_version: int) -> None:
    """Check that a batch whose events are all stored is a retry of the append that stored them.

    A retry repeats the original expected version, so an exact expected
    version must lead to the version the first event was stored at.

    Raises:
        DuplicateEventIdError: It cannot be that retry.
    """
    if isinstance(expected_version, int) and first_version != expected_version + 1:
        raise DuplicateEventIdError(
            stream_id,
            "of this batch",
            f"at version {first_version}, which expected_version={expected_version} "
            f"cannot have written; this is not a retry of that append",
        )


def validate_read_all(after: int, limit: int) -> None:
    """Check `read_all` arguments.

    Raises:
        InvalidReadError: `after` is negative or `limit` is not positive.
    """
    _check_int("after", after, minimum=0)
    _check_int("limit", limit, minimum=1)


def validate_read_stream(stream_id: str, from_version: int, limit: int | None) -> None:
    """Check `read_stream` arguments.

    Raises:
        InvalidReadError: The stream id is empty, `from_version` is below 1 or
            `limit` is not positive.
    """
    problem = text_problem(stream_id)
    if problem is not None:
        raise InvalidReadError("stream_id", stream_id, problem)
    _check_int("from_version", from_version, minimum=1)
    if limit is not None:
        _check_int("limit", limit, minimum=1)


def _check_int(argument: str, value: object, *, minimum: int) -> None:
    if not is_int(value) or not minimum <= value <= MAX_INT:
        raise InvalidReadError(argument, value, f"must be an int from {minimum} to 2**63 - 1")


_NAME_LIMIT = 1024  # event type names are not ids: only absurd ones are refused


def event_type_names(
    event_types: EventTypeFilter | None, registry: EventRegistry
) -> frozenset[str] | None:
    """Resolve a read's event-type filter to stored names (None: no filter).

    Raises:
        InvalidReadError: The filter is a bare string or holds something that
            is neither a str nor an event class.
        UnregisteredEventError: A class in it has no stored name.
    """
    if event_types is None:
        return None
    if isinstance(event_types, str | type):
        raise InvalidReadError(
            "event_types", event_types, "must be a collection of event classes or names"
        )
    names: set[str] = set()
    for item in event_types:
        if isinstance(item, str) and text_problem(item, limit=_NAME_LIMIT) is None:
            names.add(item)
        elif isinstance(item, type) and issubclass(item, DomainEvent):
            names.add(registry.by_class(item).name)
        else:
            raise InvalidReadError("event_types", item, "must be an event class or a name")
    return frozenset(names)
