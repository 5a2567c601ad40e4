"""Every error fabula raises, rooted at `FabulaError`.

Each error also subclasses the builtin it semantically is, so code that
catches `ValueError` or `LookupError` keeps working, and carries its context
as attributes (stream id, versions, position) rather than only in its message.

```
FabulaError
├── ConcurrencyError
├── AggregateNotFoundError (LookupError)
├── DomainError
├── StoreError (RuntimeError)
│   ├── StoreClosedError
│   ├── StoreUnavailableError
│   └── SchemaVersionError
├── EventTypeError (TypeError)
│   ├── DuplicateEventTypeError
│   ├── UnregisteredEventError
│   └── MissingApplyHandlerError
├── InvalidAggregateIdError (TypeError, ValueError)
├── UnknownEventTypeError (LookupError)
├── SerializationError (ValueError)
│   └── UpcastError
├── InvalidAppendError (ValueError)
│   ├── EmptyAppendError
│   ├── NotAnEventError (TypeError)
│   ├── StreamMismatchError
│   ├── EventVersionError
│   └── DuplicateEventIdError
├── InvalidReadError (ValueError)
├── HandlerNotFoundError (LookupError)
├── DuplicateHandlerError (ValueError)
├── MessageTypeError (TypeError)
├── IdempotencyConflictError (ValueError)
├── InvalidIdempotencyKeyError (ValueError)
├── IdempotencyKeyTakenError
├── CheckpointError
├── ProjectionError
├── BrokerUnavailableError
├── IntegrationEventError (ValueError)
├── PersonalDataError
│   └── SubjectForgottenError
├── StreamDeletedError
├── StreamNotDeletedError (ValueError)
├── InvalidCursorError (ValueError)
└── InvalidPageSizeError (ValueError)
```
"""

from __future__ import annotations

import reprlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only for annotations: fabula's modules import this one
    from fabula._idempotency import IdempotencyRecord

__all__ = [
    "AggregateNotFoundError",
    "BrokerUnavailableError",
    "CheckpointError",
    "ConcurrencyError",
    "DomainError",
    "DuplicateEventIdError",
    "DuplicateEventTypeError",
    "DuplicateHandlerError",
    "EmptyAppendError",
    "EventTypeError",
    "EventVersionError",
    "FabulaError",
    "HandlerNotFoundError",
    "IdempotencyConflictError",
    "IdempotencyKeyTakenError",
    "IntegrationEventError",
    "InvalidAggregateIdError",
    "InvalidAppendError",
    "InvalidCursorError",
    "InvalidIdempotencyKeyError",
    "InvalidPageSizeError",
    "InvalidReadError",
    "MessageTypeError",
    "MissingApplyHandlerError",
    "NotAnEventError",
    "PersonalDataError",
    "ProjectionError",
    "SchemaVersionError",
    "SerializationError",
    "StoreClosedError",
    "StoreError",
    "StoreUnavailableError",
    "StreamDeletedError",
    "StreamMismatchError",
    "StreamNotDeletedError",
    "SubjectForgottenError",
    "UnknownEventTypeError",
    "UnregisteredEventError",
    "UpcastError",
]


_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 80


def _shown(value: object) -> str:
    """`repr(value)`, shortened in the middle past 80 characters (a message holds no megabytes)."""
    return _SHORT.repr(value)


class FabulaError(Exception):
    """The root of every error fabula raises."""


class ConcurrencyError(FabulaError):
    """A stream was not at the version the writer expected; nothing was written.

    Attributes:
        stream_id: The stream that was appended to.
        expected: The expected version the writer gave (an int or an
            `ExpectedVersion` member).
        actual: The stream's version when the append was checked (0 when the
            stream does not exist).
    """

    def __init__(self, stream_id: str, expected: object, actual: int) -> None:
        self.stream_id = stream_id
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"stream {stream_id!r} is at version {actual}, but the append expected {expected}"
        )

    def __reduce__(self) -> tuple[type[ConcurrencyError], tuple[str, object, int]]:
        return (type(self), (self.stream_id, self.expected, self.actual))


class AggregateNotFoundError(FabulaError, LookupError):
    """No events are stored for the aggregate that was asked for.

    Attributes:
        aggregate_type: The aggregate class that was asked for.
        aggregate_id: The id that has no stream.
    """

    def __init__(self, aggregate_type: type, aggregate_id: object) -> None:
        self.aggregate_type = aggregate_type
        self.aggregate_id = aggregate_id
        super().__init__(f"no {aggregate_type.__name__} with id {aggregate_id!s} exists")


class DomainError(FabulaError):
    """Base class for the invariant violations of a user's domain model.

    Aggregate methods raise (subclasses of) it before recording anything, and
    the testing helpers recognise it.
    """


class StoreError(FabulaError, RuntimeError):
    """The store's database failed or refused an operation (driver errors become this)."""


class StoreClosedError(StoreError):
    """The store was used after `close()`."""


class StoreUnavailableError(StoreError):
    """The database could not be reached or locked in time (busy, unreachable, read-only)."""


class BrokerUnavailableError(FabulaError):
    """A message broker could not be reached, or did not acknowledge in time.

    A relay retries it with backoff for as long as it lasts; unlike a
    handler's own failure, it never parks anything.
    """


class IntegrationEventError(FabulaError, ValueError):
    """An integration event is malformed: not a CloudEvents 1.0 JSON object fabula can read."""


class PersonalDataError(FabulaError):
    """Personal data cannot be sealed or opened: no key-encryption key, the wrong one, damage."""


class SubjectForgottenError(PersonalDataError):
    """Personal data of a forgotten subject was to be stored; nothing was stored.

    Attributes:
        subject: The forgotten subject's id.
    """

    def __init__(self, subject: str) -> None:
        self.subject = subject
        super().__init__(
            f"subject {subject!r} is forgotten: no personal data of theirs can be stored again"
        )


class StreamDeletedError(FabulaError):
    """The stream is deleted (`delete_stream`): it takes no more events and cannot be loaded.

    Attributes:
        stream_id: The stream.
    """

    def __init__(self, stream_id: str) -> None:
        self.stream_id = stream_id
        super().__init__(f"stream {stream_id!r} is deleted")


class StreamNotDeletedError(FabulaError, ValueError):
    """Only a deleted stream can be purged: `delete_stream` it first (see `stream_id`)."""

    def __init__(self, stream_id: str) -> None:
        self.stream_id = stream_id
        super().__init__(f"stream {stream_id!r} is not deleted: delete it before purging it")


class SchemaVersionError(StoreError):
    """The database was written by a newer schema than this version of fabula knows.

    Attributes:
        found: The schema version in the database.
        supported: The newest schema version this fabula can use.
    """

    def __init__(self, location: str, found: int, supported: int) -> None:
        self.found = found
        self.supported = supported
        super().__init__(
            f"{location} has schema version {found}, but this fabula supports up to "
            f"{supported}; upgrade fabula to open it"
        )


class EventTypeError(FabulaError, TypeError):
    """An event class or an aggregate is declared or used incorrectly."""


class InvalidAggregateIdError(FabulaError, TypeError, ValueError):
    """An aggregate id is not one its class accepts (a UUID, or a non-empty str).

    Both a `TypeError` (an id of the wrong type) and a `ValueError` (an
    empty or malformed one), so either `except` catches it.

    Attributes:
        aggregate_type: The aggregate class.
        value: The refused id.
    """

    def __init__(self, aggregate_type: type, value: object, reason: str) -> None:
        self.aggregate_type = aggregate_type
        self.value = value
        super().__init__(f"{aggregate_type.__qualname__} id {_shown(value)}: {reason}")


class DuplicateEventTypeError(EventTypeError):
    """Two different classes were registered under one stored event name.

    Attributes:
        name: The stored name both classes claim.
        existing: The class registered first.
        new: The class whose registration was refused.
    """

    def __init__(self, name: str, existing: type, new: type) -> None:
        self.name = name
        self.existing = existing
        self.new = new
        super().__init__(
            f"event name {name!r} is already registered to "
            f"{existing.__module__}.{existing.__qualname__}; "
            f"cannot register {new.__module__}.{new.__qualname__} under it"
        )


class UnregisteredEventError(EventTypeError):
    """An event class without a stored name was about to be written.

    Attributes:
        event_class: The unregistered class.
    """

    def __init__(self, event_class: type) -> None:
        self.event_class = event_class
        super().__init__(
            f"{event_class.__module__}.{event_class.__qualname__} has no stored name; "
            f"decorate it with @fabula.event('<name>')"
        )


class MissingApplyHandlerError(EventTypeError):
    """An aggregate was given an event it has no apply handler for.

    Attributes:
        aggregate_type: The aggregate class.
        event_class: The event class it cannot apply.
        aggregate_id: The aggregate's id, when known.
    """

    def __init__(
        self, aggregate_type: type, event_class: type, aggregate_id: object = None
    ) -> None:
        self.aggregate_type = aggregate_type
        self.event_class = event_class
        self.aggregate_id = aggregate_id
        which = "" if aggregate_id is None else f" {_shown(str(aggregate_id))}"
        super().__init__(
            f"{aggregate_type.__qualname__}{which} has no apply handler for "
            f"{event_class.__qualname__}; add a method decorated with @fabula.apply "
            f"whose event parameter is annotated {event_class.__qualname__}"
        )


class UnknownEventTypeError(FabulaError, LookupError):
    """A stored event names a type that no registered class has.

    Attributes:
        type_name: The stored name.
        stream_id: The stream holding the event, if known.
        position: The event's global position, if known.
    """

    def __init__(
        self, type_name: str, *, stream_id: str | None = None, position: int | None = None
    ) -> None:
        self.type_name = type_name
        self.stream_id = stream_id
        self.position = position
        where = _where(stream_id, position)
        super().__init__(f"unknown event type {type_name!r}{where}; is its module imported?")


class SerializationError(FabulaError, ValueError):
    """An event could not be encoded, or a stored payload could not be decoded.

    Attributes:
        type_name: The stored event name, if known.
        stream_id: The stream of the event, if known.
        position: The event's global position, if known.
    """

    def __init__(
        self,
        message: str,
        *,
        type_name: str | None = None,
        stream_id: str | None = None,
        position: int | None = None,
    ) -> None:
        self.type_name = type_name
        self.stream_id = stream_id
        self.position = position
        prefix = f"event type {type_name!r}" if type_name else "event"
        super().__init__(f"{prefix}{_where(stream_id, position)}: {message}")


class UpcastError(SerializationError):
    """A stored payload could not be brought up to its event's current schema."""


class InvalidAppendError(FabulaError, ValueError):
    """An append was refused before anything was written.

    Attributes:
        stream_id: The stream that was appended to.
    """

    def __init__(self, stream_id: str, message: str, *, context: str | None = None) -> None:
        self.stream_id = stream_id
        doing = f"append to stream {_shown(stream_id)} refused" if context is None else context
        super().__init__(f"{doing}: {message}")


class EmptyAppendError(InvalidAppendError):
    """An append carried no events."""

    def __init__(self, stream_id: str) -> None:
        super().__init__(stream_id, "the batch of events is empty")


class NotAnEventError(InvalidAppendError, TypeError):
    """Something other than a `DomainEvent` was appended.

    Attributes:
        value: The offending object.
    """

    def __init__(self, stream_id: str, value: object) -> None:
        self.value = value
        super().__init__(
            stream_id, f"{value!r} (a {type(value).__qualname__}) is not a DomainEvent"
        )


class StreamMismatchError(InvalidAppendError):
    """An event belongs to another aggregate than the stream it was appended to.

    Also raised when the stream's id is not an id of the type the event's
    class declares (a `DomainEvent[UUID]` appended to stream "acc-1").

    Attributes:
        aggregate_id: The event's aggregate id.
    """

    def __init__(
        self,
        stream_id: str,
        aggregate_id: object,
        *,
        context: str | None = None,
        reason: str | None = None,
    ) -> None:
        self.aggregate_id = aggregate_id
        message = reason or f"an event carries aggregate_id {_shown(str(aggregate_id))}"
        super().__init__(stream_id, message, context=context)


class EventVersionError(InvalidAppendError):
    """An event's version does not follow on from the expected version.

    Attributes:
        version: The offending event's version.
        required: The version it must have.
    """

    def __init__(
        self, stream_id: str, version: int, required: int, *, context: str | None = None
    ) -> None:
        self.version = version
        self.required = required
        message = f"an event has version {version} where version {required} is required"
        super().__init__(stream_id, message, context=context)


class DuplicateEventIdError(InvalidAppendError):
    """An event id is already stored, and this append is not a retry of that append.

    Attributes:
        event_id: The reused event id.
    """

    def __init__(self, stream_id: str, event_id: object, detail: str) -> None:
        self.event_id = event_id
        super().__init__(stream_id, f"event id {event_id} is already stored {detail}")


class InvalidReadError(FabulaError, ValueError):
    """A read was asked with arguments out of range (negative position, limit ≤ 0).

    Attributes:
        argument: The name of the offending argument.
        value: Its value.
    """

    def __init__(self, argument: str, value: object, requirement: str) -> None:
        self.argument = argument
        self.value = value
        super().__init__(f"{argument}={_shown(value)} is invalid: {requirement}")


class HandlerNotFoundError(FabulaError, LookupError):
    """A message was dispatched that no handler is registered for.

    Attributes:
        message_type: The message's class.
    """

    def __init__(self, message_type: type) -> None:
        self.message_type = message_type
        super().__init__(f"no handler is registered for {message_type.__qualname__}")


class DuplicateHandlerError(FabulaError, ValueError):
    """A second handler was registered for one message type.

    Attributes:
        message_type: The message's class.
    """

    def __init__(self, message_type: type) -> None:
        self.message_type = message_type
        super().__init__(f"{message_type.__qualname__} already has a handler; one per type")


class MessageTypeError(FabulaError, TypeError):
    """Something that is not a command or query (or not a handler) was given to a bus."""


class IdempotencyConflictError(FabulaError, ValueError):
    """An idempotency key was reused for a command with another payload.

    Attributes:
        key: The idempotency key.
    """

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(
            f"idempotency key {key!r} was already used for a different command or payload"
        )


class InvalidIdempotencyKeyError(FabulaError, ValueError):
    """An idempotency key that no store can keep: not a str, empty, too long, a NUL, not UTF-8.

    Attributes:
        key: The key, as given.
    """

    def __init__(self, key: object, problem: str) -> None:
        self.key = key
        super().__init__(f"the idempotency key {_shown(key)} {problem}")


class IdempotencyKeyTakenError(FabulaError):
    """A live idempotency record holds the key; a store raises it and writes nothing.

    The `Idempotency` middleware catches it and answers with the record's result.

    Attributes:
        record: The `IdempotencyRecord` that holds the key.
    """

    def __init__(self, record: IdempotencyRecord) -> None:
        self.record = record
        super().__init__(f"idempotency key {record.key!r} is already recorded")


class CheckpointError(FabulaError):
    """A projection's checkpoint was not where its projector expected (another ran it).

    Attributes:
        name: The projection.
        stored: The checkpoint in the store.
        position: The position the projector tried to move it to.
    """

    def __init__(self, name: str, stored: int, position: int) -> None:
        self.name = name
        self.stored = stored
        self.position = position
        super().__init__(
            f"projection {name!r} is already at position {stored}; cannot move it to {position}"
        )


class ProjectionError(FabulaError):
    """A projection handler failed on an event; the projection stopped at it.

    Attributes:
        name: The projection.
        position: The event's global position.
        event_class: The event's class name (`__qualname__`).
    """

    def __init__(self, name: str, position: int, event_class: str, cause: BaseException) -> None:
        self.name = name
        self.position = position
        self.event_class = event_class
        super().__init__(
            f"projection {name!r} failed on {event_class} at position {position}: {cause!r}"
        )


class InvalidCursorError(FabulaError, ValueError):
    """A pagination cursor is malformed, altered or of another query (HTTP 400)."""


class InvalidPageSizeError(FabulaError, ValueError):
    """A page size is outside its bounds.

    Attributes:
        size: The size asked for.
        minimum: The smallest size allowed.
        maximum: The largest size allowed.
    """

    def __init__(self, size: object, minimum: int, maximum: int) -> None:
        self.size = size
        self.minimum = minimum
        self.maximum = maximum
        super().__init__(
            f"page size {size!r} is invalid: it must be an int from {minimum} to {maximum}"
        )


def _where(stream_id: str | None, position: int | None) -> str:
    parts = []
    if stream_id is not None:
        parts.append(f"stream {stream_id!r}")
    if position is not None:
        parts.append(f"position {position}")
    return f" ({', '.join(parts)})" if parts else ""
